//! The HTTP front end: each request is a stream subscription, the demo page, or passed through.
//! Routing only; one SSE client's loop lives in `session.rs`.

mod cors;
mod session;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, Method};
use pingora::http::ResponseHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use rand::Rng;
use tracing::{debug, warn};

use crate::app::Shared;
use crate::config::{DiffMode, StreamSpec};
use crate::hub::{EventId, HubError, SubscribeRequest};
use crate::routes::{self, Routes};
use crate::{demo, sse};

pub struct Edge {
    pub shared: Arc<Shared>,
}

/// Per request: whether it became an SSE stream, which changes how its errors end it.
#[derive(Default)]
pub struct Ctx {
    streaming: bool,
    /// CORS headers for the stream's response, when the origin is allowed.
    cors: Vec<(http::HeaderName, http::HeaderValue)>,
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let routes = self.shared.routes.load_full();
        let req = session.req_header();
        let path = req.uri.path().to_owned();
        let is_get = req.method == Method::GET;
        let has_proxy = routes.config.proxy.is_some();

        if path == "/" && is_get && routes.config.demo.as_ref().is_some_and(|d| d.page) {
            respond(session, 200, "text/html; charset=utf-8", demo::PAGE.into()).await?;
            return Ok(true);
        }
        let Some((spec, raw_values)) = routes.find(&path) else {
            if has_proxy {
                return Ok(false);
            }
            let body = format!("no stream at {path} and no proxy configured\n");
            respond(session, 404, "text/plain; charset=utf-8", body.into()).await?;
            return Ok(true);
        };
        let origin = session
            .req_header()
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if session.req_header().method == Method::OPTIONS && spec.cors.is_some() {
            let mut resp = ResponseHeader::build(204, Some(6))?;
            for (name, value) in cors::preflight(spec, origin.as_deref()) {
                resp.insert_header(name, value)?;
            }
            resp.insert_header(header::CONTENT_LENGTH, "0")?;
            session.write_response_header(Box::new(resp), true).await?;
            return Ok(true);
        }
        if !wants_stream(session, spec, has_proxy) {
            if has_proxy {
                return Ok(false);
            }
            let body = "this stream path only answers GET\n";
            respond(session, 405, "text/plain; charset=utf-8", body.into()).await?;
            return Ok(true);
        }
        let spec = spec.clone();
        ctx.cors = cors::headers(spec.cors.as_ref(), origin.as_deref());
        let raw: Vec<(String, String)> = raw_values
            .iter()
            .map(|(n, v)| ((*n).to_string(), (*v).to_string()))
            .collect();
        self.serve_stream(session, ctx, &routes, spec, raw).await?;
        Ok(true)
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
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ if e.esource() == &pingora::ErrorSource::Upstream => 502,
            _ => 500,
        };
        if let Err(e) = session.respond_error(code).await {
            debug!(error = %e, "cannot send the error response");
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// The session already logged how a stream ended; pingora's error line would repeat it for
    /// every client that leaves.
    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _e: &Error) -> bool {
        ctx.streaming
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let routes = self.shared.routes.load();
        let up = routes.config.proxy.as_ref().ok_or_else(|| {
            Error::explain(ErrorType::HTTPStatus(404), "no proxy upstream configured")
        })?;
        Ok(Box::new(HttpPeer::new(up.addr, up.tls, up.host.clone())))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        // A base path in the proxy upstream's URL prefixes every proxied path, as it does polls.
        let routes = self.shared.routes.load();
        let Some(up) = routes.config.proxy.as_ref() else {
            return Ok(());
        };
        let base = up.url.path().trim_end_matches('/');
        if !base.is_empty() {
            let pq = upstream_request
                .uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str());
            let uri = format!("{base}{pq}")
                .parse::<http::Uri>()
                .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "proxy path", e))?;
            upstream_request.set_uri(uri);
        }
        Ok(())
    }
}

/// A GET that accepts `text/event-stream` is a subscription. So is any other GET, unless the
/// stream shares its path with the API (`path` equal to `poll`) and a proxy can answer it:
/// then old clients of that API path keep getting the API.
fn wants_stream(session: &Session, spec: &StreamSpec, has_proxy: bool) -> bool {
    if session.req_header().method != Method::GET {
        return false;
    }
    accepts_sse(session) || !(has_proxy && spec.path.as_str() == spec.poll.as_str())
}

fn accepts_sse(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

impl Edge {
    async fn serve_stream(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        routes: &Routes,
        spec: Arc<StreamSpec>,
        raw_values: Vec<(String, String)>,
    ) -> Result<()> {
        let req = session.req_header();
        let query = req.uri.query().map(str::to_owned);
        let format = match routes::query_param(query.as_deref(), "format") {
            None => None,
            Some(f) => match DiffMode::parse(&f) {
                Some(m) => Some(m),
                None => {
                    let body =
                        format!("unknown format `{f}`: use snapshot, json-patch or merge-patch\n");
                    return respond(session, 400, "text/plain; charset=utf-8", body.into()).await;
                }
            },
        };
        let resume = req
            .headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| routes::query_param(query.as_deref(), "lastEventId"))
            .and_then(|id| EventId::parse(&id));
        let values: Vec<(&str, &str)> = raw_values
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let key = match routes::instance(&spec, &values, query.as_deref(), &req.headers) {
            Ok(key) => key,
            Err(e) => {
                let body = format!("{e}\n");
                return respond(session, 400, "text/plain; charset=utf-8", body.into()).await;
            }
        };

        let Some(_permit) = Permit::acquire(&self.shared.clients, routes.config.limits.max_clients)
        else {
            let why = "the gateway is at its client limit";
            return self.overloaded(session, ctx, &spec, why).await;
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
                let body = format!("the upstream answered {status} for this stream\n");
                return respond(session, status, "text/plain; charset=utf-8", body.into()).await;
            }
            Err(e @ HubError::TooManyInstances { .. }) => {
                return self.overloaded(session, ctx, &spec, &e.to_string()).await;
            }
        };
        ctx.streaming = true;
        session::run(
            session,
            sub,
            session::Settings {
                headers: std::mem::take(&mut ctx.cors),
                shutdown: self.shared.shutdown.subscribe(),
                metrics: self.shared.metrics.clone(),
                retry: spec.retry,
                write_timeout: routes.config.limits.write_timeout,
            },
        )
        .await
    }

    /// Past a limit, a browser must come back later rather than give up: a non-200 answer ends
    /// a native EventSource for good (WHATWG HTML §9.2.3), so SSE clients get 200, a jittered
    /// `retry:` and an `overloaded` event; anything else gets 503 with `Retry-After`.
    async fn overloaded(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        spec: &StreamSpec,
        reason: &str,
    ) -> Result<()> {
        let cors_headers = std::mem::take(&mut ctx.cors);
        self.shared.metrics.overloaded.inc();
        let total = self.shared.metrics.overloaded.get();
        if total.is_power_of_two() || total % 1000 == 0 {
            warn!(overloaded_total = total, reason, "client turned away");
        }
        let base = spec.retry.max(Duration::from_secs(1));
        let retry = rand::rng().random_range(base..=base * 5);
        if accepts_sse(session) {
            let data = serde_json::json!({ "reason": reason }).to_string();
            let mut body = sse::retry(retry.as_millis() as u64).to_vec();
            body.extend_from_slice(&sse::event(Some("overloaded"), None, &data));
            let mut resp = ResponseHeader::build(200, Some(6))?;
            resp.insert_header(header::CONTENT_TYPE, "text/event-stream")?;
            resp.insert_header(header::CACHE_CONTROL, "no-cache")?;
            resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
            for (name, value) in cors_headers {
                resp.insert_header(name, value)?;
            }
            session.write_response_header(Box::new(resp), false).await?;
            session.write_response_body(Some(body.into()), true).await
        } else {
            let mut resp = ResponseHeader::build(503, Some(3))?;
            resp.insert_header(header::RETRY_AFTER, retry.as_secs().to_string())?;
            resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
            let body = Bytes::from(format!("{reason}\n"));
            resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
            session.write_response_header(Box::new(resp), false).await?;
            session.write_response_body(Some(body), true).await
        }
    }
}

/// A whole response with a body.
async fn respond(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header(header::CONTENT_TYPE, content_type)?;
    resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(header::CACHE_CONTROL, "no-cache")?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// One slot of the global client limit, given back on drop.
struct Permit<'a>(&'a AtomicUsize);

impl<'a> Permit<'a> {
    fn acquire(count: &'a AtomicUsize, max: usize) -> Option<Permit<'a>> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(count))
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
