//! Where a poller puts what it found.

use bytes::Bytes;

use super::topic::{Frame, Readiness, Topic};
use super::EventId;
use crate::config::DiffMode;

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

/// Where a poller puts what it found: the instance's `Topic` here, which this process's sessions
/// read. This is where the cluster hub plugs in a Redis publisher, so that one replica polls an
/// instance and every replica's sessions get its frames; the poller does not change.
pub trait Publish: Send + Sync {
    /// The id the next change carries.
    fn next_id(&self) -> EventId;
    /// Whether some client reads `format`: a patch format nobody reads is not encoded.
    fn wants(&self, format: DiffMode) -> bool;
    /// A new version of the document, numbered as `next_id` said.
    fn publish(&self, frame: Frame);
    /// The upstream's health: `Some(event)` while it fails, `None` once it is back; `event` goes
    /// out either way.
    fn set_status(&self, failing: Option<Bytes>, event: Bytes);
    /// The upstream refused these credentials: clients end with `last`, and clients that come
    /// later are answered `status`.
    fn deny(&self, status: u16, last: Bytes);
    fn heartbeat(&self);
    /// A poll ended with `result`. `size` is the body the document stands for (a 304 stands for
    /// the last one; 0 after an error): what each client would have downloaded polling alone.
    fn record_poll(&self, result: PollResult, size: u64);
}

impl Publish for Topic {
    fn next_id(&self) -> EventId {
        self.id(self.current_seq() + 1)
    }

    fn wants(&self, format: DiffMode) -> bool {
        self.format_in_use(format)
    }

    fn publish(&self, frame: Frame) {
        Topic::publish(self, frame);
    }

    fn set_status(&self, failing: Option<Bytes>, event: Bytes) {
        Topic::set_status(self, failing, event);
    }

    fn deny(&self, status: u16, last: Bytes) {
        self.set_ready(Readiness::Denied(status));
        self.close(last);
    }

    fn heartbeat(&self) {
        Topic::heartbeat(self);
    }

    /// Counts the polling a client would have done where the clients are counted.
    fn record_poll(&self, result: PollResult, size: u64) {
        let m = &self.metrics;
        m.polls.with_label_values(&[result.as_str()]).inc();
        m.polling_equivalent_bytes
            .inc_by(size * self.clients() as u64);
        Topic::record_poll(self, result.as_str());
    }
}
