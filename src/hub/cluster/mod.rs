//! Cluster mode: several gateways, one Redis. One gateway (the lease holder) polls each stream
//! instance and publishes every change once, with its id, into Redis; every gateway with
//! clients of that instance follows it through one subscription and fans it out from its own
//! `Topic` as in a single process, so per-client memory and work do not change.
//!
//! Below `local.rs`, which starts a `Driver` instead of a bare poller for each clustered
//! instance; above the topic, the poller and the source, which it reuses unchanged.

mod conn;
mod counts;
mod driver;
mod feed;
mod holder;
mod keys;
mod scripts;
mod wire;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config;
use crate::metrics::Metrics;

pub use driver::Driver;

use conn::Conn;
use counts::Counts;
use feed::Feed;
use scripts::Scripts;

/// This gateway's part in the cluster: its Redis connections and what they count. One per
/// process, shared by every instance's driver.
pub struct Cluster {
    pub spec: Arc<config::Cluster>,
    conn: Conn,
    feed: Feed,
    scripts: Scripts,
    counts: Arc<Counts>,
    /// Cancelled as the gateway shuts down: holders release their leases, nobody takes new ones.
    closing: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot use cluster.redis {0}")]
    Url(String, #[source] redis::RedisError),
    #[error("cannot register the cluster metrics")]
    Metrics(#[source] prometheus::Error),
}

impl Cluster {
    /// Starts the feed on the current runtime. Connects lazily: a Redis that is down at start
    /// is the degraded mode, not a failed start.
    pub fn start(spec: Arc<config::Cluster>, metrics: &Metrics) -> Result<Cluster, ClusterError> {
        let client = redis::Client::open(spec.redis.as_str())
            .map_err(|e| ClusterError::Url(spec.shown_redis(), e))?;
        let counts = Arc::new(Counts::new(metrics).map_err(ClusterError::Metrics)?);
        Ok(Cluster {
            conn: Conn::new(client.clone(), spec.timeout, counts.clone()),
            feed: Feed::start(client, spec.timeout),
            scripts: Scripts::new(),
            counts,
            closing: CancellationToken::new(),
            spec,
        })
    }

    /// For `/readyz`: whether Redis answers, and what this gateway does meanwhile if not.
    pub fn state_line(&self) -> String {
        match self.conn.why_down() {
            None if self.conn.is_up() => format!("cluster: connected as {}", self.spec.node_id),
            why => {
                let mode = match self.spec.on_redis_down {
                    config::OnRedisDown::Local => "polling locally",
                    config::OnRedisDown::Stale => "serving the last documents as stale",
                };
                let why = why.unwrap_or_else(|| "not connected yet".into());
                format!("cluster: redis unavailable ({why}); {mode}")
            }
        }
    }

    /// Releases every lease this gateway holds and stops taking new ones; returns once none is
    /// held, or after `limit`.
    pub async fn close(&self, limit: std::time::Duration) {
        self.closing.cancel();
        let deadline = tokio::time::Instant::now() + limit;
        while self.counts.leases_held.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
