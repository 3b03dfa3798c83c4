//! What one shared poller saves, per instance: the bytes its clients would have fetched had each
//! polled the upstream itself, against what the gateway fetched once and what it pushed. The
//! console shows them; they are counted per poll and per change, never per client per event.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub(super) struct Savings {
    upstream: AtomicU64,
    polling: AtomicU64,
    pushed: AtomicU64,
}

/// An instance's bytes so far, as `/streams` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ByteCounts {
    /// Body bytes fetched from the upstream (a 304 fetches none).
    pub upstream: u64,
    /// What the clients attached at each poll would have downloaded, polling at the same
    /// interval: the document's size (a 304 stands for the last one) times the clients.
    pub polling_equivalent: u64,
    /// Event bytes written to clients: every snapshot they started with, and each change in the
    /// format each client follows, counted once per change.
    pub pushed: u64,
    /// `polling_equivalent - upstream`: what the upstream did not have to serve.
    pub saved: u64,
}

impl ByteCounts {
    /// Adds another instance's, for totals.
    pub fn add(&mut self, other: &ByteCounts) {
        self.upstream = self.upstream.saturating_add(other.upstream);
        self.polling_equivalent = self
            .polling_equivalent
            .saturating_add(other.polling_equivalent);
        self.pushed = self.pushed.saturating_add(other.pushed);
        self.saved = self.saved.saturating_add(other.saved);
    }
}

impl Savings {
    /// One poll, which fetched `fetched` body bytes (none for a 304) and stood for a body of
    /// `size` bytes, with `clients` attached.
    pub fn polled(&self, fetched: u64, size: u64, clients: usize) {
        self.upstream.fetch_add(fetched, Ordering::Relaxed);
        let equivalent = size.saturating_mul(u64::try_from(clients).unwrap_or(u64::MAX));
        self.polling.fetch_add(equivalent, Ordering::Relaxed);
    }

    pub fn pushed(&self, bytes: u64) {
        self.pushed.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn reading(&self) -> ByteCounts {
        let upstream = self.upstream.load(Ordering::Relaxed);
        let polling_equivalent = self.polling.load(Ordering::Relaxed);
        ByteCounts {
            upstream,
            polling_equivalent,
            pushed: self.pushed.load(Ordering::Relaxed),
            saved: polling_equivalent.saturating_sub(upstream),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_poll_saves_what_the_other_clients_would_have_fetched() {
        let s = Savings::default();
        s.polled(1000, 1000, 3);
        // A 304 costs the upstream no body; for the clients it counts as the last body, as the
        // `polling_equivalent_bytes_total` metric counts it.
        s.polled(0, 1000, 3);
        s.polled(0, 0, 3);
        s.pushed(1000 * 3 + 40 * 3);
        assert_eq!(
            s.reading(),
            ByteCounts {
                upstream: 1000,
                polling_equivalent: 6000,
                pushed: 3120,
                saved: 5000,
            }
        );
        let mut total = s.reading();
        total.add(&s.reading());
        assert_eq!(total.saved, 10_000);
    }
}
