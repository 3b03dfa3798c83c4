//! One SSE client's loop: write what the subscription yields until the client or the stream ends.
//! The transport is a `Wire`: pingora's session, or the direct writer of `front.rs`.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use rand::Rng;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::codec::sse;
use crate::hub::{Delivery, Subscription};
use crate::metrics::Metrics;

pub struct Settings {
    /// Extra response headers (CORS).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub metrics: Arc<Metrics>,
    /// Turns true when the process shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// The `retry:` a browser waits before reconnecting.
    pub retry: Duration,
    /// Without it a client that stops reading pins its task forever.
    pub write_timeout: Duration,
}

/// How a stream ended on the client's side.
#[derive(Debug, thiserror::Error)]
pub enum End {
    #[error("client finished")]
    ClientFinished,
    #[error("data sent on an event stream")]
    ClientSentData,
    #[error("write timed out")]
    TimedOut,
    #[error("{0}")]
    Failed(String),
}

/// The connection an event stream is written to.
pub(crate) trait Wire {
    /// Sends a 200 `text/event-stream` head with the standard headers and `headers`.
    async fn open(&mut self, headers: Vec<(HeaderName, HeaderValue)>) -> Result<(), End>;
    /// Sends bytes at once: no buffering, each call reaches the socket.
    async fn send(&mut self, bytes: Bytes) -> Result<(), End>;
    /// Ends the body cleanly.
    async fn finish(&mut self);
    /// Resolves when the client closes (FIN or RST) or sends bytes it must not send.
    /// Cancel-safe: it is raced against every delivery.
    async fn closed(&mut self) -> End;
}

/// The headers every event stream carries, whatever the transport.
pub(crate) fn standard_headers() -> [(HeaderName, HeaderValue); 3] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ),
    ]
}

/// Runs one client's stream. `Ok` says why it ended cleanly; `Err` means the connection is
/// unusable.
pub(crate) async fn run<W: Wire>(
    mut wire: W,
    mut sub: Subscription,
    mut settings: Settings,
) -> Result<&'static str, End> {
    wire.open(std::mem::take(&mut settings.headers)).await?;

    // The greeting goes out in one write: `retry:` in the block of the snapshot or the first
    // replayed event, then the rest.
    let mut first = BytesMut::from(&sse::retry(settings.retry.as_millis() as u64)[..]);
    let start = sub.take_start();
    if start.is_empty() {
        first.extend_from_slice(b"\n");
    }
    settings.metrics.events_sent.inc_by(start.len() as u64);
    for bytes in start {
        first.extend_from_slice(&bytes);
    }
    settings.metrics.bytes_sent.inc_by(first.len() as u64);
    wire.send(first.freeze()).await?;

    // Made once, not once per event: a fresh wait would lock the shutdown channel's waiter list,
    // which every client shares, twice per event.
    let shutdown = shutting_down(&mut settings.shutdown);
    tokio::pin!(shutdown);
    let outcome = loop {
        tokio::select! {
            end = wire.closed() => break match end {
                End::ClientFinished => Ok("client finished"),
                other => Err(other),
            },
            // Shutting down: a jittered `retry:` spreads the reconnects (with Last-Event-ID) over
            // time and over whichever instances remain.
            () = &mut shutdown => {
                let retry = goodbye_retry(settings.retry);
                let mut last = sse::retry(retry.as_millis() as u64).to_vec();
                last.extend_from_slice(&sse::event(Some("end"), None, GOODBYE));
                let _ = wire.send(last.into()).await;
                wire.finish().await;
                break Ok("gateway shutting down");
            }
            delivery = sub.next() => match delivery {
                Delivery::Send(bytes) => {
                    if bytes.as_ref() != sse::HEARTBEAT {
                        settings.metrics.events_sent.inc();
                    }
                    settings.metrics.bytes_sent.inc_by(bytes.len() as u64);
                    if let Err(e) = wire.send(bytes).await {
                        break Err(e);
                    }
                }
                Delivery::Close(last) => {
                    let _ = wire.send(last).await;
                    wire.finish().await;
                    break Ok("stream closed");
                }
            },
        }
    };
    match &outcome {
        Ok(why) => debug!(instance = %sub.label(), why, "sse session ended"),
        Err(End::TimedOut) => {
            settings.metrics.clients_dropped_slow.inc();
            info!(instance = %sub.label(), "sse client dropped: write timed out");
        }
        Err(e) => debug!(instance = %sub.label(), error = %e, "sse session ended"),
    }
    outcome
}

const GOODBYE: &str = r#"{"reason":"gateway restarting","reconnect":true}"#;

/// Between one and two `retry` periods (at least one second), so a restart's reconnects spread out.
fn goodbye_retry(retry: Duration) -> Duration {
    let base = retry.max(Duration::from_secs(1));
    rand::rng().random_range(base..=base * 2)
}

async fn shutting_down(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across the goodbye's awaits.
    if rx.wait_for(|down| *down).await.is_err() {
        std::future::pending::<()>().await;
    }
}
