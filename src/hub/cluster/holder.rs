//! What the lease holder's poller publishes through: Redis first, fenced by the lease, then
//! this gateway's own topic. A frame Redis refused never reaches a client here either, so no
//! two gateways ever send different payloads under one id.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use redis::Value;
use tracing::{debug, warn};

use super::keys::Keys;
use super::wire::{epoch_text, Renewed};
use super::Cluster;
use crate::config::DiffMode;
use crate::hub::publish::{Lost, PollResult, Publish};
use crate::hub::topic::{Frame, Readiness, Topic};
use crate::hub::EventId;
use crate::upstream::Validators;

pub struct Holder {
    pub cluster: Arc<Cluster>,
    pub topic: Arc<Topic>,
    pub keys: Keys,
    /// `<node_id>:<random token>`: this holding, told apart from any other, even this node's.
    pub lease: String,
    /// The last sequence this holder sent Redis: its echo on the feed may come before Redis's
    /// answer on the command connection.
    pub sent: AtomicU64,
    /// Formats other gateways' clients read (renewals report them).
    json_patch_wanted: AtomicBool,
    merge_patch_wanted: AtomicBool,
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        other => format!("{other:?}"),
    }
}

impl Holder {
    pub fn new(cluster: Arc<Cluster>, topic: Arc<Topic>, keys: Keys, lease: String) -> Holder {
        Holder {
            cluster,
            topic,
            keys,
            lease,
            sent: AtomicU64::new(0),
            json_patch_wanted: AtomicBool::new(false),
            merge_patch_wanted: AtomicBool::new(false),
        }
    }

    pub fn renewed(&self, r: &Renewed) {
        self.json_patch_wanted
            .store(r.json_patch_wanted, Ordering::Relaxed);
        self.merge_patch_wanted
            .store(r.merge_patch_wanted, Ordering::Relaxed);
    }

    /// `OK`, or why Redis refused: counted, and the poller stops.
    fn accepted(&self, answer: &Value) -> Result<(), Lost> {
        match text(answer).as_str() {
            "OK" => Ok(()),
            "NOTHOLDER" => {
                warn!("publish refused: the lease is held elsewhere now");
                let c = &self.cluster.counts;
                c.publish_rejected.with_label_values(&["not_holder"]).inc();
                Err(Lost)
            }
            other => {
                warn!(
                    answer = other,
                    "publish refused: redis moved on; reading it again"
                );
                let c = &self.cluster.counts;
                c.publish_rejected.with_label_values(&["stale"]).inc();
                Err(Lost)
            }
        }
    }
}

#[async_trait::async_trait]
impl Publish for Holder {
    fn next_id(&self) -> EventId {
        self.topic.next_id()
    }

    fn wants(&self, format: DiffMode) -> bool {
        let elsewhere = match format {
            DiffMode::JsonPatch => &self.json_patch_wanted,
            DiffMode::MergePatch => &self.merge_patch_wanted,
            DiffMode::Snapshot => return false,
        };
        self.topic.format_in_use(format) || elsewhere.load(Ordering::Relaxed)
    }

    async fn publish(&self, frame: Frame) -> Result<(), Lost> {
        let spec = self.topic.spec.load();
        let c = &self.cluster;
        let empty = Bytes::new();
        let mut call = c.scripts.publish.prepare_invoke();
        call.key(&self.keys.meta)
            .key(&self.keys.log)
            .key(&self.keys.lease)
            .arg(&self.lease)
            .arg(epoch_text(frame.epoch))
            .arg(frame.seq)
            .arg(&frame.snapshot[..])
            .arg(&frame.json_patch.as_ref().unwrap_or(&empty)[..])
            .arg(&frame.merge_patch.as_ref().unwrap_or(&empty)[..])
            .arg(spec.replay)
            .arg(spec.replay_bytes)
            .arg(c.spec.history_ttl.as_secs().max(1))
            .arg(&self.keys.channel);
        self.sent.fetch_max(frame.seq, Ordering::AcqRel);
        let answer = c.conn.script(&call).await.map_err(|e| {
            warn!(error = %e, "publish failed: redis did not take it");
            Lost
        })?;
        self.accepted(&answer)?;
        self.topic.publish(frame);
        Ok(())
    }

    async fn set_status(&self, failing: Option<Bytes>, event: Bytes) -> Result<(), Lost> {
        let c = &self.cluster;
        let mut call = c.scripts.status.prepare_invoke();
        call.key(&self.keys.meta)
            .key(&self.keys.lease)
            .arg(&self.lease)
            .arg(if failing.is_some() { "1" } else { "0" })
            .arg(&event[..])
            .arg(&self.keys.channel);
        let answer = c.conn.script(&call).await.map_err(|_| Lost)?;
        self.accepted(&answer)?;
        self.topic.set_status(failing, event);
        Ok(())
    }

    async fn deny(&self, status: u16, last: Bytes) {
        let c = &self.cluster;
        let mut call = c.scripts.deny.prepare_invoke();
        call.key(&self.keys.meta)
            .key(&self.keys.log)
            .key(&self.keys.lease)
            .arg(&self.lease)
            .arg(status)
            .arg(&last[..])
            .arg(&self.keys.channel);
        if let Err(e) = c.conn.script(&call).await {
            // The others' pollers will hear the same refusal from the upstream.
            debug!(error = %e, "could not tell the cluster of the refusal");
        }
        self.topic.set_ready(Readiness::Denied(status));
        self.topic.close(last);
    }

    /// Local clients at once; the others hear where the holder stands, to notice a gap.
    fn heartbeat(&self) {
        self.topic.heartbeat();
        let Some(id) = self.topic.current_id() else {
            return;
        };
        let tick = format!("h {} {}", epoch_text(id.epoch), id.seq);
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(&self.keys.channel).arg(tick);
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            let _ = cluster.conn.cmd(&cmd).await;
        });
    }

    /// Also keeps when it polled and the validators in Redis, for the next holder.
    fn record_poll(&self, result: PollResult, size: u64, validators: &Validators) {
        Publish::record_poll(&*self.topic, result, size, validators);
        let cluster = self.cluster.clone();
        // Owned, so the write can outlive this call.
        let (meta, lease, value) = (
            self.keys.meta.clone(),
            self.keys.lease.clone(),
            self.lease.clone(),
        );
        let (etag, lm) = (
            validators.etag().unwrap_or("").to_string(),
            validators.last_modified().unwrap_or("").to_string(),
        );
        tokio::spawn(async move {
            let mut call = cluster.scripts.polled.prepare_invoke();
            call.key(meta).key(lease).arg(value).arg(etag).arg(lm);
            let _ = cluster.conn.script(&call).await;
        });
    }
}
