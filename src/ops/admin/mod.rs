//! The operator's listener (`admin.listen`): metrics, health, the stream list, refresh, and the
//! console (`/`), a page that follows the stream list and tails any instance (`feed.rs`).
//!
//! It binds to loopback by default and can require a bearer token (config validation insists on
//! one off loopback); `/healthz` and `/readyz` answer without it. Without a token it answers
//! only requests addressed by IP or `localhost`, against DNS rebinding. It never shows
//! credentials.

mod feed;
mod login;
mod reply;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{header, HeaderValue, Method, Response, StatusCode};
use pingora::apps::{HttpServerApp, ReusedHttpStream};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::debug;

use reply::{json, text, typed};

use crate::routes::{self, Routes};
use crate::state::Shared;

/// Event streams open at once on the admin listener (feeds and tails): each holds a task and a
/// connection, so a runaway page or script can't hold more.
const MAX_STREAMS: usize = 32;

pub struct Admin {
    pub shared: Arc<Shared>,
    streams: AtomicUsize,
}

impl Admin {
    pub fn new(shared: Arc<Shared>) -> Admin {
        Admin {
            shared,
            streams: AtomicUsize::new(0),
        }
    }
}

/// Whether the request is `POST <path>`.
fn is(session: &ServerSession, path: &str) -> bool {
    let req = session.req_header();
    req.method == Method::POST && req.uri.path() == path
}

/// The body of a `POST /login`, if the request is one (at most `login::MAX_BODY` bytes read).
async fn session_login(session: &mut ServerSession) -> Option<Vec<u8>> {
    if !is(session, "/login") {
        return None;
    }
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = session.read_request_body().await {
        body.extend_from_slice(&chunk);
        if body.len() > login::MAX_BODY {
            body.clear();
            break;
        }
    }
    Some(body)
}

/// One of the `MAX_STREAMS`, given back when dropped: also when the connection's task is
/// cancelled mid-stream, which a count decremented after the `.await` would miss.
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(open: &'a AtomicUsize) -> Option<Slot<'a>> {
        let slot = Slot(open);
        (open.fetch_add(1, Ordering::AcqRel) < MAX_STREAMS).then_some(slot)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What became of a request that may be an event stream.
enum Streamed {
    /// It was one, and it has ended: the connection is not reused.
    Ended(pingora::Result<()>),
    /// It was one, but `MAX_STREAMS` are open.
    Busy,
    /// Another request, or one answered whole (a refusal, an unknown instance).
    NotAStream,
}

/// The console's files, served by the binary: no build step, no CDN. The page allows scripts
/// and styles from this listener only.
const CONSOLE_HTML: &str = include_str!("console.html");
const CONSOLE_JS: &str = include_str!("console.js");
const CONSOLE_CSS: &str = include_str!("console.css");
const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

#[async_trait]
impl HttpServerApp for Admin {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !matches!(session.read_request().await, Ok(true)) {
            return None;
        }
        let keepalive = (!*shutdown.borrow()).then_some(60);
        session.set_keepalive(keepalive);
        let response = match self.stream(&mut session, shutdown).await {
            Streamed::Ended(result) => {
                if let Err(e) = result {
                    debug!(error = %e, "admin event stream ended");
                }
                return None;
            }
            Streamed::Busy => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("admin holds {MAX_STREAMS} event streams already\n"),
            ),
            Streamed::NotAStream => match session_login(&mut session).await {
                Some(body) => {
                    let routes = self.shared.routes.load();
                    let token = routes.config.admin.token.as_deref();
                    login::login(session.req_header(), &body, token)
                }
                None if is(&session, "/logout") => login::logout(),
                None => self.response(&session).await,
            },
        };
        let (parts, body) = response.into_parts();
        let mut head: ResponseHeader = parts.into();
        let _ = head.insert_header(header::CONTENT_LENGTH, body.len().to_string());
        let _ = head.insert_header("cross-origin-resource-policy", "same-origin");
        session.write_response_header(Box::new(head)).await.ok()?;
        if !body.is_empty() {
            session.write_response_body(body.into(), true).await.ok()?;
        }
        let settings = pingora::apps::HttpPersistentSettings::for_session(&session);
        let reusable = session.finish().await.ok()??;
        Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
    }
}

impl Admin {
    /// Serves the request if it is one of the event streams (`/streams?watch`,
    /// `/streams/tail?instance=`), which hold the connection; `None` for any other request.
    async fn stream(&self, session: &mut ServerSession, shutdown: &ShutdownWatch) -> Streamed {
        let req = session.req_header();
        let query = req.uri.query();
        let tail = match (&req.method, req.uri.path()) {
            (&Method::GET, "/streams") if routes::query_param(query, "watch").is_some() => None,
            (&Method::GET, "/streams/tail") => match routes::query_param(query, "instance") {
                Some(label) => Some(label),
                None => return Streamed::NotAStream,
            },
            _ => return Streamed::NotAStream,
        };
        let routes = self.shared.routes.load_full();
        // Refusals, and a tail of no running instance, are answered whole.
        if refusal(req, routes.config.admin.token.as_deref()).is_some() {
            return Streamed::NotAStream;
        }
        let sub = match tail.map(|label| self.shared.hub.tail(&label)) {
            Some(None) => return Streamed::NotAStream,
            Some(Some(sub)) => Some(sub),
            None => None,
        };
        let Some(_slot) = Slot::take(&self.streams) else {
            return Streamed::Busy;
        };
        let result = match sub {
            Some(sub) => feed::tail(session, sub, shutdown).await,
            None => feed::watch(session, &*self.shared.hub, shutdown).await,
        };
        Streamed::Ended(result)
    }

    /// Every answer but the event streams, whole.
    async fn response(&self, session: &ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let routes = self.shared.routes.load_full();
        let path = req.uri.path().to_string();
        // The console's files hold no data: they load without the token (the page asks for it).
        if req.method == Method::GET {
            let file = match path.as_str() {
                "/" => Some(("text/html; charset=utf-8", CONSOLE_HTML)),
                "/console.js" => Some(("text/javascript; charset=utf-8", CONSOLE_JS)),
                "/console.css" => Some(("text/css; charset=utf-8", CONSOLE_CSS)),
                "/client.js" => Some(("text/javascript; charset=utf-8", crate::assets::CLIENT_JS)),
                _ => None,
            };
            if let Some((content_type, body)) = file {
                let mut r = typed(StatusCode::OK, content_type, body.as_bytes().to_vec());
                r.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(CONSOLE_CSP),
                );
                return r;
            }
        }
        if let Some(refusal) = refusal(req, routes.config.admin.token.as_deref()) {
            return refusal;
        }
        let query = req.uri.query().map(str::to_string);
        let method = req.method.clone();
        match (method, path.as_str()) {
            (Method::GET, "/metrics") => {
                let body = self.shared.metrics.render();
                typed(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    body.into_bytes(),
                )
            }
            (Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (Method::GET, "/readyz") => {
                if bound(routes.config.listen).await {
                    // Ready either way: with Redis down the gateway still serves (the mode says how).
                    match self.shared.hub.cluster_state() {
                        Some(line) => text(StatusCode::OK, &format!("ready\n{line}\n")),
                        None => text(StatusCode::OK, "ready\n"),
                    }
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "the client listener is not up yet\n")
                }
            }
            (Method::GET, "/streams") => json(StatusCode::OK, &feed::document(&*self.shared.hub)),
            (Method::GET, "/streams/tail") => text(
                StatusCode::NOT_FOUND,
                "no running instance has that name: give ?instance= as /streams names it\n",
            ),
            (Method::POST, "/streams/refresh") => self.refresh(&routes, query.as_deref()),
            _ => text(
                StatusCode::NOT_FOUND,
                "admin serves GET / (the console), /metrics, /healthz, /readyz, /streams, /streams?watch, /streams/tail?instance= and POST /streams/refresh?path=\n",
            ),
        }
    }
}

/// The answer to a request admin must turn away before looking at it, if any. Probes carry no
/// credentials (a kubelet can't read a Secret into a header) and say only "up" and "ready", so
/// they always pass.
fn refusal(req: &RequestHeader, token: Option<&str>) -> Option<Response<Vec<u8>>> {
    if req.method == Method::GET && matches!(req.uri.path(), "/healthz" | "/readyz") {
        return None;
    }
    let Some(token) = token else {
        // A browser names the page that sent a request in `Origin` (on every POST, and on any
        // cross-origin fetch); operators' tools send none. Without a token, a page must not
        // reach this listener by its address (CSRF) or by its own name (DNS rebinding).
        let why = if req.headers.contains_key(header::ORIGIN) {
            "without admin.token, admin answers no request sent by a web page\n"
        } else if !addressed_by_ip(req) {
            "without admin.token, admin answers only requests addressed to an IP address or localhost\n"
        } else {
            return None;
        };
        return Some(text(StatusCode::FORBIDDEN, why));
    };
    if login::signed_in(req, token) {
        return None;
    }
    let given = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // In time independent of where the two differ (their lengths may show).
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        return None;
    }
    let mut response = text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(response)
}

impl Admin {
    /// Polls the instance a client of `path` would join (all of its credential variants), now or
    /// when its refresh window opens.
    fn refresh(&self, routes: &Routes, query: Option<&str>) -> Response<Vec<u8>> {
        let Some(target) = routes::query_param(query, "path") else {
            return text(
                StatusCode::BAD_REQUEST,
                "give the stream path: ?path=/sse/...\n",
            );
        };
        let (path, path_query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target.as_str(), None),
        };
        let Some((spec, values)) = routes.find(path) else {
            return text(StatusCode::NOT_FOUND, &format!("no stream serves {path}\n"));
        };
        let key = match routes::instance(spec, &values, path_query, &http::HeaderMap::new()) {
            Ok(k) => k,
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
        };
        let done = self.shared.hub.refresh(&key.stream, &key.target);
        let status = if done.now + done.deferred == 0 {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::ACCEPTED
        };
        let body = json!({ "path": path, "refreshed": done.now, "deferred": done.deferred });
        json(status, &body)
    }
}

/// Whether the request names the admin listener by an IP address or `localhost` (or names
/// nothing, as HTTP/1.0 may). A page on another site can reach a loopback listener through DNS
/// rebinding (its own name, re-pointed at 127.0.0.1), but only with its name in `Host`: without
/// a token, that is all that keeps it from `/streams` and refresh.
fn addressed_by_ip(req: &RequestHeader) -> bool {
    let Some(host) = req.headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

/// Whether the client listener accepts connections (an unspecified address is tried on loopback).
async fn bound(listen: SocketAddr) -> bool {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let connect = tokio::net::TcpStream::connect(SocketAddr::new(ip, listen.port()));
    matches!(
        tokio::time::timeout(Duration::from_millis(500), connect).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, auth: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        req.insert_header(header::HOST, "127.0.0.1").unwrap();
        if let Some(auth) = auth {
            req.insert_header(header::AUTHORIZATION, auth).unwrap();
        }
        req
    }

    #[test]
    fn a_wrong_or_missing_token_is_a_401_and_probes_pass_without_one() {
        for auth in [
            None,
            Some("Bearer nope"),
            Some("Bearer let-me-i"),
            Some("let-me-in"),
        ] {
            let refused = refusal(&request("/streams", auth), Some("let-me-in")).unwrap();
            assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(refused.headers()[header::WWW_AUTHENTICATE], "Bearer");
        }
        let right = request("/streams", Some("Bearer let-me-in"));
        assert!(refusal(&right, Some("let-me-in")).is_none());
        assert!(refusal(&request("/healthz", None), Some("let-me-in")).is_none());
    }
}
