//! What cluster mode counts, registered beside the gateway's metrics only when it runs.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use crate::metrics::Metrics;

pub struct Counts {
    pub redis_up: IntGauge,
    pub leases_held: IntGauge,
    pub lease_acquired: IntCounter,
    pub lease_lost: IntCounter,
    /// By reason: `not_holder` (the lease went elsewhere first), `stale` (Redis moved on: another
    /// epoch or sequence).
    pub publish_rejected: IntCounterVec,
    /// A replica found it had missed frames (a gap, another epoch, a lost subscription) and read
    /// its state from Redis again.
    pub feed_repairs: IntCounter,
    /// Instances of this replica polling alone because Redis does not answer.
    pub alone: IntGauge,
}

impl Counts {
    pub fn new(m: &Metrics) -> Result<Counts, prometheus::Error> {
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help)?;
            m.register(g.clone())?;
            Ok::<_, prometheus::Error>(g)
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help)?;
            m.register(c.clone())?;
            Ok::<_, prometheus::Error>(c)
        };
        let rejected = IntCounterVec::new(
            Opts::new(
                "cluster_publish_rejected_total",
                "Publishes Redis refused, by reason",
            ),
            &["reason"],
        )?;
        m.register(rejected.clone())?;
        for reason in ["not_holder", "stale"] {
            rejected.with_label_values(&[reason]);
        }
        Ok(Counts {
            redis_up: gauge("cluster_redis_up", "1 while Redis answers in time")?,
            leases_held: gauge(
                "cluster_leases_held",
                "Stream instances this gateway polls for the cluster",
            )?,
            lease_acquired: counter("cluster_lease_acquired_total", "Leases taken")?,
            lease_lost: counter(
                "cluster_lease_lost_total",
                "Leases lost to another gateway or to a Redis that stopped answering",
            )?,
            publish_rejected: rejected,
            feed_repairs: counter(
                "cluster_feed_repairs_total",
                "Times an instance read its state from Redis again after missing frames",
            )?,
            alone: gauge(
                "cluster_instances_alone",
                "Instances polled by this gateway alone while Redis does not answer",
            )?,
        })
    }
}
