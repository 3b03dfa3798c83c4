//! When a poller polls and beats next: the cadence, jitter, backoff and `Retry-After`.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::config::StreamSpec;
use crate::upstream::FetchError;

/// However long an upstream asks us to wait, we look again after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What a poll's outcome asks of the schedule.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// It answered: the next poll keeps the cadence (see `next_due`).
    Cadence,
    /// It refused access after a document: poll again at once before believing it.
    Confirm,
    /// It failed: wait this long (the backoff, or the upstream's `Retry-After`).
    Backoff(Duration),
    /// It refused these credentials for good: the poller stops.
    Stop(u16),
}

/// A poller's clock: when the next poll and heartbeat are due, and how the upstream fares.
pub struct Schedule {
    pub next_poll: Instant,
    pub next_heartbeat: Instant,
    /// Failed polls in a row; the upstream counts as failing while there is one.
    pub failures: u32,
    /// The last poll was refused access and the next is to confirm it.
    pub confirming: bool,
    /// Whether the cadence has its own phase yet (see `next_due`).
    phased: bool,
}

impl Schedule {
    pub fn new(now: Instant, first_delay: Duration, heartbeat: Duration) -> Schedule {
        Schedule {
            next_poll: now + first_delay,
            next_heartbeat: now + heartbeat,
            failures: 0,
            confirming: false,
            phased: false,
        }
    }

    pub fn failing(&self) -> bool {
        self.failures > 0
    }

    /// A heartbeat went out at `now`.
    pub fn beat(&mut self, now: Instant, every: Duration) {
        self.next_heartbeat = now + every;
    }

    /// A refresh may poll at `at` (`Topic::request_refresh` decided when); a later one leaves the
    /// next poll where it is.
    pub fn refresh(&mut self, at: Option<Instant>) {
        if let Some(at) = at {
            self.next_poll = self.next_poll.min(at);
        }
    }

    /// Applies what the poll that was due at `due` and ended at `now` asks for.
    pub fn next(&mut self, step: &Step, due: Instant, now: Instant, interval: Duration) {
        self.confirming = *step == Step::Confirm;
        match *step {
            Step::Cadence => {
                self.failures = 0;
                // The first success sets this poller's phase; later ones keep to it.
                let spread = (!self.phased).then(|| rand::rng().random_range(0.5..1.5));
                self.phased = true;
                self.next_poll = next_due(due, now, interval, false, spread);
            }
            Step::Confirm => self.next_poll = now,
            Step::Backoff(delay) => {
                self.failures = self.failures.saturating_add(1);
                self.next_poll = next_due(due, now, delay, true, None);
            }
            Step::Stop(_) => {}
        }
    }
}

/// Capped exponential backoff with jitter, or longer when the upstream asked for it.
pub fn backoff(spec: &StreamSpec, failures: u32, e: &FetchError) -> Duration {
    let exp = spec
        .interval
        .saturating_mul(1u32 << failures.min(16))
        .min(spec.backoff_max.max(spec.interval));
    let jittered = rand::rng().random_range(exp / 2..=exp);
    match e {
        FetchError::Status {
            retry_after: Some(ra),
            ..
        } => jittered.max((*ra).min(MAX_RETRY_AFTER)),
        _ => jittered,
    }
}

/// When the next poll is due, after one that was due at `due` and ended at `now`.
///
/// A poll that kept its appointment keeps the cadence: the next is due `delay` after this one
/// was due, not after it finished. Otherwise polls that one busy moment delayed together stay
/// bunched in every later round, and the bunch grows (the Streamdata benchmark's 100 streams of
/// 50 KB did). A failure (`delay` is then the backoff), a refresh ahead of time, or a poll late
/// by a whole interval restarts the cadence from now.
///
/// `spread` (0.5..1.5) scales the delay once, after the first poll: instances that clients
/// started together poll first within a moment, and a fixed cadence would keep them together.
fn next_due(
    due: Instant,
    now: Instant,
    delay: Duration,
    failed: bool,
    spread: Option<f64>,
) -> Instant {
    if let Some(factor) = spread {
        return now + delay.mul_f64(factor);
    }
    if !failed && due <= now && now < due + delay {
        due + delay
    } else {
        now + delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_poll_on_time_keeps_the_cadence_of_its_due_time() {
        let due = Instant::now();
        let s = Duration::from_secs(1);
        // Finished 300 ms late: the next is still one interval after this one was due.
        let next = next_due(due, due + s * 3 / 10, s, false, None);
        assert_eq!(next, due + s);
    }

    #[test]
    fn a_failure_an_early_refresh_or_a_whole_interval_late_restart_from_now() {
        let due = Instant::now();
        let s = Duration::from_secs(1);
        let now = due + Duration::from_millis(10);
        assert_eq!(next_due(due, now, s * 4, true, None), now + s * 4);
        let early = due - Duration::from_millis(400);
        assert_eq!(next_due(due, early, s, false, None), early + s);
        let late = due + s * 2;
        assert_eq!(next_due(due, late, s, false, None), late + s);
    }

    #[test]
    fn the_first_spread_scales_the_delay_from_now() {
        let due = Instant::now();
        let s = Duration::from_secs(1);
        let now = due + Duration::from_millis(5);
        assert_eq!(
            next_due(due, now, s, false, Some(1.25)),
            now + s.mul_f64(1.25)
        );
    }

    fn spec() -> Arc<StreamSpec> {
        crate::hub::fixtures::spec("    interval: 1s\n    backoff_max: 30s\n")
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        let s = spec();
        let e = FetchError::Timeout;
        for (failures, lo, hi) in [(1, 1, 2), (2, 2, 4), (3, 4, 8), (10, 15, 30), (40, 15, 30)] {
            for _ in 0..50 {
                let d = backoff(&s, failures, &e);
                assert!(
                    d >= Duration::from_secs(lo) && d <= Duration::from_secs(hi),
                    "{failures}: {d:?}"
                );
            }
        }
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let s = spec();
        let e = FetchError::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(120)),
        };
        assert_eq!(backoff(&s, 1, &e), Duration::from_secs(120));
        let e = FetchError::Status {
            status: 503,
            retry_after: Some(Duration::from_secs(86_400)),
        };
        assert_eq!(backoff(&s, 1, &e), MAX_RETRY_AFTER);
    }
}
