//! HTTP/2 connections: each subscription is served on its own stream, here, and every other
//! request goes to pingora's proxy as its HTTP/2 session.
//!
//! pingora serves an HTTP/2 stream with everything a proxied request owns (its session, the
//! proxy's context and future), about 40 KB for as long as an event stream runs. Here the
//! connection's codec runs in one task sized for it, and a subscription costs its own small task
//! and the h2 crate's state for the stream. The connection keeps pingora's checks on every
//! request (`HttpSession::from_h2_conn`: forbidden bytes, framing, authority) and its limits:
//! concurrent streams, rapid resets, an idle timeout, GOAWAY on shutdown.

use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::{Reason, SendStream};
use http::header::{self, HeaderName, HeaderValue};
use pingora::apps::HttpServerApp;
use pingora::http::ResponseHeader;
use pingora::protocols::http::v2::server::{handshake, H2Accept, H2Options, HttpSession};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Digest, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::sync::Notify;
use tokio::time::{timeout_at, Instant};
use tracing::debug;

use super::conns::Admitted;
use super::session::{self, End, Wire};
use super::{Answer, Edge, Opened, Permit, Reply};

/// Streams a client may have open at once on one connection (pingora's own default).
pub(crate) const MAX_CONCURRENT_STREAMS: u32 = 100;
/// Streams the client may reset before the gateway has accepted them, then GOAWAY: the
/// "rapid reset" flood (CVE-2023-44487) costs the server work for every stream opened and
/// reset at once.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the gateway rejected as malformed (pingora's checks) before it closes the
/// connection; pingora's own budget.
const MAX_MALFORMED_STREAMS: usize = 32;
/// What the client may send on a stream before it waits for the gateway to read: a
/// subscription sends nothing, and a proxied upload still streams at this window per round
/// trip. h2's default is 64 KB.
const STREAM_WINDOW: u32 = 64 * 1024;
/// The client's HPACK table in the gateway (SETTINGS_HEADER_TABLE_SIZE). A browser fills the
/// default 4 KB with its request headers, kept for the connection's life under every idle
/// client; 1 KB still indexes the common ones.
const HEADER_TABLE: u32 = 1024;
/// Bytes h2 queues for one stream ahead of the client's window: events wait for capacity
/// (`H2Wire::send`), so this only bounds a proxied response's burst.
const SEND_BUFFER: usize = 64 * 1024;
/// Request headers, decoded: pingora's bound.
const MAX_HEADER_LIST: u32 = 64 * 1024;

/// The h2 settings of every client connection.
fn options() -> H2Options {
    let mut options = H2Options::new();
    options
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .initial_window_size(STREAM_WINDOW)
        .header_table_size(HEADER_TABLE)
        .max_send_buffer_size(SEND_BUFFER)
        .max_header_list_size(MAX_HEADER_LIST);
    options
}

/// What serves a connection's streams: the edge decides, pingora proxies.
pub(super) struct Http2 {
    pub edge: Edge,
    pub proxy: Arc<HttpProxy<Edge>>,
}

/// How a connection ended before its first stream, for the caller's counters.
pub(super) enum Refused {
    /// No preface (or no SETTINGS) before the head deadline.
    Cut,
    /// The bytes were not HTTP/2.
    Garbage,
}

impl Http2 {
    /// Takes the connection once the client's preface is in (by `deadline`), then serves it in
    /// a task of its own, sized for the connection alone: the task pingora spawned for the
    /// accept, with room for a handshake and a proxied request, ends instead of idling under
    /// every client.
    pub(super) async fn serve(
        self: &Arc<Self>,
        stream: Stream,
        deadline: Instant,
        shutdown: &ShutdownWatch,
        admitted: Admitted,
    ) -> Result<(), Refused> {
        let digest = Arc::new(Digest {
            ssl_digest: stream.get_ssl_digest(),
            timing_digest: stream.get_timing_digest(),
            proxy_digest: stream.get_proxy_digest(),
            socket_digest: stream.get_socket_digest(),
        });
        let conn = match timeout_at(deadline, handshake(stream, Some(options()))).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                debug!(error = %e, "not an HTTP/2 preface");
                return Err(Refused::Garbage);
            }
            Err(_) => return Err(Refused::Cut),
        };
        let connection = Connection {
            http2: self.clone(),
            conn,
            digest,
            shutdown: shutdown.clone(),
            active: Arc::new(Active::default()),
            _admitted: admitted,
        };
        tokio::spawn(connection.run());
        Ok(())
    }
}

type H2Conn = h2::server::Connection<Stream, Bytes>;

/// One client connection's codec and accept loop.
struct Connection {
    http2: Arc<Http2>,
    conn: H2Conn,
    digest: Arc<Digest>,
    shutdown: ShutdownWatch,
    active: Arc<Active>,
    /// The connection's place in `limits.max_connections`, for as long as it is open.
    _admitted: Admitted,
}

impl Connection {
    /// Accepts streams until the client closes, the connection idles past `limits.keepalive`
    /// with no stream open, or the process shuts down (GOAWAY, then the open streams finish:
    /// subscriptions with their `end` event).
    ///
    /// Not an `async fn`: one of those keeps its argument and the local it moves it into as
    /// two places in the future (rust-lang/rust#62958), 1.3 KB more under every connection.
    #[allow(clippy::manual_async_fn)] // the point of it: see above
    fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let mut draining = *self.shutdown.borrow();
            if draining {
                self.conn.graceful_shutdown();
            }
            let mut malformed = 0;
            loop {
                let accepted = if draining {
                    HttpSession::from_h2_conn(&mut self.conn, self.digest.clone()).await
                } else {
                    let keepalive = self.http2.edge.shared.routes.load().config.limits.keepalive;
                    tokio::select! {
                        biased;
                        _ = self.shutdown.changed() => {
                            self.conn.graceful_shutdown();
                            draining = true;
                            continue;
                        }
                        accepted = HttpSession::from_h2_conn(&mut self.conn, self.digest.clone()) => accepted,
                        // Closing without GOAWAY: nothing is in flight, and a dead peer would hold
                        // a graceful close open.
                        () = self.active.idle_for(keepalive) => return,
                    }
                };
                match accepted {
                    Ok(Some(H2Accept::Session(session))) => self.dispatch(session),
                    Ok(Some(H2Accept::Rejected)) => {
                        malformed += 1;
                        if malformed >= MAX_MALFORMED_STREAMS {
                            self.conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                        }
                    }
                    Ok(None) => return,
                    // Clients often just close the socket: not worth more than debug.
                    Err(e) => {
                        debug!(error = %e, "HTTP/2 connection ended");
                        return;
                    }
                }
            }
        }
    }

    /// A stream of its own for each request: the codec must keep running while any waits.
    fn dispatch(&self, session: HttpSession) {
        let http2 = self.http2.clone();
        let shutdown = self.shutdown.clone();
        let open = self.active.open();
        tokio::spawn(async move {
            let answer = http2.edge.answer(session.req_header()).await;
            match answer {
                Answer::Stream(opened) => {
                    // Not awaited here: this task has room for a proxied request, the
                    // stream's own is sized for the stream alone.
                    tokio::spawn(stream_task(session, *opened, open));
                }
                Answer::Reply(reply) => {
                    if let Err(e) = write_reply(session, reply).await {
                        debug!(error = %e, "cannot send the refusal");
                    }
                }
                Answer::Proxy => {
                    let session = ServerSession::new_http2(session);
                    let _ = http2.proxy.process_new_http(session, &shutdown).await;
                    drop(open);
                }
            }
        });
    }
}

/// Streams open on a connection, for its idle timeout.
#[derive(Default)]
struct Active {
    open: AtomicUsize,
    idle: Notify,
}

/// One stream's share of its connection's `Active`, given back on drop.
struct Open(Arc<Active>);

impl Active {
    fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open(self.clone())
    }

    /// Resolves once no stream has been open for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            while self.open.load(Ordering::Acquire) != 0 {
                self.idle.notified().await;
            }
            // A stream opened meanwhile cancels this whole future (the accept branch wins).
            tokio::time::sleep(idle).await;
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_one();
        }
    }
}

/// The task that runs one subscription: `session::run` over the stream, holding nothing of the
/// request once the head is out.
fn stream_task(
    session: HttpSession,
    opened: Opened,
    open: Open,
) -> impl Future<Output = End> + Send {
    let Opened {
        sub,
        client,
        permit,
    } = opened;
    let wire = H2Wire {
        session: Some(Box::new(session)),
        body: None,
        write_timeout: client.write_timeout,
        _permit: permit,
        _open: open,
    };
    session::run(wire, sub, client)
}

/// A whole response on the request's stream.
async fn write_reply(mut session: HttpSession, reply: Reply) -> pingora::Result<()> {
    let mut head = ResponseHeader::build(reply.status, Some(reply.headers.len() + 1))?;
    let length = reply.content_length();
    for (name, value) in reply.headers {
        head.insert_header(name, value)?;
    }
    if let Some(len) = length {
        head.insert_header(header::CONTENT_LENGTH, len.to_string())?;
    }
    let empty = reply.body.is_empty();
    session.write_response_header(Box::new(head), empty)?;
    if !empty {
        session.write_body(reply.body, true).await?;
    }
    Ok(())
}

/// An event stream on one HTTP/2 stream. The event bytes are the ones every client shares; h2
/// frames them as DATA without a copy when they are larger than a few hundred bytes.
struct H2Wire {
    /// The request, until the head goes out; boxed, so the task stays small after.
    session: Option<Box<HttpSession>>,
    body: Option<SendStream<Bytes>>,
    write_timeout: Duration,
    /// The client-limit slot, given back when the stream ends.
    _permit: Permit,
    /// The stream's place among its connection's open ones.
    _open: Open,
}

impl H2Wire {
    fn body(&mut self) -> Result<&mut SendStream<Bytes>, End> {
        self.body
            .as_mut()
            .ok_or_else(|| End::Failed("event sent before the head".into()))
    }

    /// Waits for the client's window to take `bytes`, then queues them for the codec.
    async fn send_all(&mut self, mut bytes: Bytes) -> Result<(), End> {
        let body = self.body()?;
        while !bytes.is_empty() {
            body.reserve_capacity(bytes.len());
            let granted = match poll_fn(|cx| body.poll_capacity(cx)).await {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(End::Failed(e.into())),
                None => return Err(End::ClientFinished),
            };
            if granted == 0 {
                continue;
            }
            let part = bytes.split_to(granted.min(bytes.len()));
            body.send_data(part, false)
                .map_err(|e| End::Failed(e.into()))?;
        }
        Ok(())
    }
}

impl Wire for H2Wire {
    async fn open(&mut self, headers: Vec<(HeaderName, HeaderValue)>) -> Result<(), End> {
        let Some(mut session) = self.session.take() else {
            return Err(End::Failed("the head went out twice".into()));
        };
        let failed = |e: Box<pingora::Error>| End::Failed(e);
        let mut head = ResponseHeader::build(200, Some(headers.len() + 4)).map_err(failed)?;
        // Sent as never-indexed literals, about 100 B more per subscription: indexed, they
        // would sit in the connection's HPACK encoder table (about 550 B) under every idle
        // client for as long as it stays connected.
        for (name, mut value) in session::standard_headers().into_iter().chain(headers) {
            value.set_sensitive(true);
            head.insert_header(name, value).map_err(failed)?;
        }
        session
            .write_response_header(Box::new(head), false)
            .map_err(failed)?;
        self.body = session.take_response_body_writer();
        Ok(())
    }

    async fn send(&mut self, bytes: Bytes) -> Result<(), End> {
        match tokio::time::timeout(self.write_timeout, self.send_all(bytes)).await {
            Ok(sent) => sent,
            Err(_) => Err(End::TimedOut),
        }
    }

    async fn finish(&mut self) {
        if let Ok(body) = self.body() {
            let _ = body.send_data(Bytes::new(), true);
        }
    }

    /// A client ends an event stream by resetting it (`EventSource.close()`, a closed tab), or
    /// by closing the whole connection.
    async fn closed(&mut self) -> End {
        let Ok(body) = self.body() else {
            return std::future::pending().await;
        };
        match poll_fn(|cx| body.poll_reset(cx)).await {
            Ok(_) => End::ClientFinished,
            Err(e) if e.is_io() || e.is_go_away() || e.is_remote() => End::ClientFinished,
            Err(e) => End::Failed(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn size_of_output<A, B, C, R>(_f: fn(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    fn size_of_future<A, R>(_f: fn(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every idle HTTP/2 subscriber costs one stream task, and every connection one codec
    /// task: these catch either growing. The bounds are their sizes in a debug build when the
    /// tests were written; raise them only knowing why.
    #[test]
    fn the_tasks_stay_small() {
        let stream = size_of_output(stream_task);
        let connection = size_of_future(Connection::run);
        assert!(stream <= 864, "stream task {stream} B");
        assert!(connection <= 1424, "connection task {connection} B");
    }
}
