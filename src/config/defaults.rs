//! Every default of gateway.yaml, written once: validation fills each unset key from here, and
//! a test holds the README's configuration reference to these values.

use std::time::Duration;

use super::{DiffMode, Forwarding, Idle, Limits, OnRedisDown};

pub const LISTEN: &str = "0.0.0.0:8080";
/// Loopback: off it, the admin listener needs a token.
pub const ADMIN_LISTEN: &str = "127.0.0.1:9090";
pub const DEMO_LISTEN: &str = "127.0.0.1:3000";
pub const DEMO_PAGE: bool = true;
/// Under `/_gateway/`, a prefix no API of ours uses, so turning it on shadows no proxied path.
pub const CLIENT_SCRIPT: &str = "/_gateway/client.js";
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The longest duration any key accepts: `1y` as humantime reads it (365.25 days). Far beyond
/// any useful interval or timeout, and small enough that `Instant + d` and the jitter multiples
/// (`retry * 5`) can never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(31_557_600);

pub const LIMITS: Limits = Limits {
    max_clients: 50_000,
    write_timeout: Duration::from_secs(10),
    // From the open-file limit at start-up (`edge::conns::auto_max_connections`).
    max_connections: None,
    max_clients_per_ip: 0,
    // nginx's `client_header_timeout` is 60 s; a head is a few hundred bytes, so 10 s is
    // ample even on a poor mobile link.
    head_timeout: Duration::from_secs(10),
    // Browsers keep an idle connection 60 s or less (nginx's `keepalive_timeout` is 75 s).
    keepalive: Duration::from_secs(60),
    // Shorter than nginx's 60 s: three SYN retransmissions fit, and a client learns of a dead
    // upstream before it gives up itself.
    proxy_connect_timeout: Duration::from_secs(10),
    // nginx's `proxy_read_timeout` and `proxy_send_timeout`.
    proxy_timeout: Duration::from_secs(60),
    // nginx's `client_max_body_size`.
    proxy_max_body: 1 << 20,
};

pub const FORWARDING: Forwarding = Forwarding {
    trust: false,
    preserve_host: false,
    resolve_interval: Duration::from_secs(30),
};

/// What a stream gets for each key neither it nor `defaults` sets.
pub mod stream {
    use super::*;

    pub const INTERVAL: Duration = Duration::from_secs(2);
    pub const TIMEOUT: Duration = Duration::from_secs(5);
    pub const HEARTBEAT: Duration = Duration::from_secs(15);
    pub const RETRY: Duration = Duration::from_secs(3);
    pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
    pub const DIFF: DiffMode = DiffMode::JsonPatch;
    pub const REPLAY: usize = 256;
    pub const REPLAY_BYTES: usize = 4 << 20;
    pub const IDLE: Idle = Idle::After(Duration::from_secs(30));
    pub const FORWARD_QUERY: bool = false;
    pub const MAX_INSTANCES: usize = 1000;
    pub const MAX_BODY: usize = 8 << 20;
    pub const FOLLOW_REDIRECTS: bool = false;
    /// Shared through the `cluster:` Redis whenever there is one: one poller for the cluster is
    /// the point of it, and a stream opts out rather than in.
    pub const CLUSTER: bool = true;
    /// A parameter without a pattern of its own: RFC 3986 unreserved characters.
    pub const PARAM: &str = "^[A-Za-z0-9._~-]+$";

    /// A quarter of the interval: a webhook storm can't hammer the upstream, and a refresh
    /// still comes well before the next regular poll.
    pub fn refresh_limit(interval: Duration) -> Duration {
        interval / 4
    }
}

/// The `cluster:` section's keys that have a default (`redis` has none; `lease_ttl`'s is each
/// stream's interval, `Cluster::lease_ttl`).
pub mod cluster {
    use super::*;

    pub const PREFIX: &str = "sse-gateway";
    /// Far below any lease, yet a loaded Redis on another host answers well within it.
    pub const TIMEOUT: Duration = Duration::from_millis(500);
    pub const ON_REDIS_DOWN: OnRedisDown = OnRedisDown::Local;
    /// A day: a browser tab left overnight still resumes without a snapshot.
    pub const HISTORY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
    /// The node id's host part when the host has no readable name.
    pub const HOST_FALLBACK: &str = "gateway";
}
