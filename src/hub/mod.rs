//! The hub: stream instances and their pollers, between the client side above and the
//! upstream and codecs below. It owns every poller's life; pollers never count clients.
//!
//! Sessions reach it only through `Arc<dyn Hub>`. A poller fetches through `Source` and writes
//! through `Publish`: the seam where cluster mode puts a Redis publisher, so that one replica
//! polls an instance and every replica's sessions read its frames from a local `Topic`.

mod cluster;
#[cfg(test)]
mod fixtures;
mod gauges;
mod instance;
mod local;
mod poller;
mod publish;
mod savings;
mod schedule;
#[cfg(test)]
mod script;
mod source;
mod topic;

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::codec::checksum;
use crate::config::{DiffMode, StreamSpec};

pub(crate) use gauges::Gauges;
pub use local::{HubStartError, LocalHub};
pub use savings::ByteCounts;
pub use topic::Subscription;
/// For the edge's session tests, which run a real subscription over an in-memory wire, and
/// routing's, which check where a key's target lands.
#[cfg(test)]
pub(crate) use {
    source::target_url,
    topic::{Frame, Topic},
};

/// Where pollers publish and sessions subscribe: `LocalHub` now, a Redis hub in cluster mode.
#[async_trait::async_trait]
pub trait Hub: Send + Sync + 'static {
    /// Joins a stream instance, starting its poller for the first client, and waits (up to the
    /// stream's `timeout`) for its first poll so the client starts with a document.
    /// Dropping the `Subscription` leaves; there is no unsubscribe to forget.
    async fn subscribe(&self, request: SubscribeRequest) -> Result<Subscription, HubError>;

    /// Applies a validated config's streams: starts `idle: never` pollers, retunes running
    /// instances, closes those of removed or re-keyed streams.
    fn reconcile(&self, streams: &[Arc<StreamSpec>]);

    /// What runs now, for the admin listener and the metrics.
    fn instances(&self) -> Vec<InstanceInfo>;

    /// Follows the events of the running instance named `instance` (its `/streams` name),
    /// starting from its current document, without counting as its client: the console's tail.
    fn tail(&self, instance: &str) -> Option<Subscription>;

    /// Polls every instance of `stream` that polls `target` (whatever its credentials), for
    /// upstreams that can call a webhook when their data changes: now, or when its refresh window
    /// opens, so a flood of refreshes can't outpace the interval or cut a backoff short.
    fn refresh(&self, stream: &str, target: &str) -> Refreshed;

    /// In cluster mode, a line for `/readyz`: whether Redis answers and what happens if not.
    fn cluster_state(&self) -> Option<String>;

    /// The gateway is stopping: in cluster mode, hand every lease this gateway holds to the
    /// others now rather than when it expires.
    async fn shut_down(&self);
}

/// What a refresh did, counted in instances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// Poll at once.
    pub now: usize,
    /// Poll when their window opens: `refresh_limit` after their last early poll, or at the
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
    /// In cluster mode: who polls this instance, and what this gateway does for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
    /// What sharing its polls saved, as this gateway counts it.
    pub bytes: ByteCounts,
}

/// An instance's place in the cluster, as `/streams` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClusterInfo {
    /// This gateway's `node_id`.
    pub node: String,
    /// `holder` (this gateway polls it for the cluster), `follower` (another does), `local`
    /// (Redis is down: this gateway polls for its own clients), `stale` (Redis is down: nobody
    /// polls; clients keep the last document).
    pub role: &'static str,
    /// The node that holds the lease, when known.
    pub holder: Option<String>,
    /// The instance's name in Redis (a keyed hash of its stream, target and forwarded
    /// headers): the same on every gateway, unlike `instance` for one that forwards headers.
    pub key: String,
}

/// What a session asks the hub for.
pub struct SubscribeRequest {
    pub spec: Arc<StreamSpec>,
    pub key: StreamKey,
    /// The encoding this client asked for; `None` follows the stream's `diff`, even across a
    /// reload that changes it.
    pub format: Option<DiffMode>,
    /// The `Last-Event-ID` the client resumes from, if any and well formed.
    pub resume: Option<LastEventId>,
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

impl StreamKey {
    /// The key of a stream's only instance when it has no parameters, forwards no query and no
    /// header: its poll template rendered as is. The same key a request without any of those
    /// routes to, so that request joins the instance `idle: never` started.
    pub fn plain(spec: &StreamSpec) -> StreamKey {
        StreamKey {
            stream: Arc::from(spec.path.as_str()),
            target: spec.poll.render(&[]),
            forwarded: Vec::new(),
        }
    }
}

impl fmt::Debug for StreamKey {
    /// Never prints forwarded values or query values: they are credentials, or personal data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.forwarded.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("StreamKey")
            .field("stream", &self.stream)
            .field("target", &redact_query(&self.target))
            .field("forwarded", &names)
            .finish()
    }
}

/// Names instances in logs and `/streams` without revealing what they forward: query values are
/// hidden, and forwarded headers show as a keyed hash (std's SipHash-1-3, 64 bits, under a key
/// drawn at random once per hub), so a tag can't confirm a guessed credential offline, nor follow
/// one across restarts. A cluster hub, whose replicas must agree on tags, would take its key from
/// the config instead.
pub struct Fingerprint(RandomState);

impl Fingerprint {
    pub fn random() -> Fingerprint {
        Fingerprint(RandomState::new())
    }

    /// `/search?q=…&page=…`, then ` [credentials #<16 hex digits>]` when headers are forwarded.
    pub fn label(&self, key: &StreamKey) -> String {
        let mut out = redact_query(&key.target);
        if !key.forwarded.is_empty() {
            let tag = self.0.hash_one(&key.forwarded);
            out.push_str(&format!(" [credentials #{tag:016x}]"));
        }
        out
    }
}

/// `path?a=1&b` → `path?a=…&b`: parameter names stay, so an operator sees what varies.
fn redact_query(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}=…"),
            None => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// Where an event stands in its instance's history: `<epoch>-<seq>`, the first two parts of
/// its id.
///
/// The epoch is random per stream instance, so an id from before a restart, from another stream
/// or from another instance can never be mistaken for a current one; the sequence increases by one
/// per change. Neither part can hold CR, LF or NUL (WHATWG HTML §9.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventId {
    pub epoch: u64,
    pub seq: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012x}-{}", self.epoch, self.seq)
    }
}

/// An event's whole id, `<epoch>-<seq>-<checksum>`: where it stands, and the checksum of the
/// document it leaves a client with (`codec::checksum`). A client that resumes with one gets
/// the events it missed only if both match what this instance sent, so a client whose copy went
/// wrong gets a snapshot instead of patches for a document it does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastEventId {
    pub at: EventId,
    pub checksum: u64,
}

impl LastEventId {
    /// Reads an id of this form; any other (an `<epoch>-<seq>` id from before checksums, a
    /// foreign id) is `None`, and its client starts from a snapshot.
    pub fn parse(s: &str) -> Option<LastEventId> {
        let mut parts = s.trim().split('-');
        let (epoch, seq, sum) = (parts.next()?, parts.next()?, parts.next()?);
        let hex = |t: &str, len: usize| {
            (t.len() == len && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                .then(|| u64::from_str_radix(t, 16).ok())
                .flatten()
        };
        if parts.next().is_some() || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(LastEventId {
            at: EventId {
                epoch: hex(epoch, 12)?,
                seq: seq.parse().ok()?,
            },
            checksum: hex(sum, 16)?,
        })
    }
}

impl fmt::Display for LastEventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.at, checksum::hex(self.checksum))
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
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_and_refuse_garbage() {
        let id = LastEventId {
            at: EventId {
                epoch: 0xabc,
                seq: 42,
            },
            checksum: 0x462e36fe2242ede9,
        };
        assert_eq!(id.to_string(), "000000000abc-42-462e36fe2242ede9");
        assert_eq!(LastEventId::parse(&id.to_string()), Some(id));
        assert_eq!(
            LastEventId::parse(" 000000000abc-42-462e36fe2242ede9\n"),
            Some(id)
        );
        for bad in [
            "",
            "42",
            "000000000abc-42",
            "zz-1-462e36fe2242ede9",
            "000000000abc--462e36fe2242ede9",
            "000000000abc-+4-462e36fe2242ede9",
            "000000000abc-42-462E36FE2242EDE9",
            "000000000abc-42-462e36fe2242ede",
            "000000000abc-42-462e36fe2242ede9-1",
            "abc-42-462e36fe2242ede9",
        ] {
            assert_eq!(LastEventId::parse(bad), None, "{bad:?}");
        }
    }

    fn key(target: &str, auth: Option<&'static str>) -> StreamKey {
        StreamKey {
            stream: Arc::from("/s"),
            target: target.into(),
            forwarded: auth
                .map(|v| (http::header::AUTHORIZATION, HeaderValue::from_static(v)))
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn labels_hide_query_values_and_credentials() {
        let fp = Fingerprint::random();
        let k = key("/search?q=secret&page=2&flag", Some("Bearer secret"));
        let label = fp.label(&k);
        assert!(
            label.starts_with("/search?q=…&page=…&flag [credentials #"),
            "{label}"
        );
        assert!(
            !label.contains("secret") && !format!("{k:?}").contains("secret"),
            "{label}"
        );
        let tag = label.rsplit('#').next().unwrap().trim_end_matches(']');
        assert_eq!(tag.len(), 16, "64 bits: {label}");
        assert_eq!(fp.label(&key("/plain", None)), "/plain");
    }

    #[test]
    fn tags_tell_credentials_apart_and_differ_between_keys() {
        let fp = Fingerprint::random();
        let a = fp.label(&key("/o", Some("Bearer a")));
        assert_eq!(a, fp.label(&key("/o", Some("Bearer a"))));
        assert_ne!(a, fp.label(&key("/o", Some("Bearer b"))));
        assert_ne!(
            a,
            Fingerprint::random().label(&key("/o", Some("Bearer a"))),
            "keyed per hub"
        );
    }
}
