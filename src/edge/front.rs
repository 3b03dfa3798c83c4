//! The client listener's first look at each new connection.
//!
//! An event stream is a request that never ends, and pingora keeps everything a request owns
//! (its HTTP session and buffers, the proxy's context and future) for as long as it runs:
//! about 40 KB per idle client. So when the first request on a fresh HTTP/1.1 connection
//! (plain or TLS) subscribes to a stream, it is served here, on the socket itself, and a client
//! then costs its subscription, its socket and one small task. Everything else (the demo page,
//! proxied requests, refusals pingora formats, HTTP/2, later requests on a kept-alive
//! connection) goes to pingora's proxy with the bytes already read put back first, so it sees
//! the connection exactly as the client sent it.

use std::future::Future;
use std::io::{self, IoSlice, Write as _};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, StatusCode};
use pingora::apps::ServerApp;
use pingora::http::RequestHeader;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use super::conns::Admitted;
use super::replay::Replay;
use super::session::{self, End, Wire};
use super::{Answer, Edge, Opened, Permit, Reply};
use crate::routes::Routes;

/// Longest request head read here; a longer one goes to pingora, which refuses it properly.
const MAX_HEAD: usize = 16 * 1024;
/// How long a new connection may take to send its request head (nginx's
/// `client_header_timeout` default).
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// For writing a refusal before the connection closes.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Front {
    edge: Edge,
    proxy: Arc<HttpProxy<Edge>>,
}

impl Front {
    pub fn new(edge: Edge, proxy: HttpProxy<Edge>) -> Front {
        Front {
            edge,
            proxy: Arc::new(proxy),
        }
    }
}

#[async_trait]
impl ServerApp for Front {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let shared = &self.edge.shared;
        let conn = shared
            .conns
            .admit(&stream, &shared.routes.load().config.limits)?;
        // A connection handed back for reuse is served here, not returned: pingora's listener
        // would pass it to `process_new` again, which would count it twice.
        let mut next = self.serve(stream, shutdown, &conn).await;
        while let Some(stream) = next {
            next = self.serve(stream, shutdown, &conn).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await;
    }
}

impl Front {
    /// One connection, counted as `conn` for as long as anything serves it.
    async fn serve(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
        conn: &Admitted,
    ) -> Option<Stream> {
        // HTTP/2 multiplexes streams over one connection: pingora's h2 server owns it.
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return self.proxy.process_new(stream, shutdown).await;
        }
        if stream.get_ssl_digest().is_none() && stream.as_any().is::<L4Stream>() {
            let raw = stream.into_any().downcast::<L4Stream>().ok()?;
            return self.first_request(raw, shutdown, conn).await;
        }
        // HTTP/1.1 over TLS.
        self.first_request(stream, shutdown, conn).await
    }
}

/// A client connection the direct path can serve: plain TCP, or TLS.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    /// The connection for pingora, yielding `read` again before anything else.
    fn unread(self, read: Vec<u8>) -> Stream;
    /// Each event is one small write that must leave at once: Nagle would hold it back while
    /// an earlier one waits for its (possibly delayed) ACK.
    fn no_delay(&mut self) {}
}

impl Conn for Box<L4Stream> {
    fn unread(mut self, read: Vec<u8>) -> Stream {
        self.rewind(&read);
        self
    }

    fn no_delay(&mut self) {
        if let Err(e) = self.set_nodelay() {
            debug!(error = %e, "cannot set TCP_NODELAY");
        }
    }
}

/// TLS streams can't rewind: a wrapper puts the bytes back.
impl Conn for Stream {
    fn unread(self, read: Vec<u8>) -> Stream {
        Box::new(Replay::new(self, read.into()))
    }
}

impl Front {
    /// Reads the connection's first request head; serves it when it subscribes to a stream,
    /// and hands the connection to pingora otherwise.
    async fn first_request<C: Conn>(
        self: &Arc<Self>,
        mut conn: C,
        shutdown: &ShutdownWatch,
        counted: &Admitted,
    ) -> Option<Stream> {
        let routes = &self.edge.shared.routes;
        let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut conn, routes)).await {
            Ok(Ok(Some(head))) => head,
            // Closed, failed or silent before a whole request line: nothing to answer.
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return None,
        };
        let (req, read) = match head {
            Head::Pass(read) => return self.proxy.process_new(conn.unread(read), shutdown).await,
            Head::Stream(req, read) => (req, read),
        };
        match self.edge.answer(&req).await {
            Answer::Proxy => self.proxy.process_new(conn.unread(read), shutdown).await,
            Answer::Reply(reply) => {
                if let Err(e) = write_reply(&mut conn, reply).await {
                    debug!(error = %e, "cannot send the refusal");
                }
                None
            }
            Answer::Stream(opened) => {
                conn.no_delay();
                // The client's stream runs in a task of its own, sized for the stream alone. The
                // task pingora spawned for this connection (about 9 KB: room for a TLS handshake
                // and a proxied request) ends here instead of idling under every client.
                let task = stream_task(conn, *opened);
                let counted = counted.clone();
                let task = async move {
                    let _counted = counted;
                    task.await
                };
                tracing::trace!(bytes = std::mem::size_of_val(&task), "stream task");
                tokio::spawn(task);
                None
            }
        }
    }
}

/// One client's event stream, until it or the stream ends: `run`'s future itself, holding
/// everything the client needs and nothing else (under 1 KB).
fn stream_task<C: Conn>(
    conn: C,
    opened: Opened,
) -> impl Future<Output = Result<&'static str, End>> + Send {
    let Opened {
        sub,
        settings,
        permit,
    } = opened;
    let wire = RawWire {
        stream: conn,
        write_timeout: settings.write_timeout,
        _permit: permit,
    };
    session::run(wire, sub, settings)
}

enum Head {
    /// Not a subscription this path serves: pingora takes the bytes read so far.
    Pass(Vec<u8>),
    /// A whole HTTP/1.1 GET head for a stream path, and the bytes it came from.
    Stream(Box<RequestHeader>, Vec<u8>),
}

/// Reads until the head is whole, or until it is clear that the request is not one to serve
/// here. `None`: the client closed before sending anything. The routes are looked up as bytes
/// arrive, never held: a connection that waits must not pin an old config.
async fn read_head<C: Conn>(raw: &mut C, routes: &ArcSwap<Routes>) -> io::Result<Option<Head>> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len());
        }
        if raw.read_buf(&mut buf).await? == 0 {
            return Ok((!buf.is_empty()).then_some(Head::Pass(buf)));
        }
        match parse(&buf, &routes.load()) {
            Parsed::Partial if buf.len() < MAX_HEAD => continue,
            Parsed::Partial | Parsed::Pass => return Ok(Some(Head::Pass(buf))),
            Parsed::Stream(req) => return Ok(Some(Head::Stream(req, buf))),
        }
    }
}

enum Parsed {
    Partial,
    Pass,
    Stream(Box<RequestHeader>),
}

/// Only a plain GET on a stream path, with no body and no upgrade, is served here; anything
/// unusual goes to pingora, whose HTTP/1 handling is complete.
fn parse(buf: &[u8], routes: &Routes) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(status) => status,
        Err(_) => return Parsed::Pass,
    };
    // httparse fills the request line as soon as it has it: decide early when it says no.
    if let Some(method) = req.method {
        if method != "GET" {
            return Parsed::Pass;
        }
    }
    if let Some(target) = req.path {
        let path = target.split('?').next().unwrap_or(target);
        if routes.find(path).is_none() {
            return Parsed::Pass;
        }
    }
    if status.is_partial() {
        return Parsed::Partial;
    }
    if req.version != Some(1) || req.headers.iter().any(|h| needs_pingora(h)) {
        return Parsed::Pass;
    }
    let Some(target) = req.path else {
        return Parsed::Pass;
    };
    let Ok(mut header) =
        RequestHeader::build(Method::GET, target.as_bytes(), Some(req.headers.len()))
    else {
        return Parsed::Pass;
    };
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Parsed::Pass;
        };
        if header.append_header(name, value).is_err() {
            return Parsed::Pass;
        }
    }
    Parsed::Stream(Box::new(header))
}

/// A body, an upgrade or an expectation: leave the request to pingora.
fn needs_pingora(h: &httparse::Header<'_>) -> bool {
    let name = h.name;
    (name.eq_ignore_ascii_case("content-length") && h.value != b"0")
        || name.eq_ignore_ascii_case("transfer-encoding")
        || name.eq_ignore_ascii_case("upgrade")
        || name.eq_ignore_ascii_case("expect")
}

/// A refusal, then the connection closes: the client has nothing else in flight on it.
async fn write_reply<C: Conn>(raw: &mut C, reply: Reply) -> io::Result<()> {
    let status = StatusCode::from_u16(reply.status)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let last = format!(
        "Content-Length: {}\r\nConnection: close\r\n",
        reply.body.len()
    );
    let head = response_head(status, &reply.headers, last.as_bytes());
    let mut parts = [IoSlice::new(&head), IoSlice::new(&reply.body)];
    tokio::time::timeout(REPLY_TIMEOUT, write_all(raw, &mut parts))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    raw.shutdown().await
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
}

impl<C: Conn> RawWire<C> {
    async fn write(&mut self, parts: &mut [IoSlice<'_>]) -> Result<(), End> {
        match tokio::time::timeout(self.write_timeout, write_all(&mut self.stream, parts)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Failed(e.to_string())),
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
            Err(e) => End::Failed(e.to_string()),
        }
    }
}
