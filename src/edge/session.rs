//! One SSE client's loop: write what the subscription yields until the client or the stream ends.
//! The transport is a `Wire`: pingora's session, or the direct writer of `front.rs`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use rand::Rng;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::codec::sse;
use crate::hub::{Delivery, Subscription};
use crate::metrics::Metrics;

/// How one client's stream runs, besides its wire and its subscription: what it opens with,
/// how it paces reconnects, when it gives up on a write, and where it is counted.
pub struct ClientStream {
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

/// How a stream ended. The first three are clean ends; the others leave the connection
/// unusable, so its transport closes it.
#[derive(Debug, thiserror::Error)]
pub enum End {
    #[error("client finished")]
    ClientFinished,
    /// The instance ended the stream with a last event (stream removed, access revoked).
    #[error("stream closed")]
    Closed,
    #[error("gateway shutting down")]
    Shutdown,
    #[error("data sent on an event stream")]
    ClientSentData,
    #[error("write timed out")]
    TimedOut,
    /// The transport's error, kept whole: pingora's on its session, an I/O error on the direct
    /// path.
    #[error("connection failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl End {
    /// Whether the stream ended as streams do, leaving nothing to report as an error.
    pub fn is_clean(&self) -> bool {
        matches!(self, End::ClientFinished | End::Closed | End::Shutdown)
    }
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

/// Runs one client's stream until it ends, and says how.
pub(crate) async fn run<W: Wire>(
    mut wire: W,
    mut sub: Subscription,
    mut client: ClientStream,
) -> End {
    if let Err(end) = open(&mut wire, &mut sub, &mut client).await {
        return end;
    }
    let end = stream(&mut wire, &mut sub, &mut client).await;
    match &end {
        End::TimedOut => {
            client.metrics.clients_dropped_slow.inc();
            info!(instance = %sub.label(), "sse client dropped: write timed out");
        }
        end if end.is_clean() => debug!(instance = %sub.label(), why = %end, "sse session ended"),
        end => debug!(
            instance = %sub.label(),
            error = end as &dyn std::error::Error,
            "sse session ended"
        ),
    }
    end
}

/// The response head, then the greeting: `retry:` in the block of the snapshot or the first
/// replayed event, then the rest, in one write.
async fn open<W: Wire>(
    wire: &mut W,
    sub: &mut Subscription,
    client: &mut ClientStream,
) -> Result<(), End> {
    wire.open(std::mem::take(&mut client.headers)).await?;
    let start = sub.take_start();
    client.metrics.events_sent.inc_by(start.len() as u64);
    let first = sse::with_retry(client.retry, &start);
    client.metrics.bytes_sent.inc_by(first.len() as u64);
    wire.send(first).await
}

/// Writes what the subscription yields until the client, the instance or the process ends it.
async fn stream<W: Wire>(wire: &mut W, sub: &mut Subscription, client: &mut ClientStream) -> End {
    // Made once, not once per event: a fresh wait would lock the shutdown channel's waiter list,
    // which every client shares, twice per event.
    let shutdown = shutting_down(&mut client.shutdown);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            end = wire.closed() => return end,
            // Shutting down: a jittered `retry:` spreads the reconnects (with Last-Event-ID) over
            // time and over whichever instances remain.
            () = &mut shutdown => {
                let retry = jittered(client.retry, GOODBYE_SPREAD);
                let last = sse::Event::new("end").retry(retry).data(GOODBYE).encode();
                let _ = wire.send(last).await;
                wire.finish().await;
                return End::Shutdown;
            }
            delivery = sub.next() => match delivery {
                Delivery::Send(bytes) => {
                    if bytes.as_ref() != sse::HEARTBEAT {
                        client.metrics.events_sent.inc();
                    }
                    client.metrics.bytes_sent.inc_by(bytes.len() as u64);
                    if let Err(end) = wire.send(bytes).await {
                        return end;
                    }
                }
                Delivery::Close(last) => {
                    let _ = wire.send(last).await;
                    wire.finish().await;
                    return End::Closed;
                }
            },
        }
    }
}

const GOODBYE: &str = r#"{"reason":"gateway restarting","reconnect":true}"#;
/// A restart's reconnects spread over one to two `retry` periods: clients come back soon.
const GOODBYE_SPREAD: u32 = 2;

/// Between one and `spread` times `retry` (at least one second), picked at random, so clients
/// told to come back do not all come back at once.
pub(crate) fn jittered(retry: Duration, spread: u32) -> Duration {
    let base = retry.max(Duration::from_secs(1));
    rand::rng().random_range(base..=base * spread)
}

async fn shutting_down(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across the goodbye's awaits.
    if rx.wait_for(|down| *down).await.is_err() {
        std::future::pending::<()>().await;
    }
}
