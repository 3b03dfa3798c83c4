//! The operator's listener (`admin.listen`): metrics, health, the stream list, and refresh.
//!
//! It binds to loopback by default and can require a bearer token (config validation insists on
//! one off loopback); `/healthz` and `/readyz` answer without it. Without a token it answers
//! only requests addressed by IP or `localhost`, against DNS rebinding. It never shows
//! credentials.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::routes;
use crate::state::Shared;

pub struct Admin {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let routes = self.shared.routes.load_full();
        // Probes carry no credentials (a kubelet can't read a Secret into a header), and these
        // two say only "up" and "ready".
        let probe = req.method == Method::GET && matches!(req.uri.path(), "/healthz" | "/readyz");
        if let Some(token) = routes.config.admin.token.as_ref().filter(|_| !probe) {
            let given = req
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !same(given.as_bytes(), token.as_bytes()) {
                return text(StatusCode::UNAUTHORIZED, "a bearer token is required\n")
                    .map(|mut r| {
                        r.headers_mut().insert(
                            header::WWW_AUTHENTICATE,
                            header::HeaderValue::from_static("Bearer"),
                        );
                        r
                    })
                    .unwrap_or_else(|_| Response::new(Vec::new()));
            }
        }
        if routes.config.admin.token.is_none() && !probe {
            // A browser names the page that sent a request in `Origin` (on every POST, and on
            // any cross-origin fetch); operators' tools send none. Without a token, a page must
            // not reach this listener by its address (CSRF) or by its own name (DNS rebinding).
            let why = if req.headers.contains_key(header::ORIGIN) {
                Some("without admin.token, admin answers no request sent by a web page\n")
            } else if !addressed_by_ip(req) {
                Some("without admin.token, admin answers only requests addressed to an IP address or localhost\n")
            } else {
                None
            };
            if let Some(why) = why {
                return text(StatusCode::FORBIDDEN, why)
                    .unwrap_or_else(|_| Response::new(Vec::new()));
            }
        }
        let path = req.uri.path().to_string();
        let query = req.uri.query().map(str::to_string);
        let method = req.method.clone();
        let response = match (method, path.as_str()) {
            (Method::GET, "/metrics") => {
                let body = self.shared.metrics.render();
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                    .body(body.into_bytes())
            }
            (Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (Method::GET, "/readyz") => {
                if bound(routes.config.listen).await {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "the client listener is not up yet\n")
                }
            }
            (Method::GET, "/streams") => {
                let list = self.shared.hub.instances();
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(json!({ "instances": list }).to_string().into_bytes())
            }
            (Method::POST, "/streams/refresh") => self.refresh(query.as_deref()),
            _ => text(
                StatusCode::NOT_FOUND,
                "admin serves GET /metrics, /healthz, /readyz, /streams and POST /streams/refresh?path=\n",
            ),
        };
        response.unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

impl Admin {
    /// Polls the instance a client of `path` would join (all of its credential variants), now or
    /// when its refresh window opens.
    fn refresh(&self, query: Option<&str>) -> http::Result<Response<Vec<u8>>> {
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
        let routes = self.shared.routes.load_full();
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
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_string().into_bytes())
    }
}

fn text(status: StatusCode, body: &str) -> http::Result<Response<Vec<u8>>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(body.as_bytes().to_vec())
}

/// Whether the request names the admin listener by an IP address or `localhost` (or names
/// nothing, as HTTP/1.0 may). A page on another site can reach a loopback listener through DNS
/// rebinding (its own name, re-pointed at 127.0.0.1), but only with its name in `Host`: without
/// a token, that is all that keeps it from `/streams` and refresh.
fn addressed_by_ip(req: &pingora::http::RequestHeader) -> bool {
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

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
