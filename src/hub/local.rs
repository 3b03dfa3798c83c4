//! The in-process hub: the only code that starts or stops pollers.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use rand::Rng;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::cluster::{Cluster, ClusterError, Driver};
use super::instance::{count_down_idle, Instance};
use super::poller::{Exit, Poller};
use super::source::{Source, Upstream};
use super::topic::{Member, Readiness, Topic};
use super::{
    Fingerprint, Hub, HubError, InstanceInfo, Refreshed, StreamKey, SubscribeRequest, Subscription,
};
use crate::codec::sse;
use crate::config::{self, Idle, StreamSpec};
use crate::metrics::Metrics;
use crate::upstream;

/// How long past the stream's `timeout` a new client waits for the first poll.
const FIRST_POLL_SLACK: Duration = Duration::from_millis(250);
/// The `retry:` sent with the last event of a stream that left the config.
const REMOVED_RETRY_MS: u64 = 30_000;
/// The `retry:` range (ms) sent with the last event of an instance that should be joined afresh
/// (a reload re-keyed its stream, or its poller stopped): soon, a little spread.
const RECONNECT_RETRY_MS: std::ops::RangeInclusive<u64> = 250..=1000;
/// First polls started by a client are spread over at most this, so the client is not kept waiting.
const CLIENT_START_JITTER: Duration = Duration::from_millis(100);

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum HubStartError {
    #[error("cannot start the pollers' runtime")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

pub struct LocalHub {
    inner: Arc<Inner>,
    /// Pollers run here, off the threads that serve clients, so diffing never stalls a client.
    runtime: Option<Runtime>,
}

struct Inner {
    topics: Mutex<Topics>,
    /// In cluster mode, what instances of clustered streams share with the other gateways.
    cluster: Option<Arc<Cluster>>,
    source: Arc<dyn Source>,
    metrics: Arc<Metrics>,
    handle: tokio::runtime::Handle,
    fingerprint: Fingerprint,
}

#[derive(Default)]
struct Topics {
    /// The running instances, by stream, so a stream's count and its refreshes look at it alone.
    streams: HashMap<Arc<str>, HashMap<StreamKey, Instance>>,
    /// Each stream's spec as the last reconcile applied it.
    specs: HashMap<Arc<str>, Arc<StreamSpec>>,
    /// Specs a reconcile replaced or removed, while a request routed before it may still hold
    /// one (a `Weak` also keeps the address from being reused).
    retired: Vec<Weak<StreamSpec>>,
}

impl Topics {
    /// The spec a client routed with `spec` joins under: `spec` itself unless a reconcile has
    /// retired it since. A retired spec whose stream left the config, or now keys its instances
    /// differently, gets the last event that instances of it got.
    fn current(&self, spec: &Arc<StreamSpec>) -> Result<Arc<StreamSpec>, Bytes> {
        let retired = self
            .retired
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(spec)));
        if !retired {
            return Ok(spec.clone());
        }
        match self.specs.get(spec.path.as_str()) {
            None => Err(removed_event()),
            Some(now) if !keyed_alike(now, spec) => {
                Err(reconnect_event("stream reconfigured", rand::random()))
            }
            Some(now) => Ok(now.clone()),
        }
    }

    /// Takes out an instance of `stream` that has no client and is waiting out its `idle`, the
    /// one idle longest, to make room for another. Returns whether there was one.
    fn evict_idle(&mut self, stream: &str) -> bool {
        let oldest = self
            .streams
            .get(stream)
            .into_iter()
            .flatten()
            .map(|(k, i)| (k, i.topic.occupancy(), i.topic.spec.load().idle))
            .filter(|(_, o, idle)| o.clients == 0 && matches!(idle, Idle::After(_)))
            .min_by_key(|(_, o, _)| o.since)
            .map(|(k, _, _)| k.clone());
        let Some(instance) = oldest.and_then(|k| self.take(&k)) else {
            return false;
        };
        info!(stream, instance = %instance.topic.label, "idle instance evicted to make room");
        instance.cancel.cancel();
        true
    }

    fn get(&self, key: &StreamKey) -> Option<&Instance> {
        self.streams.get(&key.stream)?.get(key)
    }

    /// Whether `topic` is the instance the table holds for its key.
    fn holds(&self, topic: &Arc<Topic>) -> bool {
        self.get(&topic.key)
            .is_some_and(|i| Arc::ptr_eq(&i.topic, topic))
    }

    /// How many instances of `stream` run.
    fn count(&self, stream: &str) -> usize {
        self.streams.get(stream).map_or(0, HashMap::len)
    }

    fn insert(&mut self, key: StreamKey, instance: Instance) {
        let stream = self.streams.entry(key.stream.clone()).or_default();
        stream.insert(key, instance);
    }

    /// Removes an instance from the table, and its stream once it has none.
    fn take(&mut self, key: &StreamKey) -> Option<Instance> {
        let instances = self.streams.get_mut(&key.stream)?;
        let instance = instances.remove(key)?;
        if instances.is_empty() {
            self.streams.remove(&key.stream);
        }
        Some(instance)
    }

    fn all(&self) -> impl Iterator<Item = (&StreamKey, &Instance)> {
        self.streams.values().flatten()
    }
}

/// Whether instances of `a` and `b` are keyed and polled the same way: by the same `poll`
/// template, with the same parameters, query and forwarded headers.
fn keyed_alike(a: &StreamSpec, b: &StreamSpec) -> bool {
    a.poll == b.poll
        && a.cluster == b.cluster
        && a.forward_headers == b.forward_headers
        && a.forward_query == b.forward_query
        && a.params == b.params
}

/// The last event of a stream that left the config: a long retry, so the browser comes back
/// once, gets 404, and stops.
fn removed_event() -> Bytes {
    let data = r#"{"reason":"stream removed from the gateway config"}"#;
    sse::Event::new("end")
        .retry(Duration::from_millis(REMOVED_RETRY_MS))
        .data(data)
        .encode()
}

/// The last event of an instance its clients should replace: they reconnect soon, with
/// `Last-Event-ID`, and join an instance keyed by the running config. `spread` picks the retry
/// within its range (a drop may run where no thread-local RNG is left).
fn reconnect_event(reason: &str, spread: u64) -> Bytes {
    let (lo, hi) = RECONNECT_RETRY_MS.into_inner();
    let retry = lo + spread % (hi - lo + 1);
    let data = serde_json::json!({ "reason": reason, "reconnect": true }).to_string();
    sse::Event::new("end")
        .retry(Duration::from_millis(retry))
        .data(&data)
        .encode()
}

impl LocalHub {
    /// With `cluster`, clustered streams share their pollers through its Redis.
    pub fn new(
        client: upstream::Clients,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<config::Cluster>>,
    ) -> Result<LocalHub, HubStartError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sse-pollers")
            .enable_all()
            .build()
            .map_err(HubStartError::Runtime)?;
        let cluster = match cluster {
            Some(spec) => {
                let _in = runtime.enter();
                Some(Arc::new(Cluster::start(spec, &metrics)?))
            }
            None => None,
        };
        let source = Arc::new(Upstream(client));
        let mut hub = LocalHub::on(runtime.handle().clone(), source, metrics);
        if let Some(inner) = Arc::get_mut(&mut hub.inner) {
            inner.cluster = cluster;
        }
        hub.runtime = Some(runtime);
        Ok(hub)
    }

    /// A hub whose pollers run on `handle` and poll `source`: tests run it on their own
    /// runtime, under paused time, with a scripted source.
    pub(super) fn on(
        handle: tokio::runtime::Handle,
        source: Arc<dyn Source>,
        metrics: Arc<Metrics>,
    ) -> LocalHub {
        LocalHub {
            inner: Arc::new(Inner {
                topics: Mutex::new(Topics::default()),
                cluster: None,
                source,
                metrics,
                handle,
                fingerprint: Fingerprint::random(),
            }),
            runtime: None,
        }
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
        self.topics.lock()
    }

    /// Finds or creates the instance and counts the client in, under one lock so the idle
    /// countdown can't remove the instance between the two.
    fn join(
        self: &Arc<Self>,
        spec: &Arc<StreamSpec>,
        key: StreamKey,
        first_delay: Duration,
    ) -> Result<Member, HubError> {
        let mut topics = self.topics();
        // Routed before a reload that the reconcile has applied since: checked here, under the
        // lock reconcile takes, so no instance starts with a spec that is no longer running.
        let spec = match topics.current(spec) {
            Ok(spec) => spec,
            Err(last) => {
                drop(topics);
                // An instance that never runs: the client gets the end the others got.
                let label = self.fingerprint.label(&key);
                let topic = Arc::new(Topic::new(spec.clone(), key, label, self.metrics.clone()));
                topic.close(last);
                return Ok(topic.join());
            }
        };
        if let Some(instance) = topics.get(&key) {
            return Ok(instance.topic.join());
        }
        if topics.count(&key.stream) >= spec.max_instances && !topics.evict_idle(&key.stream) {
            return Err(HubError::TooManyInstances {
                stream: key.stream.to_string(),
                max: spec.max_instances,
            });
        }
        let label = self.fingerprint.label(&key);
        let topic = Arc::new(Topic::new(spec, key.clone(), label, self.metrics.clone()));
        let member = topic.join();
        let instance = Instance::new(topic);
        topics.insert(key, instance.clone());
        // Spawned unlocked: a runtime shutting down drops the task at once, and its guard locks.
        drop(topics);
        self.start(&instance, first_delay);
        Ok(member)
    }

    /// Spawns the instance's poller and its idle countdown; both end with its token.
    fn start(self: &Arc<Self>, instance: &Instance, first_delay: Duration) {
        let topic = &instance.topic;
        let span = info_span!("poller", stream = %topic.key.stream, instance = %topic.label);
        let ended = Ended {
            topic: topic.clone(),
            cancel: instance.cancel.clone(),
            hub: Arc::downgrade(self),
        };
        let poller = Poller {
            topic: topic.clone(),
            source: self.source.clone(),
            first_delay,
            seed: None,
        };
        let cancel = instance.cancel.clone();
        let out = topic.clone();
        let clustered = self.cluster.clone().filter(|_| topic.spec.load().cluster);
        let run = async move {
            let exit = match clustered {
                Some(cluster) => {
                    info!("instance started (clustered)");
                    let driver = Driver {
                        cluster,
                        topic: poller.topic,
                        source: poller.source,
                        first_delay: poller.first_delay,
                    };
                    driver.run(cancel).await
                }
                None => {
                    info!("poller started");
                    poller.run(&*out, cancel).await
                }
            };
            ended.exit(exit);
        };
        self.handle.spawn(run.instrument(span.clone()));
        let hub = Arc::downgrade(self);
        let idle = topic.clone();
        let take_if_idle = move || take_if_idle(&hub, &idle);
        let countdown = count_down_idle(
            topic.clone(),
            instance.cancel.clone(),
            instance.retuned.clone(),
            take_if_idle,
        );
        self.handle.spawn(countdown.instrument(span));
    }
}

/// Ends an instance's clients, takes it out of the table and cancels its token however its
/// poller stops: a return, a panic, or the runtime dropping it. Without it, a client would wait
/// forever on an instance that nothing writes to, not even a heartbeat, holding its client slot.
struct Ended {
    topic: Arc<Topic>,
    cancel: CancellationToken,
    hub: Weak<Inner>,
}

impl Ended {
    /// The poller returned: says why, then ends the instance.
    fn exit(self, exit: Exit) {
        match exit {
            // Whoever took it out said why: idle, reload or eviction.
            Exit::Cancelled => debug!("poller cancelled"),
            Exit::Denied(status) => info!(status, "poller stopped: access refused"),
            Exit::Lost => info!("poller stopped: it may no longer publish"),
        }
    }
}

impl Drop for Ended {
    fn drop(&mut self) {
        // No-ops when the hub already closed it and took it out.
        let last = reconnect_event("stream instance stopped", self.topic.epoch());
        self.topic.close(last);
        if let Some(hub) = self.hub.upgrade() {
            let mut topics = hub.topics();
            if topics.holds(&self.topic) {
                topics.take(&self.topic.key);
            }
        }
        self.cancel.cancel();
    }
}

/// Takes `topic` out of the hub if it is still there and has no client; returns whether it is
/// gone. Decided under the lock clients join under.
fn take_if_idle(hub: &Weak<Inner>, topic: &Arc<Topic>) -> bool {
    let Some(hub) = hub.upgrade() else {
        return true;
    };
    let mut topics = hub.topics();
    if !topics.holds(topic) {
        return true;
    }
    if topic.clients() > 0 {
        return false;
    }
    topics.take(&topic.key);
    // Logged in the poller's span, which the countdown runs in.
    info!("poller stopped: idle");
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
        let topics: Vec<Arc<Topic>> = self
            .inner
            .topics()
            .all()
            .map(|(_, i)| i.topic.clone())
            .collect();
        topics.iter().map(|t| t.info()).collect()
    }

    fn tail(&self, instance: &str) -> Option<Subscription> {
        let topic = self
            .inner
            .topics()
            .all()
            .find(|(_, i)| i.topic.label == instance)
            .map(|(_, i)| i.topic.clone())?;
        Some(topic.watch().attach(None, None))
    }

    fn cluster_state(&self) -> Option<String> {
        self.inner.cluster.as_ref().map(|c| c.state_line())
    }

    async fn shut_down(&self) {
        let Some(cluster) = self.inner.cluster.clone() else {
            return;
        };
        let closing = self
            .inner
            .handle
            .spawn(async move { cluster.close(Duration::from_secs(1)).await });
        let _ = closing.await;
    }

    fn refresh(&self, stream: &str, target: &str) -> Refreshed {
        let topics = self.inner.topics();
        let matching = topics
            .streams
            .get(stream)
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.target == target);
        let mut done = Refreshed::default();
        for (_, instance) in matching {
            if instance.topic.request_refresh() {
                done.now += 1;
            } else {
                done.deferred += 1;
            }
        }
        done
    }

    fn reconcile(&self, streams: &[Arc<StreamSpec>]) {
        let mut topics = self.inner.topics();
        let specs = streams
            .iter()
            .map(|s| (Arc::from(s.path.as_str()), s.clone()))
            .collect();
        let old = std::mem::replace(&mut topics.specs, specs);
        for (path, spec) in old {
            if !topics
                .specs
                .get(&path)
                .is_some_and(|s| Arc::ptr_eq(s, &spec))
            {
                topics.retired.push(Arc::downgrade(&spec));
            }
        }
        // Retune or close what is running.
        let mut closed = Vec::new();
        for (key, instance) in topics.all() {
            let topic = &instance.topic;
            match topics.specs.get(&key.stream) {
                None => closed.push((key.clone(), false)),
                // Polled or keyed another way now (another `poll`, tighter `forward_headers`,
                // `params` or `forward_query`): its clients come back and are keyed afresh.
                Some(spec) if !keyed_alike(spec, &topic.spec.load()) => {
                    closed.push((key.clone(), true))
                }
                Some(spec) => {
                    topic.spec.store(spec.clone());
                    instance.retuned.notify_one();
                }
            }
        }
        for (key, rekeyed) in closed {
            let Some(Instance { topic, cancel, .. }) = topics.take(&key) else {
                continue;
            };
            if rekeyed {
                info!(stream = %key.stream, instance = %topic.label, "stream re-keyed; its clients reconnect");
                topic.close(reconnect_event("stream reconfigured", topic.epoch()));
            } else {
                warn!(stream = %key.stream, "stream removed; closing its clients");
                topic.close(removed_event());
            }
            cancel.cancel();
        }
        topics.retired.retain(|w| w.strong_count() > 0);
        drop(topics);
        // `idle: never` streams poll from start-up on, spread over one interval.
        for spec in streams {
            let always = spec.idle == Idle::Never && spec.is_single_instance();
            if !always {
                continue;
            }
            let key = StreamKey::plain(spec);
            let jitter = rand::rng().random_range(Duration::ZERO..=spec.interval);
            // The member is dropped at once: `idle: never` keeps the poller without clients.
            let _ = self.inner.join(spec, key, jitter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::hub::Delivery;

    fn parse(streams: &str) -> config::Config {
        crate::hub::fixtures::config(streams)
    }

    const ORDERS: &str = "  - path: /o/{id}\n    upstream: api\n    poll: /orders/{id}\n";

    fn hub() -> LocalHub {
        pingora::tls::install_default_crypto_provider();
        let clients = upstream::Clients::new(reqwest::Client::builder).unwrap();
        LocalHub::new(clients, Arc::new(Metrics::new().unwrap()), None).unwrap()
    }

    /// The key a request for `id` routes to: the poll template with `id` in it.
    fn key(cfg: &config::Config, id: &str) -> StreamKey {
        let spec = &cfg.streams[0];
        StreamKey {
            stream: Arc::from(spec.path.as_str()),
            target: spec.poll.render(&[("id", id.to_string())]),
            forwarded: Vec::new(),
        }
    }

    async fn last_event(hub: &LocalHub, cfg: &config::Config, id: &str) -> String {
        let mut sub = hub
            .subscribe(SubscribeRequest {
                spec: cfg.streams[0].clone(),
                key: key(cfg, id),
                format: None,
                resume: None,
            })
            .await
            .unwrap();
        assert!(sub.take_start().is_empty());
        match sub.next().await {
            Delivery::Close(b) => String::from_utf8_lossy(&b).into_owned(),
            Delivery::Send(b) => panic!("not the end: {b:?}"),
        }
    }

    #[tokio::test]
    async fn a_client_routed_before_a_reload_joins_as_the_reload_left_its_stream() {
        let hub = hub();
        let v1 = parse(ORDERS);
        hub.reconcile(&v1.streams);
        // Removed: the end that the removed stream's clients got.
        hub.reconcile(&parse("").streams);
        let end = last_event(&hub, &v1, "1").await;
        assert!(
            end.starts_with("retry: 30000\n") && end.contains("removed"),
            "{end}"
        );
        // Polled elsewhere now: come back soon and be keyed afresh.
        let v3 = parse("  - path: /o/{id}\n    upstream: api\n    poll: /v2/orders/{id}\n");
        hub.reconcile(&v3.streams);
        let v4 = parse(&format!("{ORDERS}    interval: 2s\n"));
        hub.reconcile(&v4.streams);
        let end = last_event(&hub, &v3, "1").await;
        assert!(end.contains("\"reconnect\":true"), "{end}");
        assert!(hub.instances().is_empty(), "no instance ran the old spec");
        // Retuned only: it joins an instance running the current spec.
        let v5 = parse(&format!("{ORDERS}    interval: 3s\n"));
        hub.reconcile(&v5.streams);
        let member = hub
            .inner
            .join(&v4.streams[0], key(&v4, "1"), Duration::from_secs(3600));
        let topic = member.unwrap().topic().clone();
        assert!(Arc::ptr_eq(&topic.spec.load(), &v5.streams[0]));
    }

    #[tokio::test]
    async fn a_reload_that_polls_elsewhere_closes_the_running_instances() {
        let hub = hub();
        let v1 = parse(ORDERS);
        hub.reconcile(&v1.streams);
        // Its first poll is not due before the reload.
        let later = Duration::from_secs(3600);
        let member = hub.inner.join(&v1.streams[0], key(&v1, "1"), later);
        let mut sub = member.unwrap().attach(None, None);
        let v2 = parse("  - path: /o/{id}\n    upstream: api\n    poll: /v2/{id}\n");
        hub.reconcile(&v2.streams);
        match sub.next().await {
            Delivery::Close(b) => assert!(b.starts_with(b"retry: "), "{b:?}"),
            Delivery::Send(b) => panic!("not the end: {b:?}"),
        }
        assert!(hub.instances().is_empty());
    }

    #[tokio::test]
    async fn at_max_instances_the_one_idle_longest_makes_room() {
        let hub = hub();
        let v1 = parse(&format!("{ORDERS}    max_instances: 2\n"));
        hub.reconcile(&v1.streams);
        let spec = &v1.streams[0];
        let join = |id| {
            hub.inner
                .join(spec, key(&v1, id), Duration::from_secs(3600))
        };
        drop(join("1").unwrap());
        drop(join("2").unwrap());
        // Neither has a client now, and 1 has waited longer.
        let three = join("3").unwrap();
        let running = || {
            let mut r: Vec<String> = hub.instances().into_iter().map(|i| i.instance).collect();
            r.sort();
            r
        };
        assert_eq!(running(), ["/orders/2", "/orders/3"]);
        let busy = join("2").unwrap();
        assert_eq!(running(), ["/orders/2", "/orders/3"]);
        // With every instance busy, the next is refused.
        assert!(matches!(
            join("4"),
            Err(HubError::TooManyInstances { max: 2, .. })
        ));
        drop((busy, three));
    }

    /// A hub on the test's runtime, under paused time, polling a scripted source.
    fn paused_hub(script: &Arc<crate::hub::script::Script>) -> LocalHub {
        let metrics = Arc::new(Metrics::new().unwrap());
        LocalHub::on(tokio::runtime::Handle::current(), script.clone(), metrics)
    }

    #[tokio::test(start_paused = true)]
    async fn no_client_for_idle_stops_the_instance_and_one_within_idle_keeps_it() {
        use crate::hub::script::{body, Script};
        use tokio::time::sleep;
        let s = Duration::from_secs(1);
        let script = Script::new(|_| body("{}"));
        let hub = paused_hub(&script);
        let cfg = parse(&format!("{ORDERS}    interval: 1s\n    idle: 10s\n"));
        hub.reconcile(&cfg.streams);
        let spec = &cfg.streams[0];
        let join = || {
            hub.inner
                .join(spec, key(&cfg, "1"), Duration::ZERO)
                .unwrap()
        };
        let first = join();
        let topic = first.topic().clone();
        sleep(s * 5).await;
        drop(first);
        sleep(s * 9).await;
        // A client within `idle` joins the same instance, and keeps it past the first `idle`.
        let second = join();
        assert!(Arc::ptr_eq(second.topic(), &topic));
        sleep(s * 20).await;
        assert_eq!(hub.instances().len(), 1);
        drop(second);
        sleep(s * 10 - s / 10).await;
        assert_eq!(hub.instances().len(), 1, "not before `idle`");
        sleep(s / 5).await;
        assert!(hub.instances().is_empty(), "taken out after `idle`");
        // Its poller was cancelled: no poll since.
        let polls = script.asked().len();
        sleep(s * 30).await;
        assert_eq!(script.asked().len(), polls);
        // The next client starts a new instance.
        let third = join();
        assert!(!Arc::ptr_eq(third.topic(), &topic));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_never_keeps_polling_without_clients() {
        use crate::hub::script::{body, Script};
        let script = Script::new(|_| body("{}"));
        let hub = paused_hub(&script);
        let cfg = parse("  - path: /o\n    upstream: api\n    interval: 1s\n    idle: never\n");
        hub.reconcile(&cfg.streams);
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(hub.instances().len(), 1);
        assert!(script.asked().len() > 500);
    }
}
