//! The gateway's Prometheus metrics, in one registry owned by `Shared` (never a global).
//!
//! Counters are bumped where things happen; per-stream gauges are read from the hub at scrape
//! time, so serving clients costs no bookkeeping.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::hub::InstanceInfo;

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
    clients: IntGaugeVec,
    instances: IntGaugeVec,
    pollers: IntGauge,
    /// Client connections open now, against `limits.max_connections`.
    pub connections: IntGauge,
    /// Connections closed on arrival, by the limit that refused them.
    pub connections_refused: IntCounterVec,
    /// Client-limit slots in use, against `limits.max_clients`.
    pub client_slots: IntGauge,
    /// SSE clients on pingora's session, which take several slots each.
    pub clients_pingora: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("sse_gateway".into()), None)?;
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let m = Metrics {
            polls: IntCounterVec::new(
                Opts::new("polls_total", "Upstream polls by result"),
                &["result"],
            )?,
            upstream_latency: Histogram::with_opts(
                HistogramOpts::new("upstream_latency_seconds", "Time for one upstream poll")
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ]),
            )?,
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
            reloads: IntCounterVec::new(
                Opts::new("config_reloads_total", "Config reloads by result"),
                &["result"],
            )?,
            clients: IntGaugeVec::new(
                Opts::new("clients", "SSE clients attached, per stream"),
                &["stream"],
            )?,
            instances: IntGaugeVec::new(
                Opts::new("stream_instances", "Stream instances, per stream"),
                &["stream"],
            )?,
            pollers: IntGauge::new("pollers", "Pollers running")?,
            connections: IntGauge::new("connections", "Client connections open")?,
            connections_refused: IntCounterVec::new(
                Opts::new(
                    "connections_refused_total",
                    "Client connections closed on arrival, by the limit that refused them",
                ),
                &["limit"],
            )?,
            client_slots: IntGauge::new(
                "client_slots",
                "Client-limit slots in use (against limits.max_clients)",
            )?,
            clients_pingora: IntGauge::new(
                "clients_pingora_session",
                "SSE clients served through pingora's session, each counted as several slots",
            )?,
            registry,
        };
        for g in [&m.connections, &m.client_slots, &m.clients_pingora] {
            m.registry.register(Box::new(g.clone()))?;
        }
        m.registry
            .register(Box::new(m.connections_refused.clone()))?;
        for limit in ["max_connections", "max_clients_per_ip"] {
            m.connections_refused.with_label_values(&[limit]);
        }
        for c in [&m.polls, &m.reloads] {
            m.registry.register(Box::new(c.clone()))?;
        }
        for g in [&m.clients, &m.instances] {
            m.registry.register(Box::new(g.clone()))?;
        }
        m.registry.register(Box::new(m.upstream_latency.clone()))?;
        m.registry.register(Box::new(m.pollers.clone()))?;
        // Open file descriptors against the limit, CPU and memory of this process.
        m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        for result in ["changed", "unchanged", "not_modified", "error"] {
            m.polls.with_label_values(&[result]);
        }
        for result in ["applied", "refused"] {
            m.reloads.with_label_values(&[result]);
        }
        Ok(m)
    }

    /// The text exposition, with the per-stream gauges read from `instances` now.
    pub fn render(&self, instances: &[InstanceInfo]) -> String {
        self.clients.reset();
        self.instances.reset();
        for i in instances {
            self.clients
                .with_label_values(&[i.stream.as_str()])
                .add(i.clients as i64);
            self.instances.with_label_values(&[i.stream.as_str()]).inc();
        }
        self.pollers.set(instances.len() as i64);
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
