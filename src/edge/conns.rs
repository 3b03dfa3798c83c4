//! The connection count behind `limits.max_connections` and `limits.max_clients_per_ip`.
//!
//! A connection counts from the moment pingora's listener hands it to `Front::process_new`
//! (before the TLS handshake, which `Front` does itself) until it closes, whichever path serves
//! it: an [`Admitted`] guard lives as long as the connection does, in `Front::serve` or in the
//! task of a direct-path stream.
//!
//! Past a limit the connection is closed at once, before anything is read. An answer would have
//! to come before the request, so it could not tell an `EventSource` from anything else, and a
//! `503` ends a native `EventSource` for good (WHATWG HTML §9.2.3) while a connection closed
//! without an answer is a network error it retries after its reconnection time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pingora::protocols::Stream;
use tracing::warn;

use crate::config::Limits;
use crate::metrics::Metrics;

/// `limits.max_connections` when the config leaves it out, and the open-file limit allows it:
/// room for the default `max_clients` (50,000) on HTTP/1.1, one connection each, plus about a
/// third more for proxied requests and connections still sending their first head.
pub const DEFAULT_MAX_CONNECTIONS: usize = 65_536;

/// Files the process needs besides client connections: listeners, the runtimes' epoll and
/// event descriptors, the config watcher, and upstream connections (one per instance polling at
/// the same moment). Client connections stop this far below the open-file limit, so `accept`
/// never fails for want of a file while upstream polls still need one.
pub const RESERVED_FILES: u64 = 256;

/// The connection limit that fits `open_files` (the soft limit after start-up raised it):
/// [`DEFAULT_MAX_CONNECTIONS`], or fewer when the limit leaves less room.
pub fn auto_max_connections(open_files: u64) -> usize {
    let room = open_files.saturating_sub(RESERVED_FILES.min(open_files / 4));
    usize::try_from(room)
        .unwrap_or(usize::MAX)
        .clamp(1, DEFAULT_MAX_CONNECTIONS)
}

/// Open client connections, in all and per source address.
pub struct Conns {
    open: AtomicUsize,
    /// Only while `max_clients_per_ip` is set; an address leaves at its last connection, so the
    /// table never holds more entries than there are connections.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// `limits.max_connections` when the config leaves it out, fixed at start-up.
    auto_max: usize,
    metrics: Arc<Metrics>,
    warn: Throttle,
}

/// One client connection, counted until the last clone drops.
#[derive(Clone)]
pub struct Admitted {
    _held: Arc<Held>,
}

struct Held {
    conns: Arc<Conns>,
    /// The address counted in `per_ip`, if it was.
    ip: Option<IpAddr>,
}

impl Conns {
    pub fn new(auto_max: usize, metrics: Arc<Metrics>) -> Conns {
        Conns {
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            auto_max,
            metrics,
            warn: Throttle::new(Duration::from_secs(1)),
        }
    }

    /// Counts `stream` in, or `None` when a limit is reached (the caller drops it, closing it).
    pub fn admit(self: &Arc<Self>, stream: &Stream, limits: &Limits) -> Option<Admitted> {
        let per_ip = limits.max_clients_per_ip;
        let peer = || {
            let digest = stream.get_socket_digest()?;
            let addr = digest.peer_addr()?.as_inet()?.ip();
            Some(addr)
        };
        self.admit_from(if per_ip > 0 { peer() } else { None }, limits)
    }

    fn admit_from(self: &Arc<Self>, peer: Option<IpAddr>, limits: &Limits) -> Option<Admitted> {
        let max = limits.max_connections.unwrap_or(self.auto_max);
        if self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            self.refuse("max_connections", max);
            return None;
        }
        // Counted from here: dropping `held` gives the connection back.
        let mut held = Held {
            conns: self.clone(),
            ip: None,
        };
        self.metrics.connections.inc();
        let per_ip = limits.max_clients_per_ip;
        if let Some(ip) = peer.filter(|_| per_ip > 0) {
            // An IPv4 client on a dual-stack listener arrives as ::ffff:a.b.c.d.
            let ip = ip.to_canonical();
            let mut table = self.per_ip.lock();
            let n = table.entry(ip).or_insert(0);
            if *n >= per_ip {
                drop(table);
                self.refuse("max_clients_per_ip", per_ip);
                return None;
            }
            *n += 1;
            held.ip = Some(ip);
        }
        Some(Admitted {
            _held: Arc::new(held),
        })
    }

    /// A connection counted in past every limit, for tests of what holds one.
    #[cfg(test)]
    pub(crate) fn admit_any(self: &Arc<Self>) -> Admitted {
        let limits = tests::limits(usize::MAX, 0);
        self.admit_from(None, &limits).expect("no limit to reach")
    }

    fn refuse(&self, limit: &'static str, max: usize) {
        let refused = self.metrics.connections_refused.with_label_values(&[limit]);
        refused.inc();
        if self.warn.ready(Instant::now()) {
            warn!(
                limit,
                max,
                refused_total = refused.get(),
                "connection refused"
            );
        }
    }

    /// Addresses in the per-IP table now.
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.per_ip.lock().len()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let conns = &self.conns;
        conns.open.fetch_sub(1, Ordering::AcqRel);
        conns.metrics.connections.dec();
        if let Some(ip) = self.ip {
            let mut table = conns.per_ip.lock();
            if let Some(n) = table.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    table.remove(&ip);
                }
            }
        }
    }
}

/// Lets a line through at most once per `every`: a flood of refusals must not become a flood
/// of log lines. Lock-free: a refusal is on the accept path.
struct Throttle {
    start: Instant,
    every: Duration,
    /// When the next line may go, in nanoseconds since `start`.
    next: AtomicU64,
}

impl Throttle {
    fn new(every: Duration) -> Throttle {
        Throttle {
            start: Instant::now(),
            every,
            next: AtomicU64::new(0),
        }
    }

    fn ready(&self, now: Instant) -> bool {
        let at = now.saturating_duration_since(self.start).as_nanos() as u64;
        let next = self.next.load(Ordering::Acquire);
        at >= next
            && self
                .next
                .compare_exchange(
                    next,
                    at + self.every.as_nanos() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    pub(super) fn limits(max_connections: usize, per_ip: usize) -> Limits {
        Limits {
            max_clients: 10,
            write_timeout: Duration::from_secs(10),
            max_connections: Some(max_connections),
            max_clients_per_ip: per_ip,
            head_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(60),
            proxy_connect_timeout: Duration::from_secs(10),
            proxy_timeout: Duration::from_secs(60),
            proxy_max_body: 1 << 20,
        }
    }

    fn conns() -> Arc<Conns> {
        Arc::new(Conns::new(100, Arc::new(Metrics::new().expect("metrics"))))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("an address"))
    }

    #[test]
    fn past_max_connections_nothing_is_admitted_until_one_closes() {
        let c = conns();
        let l = limits(2, 0);
        let a = c.admit_from(None, &l).expect("first");
        let b = a.clone();
        let _second = c.admit_from(None, &l).expect("second");
        assert!(c.admit_from(None, &l).is_none());
        drop(a);
        assert!(c.admit_from(None, &l).is_none(), "a clone still holds it");
        drop(b);
        assert!(c.admit_from(None, &l).is_some());
        assert_eq!(
            c.metrics
                .connections_refused
                .with_label_values(&["max_connections"])
                .get(),
            2
        );
    }

    #[test]
    fn per_ip_counts_each_address_and_forgets_it_at_zero() {
        let c = conns();
        let l = limits(100, 1);
        let one = c.admit_from(ip("127.0.0.1"), &l).expect("one");
        assert!(c.admit_from(ip("127.0.0.1"), &l).is_none());
        // The same client through a dual-stack socket.
        assert!(c.admit_from(ip("::ffff:127.0.0.1"), &l).is_none());
        let other = c.admit_from(ip("127.0.0.2"), &l).expect("another address");
        assert_eq!(c.addresses(), 2);
        drop(one);
        drop(other);
        assert_eq!(c.addresses(), 0);
        assert_eq!(c.open.load(Ordering::Acquire), 0);
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert!(c.admit_from(Some(v6), &l).is_some());
    }

    #[test]
    fn a_refusal_by_address_gives_back_the_connection_slot() {
        let c = conns();
        let l = limits(2, 1);
        let _a = c.admit_from(ip("10.0.0.1"), &l).expect("a");
        assert!(c.admit_from(ip("10.0.0.1"), &l).is_none());
        assert!(c.admit_from(ip("10.0.0.2"), &l).is_some());
    }

    #[test]
    fn the_default_leaves_room_below_the_open_file_limit() {
        assert_eq!(auto_max_connections(1_048_576), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(auto_max_connections(20_000), 20_000 - 256);
        assert_eq!(auto_max_connections(64), 48);
        assert_eq!(auto_max_connections(0), 1);
    }

    #[test]
    fn the_throttle_lets_one_line_through_per_second() {
        let t = Throttle::new(Duration::from_secs(1));
        let t0 = t.start;
        assert!(t.ready(t0));
        assert!(!t.ready(t0 + Duration::from_millis(999)));
        assert!(t.ready(t0 + Duration::from_millis(1000)));
        assert!(!t.ready(t0 + Duration::from_millis(1500)));
        assert!(t.ready(t0 + Duration::from_secs(5)));
    }
}
