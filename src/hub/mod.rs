//! The hub: where pollers publish and sessions subscribe.
//!
//! Sessions reach it only through `Arc<dyn Hub>`, so cluster mode can add a Redis-backed hub
//! beside `local.rs` and leave `edge/` alone.

mod local;
pub(crate) mod topic;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::config::{DiffMode, StreamSpec};
use crate::routes::Routes;

pub use local::LocalHub;
pub use topic::Subscription;

/// Where pollers publish and sessions subscribe: `LocalHub` now, a Redis hub in cluster mode.
#[async_trait::async_trait]
pub trait Hub: Send + Sync + 'static {
    /// Joins a stream instance, starting its poller for the first client, and waits (up to the
    /// stream's `timeout`) for its first poll so the client starts with a document.
    /// Dropping the `Subscription` leaves; there is no unsubscribe to forget.
    async fn subscribe(&self, request: SubscribeRequest) -> Result<Subscription, HubError>;

    /// Applies a validated config: starts `idle: never` pollers, stops those of removed streams.
    fn reconcile(&self, routes: &Routes);

    /// What runs now, for the admin listener and the metrics.
    fn instances(&self) -> Vec<InstanceInfo>;

    /// Polls every instance of `stream` that polls `target` (whatever its credentials), for
    /// upstreams that can call a webhook when their data changes: now, or when its refresh window
    /// opens, so a flood of refreshes can't outpace the interval or cut a backoff short.
    fn refresh(&self, stream: &str, target: &str) -> Refreshed;
}

/// What a refresh did, counted in instances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// Poll at once.
    pub now: usize,
    /// Poll when their window opens: a quarter interval after their last early poll, or at the
    /// end of a backoff or `Retry-After`.
    pub deferred: usize,
}

/// One stream instance as the admin listener shows it. Never holds credentials.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InstanceInfo {
    pub stream: String,
    pub instance: String,
    pub clients: usize,
    /// The id of the current document's event.
    pub event_id: Option<String>,
    /// RFC 3339 time of the last poll, and what it found.
    pub last_poll: Option<String>,
    pub last_result: Option<&'static str>,
    pub upstream_healthy: bool,
}

/// What a session asks the hub for.
pub struct SubscribeRequest {
    pub spec: Arc<StreamSpec>,
    pub key: StreamKey,
    /// The encoding this client asked for; `None` follows the stream's `diff`, even across a
    /// reload that changes it.
    pub format: Option<DiffMode>,
    /// The `Last-Event-ID` the client resumes from, if any and well formed.
    pub resume: Option<EventId>,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The upstream refused the first poll with these credentials (401, 403, 404): the client gets
    /// the same status, so a browser stops retrying.
    #[error("upstream answered {0} for this stream")]
    Denied(u16),
    /// `max_instances` of this stream are already polling.
    #[error("stream `{stream}` already has its maximum of {max} instances")]
    TooManyInstances { stream: String, max: usize },
}

/// One stream instance: the stream, the upstream target it polls, and the forwarded header values.
///
/// Clients share a poller only when all three are equal, so clients whose credentials differ
/// never see each other's data.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    /// The stream's `path` template, as written in the config.
    pub stream: Arc<str>,
    /// Path and query polled on the upstream.
    pub target: String,
    /// Forwarded request headers, in the stream's `forward_headers` order.
    pub forwarded: Vec<(HeaderName, HeaderValue)>,
}

impl fmt::Display for StreamKey {
    /// Never prints header values: they are credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.target)?;
        if !self.forwarded.is_empty() {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.forwarded.hash(&mut h);
            write!(f, " [credentials #{:08x}]", h.finish() as u32)?;
        }
        Ok(())
    }
}

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An SSE event id: `<epoch>-<seq>`.
///
/// The epoch is random per stream instance, so an id from before a restart, from another stream
/// or from another instance can never be mistaken for a current one; the sequence increases by one
/// per change. Neither part can hold CR, LF or NUL (WHATWG HTML §9.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventId {
    pub epoch: u64,
    pub seq: u64,
}

impl EventId {
    pub fn parse(s: &str) -> Option<EventId> {
        let (epoch, seq) = s.trim().split_once('-')?;
        Some(EventId {
            epoch: u64::from_str_radix(epoch, 16).ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012x}-{}", self.epoch, self.seq)
    }
}

/// What a session writes next.
pub enum Delivery {
    /// Bytes for the socket: an event, a status event or a heartbeat, shared by every client.
    Send(Bytes),
    /// A last event, after which the stream ends (stream removed, access revoked).
    Close(Bytes),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_and_refuse_garbage() {
        let id = EventId {
            epoch: 0xabc,
            seq: 42,
        };
        assert_eq!(id.to_string(), "000000000abc-42");
        assert_eq!(EventId::parse(&id.to_string()), Some(id));
        for bad in ["", "42", "zz-1", "1-", "-1", "1-x", "1-2-3"] {
            assert_eq!(EventId::parse(bad), None, "{bad:?}");
        }
    }
}
