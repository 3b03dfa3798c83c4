//! The client listener's look at every connection and every request head.
//!
//! An event stream is a request that never ends, and pingora keeps everything a request owns
//! (its HTTP session and buffers, the proxy's context and future) for as long as it runs, many
//! times what the stream itself needs (README "Where the memory goes"). So when a request on an HTTP/1.1 connection (plain or TLS, the
//! first or a later one on a kept-alive connection) subscribes to a stream, it is served here,
//! on the socket itself, and a client then costs its subscription, its socket and one small
//! task. Everything else (the demo page, proxied requests, refusals pingora formats) goes to
//! pingora's proxy one request at a time, with the bytes already read put back first, so it sees
//! the connection exactly as the client sent it; the connection comes back here after each one.
//! HTTP/2 connections go to `http2.rs`, which serves subscriptions the same way, stream by stream.
//!
//! Every HTTP/1 head is read here, whole, before pingora sees it: pingora 0.9.1 times a head per
//! read (a byte a minute holds a connection and up to 1 MiB of buffer) and waits for the next
//! request on a kept-alive connection forever (cloudflare/pingora#447). Here a head must arrive
//! whole within `limits.head_timeout` (on a new connection, counted from the accept, TLS
//! handshake included) and a kept-alive connection waits `limits.keepalive` for its next one.

use std::fmt::Display;
use std::future::Future;
use std::io::{self, IoSlice, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};
use tracing::{debug, info};

use super::conns::Admitted;
use super::head::{read_head, Head, Wait, MAX_HEAD};
use super::http2::{Http2, Refused};
use super::rewound::Rewound;
use super::session::{self, End, Wire};
use super::tls_stream::Acceptor;
use super::{Answer, Edge, Opened, Permit, Reply};

/// For writing a refusal before the connection closes.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `linger` waits for the rest of a refused request.
const LINGER: Duration = Duration::from_secs(2);

pub struct Front {
    edge: Edge,
    proxy: Arc<HttpProxy<Edge>>,
    /// HTTP/2 connections (TLS with ALPN `h2`), served beside pingora.
    http2: Arc<Http2>,
    /// TLS is accepted here rather than by pingora's listener, whose handshake has a fixed 60 s
    /// limit and logs each failure at `error`.
    tls: Option<Acceptor>,
    /// Failed handshakes and unfinished heads are free for anyone to cause: they are counted,
    /// and only now and then logged above debug.
    handshakes_failed: AtomicU64,
    heads_cut_off: AtomicU64,
}

impl Front {
    pub fn new(edge: Edge, proxy: HttpProxy<Edge>, tls: Option<Acceptor>) -> Front {
        let proxy = Arc::new(proxy);
        Front {
            http2: Arc::new(Http2 {
                edge: edge.clone(),
                proxy: proxy.clone(),
            }),
            edge,
            proxy,
            tls,
            handshakes_failed: AtomicU64::new(0),
            heads_cut_off: AtomicU64::new(0),
        }
    }

    /// `limits.head_timeout` and `limits.keepalive`, read fresh so a reload applies to the next
    /// wait.
    fn timeouts(&self) -> (Duration, Duration) {
        let limits = &self.edge.shared.routes.load().config.limits;
        (limits.head_timeout, limits.keepalive)
    }
}

#[async_trait]
impl ServerApp for Front {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let routes = self.edge.shared.routes.load();
        let deadline = Instant::now() + routes.config.limits.head_timeout;
        // Counted from the accept, so connections still in their TLS handshake count too; the
        // guard lives as long as anything serves the connection (a stream task included).
        let admitted = self.edge.side.conns.admit(&stream, &routes.config.limits)?;
        // Not held across the handshake and the requests: a reload must be able to free it.
        drop(routes);
        // The listener is plain TCP: TLS, when configured, is accepted here.
        let mut raw = stream.into_any().downcast::<L4Stream>().ok()?;
        let Some(tls) = &self.tls else {
            return self.serve(raw, deadline, shutdown, admitted).await;
        };
        // Each event is one small write that must leave at once (see `Conn::no_delay`); below
        // TLS that has to be set before the handshake.
        raw.no_delay();
        let stream: Stream = match timeout_at(deadline, tls.accept(*raw)).await {
            Ok(Ok(tls)) => Box::new(tls),
            Ok(Err(e)) => return self.handshake_failed(e),
            Err(_) => return self.handshake_failed("timed out"),
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return match self.http2.serve(stream, deadline, shutdown, admitted).await {
                Ok(()) => None,
                Err(Refused::Cut) => self.head_cut_off(0),
                Err(Refused::Garbage) => None,
            };
        }
        let tls = Box::new(Rewound::new(stream, Bytes::new()));
        self.serve(tls, deadline, shutdown, admitted).await
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await;
    }
}

/// A client connection the direct path can serve: plain TCP, or TLS.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    /// The connection for pingora, yielding `read` again before anything else.
    fn unread(self, read: Vec<u8>) -> Stream;
    /// The connection again, as pingora hands it back after a request it answered.
    fn reclaim(stream: Stream) -> Option<Self>;
    /// Each event is one small write that must leave at once: Nagle would hold it back while
    /// an earlier one waits for its (possibly delayed) ACK.
    fn no_delay(&mut self) {}
}

impl Conn for Box<L4Stream> {
    fn unread(mut self, read: Vec<u8>) -> Stream {
        self.rewind(&read);
        self
    }

    fn reclaim(stream: Stream) -> Option<Self> {
        stream.into_any().downcast::<L4Stream>().ok()
    }

    fn no_delay(&mut self) {
        if let Err(e) = self.set_nodelay() {
            debug!(error = %e, "cannot set TCP_NODELAY");
        }
    }
}

/// TLS streams can't rewind: a wrapper puts the bytes back (`TCP_NODELAY` is set before the
/// handshake).
impl Conn for Box<Rewound> {
    fn unread(mut self, read: Vec<u8>) -> Stream {
        self.put_back(read);
        self
    }

    fn reclaim(stream: Stream) -> Option<Self> {
        stream.into_any().downcast::<Rewound>().ok()
    }
}

impl Front {
    /// Serves an HTTP/1 connection request by request: a subscription here, anything else
    /// through pingora, which answers that one request and hands the connection back.
    async fn serve<C: Conn>(
        self: &Arc<Self>,
        mut conn: C,
        deadline: Instant,
        shutdown: &ShutdownWatch,
        admitted: Admitted,
    ) -> Option<Stream> {
        let routes = &self.edge.shared.routes;
        let mut down = shutdown.clone();
        let mut wait = Wait {
            first_byte: deadline,
            whole: Some(deadline),
        };
        // pingora's state for the connection (requests left, its context), from one request it
        // answered to the next.
        let mut carried: Option<HttpPersistentSettings> = None;
        loop {
            let (head_timeout, keepalive) = self.timeouts();
            let head = tokio::select! {
                head = read_head(&mut conn, routes, wait, head_timeout) => head,
                // A connection between requests has nothing to finish.
                () = session::shutting_down(&mut down) => return None,
            };
            let read = match head {
                Ok(Head::Stream(req, read)) => match self.edge.answer(&req).await {
                    Answer::Proxy => read,
                    Answer::Reply(reply) => {
                        if let Err(e) = write_reply(&mut conn, reply).await {
                            debug!(error = %e, "cannot send the refusal");
                        }
                        return None;
                    }
                    Answer::Stream(opened) => {
                        conn.no_delay();
                        // The client's stream runs in a task of its own, sized for the stream
                        // alone (a unit test bounds it). The task pingora spawned for this
                        // connection, with room for a TLS handshake and a proxied request, ends
                        // here instead of idling under every client.
                        tokio::spawn(stream_task(conn, *opened, admitted));
                        return None;
                    }
                },
                Ok(Head::Pass(read)) => read,
                Ok(Head::TooLarge) => {
                    let reply = Reply::text(431, format!("request head over {MAX_HEAD} bytes\n"));
                    match write_reply(&mut conn, reply).await {
                        Ok(()) => linger(&mut conn).await,
                        Err(e) => debug!(error = %e, "cannot send the refusal"),
                    }
                    return None;
                }
                // Closed, or silent past its deadline, between requests: nothing to answer.
                Ok(Head::Gone) => return None,
                Ok(Head::Cut(bytes)) => return self.head_cut_off(bytes),
                Err(e) => {
                    debug!(error = %e, "cannot read a request head");
                    return None;
                }
            };
            let session = conn.unread(read);
            (conn, carried) = self
                .through_pingora(session, carried, head_timeout, shutdown)
                .await?;
            wait = Wait {
                first_byte: Instant::now() + keepalive,
                whole: None,
            };
        }
    }

    /// One request answered by pingora, from the head already read (put back in `stream`); the
    /// connection comes back with pingora's state for it, unless pingora closed it.
    async fn through_pingora<C: Conn>(
        &self,
        stream: Stream,
        carried: Option<HttpPersistentSettings>,
        head_timeout: Duration,
        shutdown: &ShutdownWatch,
    ) -> Option<(C, Option<HttpPersistentSettings>)> {
        let mut session = ServerSession::new_http1(stream);
        if let Some(settings) = carried {
            settings.apply_to_session(&mut session);
        }
        // The head is whole in the bytes put back, so pingora's own wait for it (its
        // keep-alive timeout, per read) is only a backstop.
        let backstop = head_timeout.as_secs().max(1);
        session.set_keepalive((!*shutdown.borrow()).then_some(backstop));
        let reused = self.proxy.process_new_http(session, shutdown).await?;
        // Nothing read is left behind in pingora: with pipelining off (its default) it
        // closes a connection on which it read past the request, instead of handing it back.
        let (stream, settings) = reused.consume();
        Some((C::reclaim(stream)?, settings))
    }

    fn handshake_failed(&self, error: impl Display) -> Option<Stream> {
        match now_and_then(&self.handshakes_failed) {
            Some(total) => info!(%error, handshakes_failed_total = total, "TLS handshake failed"),
            None => debug!(%error, "TLS handshake failed"),
        }
        None
    }

    /// A head that stopped short: closed, or past `limits.head_timeout`.
    fn head_cut_off(&self, bytes: usize) -> Option<Stream> {
        match now_and_then(&self.heads_cut_off) {
            Some(total) => info!(bytes, heads_cut_off_total = total, "request head cut off"),
            None => debug!(bytes, "request head cut off"),
        }
        None
    }
}

/// Counts one more of something anyone can cause for free, and says whether this one is worth
/// a line above debug: the 1st, 2nd, 4th, 8th..., so a flood costs a few lines, not one each.
fn now_and_then(counter: &AtomicU64) -> Option<u64> {
    let total = counter.fetch_add(1, Ordering::Relaxed) + 1;
    total.is_power_of_two().then_some(total)
}

/// One client's event stream, until it or the stream ends: `run`'s future itself, holding
/// everything the client needs and nothing else.
fn stream_task<C: Conn>(
    conn: C,
    opened: Opened,
    admitted: Admitted,
) -> impl Future<Output = End> + Send {
    let Opened {
        sub,
        client,
        permit,
    } = opened;
    let wire = RawWire {
        stream: conn,
        write_timeout: client.write_timeout,
        _permit: permit,
        _admitted: admitted,
    };
    session::run(wire, sub, client)
}

/// A refusal, then the connection closes: the client has nothing else in flight on it.
async fn write_reply<C: Conn>(raw: &mut C, reply: Reply) -> io::Result<()> {
    let status = StatusCode::from_u16(reply.status)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let last = match reply.content_length() {
        Some(len) => format!("Content-Length: {len}\r\nConnection: close\r\n"),
        None => "Connection: close\r\n".to_string(),
    };
    let head = response_head(status, &reply.headers, last.as_bytes());
    let mut parts = [IoSlice::new(&head), IoSlice::new(&reply.body)];
    tokio::time::timeout(REPLY_TIMEOUT, write_all(raw, &mut parts))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    raw.shutdown().await
}

/// After a refusal sent before the client finished sending: reads (and drops) what it still
/// sends, for a moment. Closing with unread bytes resets the connection, and the client may
/// then lose the answer before reading it (RFC 9112 §9.6).
async fn linger<C: Conn>(conn: &mut C) {
    let mut sink = vec![0u8; 4096];
    let drain = async {
        let mut left = MAX_HEAD;
        while left > 0 {
            match conn.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// An HTTP/1.1 response head: status line, `headers`, then `last` (whole header lines).
fn response_head<'a>(
    status: StatusCode,
    headers: impl IntoIterator<Item = &'a (HeaderName, HeaderValue)>,
    last: &[u8],
) -> Vec<u8> {
    let reason = status.canonical_reason().unwrap_or("");
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", status.as_u16()).into_bytes();
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(last);
    head.extend_from_slice(b"\r\n");
    head
}

/// Writes every slice, in as few system calls as the socket allows, then flushes.
async fn write_all<C: Conn>(raw: &mut C, mut parts: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !parts.is_empty() {
        let n = raw.write_vectored(parts).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut parts, n);
    }
    raw.flush().await
}

/// An event stream written straight to the socket with HTTP/1.1 chunked framing. The event
/// bytes are the ones shared by every client of the instance; only the chunk-size line is
/// this client's own.
struct RawWire<C> {
    stream: C,
    write_timeout: Duration,
    /// The client-limit slot, given back when the stream ends.
    _permit: Permit,
    /// The connection's place in `limits.max_connections`.
    _admitted: Admitted,
}

impl<C: Conn> RawWire<C> {
    async fn write(&mut self, parts: &mut [IoSlice<'_>]) -> Result<(), End> {
        match tokio::time::timeout(self.write_timeout, write_all(&mut self.stream, parts)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Failed(e.into())),
            Err(_) => Err(End::TimedOut),
        }
    }
}

impl<C: Conn> Wire for RawWire<C> {
    async fn open(&mut self, headers: Vec<(HeaderName, HeaderValue)>) -> Result<(), End> {
        let head = response_head(
            StatusCode::OK,
            session::standard_headers().iter().chain(&headers),
            b"Transfer-Encoding: chunked\r\n",
        );
        self.write(&mut [IoSlice::new(&head)]).await
    }

    async fn send(&mut self, bytes: Bytes) -> Result<(), End> {
        // An empty chunk would end the body.
        if bytes.is_empty() {
            return Ok(());
        }
        // The chunk-size line, formatted on the stack: no allocation per client per event.
        let mut line = [0u8; 20];
        let used = {
            let mut rest = &mut line[..];
            let _ = write!(rest, "{:x}\r\n", bytes.len());
            20 - rest.len()
        };
        self.write(&mut [
            IoSlice::new(&line[..used]),
            IoSlice::new(&bytes),
            IoSlice::new(b"\r\n"),
        ])
        .await
    }

    async fn finish(&mut self) {
        let _ = self.write(&mut [IoSlice::new(b"0\r\n\r\n")]).await;
        let _ = self.stream.shutdown().await;
    }

    async fn closed(&mut self) -> End {
        let mut buf = [0u8; 16];
        match self.stream.read(&mut buf).await {
            Ok(0) => End::ClientFinished,
            Ok(_) => End::ClientSentData,
            Err(e) => End::Failed(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{duplex, AsyncReadExt, DuplexStream};

    use super::*;
    use crate::edge::conns::Conns;
    use crate::edge::ClientSide;
    use crate::metrics::Metrics;

    /// An in-memory connection: what the gateway writes, the test reads from the other end.
    impl Conn for DuplexStream {
        fn unread(self, _read: Vec<u8>) -> Stream {
            unreachable!("the direct path's wire never hands its connection to pingora")
        }

        fn reclaim(_stream: Stream) -> Option<Self> {
            None
        }
    }

    /// A wire over an in-memory connection of `capacity` bytes, and the client's end.
    fn raw_wire(capacity: usize, write_timeout: Duration) -> (RawWire<DuplexStream>, DuplexStream) {
        let metrics = Arc::new(Metrics::new().unwrap());
        let conns = Arc::new(Conns::new(10, metrics.clone()));
        let side = Arc::new(ClientSide::new(
            Conns::new(10, metrics.clone()),
            None,
            metrics,
        ));
        let (ours, theirs) = duplex(capacity);
        let wire = RawWire {
            stream: ours,
            write_timeout,
            _permit: Permit::acquire(&side, 10, 1).unwrap(),
            _admitted: conns.admit_any(),
        };
        (wire, theirs)
    }

    async fn read_all(mut client: DuplexStream) -> String {
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn a_stream_is_a_chunked_head_then_one_chunk_per_event_then_the_last_chunk() {
        let (mut wire, client) = raw_wire(1 << 16, Duration::from_secs(5));
        let cors = (
            HeaderName::from_static("access-control-allow-origin"),
            HeaderValue::from_static("*"),
        );
        wire.open(vec![cors]).await.unwrap();
        wire.send(Bytes::from_static(b"data: x\n\n")).await.unwrap();
        // An empty chunk would end the body, so nothing goes out for it.
        wire.send(Bytes::new()).await.unwrap();
        wire.send(Bytes::from(vec![b'a'; 300])).await.unwrap();
        wire.finish().await;
        drop(wire);
        let want = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
             x-accel-buffering: no\r\naccess-control-allow-origin: *\r\n\
             Transfer-Encoding: chunked\r\n\r\n\
             9\r\ndata: x\n\n\r\n\
             12c\r\n{}\r\n\
             0\r\n\r\n",
            "a".repeat(300)
        );
        assert_eq!(read_all(client).await, want);
    }

    #[tokio::test]
    async fn the_wire_tells_a_client_that_left_from_one_that_sent_data() {
        let (mut wire, client) = raw_wire(1024, Duration::from_secs(5));
        drop(client);
        assert!(matches!(wire.closed().await, End::ClientFinished));

        let (mut wire, mut client) = raw_wire(1024, Duration::from_secs(5));
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(matches!(wire.closed().await, End::ClientSentData));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_times_the_write_out() {
        let (mut wire, _client) = raw_wire(16, Duration::from_secs(5));
        let end = wire.send(Bytes::from(vec![b'a'; 64])).await.unwrap_err();
        assert!(matches!(end, End::TimedOut), "{end:?}");
    }

    #[tokio::test]
    async fn a_failed_write_keeps_its_io_error() {
        let (mut wire, client) = raw_wire(16, Duration::from_secs(5));
        drop(client);
        let end = wire
            .send(Bytes::from_static(b"data: x\n\n"))
            .await
            .unwrap_err();
        let cause = std::error::Error::source(&end).and_then(|e| e.downcast_ref::<io::Error>());
        assert_eq!(
            cause.map(io::Error::kind),
            Some(io::ErrorKind::BrokenPipe),
            "{end:?}"
        );
    }

    /// The size of what `f` returns, without calling it.
    fn size_of_output<A, B, C, R>(_f: fn(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// A stream task is what every idle client costs: this catches it growing (a bigger
    /// subscription, a buffer held across an await). The bound is its size in a debug build
    /// before this test existed; raise it only knowing why.
    #[test]
    fn a_stream_task_stays_small() {
        const MAX: usize = 952;
        let plain = size_of_output(stream_task::<Box<L4Stream>>);
        let tls = size_of_output(stream_task::<Box<Rewound>>);
        assert!(plain <= MAX && tls <= MAX, "plain {plain} B, TLS {tls} B");
    }
}
