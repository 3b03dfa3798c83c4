//! Where a poller puts what it found.

use bytes::Bytes;

use super::topic::{Frame, Readiness, Topic};
use super::EventId;
use crate::config::DiffMode;
use crate::upstream::Validators;

/// What one poll found, as `/streams` and the `polls` metric name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollResult {
    Changed,
    Unchanged,
    /// A 304: the upstream's validators matched.
    NotModified,
    Error,
}

impl PollResult {
    pub fn as_str(self) -> &'static str {
        match self {
            PollResult::Changed => "changed",
            PollResult::Unchanged => "unchanged",
            PollResult::NotModified => "not_modified",
            PollResult::Error => "error",
        }
    }
}

/// This replica may no longer write the instance: in cluster mode its lease is gone (another
/// replica polls now) or Redis stopped answering. The poller stops; the hub decides what next.
#[derive(Debug, PartialEq, Eq)]
pub struct Lost;

/// Where a poller puts what it found: the instance's `Topic` here, which this process's sessions
/// read; in cluster mode Redis first (`cluster::Holder`), fenced by the lease, so that one
/// replica polls an instance and every replica's sessions get its frames. The poller does not
/// change.
#[async_trait::async_trait]
pub trait Publish: Send + Sync {
    /// The id the next change carries.
    fn next_id(&self) -> EventId;
    /// Whether some client reads `format`: a patch format nobody reads is not encoded.
    fn wants(&self, format: DiffMode) -> bool;
    /// A new version of the document, numbered as `next_id` said.
    async fn publish(&self, frame: Frame) -> Result<(), Lost>;
    /// The upstream's health: `Some(event)` while it fails, `None` once it is back; `event` goes
    /// out either way.
    async fn set_status(&self, failing: Option<Bytes>, event: Bytes) -> Result<(), Lost>;
    /// The upstream refused these credentials: clients end with `last`, and clients that come
    /// later are answered `status`.
    async fn deny(&self, status: u16, last: Bytes);
    fn heartbeat(&self);
    /// A poll ended with `result`. `size` is the body the document stands for (a 304 stands for
    /// the last one; 0 after an error): what each client would have downloaded polling alone.
    /// `validators` are those the next poll sends.
    fn record_poll(&self, result: PollResult, size: u64, validators: &Validators);
}

#[async_trait::async_trait]
impl Publish for Topic {
    fn next_id(&self) -> EventId {
        Topic::next_id(self)
    }

    fn wants(&self, format: DiffMode) -> bool {
        self.format_in_use(format)
    }

    async fn publish(&self, frame: Frame) -> Result<(), Lost> {
        Topic::publish(self, frame);
        Ok(())
    }

    async fn set_status(&self, failing: Option<Bytes>, event: Bytes) -> Result<(), Lost> {
        Topic::set_status(self, failing, event);
        Ok(())
    }

    async fn deny(&self, status: u16, last: Bytes) {
        self.set_ready(Readiness::Denied(status));
        self.close(last);
    }

    fn heartbeat(&self) {
        Topic::heartbeat(self);
    }

    /// Counts the polling a client would have done where the clients are counted.
    fn record_poll(&self, result: PollResult, size: u64, _: &Validators) {
        let m = &self.metrics;
        m.polls.with_label_values(&[result.as_str()]).inc();
        m.polling_equivalent_bytes
            .inc_by(size * self.clients() as u64);
        let fetched = match result {
            PollResult::Changed | PollResult::Unchanged => size,
            PollResult::NotModified | PollResult::Error => 0,
        };
        self.savings.polled(fetched, size, self.clients());
        Topic::record_poll(self, result.as_str());
    }
}
