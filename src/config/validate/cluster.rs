//! `cluster:`: how this gateway joins the others on one Redis. Checked against the streams it
//! shares, since whether a lease outlives its command timeouts and whether instance names need
//! a secret depend on them.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use super::super::defaults::cluster as cd;
use super::super::file::ClusterFile;
use super::super::{Cluster, StreamSpec};
use super::env::expand;
use super::errors::{capped, Errors};

/// The prefix starts every key and the node id every log line's `node`: both stay short.
const MAX_NAME: usize = 64;
/// 128 bits: beyond guessing, and enough for HMAC-SHA256 (RFC 2104 §3).
const MIN_SECRET: usize = 16;
const LEASE_TTL: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(60);
/// A Redis that takes longer than this to answer one command is down, not slow.
const MAX_TIMEOUT: Duration = Duration::from_secs(10);
/// Shorter, a client reconnecting after a brief network loss would find no history.
const MIN_HISTORY_TTL: Duration = Duration::from_secs(60);
/// A lease outlives this many command timeouts, so a renewal that timed out is retried before
/// the lease runs out (renewals go every third of it, from when the last one was sent). Two,
/// not three, so the defaults (a 1s lease for a 1s interval, a 500ms timeout) go together.
const TIMEOUTS_PER_LEASE: u32 = 2;

/// `None` when the section is unusable (its URL); every problem is reported either way.
/// `default_node_id` is called only when `node_id` is unset.
pub(super) fn cluster(
    errs: &mut Errors,
    c: &ClusterFile,
    streams: &[Arc<StreamSpec>],
    env: &dyn Fn(&str) -> Option<String>,
    default_node_id: &dyn Fn() -> String,
) -> Option<Cluster> {
    let redis = redis(errs, &c.redis, env);
    let prefix = c.prefix.clone().unwrap_or_else(|| cd::PREFIX.to_string());
    name(errs, "cluster.prefix", &prefix);
    if prefix.contains(['{', '}']) {
        errs.add(
            "cluster.prefix",
            "must not contain `{` or `}`: Redis reads them as a hash tag, and the gateway places \
             its own in every key",
        );
    }
    let node_id = match &c.node_id {
        Some(n) => expand(errs, "cluster.node_id", n, env),
        None => Some(default_node_id()),
    };
    if let Some(n) = &node_id {
        name(errs, "cluster.node_id", n);
    }
    let key_secret = key_secret(errs, c, streams, env);
    let timeout = c.timeout.unwrap_or(cd::TIMEOUT);
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        errs.add(
            "cluster.timeout",
            "more than zero and at most 10s: a Redis that takes longer to answer is down",
        );
    }
    if let Some(ttl) = c.lease_ttl.filter(|t| !LEASE_TTL.contains(t)) {
        errs.add(
            "cluster.lease_ttl",
            format!("{} is not between 1s and 60s", human(ttl)),
        );
    }
    let history_ttl = capped(
        errs,
        "cluster.history_ttl",
        c.history_ttl.unwrap_or(cd::HISTORY_TTL),
    );
    if history_ttl < MIN_HISTORY_TTL {
        errs.add(
            "cluster.history_ttl",
            "at least 1m: a client that reconnects after a short outage must still find its history",
        );
    }
    let cluster = Cluster {
        redis: redis?,
        prefix,
        node_id: node_id?,
        key_secret,
        lease_ttl: c.lease_ttl,
        timeout,
        on_redis_down: c.on_redis_down.unwrap_or(cd::ON_REDIS_DOWN),
        history_ttl,
    };
    leases(errs, &cluster, streams);
    Some(cluster)
}

/// The URL as Url parses it. It may hold a password, so no message quotes it: the line and
/// what is wrong must do.
fn redis(errs: &mut Errors, raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<url::Url> {
    let key = "cluster.redis";
    let raw = expand(errs, key, raw, env)?;
    let url = match url::Url::parse(&raw) {
        Ok(u) => u,
        Err(e) => {
            errs.add(key, format!("not a URL like redis://127.0.0.1:6379/0: {e}"));
            return None;
        }
    };
    if !matches!(url.scheme(), "redis" | "rediss") {
        errs.add(
            key,
            format!("scheme `{}` is not redis or rediss (TLS)", url.scheme()),
        );
        return None;
    }
    if url.host_str().is_none_or(str::is_empty) {
        errs.add(key, "has no host");
        return None;
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u16>().is_err() {
        errs.add(
            key,
            format!("the path `/{db}` is not a database number like /0"),
        );
        return None;
    }
    Some(url)
}

/// A name that goes into Redis keys and log lines as it is.
fn name(errs: &mut Errors, key: &str, value: &str) {
    if value.is_empty() {
        errs.add(key, "must not be empty");
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errs.add(
            key,
            format!("{value:?} holds a space or a control character"),
        );
    } else if value.len() > MAX_NAME {
        errs.add(
            key,
            format!("at most {MAX_NAME} bytes (it has {})", value.len()),
        );
    }
}

/// The secret, expanded; required once a shared stream forwards headers, whose values are
/// credentials: unkeyed, anyone who reads Redis could test guesses against the instance names.
fn key_secret(
    errs: &mut Errors,
    c: &ClusterFile,
    streams: &[Arc<StreamSpec>],
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let key = "cluster.key_secret";
    let Some(raw) = &c.key_secret else {
        let forwarding = streams
            .iter()
            .find(|s| s.cluster && !s.forward_headers.is_empty());
        if let Some(s) = forwarding {
            let names: Vec<&str> = s.forward_headers.iter().map(|h| h.as_str()).collect();
            errs.add(
                key,
                format!(
                    "required: stream `{}` forwards [{}], whose values are credentials; Redis \
                     names its instances by a hash keyed with this secret (e.g. \
                     \"${{SSE_CLUSTER_SECRET}}\", at least {MIN_SECRET} bytes), or set \
                     `cluster: false` on the stream",
                    s.path.as_str(),
                    names.join(", ")
                ),
            );
        }
        return None;
    };
    let secret = expand(errs, key, raw, env)?;
    if secret.len() < MIN_SECRET {
        errs.add(
            key,
            format!(
                "at least {MIN_SECRET} bytes (it has {}): it keys the hash that names instances",
                secret.len()
            ),
        );
    }
    Some(secret)
}

/// A lease must outlive a few command timeouts: the holder renews it through commands that
/// may each take `timeout`, and a lease that runs out under a slow renewal changes hands.
fn leases(errs: &mut Errors, c: &Cluster, streams: &[Arc<StreamSpec>]) {
    // Saturating: a `timeout` of u64::MAX seconds is refused here, not a panic at load.
    let least = c.timeout.saturating_mul(TIMEOUTS_PER_LEASE);
    if let Some(ttl) = c.lease_ttl {
        if ttl < least {
            errs.add(
                "cluster.lease_ttl",
                format!(
                    "{} is shorter than {TIMEOUTS_PER_LEASE} × timeout ({}): a lease must outlive \
                     a few Redis command timeouts, or one slow renewal loses it",
                    human(ttl),
                    human(least)
                ),
            );
        }
        return;
    }
    let shortest = streams
        .iter()
        .filter(|s| s.cluster)
        .map(|s| (c.lease_ttl(s.interval), s))
        .min_by_key(|(ttl, _)| *ttl);
    let Some((ttl, s)) = shortest.filter(|(ttl, _)| *ttl < least) else {
        return;
    };
    let most = Duration::from_millis((ttl / TIMEOUTS_PER_LEASE).as_millis() as u64);
    errs.add(
        "cluster.timeout",
        format!(
            "{TIMEOUTS_PER_LEASE} × {} = {} outlives the {} lease of stream `{}` (its interval \
             {}, within 1s..10s): a lease must outlive a few Redis command timeouts; set \
             `lease_ttl` to at least {}, or `timeout` to at most {}",
            human(c.timeout),
            human(least),
            human(ttl),
            s.path.as_str(),
            human(s.interval),
            human(least),
            human(most)
        ),
    );
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
