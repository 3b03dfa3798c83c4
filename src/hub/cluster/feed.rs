//! The feed: one Redis subscription per gateway, never one per client, that routes each
//! instance's channel to the task driving that instance here.
//!
//! Pub/sub is at most once: a message can be lost whenever the connection is. So after every
//! (re)subscription each instance is told `Subscribed`, meaning "what came before may be
//! missing": it reads its state from Redis again. A connection that stops answering pings (a
//! paused Redis keeps its sockets open) is dropped and made again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::Client;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};
use tracing::{debug, warn};

/// Messages an instance can fall behind by before it has to read its state from Redis again.
const QUEUE: usize = 1024;
/// How often the subscription proves it is alive.
const PING_EVERY: Duration = Duration::from_secs(1);

pub enum Event {
    /// The channel is subscribed (again): anything published before may have been missed.
    Subscribed,
    Message(Bytes),
}

struct Route {
    id: u64,
    tx: mpsc::Sender<Event>,
    /// Set when a message was dropped because the instance did not keep up.
    overflowed: Arc<AtomicBool>,
}

struct Shared {
    routes: Mutex<HashMap<String, Route>>,
    ids: AtomicU64,
    ctl: mpsc::UnboundedSender<Ctl>,
}

enum Ctl {
    Subscribe(String),
    Unsubscribe(String),
}

pub struct Feed(Arc<Shared>);

/// One instance's end of the feed. Dropping it unsubscribes.
pub struct Listening {
    pub rx: mpsc::Receiver<Event>,
    pub overflowed: Arc<AtomicBool>,
    channel: String,
    id: u64,
    feed: Arc<Shared>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let mut routes = self.feed.routes.lock();
        // A newer instance of the same key may have taken the channel over.
        if routes.get(&self.channel).is_some_and(|r| r.id == self.id) {
            routes.remove(&self.channel);
            let _ = self.feed.ctl.send(Ctl::Unsubscribe(self.channel.clone()));
        }
    }
}

impl Feed {
    /// Starts the subscriber task on the current runtime.
    pub fn start(client: Client, deadline: Duration) -> Feed {
        let (ctl, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            routes: Mutex::new(HashMap::new()),
            ids: AtomicU64::new(0),
            ctl,
        });
        tokio::spawn(run(client, deadline, Arc::downgrade(&shared), rx));
        Feed(shared)
    }

    pub fn listen(&self, channel: &str) -> Listening {
        let (tx, rx) = mpsc::channel(QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let id = self.0.ids.fetch_add(1, Ordering::Relaxed);
        let route = Route {
            id,
            tx,
            overflowed: overflowed.clone(),
        };
        self.0.routes.lock().insert(channel.to_string(), route);
        let _ = self.0.ctl.send(Ctl::Subscribe(channel.to_string()));
        Listening {
            rx,
            overflowed,
            channel: channel.to_string(),
            id,
            feed: self.0.clone(),
        }
    }
}

impl Shared {
    fn deliver(&self, channel: &str, event: Event) {
        let routes = self.routes.lock();
        let Some(route) = routes.get(channel) else {
            return;
        };
        // Never wait here: a slow instance must not hold up every other one's messages.
        if route.tx.try_send(event).is_err() {
            route.overflowed.store(true, Ordering::Release);
        }
    }

    fn channels(&self) -> Vec<String> {
        self.routes.lock().keys().cloned().collect()
    }
}

/// Connects, subscribes what is routed, relays; again after any failure, until the hub is gone.
async fn run(
    client: Client,
    deadline: Duration,
    shared: std::sync::Weak<Shared>,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        let Some(s) = shared.upgrade() else { return };
        drop(s);
        match session(&client, deadline, &shared, &mut ctl).await {
            Ok(()) => return,
            Err(why) => {
                debug!(%why, "redis feed lost; subscribing again");
                sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// One connection's life. `Ok` when the hub is gone.
async fn session(
    client: &Client,
    deadline: Duration,
    shared: &std::sync::Weak<Shared>,
    ctl: &mut mpsc::UnboundedReceiver<Ctl>,
) -> Result<(), String> {
    let pubsub = timeout(deadline, client.get_async_pubsub())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (mut sink, mut stream) = pubsub.split();
    let Some(s) = shared.upgrade() else {
        return Ok(());
    };
    let channels = s.channels();
    if !channels.is_empty() {
        timeout(deadline, sink.subscribe(&channels))
            .await
            .map_err(|_| "subscribe timed out".to_string())?
            .map_err(|e| e.to_string())?;
    }
    for c in &channels {
        s.deliver(c, Event::Subscribed);
    }
    drop(s);
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else {
                    warn!("redis feed disconnected");
                    return Err("disconnected".into());
                };
                let Some(s) = shared.upgrade() else { return Ok(()) };
                let payload = Bytes::copy_from_slice(msg.get_payload_bytes());
                s.deliver(msg.get_channel_name(), Event::Message(payload));
            }
            c = ctl.recv() => {
                let Some(c) = c else { return Ok(()) };
                let Some(s) = shared.upgrade() else { return Ok(()) };
                match c {
                    Ctl::Subscribe(channel) => {
                        timeout(deadline, sink.subscribe(&channel))
                            .await
                            .map_err(|_| "subscribe timed out".to_string())?
                            .map_err(|e| e.to_string())?;
                        s.deliver(&channel, Event::Subscribed);
                    }
                    Ctl::Unsubscribe(channel) => {
                        if !s.routes.lock().contains_key(&channel) {
                            timeout(deadline, sink.unsubscribe(&channel))
                                .await
                                .map_err(|_| "unsubscribe timed out".to_string())?
                                .map_err(|e| e.to_string())?;
                        }
                    }
                }
            }
            _ = ping.tick() => {
                timeout(deadline, sink.ping::<redis::Value>())
                    .await
                    .map_err(|_| "ping timed out".to_string())?
                    .map_err(|e| e.to_string())?;
            }
        }
    }
}
