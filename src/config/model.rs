//! The validated config: the types the rest of the gateway reads. Immutable once built, and
//! built only by `validate/`, so no other code has to re-check a value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::template::PathTemplate;

pub struct Config {
    /// The file it came from, for messages.
    pub source: Arc<str>,
    pub listen: SocketAddr,
    pub threads: usize,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// In file order.
    pub streams: Vec<Arc<StreamSpec>>,
    pub proxy: Option<Arc<Upstream>>,
    pub demo: Option<Demo>,
    pub limits: Limits,
    /// How long a shutdown may take once streams were told to reconnect.
    pub shutdown_grace: Duration,
    /// Where a new process started with `--upgrade` receives the listening sockets; `None` is
    /// the default, in a private runtime directory chosen at start (`app::upgrade_socket`).
    pub upgrade_sock: Option<std::path::PathBuf>,
    pub admin: Admin,
    /// Certificate and key (PEM) for `listen`; HTTP/2 is offered by ALPN.
    pub tls: Option<Tls>,
    pub forwarding: Forwarding,
    /// Several gateways sharing pollers, event ids and history through Redis; `None` keeps every
    /// stream in this process.
    pub cluster: Option<Arc<Cluster>>,
    /// Where the client listener serves the browser client (`clients/js/`); `None`: it does not,
    /// and the path is proxied like any other.
    pub client_script: Option<String>,
}

/// The `cluster:` section: how this gateway joins the others on one Redis.
#[derive(Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `redis://` or `rediss://` (TLS); may carry a password, so never printed whole.
    pub redis: url::Url,
    /// Starts every key and channel name, so clusters sharing one Redis stay apart.
    pub prefix: String,
    /// How `/streams` and logs name this gateway.
    pub node_id: String,
    /// Keys the hash that names an instance in Redis; required when a stream forwards headers,
    /// whose values are credentials.
    pub key_secret: Option<String>,
    /// How long a lease outlives its holder's last renewal; `None`: each stream's `interval`,
    /// clamped to 1s..10s.
    pub lease_ttl: Option<Duration>,
    /// Per Redis command: a Redis that stops answering (paused, partitioned) keeps its TCP
    /// connection open, so only a deadline notices.
    pub timeout: Duration,
    pub on_redis_down: OnRedisDown,
    /// How long an idle instance's epoch, document and history stay in Redis.
    pub history_ttl: Duration,
}

impl Cluster {
    /// The lease ttl for a stream polled every `interval`.
    pub fn lease_ttl(&self, interval: Duration) -> Duration {
        self.lease_ttl
            .unwrap_or_else(|| interval.clamp(Duration::from_secs(1), Duration::from_secs(10)))
    }

    /// The Redis URL for logs: its password replaced.
    pub fn shown_redis(&self) -> String {
        let mut url = self.redis.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("redacted"));
        }
        url.to_string()
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("redis", &self.shown_redis())
            .field("prefix", &self.prefix)
            .field("node_id", &self.node_id)
            .field(
                "key_secret",
                &self.key_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("lease_ttl", &self.lease_ttl)
            .field("timeout", &self.timeout)
            .field("on_redis_down", &self.on_redis_down)
            .field("history_ttl", &self.history_ttl)
            .finish()
    }
}

/// What a gateway does while Redis does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnRedisDown {
    /// Each gateway polls for its own clients under an epoch of its own.
    Local,
    /// Nobody polls; clients keep their document and are told it is stale.
    Stale,
}

/// What proxied requests tell the upstream about the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarding {
    /// Keep the client's `X-Forwarded-*`, `Forwarded` and `X-Real-IP` (appending to
    /// `X-Forwarded-For`): only right behind a load balancer that sets them itself.
    pub trust: bool,
    /// Send the client's `Host` rather than the upstream's own.
    pub preserve_host: bool,
    /// How long a resolved proxy address is used before the name is looked up again.
    pub resolve_interval: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// The operator's listener: metrics, health, stream list, refresh.
#[derive(Clone, PartialEq, Eq)]
pub struct Admin {
    pub listen: SocketAddr,
    /// A bearer token every admin request must carry, when set.
    pub token: Option<String>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// SSE clients attached at once, over all streams.
    pub max_clients: usize,
    /// A client whose socket stays blocked this long is dropped.
    pub write_timeout: Duration,
    /// Client connections open at once, streaming or not. `None`: derived from the open-file
    /// limit at start-up (`edge::conns::auto_max_connections`).
    pub max_connections: Option<usize>,
    /// Client connections from one address; 0 is no limit.
    pub max_clients_per_ip: usize,
    /// How long a request head may take to arrive whole (with the TLS handshake, on a new
    /// connection): a slow head pins a connection and its buffer.
    pub head_timeout: Duration,
    /// How long a kept-alive connection (or an HTTP/2 one with no stream open) may wait for
    /// its next request.
    pub keepalive: Duration,
    /// TCP connect and TLS handshake to the proxy upstream, together.
    pub proxy_connect_timeout: Duration,
    /// The longest the proxy upstream may stay silent while a request is sent or answered.
    pub proxy_timeout: Duration,
    /// The largest request body proxied; a larger one gets 413.
    pub proxy_max_body: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demo {
    pub listen: SocketAddr,
    pub page: bool,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    /// The base URL: polls and proxied requests append their path to its path.
    pub url: url::Url,
    /// Resolved when the config loads, not per request: pingora's `HttpPeer::new`
    /// panics on a host name it cannot resolve. The proxy looks the name up again later
    /// (`proxy_resolve_interval`, in edge/proxy.rs); polls resolve per connection (reqwest).
    pub addr: SocketAddr,
    pub tls: bool,
    /// The host name, for SNI.
    pub host: String,
    /// Sent with every poll, never with proxied requests.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Upstream {
    /// The URL for `check` and logs: a password in it is a credential like a header value.
    pub fn shown_url(&self) -> String {
        let mut url = self.url.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("redacted"));
        }
        url.to_string()
    }
}

impl fmt::Debug for Upstream {
    /// Header values are credentials: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("url", &self.shown_url())
            .field("addr", &self.addr)
            .field("headers", &names)
            .finish()
    }
}

/// Compared whole by a reload (`ops::reload::keep_unchanged`): an equal spec keeps its running
/// instances, so every field takes part in the derived `==`.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamSpec {
    pub path: PathTemplate,
    pub poll: PathTemplate,
    pub upstream: Arc<Upstream>,
    pub interval: Duration,
    pub timeout: Duration,
    pub heartbeat: Duration,
    pub retry: Duration,
    pub backoff_max: Duration,
    pub diff: DiffMode,
    pub replay: usize,
    pub replay_bytes: usize,
    pub idle: Idle,
    pub ignore: Vec<String>,
    /// Arrays diffed by key (RFC 6901 pointer, `*` for any one segment → the member naming an
    /// element), so an insert, removal or move is one op; see `codec::keyed`.
    pub array_keys: ArrayKeys,
    pub forward_headers: Vec<HeaderName>,
    pub forward_query: bool,
    pub max_instances: usize,
    pub max_body: usize,
    /// A full-match pattern for every parameter of `path`.
    pub params: BTreeMap<String, Pattern>,
    /// The stream's own `cors`, or the global one.
    pub cors: Option<Cors>,
    /// Follow a redirect to the same scheme, host and port; never to another origin, which would
    /// receive the upstream's headers and the forwarded credentials.
    pub follow_redirects: bool,
    /// At most one poll per this long for `POST /streams/refresh`, per instance (default a
    /// quarter of `interval`), so a webhook storm can't hammer the upstream.
    pub refresh_limit: Duration,
    /// Shared through the `cluster:` Redis when there is one; `cluster: false` keeps the
    /// stream in each process.
    pub cluster: bool,
}

/// `array_keys`: RFC 6901 pointer (`*` for any one segment) → the member that identifies each
/// element of the array there.
pub type ArrayKeys = BTreeMap<String, String>;

/// Which other origins' pages may subscribe (WHATWG Fetch, CORS protocol).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    /// Exact origins like `https://app.example.com`, or `*` for any.
    pub origins: Vec<String>,
    /// Whether `new EventSource(url, { withCredentials: true })` may send cookies.
    pub credentials: bool,
}

impl StreamSpec {
    /// A stream whose instance key can never vary (no path parameters, no forwarded query, no
    /// forwarded headers) has exactly one instance, whatever `max_instances` says.
    pub fn is_single_instance(&self) -> bool {
        single_instance(&self.path, self.forward_query, &self.forward_headers)
    }
}

/// `StreamSpec::is_single_instance` for validation, which decides it before the spec exists.
pub(super) fn single_instance(
    path: &PathTemplate,
    forward_query: bool,
    forward_headers: &[HeaderName],
) -> bool {
    !path.is_template() && !forward_query && forward_headers.is_empty()
}

/// A full-match regex for a path parameter, equal to another when their sources are: `Regex`
/// has no equality of its own, and a reload compares specs to keep the unchanged ones.
#[derive(Clone)]
pub struct Pattern(regex::Regex);

impl Pattern {
    pub fn new(source: &str) -> Result<Pattern, regex::Error> {
        regex::Regex::new(source).map(Pattern)
    }
}

impl std::ops::Deref for Pattern {
    type Target = regex::Regex;
    fn deref(&self) -> &regex::Regex {
        &self.0
    }
}

impl PartialEq for Pattern {
    fn eq(&self, o: &Pattern) -> bool {
        self.0.as_str() == o.0.as_str()
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_str(), f)
    }
}

/// How changes are encoded: RFC 6902, RFC 7396, or the whole document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiffMode {
    JsonPatch,
    MergePatch,
    Snapshot,
}

impl DiffMode {
    /// The name gateway.yaml and `?format=` use; serde derives the parsing side, and a test
    /// holds the two together.
    pub fn as_str(self) -> &'static str {
        match self {
            DiffMode::JsonPatch => "json-patch",
            DiffMode::MergePatch => "merge-patch",
            DiffMode::Snapshot => "snapshot",
        }
    }

    /// A `?format=` value, by the names gateway.yaml takes.
    pub fn parse(s: &str) -> Option<DiffMode> {
        use serde::de::value::{Error, StrDeserializer};
        DiffMode::deserialize(StrDeserializer::<Error>::new(s)).ok()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    After(Duration),
    Never,
}
