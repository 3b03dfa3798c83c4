//! An instance's life, which the hub owns (linkerd2-proxy's idle cache): the hub starts its
//! poller with a cancellation token, counts down `idle` once the last client leaves, and ends it
//! by taking it out of its table and cancelling the token. The poller never counts clients.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::topic::Topic;
use crate::config::Idle;

/// A running instance, as the hub's table holds it.
#[derive(Clone)]
pub(super) struct Instance {
    pub topic: Arc<Topic>,
    /// Cancelled when the instance is taken out of the table: its poller and its idle countdown
    /// stop.
    pub cancel: CancellationToken,
    /// Wakes the idle countdown after a reload retuned the stream: its `idle` may have changed.
    pub retuned: Arc<Notify>,
}

impl Instance {
    pub fn new(topic: Arc<Topic>) -> Instance {
        Instance {
            topic,
            cancel: CancellationToken::new(),
            retuned: Arc::new(Notify::new()),
        }
    }
}

/// Counts down the stream's `idle` from when the instance last had a client, restarting when a
/// client comes and goes or a reload retunes the stream, then ends the instance (none for
/// `idle: never`). Ends with the instance's token.
///
/// `take_if_idle` takes the instance out of the hub's table if it is still there and has no
/// client, and says whether it is gone (taken now, or by someone else before). The hub decides it
/// under the lock clients join under, so a client joining as the countdown ends either keeps the
/// instance or finds it gone and starts another.
pub(super) async fn count_down_idle(
    topic: Arc<Topic>,
    cancel: CancellationToken,
    retuned: Arc<Notify>,
    take_if_idle: impl Fn() -> bool,
) {
    let mut clients = topic.watch_clients();
    loop {
        let occupancy = *clients.borrow_and_update();
        let deadline = match topic.spec.load().idle {
            Idle::After(idle) if occupancy.clients == 0 => Some(occupancy.since + idle),
            _ => None,
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = retuned.notified() => {}
            changed = clients.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if take_if_idle() {
                    cancel.cancel();
                    return;
                }
            }
        }
    }
}
