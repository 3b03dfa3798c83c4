//! The client side, the top layer under the composition root: every connection and request,
//! and the only code that names pingora's request types. It reads routes and subscribes to the hub.
//!
//! Each request is a stream subscription, the demo page, or passed through.
//! Routing only; one SSE client's loop lives in `session.rs`, and `front.rs` gives subscriptions
//! on HTTP/1.1 connections (plain or TLS) a lean path around pingora's per-request state, reading
//! every head itself (`head.rs`) under the connection's deadlines.

pub(crate) mod conns;
mod cors;
mod front;
mod head;
mod http2;
mod proxy;
mod reply;
mod rewound;
mod script;
mod session;
mod tls_stream;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Version};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::codec::sse;
use crate::config::{DiffMode, StreamSpec};
use crate::demo;
use crate::hub::{HubError, LastEventId, SubscribeRequest, Subscription};
use crate::metrics::Metrics;
use crate::ops::tls::CertStore;
use crate::routes::{self, Routes};
use crate::state::Shared;
pub(crate) use reply::Reply;
use session::End;

pub use conns::Conns;
pub use front::Front;
pub use tls_stream::Acceptor;

#[derive(Clone)]
pub struct Edge {
    pub shared: Arc<Shared>,
    side: Arc<ClientSide>,
    dns: Arc<proxy::Dns>,
}

impl Edge {
    pub fn new(shared: Arc<Shared>, side: Arc<ClientSide>) -> Edge {
        let dns = proxy::Dns::new(Box::new(crate::config::resolve));
        Edge {
            shared,
            side,
            dns: Arc::new(dns),
        }
    }
}

/// What only the client side keeps: its admission counts, the listener's certificate and the
/// signal that tells streams to say goodbye.
pub struct ClientSide {
    /// Client-limit slots in use, against `limits.max_clients` (see `Permit`).
    clients: AtomicUsize,
    /// Open client connections, against `limits.max_connections` and `max_clients_per_ip`.
    conns: Arc<Conns>,
    /// The client listener's certificate, when it serves TLS.
    certs: Option<Arc<CertStore>>,
    /// Becomes true when the process starts shutting down.
    shutdown: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

impl ClientSide {
    pub fn new(conns: Conns, certs: Option<Arc<CertStore>>, metrics: Arc<Metrics>) -> ClientSide {
        ClientSide {
            clients: AtomicUsize::new(0),
            conns: Arc::new(conns),
            certs,
            shutdown: watch::channel(false).0,
            metrics,
        }
    }

    /// Tells every stream to end with a jittered `retry` (pingora's request callbacks never see
    /// its shutdown signal).
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }
}

/// Per request: whether it became an SSE stream, which changes how its errors end it; and the
/// size of a proxied body so far.
#[derive(Default)]
pub struct Ctx {
    streaming: bool,
    body: proxy::BodyCount,
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let slots = match self.side.certs {
            Some(_) => PINGORA_SLOTS_TLS,
            None => PINGORA_SLOTS_PLAIN,
        };
        match self.answer_costing(session.req_header(), slots).await {
            Answer::Proxy => Ok(false),
            Answer::Reply(reply) => {
                write_reply(session, reply).await?;
                Ok(true)
            }
            Answer::Stream(opened) => {
                ctx.streaming = true;
                let Opened {
                    sub,
                    client,
                    permit,
                } = *opened;
                let wire = PingoraWire {
                    session,
                    write_timeout: client.write_timeout,
                };
                let end = session::run(wire, sub, client).await;
                drop(permit);
                // An error hands the connection back to pingora as failed, so it is closed,
                // never reused.
                if end.is_clean() {
                    return Ok(true);
                }
                Err(Error::because(ErrorType::WriteError, "sse stream", end))
            }
        }
    }

    /// An SSE stream that ended in an error (client gone, write timeout) has nothing left to
    /// answer: its head went out long ago. Drop the connection without an error page.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if ctx.streaming {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let code = proxy::error_status(e);
        if let Err(e) = session.respond_error(code).await {
            debug!(error = %e, "cannot send the error response");
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// The session already logged how a stream ended; pingora's error line would repeat it for
    /// every client that leaves. An oversized body is the client's doing, not worth an error
    /// line each time.
    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, e: &Error) -> bool {
        ctx.streaming || e.etype() == &ErrorType::HTTPStatus(413)
    }

    /// Refusals that must come before anything reaches the upstream.
    async fn proxy_upstream_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<bool> {
        let max_body = self.shared.routes.load().config.limits.proxy_max_body;
        let Some(reply) = proxy::refusal(session.req_header(), max_body) else {
            return Ok(true);
        };
        debug!(status = reply.status, "proxied request refused");
        // The body, if any, stays unread: the connection can't carry another request.
        session.set_keepalive(None);
        write_reply(session, reply).await?;
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let routes = self.shared.routes.load();
        let up = routes.config.proxy.as_ref().ok_or_else(|| {
            Error::explain(ErrorType::HTTPStatus(404), "no proxy upstream configured")
        })?;
        let addr = self.dns.addr(up, routes.config.forwarding.resolve_interval);
        Ok(Box::new(proxy::peer(up, addr, &routes.config.limits)))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        let routes = self.shared.routes.load();
        let Some(up) = routes.config.proxy.as_ref() else {
            return Ok(());
        };
        let client = proxy::Client {
            ip: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
        };
        proxy::rewrite(upstream_request, up, &routes.config.forwarding, &client)
    }

    /// Counts a body without a `Content-Length` (or one that lies) against the limit. A tunnel
    /// after an upgrade (WebSocket) is not a request body.
    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if session.was_upgraded() {
            return Ok(());
        }
        let max = self.shared.routes.load().config.limits.proxy_max_body;
        ctx.body.add(body.as_deref(), max)
    }
}

/// What the gateway makes of one request, whichever transport carried it: pingora's proxy
/// session or the direct path in `front.rs`.
pub(crate) enum Answer {
    /// Not a stream subscription: the proxy upstream answers it, unchanged.
    Proxy,
    /// A whole response, written by the gateway.
    Reply(Reply),
    /// An event stream to run until the client or the stream ends.
    Stream(Box<Opened>),
}

/// A subscription ready to stream, and the client-limit slot it holds.
pub(crate) struct Opened {
    pub sub: Subscription,
    pub client: session::ClientStream,
    pub permit: Permit,
}

impl Edge {
    /// `answer_costing` for a client on the direct path, which costs one slot.
    pub(crate) async fn answer(&self, req: &RequestHeader) -> Answer {
        self.answer_costing(req, 1).await
    }

    /// The one place that decides what a request is: demo page, stream, preflight, refusal or
    /// pass-through. Nothing is allocated for the client until every check has passed. A stream
    /// takes `slots` of `limits.max_clients`: what its transport costs.
    pub(crate) async fn answer_costing(&self, req: &RequestHeader, slots: usize) -> Answer {
        let routes = self.shared.routes.load_full();
        let path = req.uri.path();
        let is_get = req.method == Method::GET;
        let has_proxy = routes.config.proxy.is_some();

        if is_get && routes.config.client_script.as_deref() == Some(path) {
            return Answer::Reply(script::reply(req));
        }
        if path == "/" && is_get && routes.config.demo.as_ref().is_some_and(|d| d.page) {
            // Validation keeps the client on whenever the page is.
            let script = routes.config.client_script.as_deref().unwrap_or_default();
            return Answer::Reply(Reply::new(
                200,
                "text/html; charset=utf-8",
                demo::page(script).into(),
            ));
        }
        let Some((spec, raw_values)) = routes.find(path) else {
            if has_proxy {
                return Answer::Proxy;
            }
            return Answer::Reply(Reply::text(
                404,
                format!("no stream at {path} and no proxy configured\n"),
            ));
        };
        let origin = req
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        if req.method == Method::OPTIONS && spec.cors.is_some() {
            return Answer::Reply(Reply {
                status: 204,
                headers: cors::preflight(spec, origin),
                body: Bytes::new(),
            });
        }
        if !wants_stream(req, spec, has_proxy) {
            if has_proxy {
                return Answer::Proxy;
            }
            return Answer::Reply(Reply::text(
                405,
                "this stream path only answers GET\n".into(),
            ));
        }
        let cors = cors::headers(spec.cors.as_ref(), origin);
        let spec = spec.clone();
        match self
            .open(req, &routes, spec, &raw_values, cors, slots)
            .await
        {
            Ok(opened) => Answer::Stream(Box::new(opened)),
            Err(reply) => Answer::Reply(reply),
        }
    }

    /// Joins the stream instance the request names, or says why not.
    async fn open(
        &self,
        req: &RequestHeader,
        routes: &Routes,
        spec: Arc<StreamSpec>,
        values: &[(&str, &str)],
        cors: Vec<(HeaderName, HeaderValue)>,
        slots: usize,
    ) -> std::result::Result<Opened, Reply> {
        let query = req.uri.query();
        let (format, resume) = options(req)?;
        let key = routes::instance(&spec, values, query, &req.headers)
            .map_err(|e| Reply::text(400, format!("{e}\n")))?;

        let max = routes.config.limits.max_clients;
        let Some(permit) = Permit::acquire(&self.side, max, slots) else {
            let why = "the gateway is at its client limit";
            return Err(self.overloaded(req, &spec, cors, why));
        };
        let sub = match self
            .shared
            .hub
            .subscribe(SubscribeRequest {
                spec: spec.clone(),
                key,
                format,
                resume,
            })
            .await
        {
            Ok(sub) => sub,
            Err(HubError::Denied(status)) => {
                debug!(status, "subscription refused by upstream");
                return Err(Reply::text(
                    status,
                    format!("the upstream answered {status} for this stream\n"),
                ));
            }
            Err(e @ HubError::TooManyInstances { .. }) => {
                return Err(self.overloaded(req, &spec, cors, &e.to_string()));
            }
        };
        Ok(Opened {
            sub,
            client: session::ClientStream {
                headers: cors,
                shutdown: self.side.shutdown.subscribe(),
                metrics: self.shared.metrics.clone(),
                retry: spec.retry,
                write_timeout: routes.config.limits.write_timeout,
            },
            permit,
        })
    }

    /// Past a limit, a browser must come back later rather than give up: a non-200 answer ends
    /// a native EventSource for good (WHATWG HTML §9.2.3), so SSE clients get 200, a jittered
    /// `retry:` and an `overloaded` event; anything else gets 503 with `Retry-After`.
    fn overloaded(
        &self,
        req: &RequestHeader,
        spec: &StreamSpec,
        cors: Vec<(HeaderName, HeaderValue)>,
        reason: &str,
    ) -> Reply {
        self.shared.metrics.overloaded.inc();
        let total = self.shared.metrics.overloaded.get();
        if total.is_power_of_two() || total.is_multiple_of(1000) {
            warn!(overloaded_total = total, reason, "client turned away");
        }
        let retry = session::jittered(spec.retry, OVERLOADED_SPREAD);
        if accepts_sse(req) {
            let data = serde_json::json!({ "reason": reason }).to_string();
            let body = sse::Event::new("overloaded")
                .retry(retry)
                .data(&data)
                .encode();
            let mut reply = Reply::new(200, "text/event-stream", body);
            reply.headers.extend(cors);
            reply
        } else {
            let mut reply = Reply::text(503, format!("{reason}\n"));
            if let Ok(v) = HeaderValue::from_str(&retry.as_secs().to_string()) {
                reply.headers.push((header::RETRY_AFTER, v));
            }
            reply
        }
    }
}

/// What the client asked of its stream: a format (`?format=`), and where to resume from
/// (`Last-Event-ID`, or `?lastEventId=` for clients that cannot set headers). An id that is not
/// well formed is ignored: the client starts from a snapshot.
fn options(
    req: &RequestHeader,
) -> std::result::Result<(Option<DiffMode>, Option<LastEventId>), Reply> {
    let query = req.uri.query();
    let format = match routes::query_param(query, "format") {
        None => None,
        Some(f) => match DiffMode::parse(&f) {
            Some(m) => Some(m),
            None => {
                return Err(Reply::text(
                    400,
                    format!("unknown format `{f}`: use snapshot, json-patch or merge-patch\n"),
                ))
            }
        },
    };
    let resume = req
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| routes::query_param(query, "lastEventId"))
        .and_then(|id| LastEventId::parse(&id));
    Ok((format, resume))
}

/// Turned-away clients come back over one to five `retry` periods, wider than a restart's
/// goodbye: the gateway is full, so the load must spread further.
const OVERLOADED_SPREAD: u32 = 5;

/// A GET that accepts `text/event-stream` is a subscription. So is any other GET, unless the
/// stream shares its path with the API (`path` equal to `poll`) and a proxy can answer it:
/// then old clients of that API path keep getting the API.
fn wants_stream(req: &RequestHeader, spec: &StreamSpec, has_proxy: bool) -> bool {
    if req.method != Method::GET {
        return false;
    }
    accepts_sse(req) || !(has_proxy && spec.path.as_str() == spec.poll.as_str())
}

fn accepts_sse(req: &RequestHeader) -> bool {
    req.headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// A whole response through pingora's session.
async fn write_reply(session: &mut Session, reply: Reply) -> Result<()> {
    let mut resp = ResponseHeader::build(reply.status, Some(reply.headers.len() + 1))?;
    let length = reply.content_length();
    for (name, value) in reply.headers {
        resp.insert_header(name, value)?;
    }
    if let Some(len) = length {
        resp.insert_header(header::CONTENT_LENGTH, len.to_string())?;
    }
    if reply.body.is_empty() {
        return session.write_response_header(Box::new(resp), true).await;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(reply.body), true).await
}

/// An event stream through pingora's session: HTTP/2, and the HTTP/1 subscriptions the direct
/// path leaves to pingora (HTTP/1.0, a body, `Upgrade` or `Expect`).
struct PingoraWire<'a> {
    session: &'a mut Session,
    write_timeout: Duration,
}

impl session::Wire for PingoraWire<'_> {
    async fn open(
        &mut self,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> std::result::Result<(), End> {
        self.session.set_write_timeout(Some(self.write_timeout));
        let mut resp = ResponseHeader::build(200, Some(headers.len() + 4)).map_err(end)?;
        for (name, value) in session::standard_headers().into_iter().chain(headers) {
            resp.insert_header(name, value).map_err(end)?;
        }
        // pingora would otherwise send a close-delimited body while saying keep-alive.
        if self.session.req_header().version == Version::HTTP_11 && !self.session.is_http2() {
            resp.insert_header(header::TRANSFER_ENCODING, "chunked")
                .map_err(end)?;
        }
        self.session
            .write_response_header(Box::new(resp), false)
            .await
            .map_err(end)
    }

    async fn send(&mut self, bytes: Bytes) -> std::result::Result<(), End> {
        self.session
            .write_response_body(Some(bytes), false)
            .await
            .map_err(end)
    }

    async fn finish(&mut self) {
        let _ = self.session.write_response_body(None, true).await;
    }

    async fn closed(&mut self) -> End {
        match self.session.read_body_or_idle(true).await {
            Ok(None) => End::ClientFinished,
            Ok(Some(_)) => End::ClientSentData,
            Err(e) => end(e),
        }
    }
}

fn end(e: Box<Error>) -> End {
    match e.etype() {
        ErrorType::WriteTimedout => End::TimedOut,
        _ => End::Failed(e),
    }
}

/// A client's share of `limits.max_clients`, given back on drop. A slot is what a client costs
/// on the direct path; a client on pingora's session takes as many as it costs there.
pub(crate) struct Permit {
    side: Arc<ClientSide>,
    slots: usize,
}

/// Slots per client on pingora's session, from README "Where the memory goes": 46 KB there
/// against 2.6 KB on the direct path (plain HTTP/1.1), so that `max_clients` × 2.6 KB bounds
/// the clients' memory whichever way they come.
const PINGORA_SLOTS_PLAIN: usize = 46_000_usize.div_ceil(2_600);
/// Over TLS a slot is the TLS direct path's 5.6 KB (`bench/run.sh --tls`, 10,000 clients), and
/// pingora's session holds 41.5 KB (measured: 2,000 HTTP/1.0 subscriptions over TLS, the
/// gateway's PSS before and after). HTTP/2 streams are on the direct path (`http2.rs`) and
/// take one slot each; what their connection holds beyond them is bounded by
/// `max_connections`, as every connection is.
const PINGORA_SLOTS_TLS: usize = 41_500_usize.div_ceil(5_600);

impl Permit {
    fn acquire(side: &Arc<ClientSide>, max: usize, slots: usize) -> Option<Permit> {
        side.clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n + slots <= max).then_some(n + slots)
            })
            .ok()?;
        side.metrics.client_slots.add(slots as i64);
        if slots > 1 {
            side.metrics.clients_pingora.inc();
        }
        Some(Permit {
            side: side.clone(),
            slots,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.side.clients.fetch_sub(self.slots, Ordering::AcqRel);
        self.side.metrics.client_slots.sub(self.slots as i64);
        if self.slots > 1 {
            self.side.metrics.clients_pingora.dec();
        }
    }
}
