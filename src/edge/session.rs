//! One SSE client's loop: write what the subscription yields until the client or the stream ends.
//! The transport is a `Wire`: pingora's session, or the direct writer of `front.rs`.

use std::future::Future;
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
///
/// Not an `async fn`: one of those keeps its arguments twice in the future it returns (as
/// arguments and as the locals they move into, rust-lang/rust#62958), and this future is what
/// every idle client's task holds.
#[allow(clippy::manual_async_fn)] // the point of it: see above
pub(crate) fn run<W: Wire>(
    mut wire: W,
    mut sub: Subscription,
    mut client: ClientStream,
) -> impl Future<Output = End> {
    async move {
        if let Err(end) = open(&mut wire, &mut sub, &mut client).await {
            return end;
        }
        let end = stream(&mut wire, &mut sub, &mut client).await;
        match &end {
            End::TimedOut => {
                client.metrics.clients_dropped_slow.inc();
                info!(instance = %sub.label(), "sse client dropped: write timed out");
            }
            end if end.is_clean() => {
                debug!(instance = %sub.label(), why = %end, "sse session ended")
            }
            end => debug!(
                instance = %sub.label(),
                error = end as &dyn std::error::Error,
                "sse session ended"
            ),
        }
        end
    }
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

/// Resolves when the process starts shutting down (never, if the signal's sender is gone).
pub(super) async fn shutting_down(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across the goodbye's awaits.
    if rx.wait_for(|down| *down).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use tokio::sync::{mpsc, oneshot};

    use super::*;
    use crate::config;
    use crate::hub::StreamKey;
    use crate::hub::{Frame, Topic};

    /// What a session did to its wire, in order.
    #[derive(Debug, PartialEq)]
    enum Written {
        Open(Vec<(HeaderName, HeaderValue)>),
        Send(Bytes),
        Finish,
    }

    /// A wire in memory: it reports each write, lets the test say when the client goes, and
    /// fails every send after the first `good` with `fail`.
    struct Memory {
        out: mpsc::UnboundedSender<Written>,
        gone: oneshot::Receiver<End>,
        good: usize,
        fail: fn() -> End,
    }

    impl Wire for Memory {
        async fn open(&mut self, headers: Vec<(HeaderName, HeaderValue)>) -> Result<(), End> {
            let _ = self.out.send(Written::Open(headers));
            Ok(())
        }

        async fn send(&mut self, bytes: Bytes) -> Result<(), End> {
            if self.good == 0 {
                return Err((self.fail)());
            }
            self.good -= 1;
            let _ = self.out.send(Written::Send(bytes));
            Ok(())
        }

        async fn finish(&mut self) {
            let _ = self.out.send(Written::Finish);
        }

        async fn closed(&mut self) -> End {
            match (&mut self.gone).await {
                Ok(end) => end,
                Err(_) => std::future::pending().await,
            }
        }
    }

    /// A running session on a real topic, and the handles a test drives it with.
    struct Running {
        topic: Arc<Topic>,
        written: mpsc::UnboundedReceiver<Written>,
        leave: Option<oneshot::Sender<End>>,
        shutdown: watch::Sender<bool>,
        metrics: Arc<Metrics>,
        session: tokio::task::JoinHandle<End>,
    }

    const RETRY: Duration = Duration::from_secs(3);

    fn topic(metrics: &Arc<Metrics>) -> Arc<Topic> {
        let yaml = "upstreams:\n  api:\n    url: http://127.0.0.1:1\nstreams:\n  - path: /s\n    upstream: api\n    diff: json-patch\n";
        let cfg = config::parse("s.yaml", yaml, &|_| None, &|_, _| None).unwrap();
        let key = StreamKey {
            stream: Arc::from("/s"),
            target: "/s".into(),
            forwarded: vec![],
        };
        let spec = cfg.streams[0].clone();
        Arc::new(Topic::new(spec, key, "/s".into(), metrics.clone()))
    }

    fn frame(seq: u64) -> Frame {
        Frame {
            epoch: 1,
            seq,
            checksum: seq,
            snapshot: Bytes::from(format!("event: snapshot\ndata: {seq}\n\n")),
            json_patch: Some(Bytes::from(format!("event: patch\ndata: {seq}\n\n"))),
            merge_patch: None,
        }
    }

    /// Starts a session on a topic that has published `published` changes; its sends fail
    /// after `good` of them.
    fn start(published: u64, good: usize, fail: fn() -> End) -> Running {
        let metrics = Arc::new(Metrics::new().unwrap());
        let topic = topic(&metrics);
        for seq in 1..=published {
            topic.publish(frame(seq));
        }
        let sub = topic.join().attach(None, None);
        let (out, written) = mpsc::unbounded_channel();
        let (leave, gone) = oneshot::channel();
        let (shutdown, down) = watch::channel(false);
        let wire = Memory {
            out,
            gone,
            good,
            fail,
        };
        let client = ClientStream {
            headers: vec![(
                HeaderName::from_static("vary"),
                HeaderValue::from_static("origin"),
            )],
            metrics: metrics.clone(),
            shutdown: down,
            retry: RETRY,
            write_timeout: Duration::from_secs(1),
        };
        Running {
            topic,
            written,
            leave: Some(leave),
            shutdown,
            metrics,
            session: tokio::spawn(run(wire, sub, client)),
        }
    }

    impl Running {
        async fn next(&mut self) -> Written {
            self.written.recv().await.unwrap()
        }

        /// Past the head and the greeting.
        async fn greeted(mut self) -> Running {
            assert!(matches!(self.next().await, Written::Open(_)));
            assert!(matches!(self.next().await, Written::Send(_)));
            self
        }

        async fn end(self) -> End {
            self.session.await.unwrap()
        }
    }

    fn never() -> End {
        unreachable!("no send fails in this test")
    }

    #[tokio::test]
    async fn the_greeting_is_the_head_then_retry_in_the_block_of_the_snapshot() {
        let mut s = start(1, usize::MAX, never);
        let vary = (
            HeaderName::from_static("vary"),
            HeaderValue::from_static("origin"),
        );
        assert_eq!(s.next().await, Written::Open(vec![vary]));
        let greeting = Bytes::from_static(b"retry: 3000\nevent: snapshot\ndata: 1\n\n");
        assert_eq!(s.next().await, Written::Send(greeting.clone()));
        assert_eq!(s.metrics.events_sent.get(), 1);
        assert_eq!(s.metrics.bytes_sent.get(), greeting.len() as u64);

        let _ = s.leave.take().unwrap().send(End::ClientFinished);
        assert!(matches!(s.end().await, End::ClientFinished));
    }

    #[tokio::test]
    async fn before_any_document_the_greeting_is_a_retry_block_of_its_own() {
        let mut s = start(0, usize::MAX, never);
        assert!(matches!(s.next().await, Written::Open(_)));
        let greeting = Bytes::from_static(b"retry: 3000\n\n");
        assert_eq!(s.next().await, Written::Send(greeting));
        assert_eq!(s.metrics.events_sent.get(), 0);
    }

    #[tokio::test]
    async fn a_published_change_reaches_the_client_as_the_topic_encoded_it() {
        let mut s = start(1, usize::MAX, never).greeted().await;
        s.topic.publish(frame(2));
        let patch = Bytes::from_static(b"event: patch\ndata: 2\n\n");
        assert_eq!(s.next().await, Written::Send(patch));
        s.topic.heartbeat();
        let beat = Bytes::from_static(sse::HEARTBEAT);
        assert_eq!(s.next().await, Written::Send(beat));
        assert_eq!(
            s.metrics.events_sent.get(),
            2,
            "a heartbeat is not an event"
        );
    }

    #[tokio::test]
    async fn on_shutdown_the_client_gets_a_jittered_retry_and_an_end_event() {
        let mut s = start(1, usize::MAX, never).greeted().await;
        s.shutdown.send_replace(true);
        let Written::Send(last) = s.next().await else {
            panic!("no goodbye");
        };
        let text = std::str::from_utf8(&last).unwrap();
        let (retry, rest) = text.split_once('\n').unwrap();
        let ms: u64 = retry.strip_prefix("retry: ").unwrap().parse().unwrap();
        assert!((3000..=6000).contains(&ms), "{ms}");
        assert_eq!(rest, format!("event: end\ndata: {GOODBYE}\n\n"));
        assert_eq!(s.next().await, Written::Finish);
        assert!(matches!(s.end().await, End::Shutdown));
    }

    #[tokio::test]
    async fn a_closed_instance_sends_its_last_event_and_ends_the_body() {
        let mut s = start(1, usize::MAX, never).greeted().await;
        let last = Bytes::from_static(b"event: end\ndata: {}\n\n");
        s.topic.close(last.clone());
        assert_eq!(s.next().await, Written::Send(last));
        assert_eq!(s.next().await, Written::Finish);
        assert!(matches!(s.end().await, End::Closed));
    }

    #[tokio::test]
    async fn a_write_that_times_out_drops_the_client_as_slow() {
        let s = start(1, 1, || End::TimedOut).greeted().await;
        s.topic.publish(frame(2));
        let metrics = s.metrics.clone();
        assert!(matches!(s.end().await, End::TimedOut));
        assert_eq!(metrics.clients_dropped_slow.get(), 1);
    }

    #[tokio::test]
    async fn a_failed_write_ends_the_session_with_its_cause() {
        let broken = || End::Failed(io::Error::from(io::ErrorKind::BrokenPipe).into());
        let s = start(1, 1, broken).greeted().await;
        s.topic.publish(frame(2));
        let metrics = s.metrics.clone();
        let end = s.end().await;
        assert!(!end.is_clean());
        let cause = std::error::Error::source(&end).and_then(|e| e.downcast_ref::<io::Error>());
        assert_eq!(cause.map(io::Error::kind), Some(io::ErrorKind::BrokenPipe));
        assert_eq!(metrics.clients_dropped_slow.get(), 0);
    }

    #[tokio::test]
    async fn a_client_that_sends_data_ends_its_stream_unclean() {
        let mut s = start(1, usize::MAX, never).greeted().await;
        let _ = s.leave.take().unwrap().send(End::ClientSentData);
        assert!(matches!(s.end().await, End::ClientSentData));
    }

    #[test]
    fn a_jittered_retry_stays_within_its_spread_and_never_under_a_second() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(200), 5);
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(5),
                "{d:?}"
            );
            let d = jittered(Duration::from_secs(3), 2);
            assert!(
                d >= Duration::from_secs(3) && d <= Duration::from_secs(6),
                "{d:?}"
            );
        }
    }
}
