//! One SSE client's loop: write what the subscription yields until the client or the stream ends.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::{header, Version};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use rand::Rng;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::hub::{Delivery, Subscription};
use crate::metrics::Metrics;
use crate::sse;

pub struct Settings {
    /// Extra response headers (CORS).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub metrics: Arc<Metrics>,
    /// Turns true when the process shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// The `retry:` a browser waits before reconnecting.
    pub retry: Duration,
    /// pingora sets none: without it a client that stops reading pins its task forever.
    pub write_timeout: Duration,
}

pub async fn run(
    session: &mut Session,
    mut sub: Subscription,
    mut settings: Settings,
) -> Result<()> {
    session.set_write_timeout(Some(settings.write_timeout));
    let mut resp = ResponseHeader::build(200, Some(5))?;
    resp.insert_header(header::CONTENT_TYPE, "text/event-stream")?;
    resp.insert_header(header::CACHE_CONTROL, "no-cache")?;
    resp.insert_header("x-accel-buffering", "no")?;
    for (name, value) in std::mem::take(&mut settings.headers) {
        resp.insert_header(name, value)?;
    }
    // pingora would otherwise send a close-delimited body while saying keep-alive.
    if session.req_header().version == Version::HTTP_11 && !session.is_http2() {
        resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    session.write_response_header(Box::new(resp), false).await?;

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
    session
        .write_response_body(Some(first.freeze()), false)
        .await?;

    let outcome: Result<&str> = loop {
        tokio::select! {
            // Resolves when the client closes (FIN or RST) or sends bytes it must not send.
            r = session.read_body_or_idle(true) => break match r {
                Ok(None) => Ok("client finished"),
                Ok(Some(_)) => Err(pingora::Error::explain(
                    pingora::ErrorType::InvalidHTTPHeader,
                    "data sent on an event stream",
                )),
                Err(e) => Err(e),
            },
            // Shutting down: a jittered `retry:` spreads the reconnects (with Last-Event-ID) over
            // time and over whichever instances remain.
            () = shutting_down(&mut settings.shutdown) => {
                let retry = goodbye_retry(settings.retry);
                let mut last = sse::retry(retry.as_millis() as u64).to_vec();
                last.extend_from_slice(&sse::event(Some("end"), None, GOODBYE));
                let _ = session.write_response_body(Some(last.into()), false).await;
                let _ = session.write_response_body(None, true).await;
                break Ok("gateway shutting down");
            }
            delivery = sub.next() => match delivery {
                Delivery::Send(bytes) => {
                    if bytes.as_ref() != sse::HEARTBEAT {
                        settings.metrics.events_sent.inc();
                    }
                    settings.metrics.bytes_sent.inc_by(bytes.len() as u64);
                    if let Err(e) = session.write_response_body(Some(bytes), false).await {
                        break Err(e);
                    }
                }
                Delivery::Close(last) => {
                    let _ = session.write_response_body(Some(last), false).await;
                    let _ = session.write_response_body(None, true).await;
                    break Ok("stream closed");
                }
            },
        }
    };
    // An error hands the connection back to pingora as failed, so it is closed, never reused.
    match &outcome {
        Ok(why) => debug!(instance = %sub.key(), why, "sse session ended"),
        Err(e) if e.etype() == &pingora::ErrorType::WriteTimedout => {
            settings.metrics.clients_dropped_slow.inc();
            info!(instance = %sub.key(), "sse client dropped: write timed out");
        }
        Err(e) => debug!(instance = %sub.key(), error = %e, "sse session ended"),
    }
    outcome.map(|_| ())
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
