//! The in-process hub: the only code that starts or stops pollers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rand::Rng;
use tokio::runtime::Runtime;
use tracing::{info, info_span, warn, Instrument};

use super::topic::{Member, Readiness, Topic};
use super::{Hub, HubError, InstanceInfo, StreamKey, SubscribeRequest, Subscription};
use crate::config::{Idle, StreamSpec};
use crate::fetch;
use crate::metrics::Metrics;
use crate::poller::Poller;
use crate::routes::{self, Routes};
use crate::sse;

/// How long past the stream's `timeout` a new client waits for the first poll.
const FIRST_POLL_SLACK: Duration = Duration::from_millis(250);
/// The `retry:` sent with the last event of a stream that left the config.
const REMOVED_RETRY_MS: u64 = 30_000;
/// First polls started by a client are spread over at most this, so the client is not kept waiting.
const CLIENT_START_JITTER: Duration = Duration::from_millis(100);

pub struct LocalHub {
    inner: Arc<Inner>,
    /// Pollers run here, off the threads that serve clients, so diffing never stalls a client.
    runtime: Option<Runtime>,
}

struct Inner {
    topics: Mutex<Topics>,
    client: fetch::Clients,
    metrics: Arc<Metrics>,
    handle: tokio::runtime::Handle,
}

#[derive(Default)]
struct Topics {
    by_key: HashMap<StreamKey, Arc<Topic>>,
    per_stream: HashMap<Arc<str>, usize>,
}

impl LocalHub {
    pub fn new(client: fetch::Clients, metrics: Arc<Metrics>) -> std::io::Result<LocalHub> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sse-pollers")
            .enable_all()
            .build()?;
        Ok(LocalHub {
            inner: Arc::new(Inner {
                topics: Mutex::new(Topics::default()),
                client,
                metrics,
                handle: runtime.handle().clone(),
            }),
            runtime: Some(runtime),
        })
    }
}

impl Drop for LocalHub {
    fn drop(&mut self) {
        // Dropping a runtime inside an async context panics; this may run on one.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Inner {
    fn topics(&self) -> MutexGuard<'_, Topics> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finds or creates the instance and counts the client in, under one lock so an idle poller
    /// can't remove the instance between the two.
    fn join(
        self: &Arc<Self>,
        spec: &Arc<StreamSpec>,
        key: StreamKey,
        first_delay: Duration,
    ) -> Result<Member, HubError> {
        let mut topics = self.topics();
        if let Some(topic) = topics.by_key.get(&key) {
            return Ok(topic.join());
        }
        let count = topics.per_stream.entry(key.stream.clone()).or_default();
        if *count >= spec.max_instances {
            return Err(HubError::TooManyInstances {
                stream: key.stream.to_string(),
                max: spec.max_instances,
            });
        }
        *count += 1;
        let topic = Arc::new(Topic::new(spec.clone(), key.clone(), self.metrics.clone()));
        let member = topic.join();
        topics.by_key.insert(key, topic.clone());
        drop(topics);
        self.start(topic, first_delay);
        Ok(member)
    }

    fn start(self: &Arc<Self>, topic: Arc<Topic>, first_delay: Duration) {
        let span = info_span!("poller", stream = %topic.key.stream, instance = %topic.key);
        let hub = Arc::downgrade(self);
        let released = topic.clone();
        let poller = Poller {
            topic,
            client: self.client.clone(),
            release: Box::new(move |force| release(&hub, &released, force)),
            first_delay,
        };
        self.handle.spawn(
            async move {
                info!("poller started");
                poller.run().await;
            }
            .instrument(span),
        );
    }
}

/// Removes `topic` from the hub if it is still the registered instance for its key and, unless
/// forced, has no client.
fn release(hub: &Weak<Inner>, topic: &Arc<Topic>, force: bool) -> bool {
    let Some(hub) = hub.upgrade() else {
        return true;
    };
    let mut topics = hub.topics();
    let current = topics
        .by_key
        .get(&topic.key)
        .is_some_and(|t| Arc::ptr_eq(t, topic));
    if !current || (!force && topic.clients() > 0) {
        return !current;
    }
    topics.by_key.remove(&topic.key);
    if let Some(n) = topics.per_stream.get_mut(&topic.key.stream) {
        *n = n.saturating_sub(1);
    }
    true
}

#[async_trait::async_trait]
impl Hub for LocalHub {
    async fn subscribe(&self, req: SubscribeRequest) -> Result<Subscription, HubError> {
        let jitter = rand::rng().random_range(Duration::ZERO..CLIENT_START_JITTER);
        let member = self.inner.join(&req.spec, req.key, jitter)?;
        let mut ready = member.topic().readiness();
        let wait = req.spec.timeout + jitter + FIRST_POLL_SLACK;
        // A first poll slower than that still reaches this client when it lands.
        let _ = tokio::time::timeout(wait, ready.wait_for(|r| *r != Readiness::Pending)).await;
        if let Readiness::Denied(status) = *ready.borrow() {
            return Err(HubError::Denied(status));
        }
        Ok(member.attach(req.format, req.resume))
    }

    fn instances(&self) -> Vec<InstanceInfo> {
        let topics: Vec<Arc<Topic>> = self.inner.topics().by_key.values().cloned().collect();
        topics.iter().map(|t| t.info()).collect()
    }

    fn refresh(&self, stream: &str, target: &str) -> usize {
        let topics = self.inner.topics();
        let matching = topics
            .by_key
            .iter()
            .filter(|(k, _)| &*k.stream == stream && k.target == target);
        let mut n = 0;
        for (_, topic) in matching {
            topic.refresh.notify_one();
            n += 1;
        }
        n
    }

    fn reconcile(&self, routes: &Routes) {
        let streams = &routes.config.streams;
        let mut topics = self.inner.topics();
        // Retune or close what is running.
        let mut closed = Vec::new();
        for (key, topic) in &topics.by_key {
            match streams.iter().find(|s| s.path.as_str() == &*key.stream) {
                Some(spec) => topic.spec.store(spec.clone()),
                None => closed.push(key.clone()),
            }
        }
        for key in closed {
            if let Some(topic) = topics.by_key.remove(&key) {
                topics.per_stream.remove(&key.stream);
                warn!(stream = %key.stream, "stream removed; closing its clients");
                // A long retry: the browser comes back once, gets 404, and stops.
                let data = r#"{"reason":"stream removed from the gateway config"}"#;
                let mut last = sse::retry(REMOVED_RETRY_MS).to_vec();
                last.extend_from_slice(&sse::event(Some("end"), None, data));
                topic.close(last.into());
                topic.stop.notify_one();
            }
        }
        drop(topics);
        // `idle: never` streams poll from start-up on, spread over one interval.
        for spec in streams {
            let always = spec.idle == Idle::Never
                && !spec.path.is_template()
                && spec.forward_headers.is_empty();
            if !always {
                continue;
            }
            let Ok(key) = routes::instance(spec, &[], None, &http::HeaderMap::new()) else {
                continue;
            };
            let jitter = rand::rng().random_range(Duration::ZERO..=spec.interval);
            // The member is dropped at once: `idle: never` keeps the poller without clients.
            let _ = self.inner.join(spec, key, jitter);
        }
    }
}
