//! The gateway's Prometheus metrics, in one registry owned by `Shared` (never a global).
//!
//! Counters are bumped where things happen. Gauges that describe what runs now are collectors
//! registered by their owner (the hub's per-stream gauges), read at scrape time, so serving
//! clients costs no bookkeeping and this module depends on nothing else in the crate.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Polls by result: changed, unchanged, not_modified, error.
    pub polls: IntCounterVec,
    pub upstream_latency: Histogram,
    /// Body bytes received from upstreams.
    pub upstream_bytes: IntCounter,
    /// What the attached clients would have downloaded by polling the upstream themselves.
    pub polling_equivalent_bytes: IntCounter,
    /// Bytes of the patches published, and of the snapshots they stand in for.
    pub patch_bytes: IntCounter,
    pub snapshot_bytes: IntCounter,
    pub events_sent: IntCounter,
    pub bytes_sent: IntCounter,
    pub clients_resynced: IntCounter,
    pub clients_dropped_slow: IntCounter,
    pub overloaded: IntCounter,
    pub reloads: IntCounterVec,
    /// Client connections open now, against `limits.max_connections`.
    pub connections: IntGauge,
    /// Connections closed on arrival, by the limit that refused them.
    pub connections_refused: IntCounterVec,
    /// Client-limit slots in use, against `limits.max_clients`.
    pub client_slots: IntGauge,
    /// SSE clients on pingora's session, which take several slots each.
    pub clients_pingora: IntGauge,
}

/// Registers `c` and hands it back, so each metric is declared and registered in one place.
fn reg<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> Result<C, prometheus::Error> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let r = Registry::new_custom(Some("sse_gateway".into()), None)?;
        let counter = |name: &str, help: &str| reg(&r, IntCounter::new(name, help)?);
        let by = |name: &str, help: &str, label: &str, values: &[&str]| {
            let c = reg(&r, IntCounterVec::new(Opts::new(name, help), &[label])?)?;
            for v in values {
                c.with_label_values(&[*v]);
            }
            Ok::<_, prometheus::Error>(c)
        };
        let latency = HistogramOpts::new("upstream_latency_seconds", "Time for one upstream poll")
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]);
        let m = Metrics {
            polls: by(
                "polls_total",
                "Upstream polls by result",
                "result",
                &["changed", "unchanged", "not_modified", "error"],
            )?,
            upstream_latency: reg(&r, Histogram::with_opts(latency)?)?,
            upstream_bytes: counter("upstream_bytes_total", "Body bytes received from upstreams")?,
            polling_equivalent_bytes: counter(
                "polling_equivalent_bytes_total",
                "Bytes the attached clients would have fetched by polling the upstream themselves",
            )?,
            patch_bytes: counter("patch_bytes_total", "Bytes of patches published")?,
            snapshot_bytes: counter(
                "snapshot_bytes_total",
                "Bytes of the snapshots those patches stand in for",
            )?,
            events_sent: counter("events_sent_total", "Events written to clients")?,
            bytes_sent: counter("bytes_sent_total", "Bytes written to clients")?,
            clients_resynced: counter(
                "clients_resynced_total",
                "Clients that fell behind and got a fresh snapshot instead of their backlog",
            )?,
            clients_dropped_slow: counter(
                "clients_dropped_slow_total",
                "Clients dropped because their socket stayed blocked past write_timeout",
            )?,
            overloaded: counter("overloaded_total", "Requests turned away by a limit")?,
            reloads: by(
                "config_reloads_total",
                "Config reloads by result",
                "result",
                &["applied", "refused"],
            )?,
            connections: reg(&r, IntGauge::new("connections", "Client connections open")?)?,
            connections_refused: by(
                "connections_refused_total",
                "Client connections closed on arrival, by the limit that refused them",
                "limit",
                &["max_connections", "max_clients_per_ip"],
            )?,
            client_slots: reg(
                &r,
                IntGauge::new(
                    "client_slots",
                    "Client-limit slots in use (against limits.max_clients)",
                )?,
            )?,
            clients_pingora: reg(
                &r,
                IntGauge::new(
                    "clients_pingora_session",
                    "SSE clients served through pingora's session, each counted as several slots",
                )?,
            )?,
            registry: r,
        };
        // Open file descriptors against the limit, CPU and memory of this process.
        m.register(prometheus::process_collector::ProcessCollector::for_self())?;
        Ok(m)
    }

    /// Adds a collector that reads its values when scraped.
    pub fn register(&self, c: impl Collector + 'static) -> Result<(), prometheus::Error> {
        self.registry.register(Box::new(c))
    }

    /// The text exposition, with every collector read now.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
