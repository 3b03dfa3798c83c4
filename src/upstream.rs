//! One upstream GET: timeout, conditional request, gzip, body cap.

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

/// What the upstream said last time, so an unchanged resource costs a 304 and no body.
#[derive(Clone, Debug, Default)]
pub struct Validators {
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
}

impl Validators {
    /// Validators an earlier poll got (cluster mode keeps them in Redis for the next holder).
    /// Values that are no header value are dropped: the next poll is then unconditional.
    pub fn new(etag: Option<&str>, last_modified: Option<&str>) -> Validators {
        let value = |v: Option<&str>| v.and_then(|v| HeaderValue::from_str(v).ok());
        Validators {
            etag: value(etag),
            last_modified: value(last_modified),
        }
    }

    pub fn etag(&self) -> Option<&str> {
        self.etag.as_ref().and_then(|v| v.to_str().ok())
    }

    pub fn last_modified(&self) -> Option<&str> {
        self.last_modified.as_ref().and_then(|v| v.to_str().ok())
    }

    fn from_headers(h: &HeaderMap) -> Validators {
        Validators {
            etag: h.get(header::ETAG).cloned(),
            last_modified: h.get(header::LAST_MODIFIED).cloned(),
        }
    }
}

/// The poller's HTTP clients, one per redirect policy; each keeps its own connection pool.
#[derive(Clone)]
pub struct Clients {
    /// Follows nothing: a 3xx is a failed poll.
    stay: reqwest::Client,
    /// Follows redirects to the origin of the polled URL only, so neither the upstream's headers
    /// nor forwarded credentials reach another host (reqwest drops only `Authorization` and
    /// cookies there, never `X-Api-Key` and the like).
    same_origin: reqwest::Client,
}

/// Redirects one chain may follow before the 3xx counts as the answer.
const MAX_REDIRECTS: usize = 10;

impl Clients {
    /// `builder` makes each client's common settings (user agent, timeouts).
    pub fn new(builder: impl Fn() -> reqwest::ClientBuilder) -> reqwest::Result<Clients> {
        let same_origin = reqwest::redirect::Policy::custom(|attempt| {
            let stays = attempt
                .previous()
                .first()
                .is_some_and(|first| same_origin(first, attempt.url()));
            if stays && attempt.previous().len() <= MAX_REDIRECTS {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        Ok(Clients {
            stay: builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            same_origin: builder().redirect(same_origin).build()?,
        })
    }

    pub fn get(&self, follow_redirects: bool) -> &reqwest::Client {
        if follow_redirects {
            &self.same_origin
        } else {
            &self.stay
        }
    }
}

/// RFC 6454 origin equality: scheme, host and port.
fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

pub struct Request<'a> {
    pub url: url::Url,
    /// The upstream's static headers, then the forwarded ones.
    pub headers: &'a [(HeaderName, HeaderValue)],
    pub forwarded: &'a [(HeaderName, HeaderValue)],
    pub timeout: Duration,
    pub max_body: usize,
    pub validators: &'a Validators,
}

#[derive(Debug)]
pub enum Fetched {
    Body {
        body: Bytes,
        validators: Validators,
        /// The `Content-Type` says JSON: a body that does not parse is a broken answer, not text.
        json: bool,
    },
    NotModified,
}

/// Its Display is what clients see in `upstream-status`: a short reason that never names the
/// upstream's address or the polled query; `causes` adds the detail for logs.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("timed out")]
    Timeout,
    #[error("cannot connect")]
    Connect(#[source] reqwest::Error),
    #[error("request failed")]
    Transport(#[source] reqwest::Error),
    #[error("answered {status}{}", if (300..400).contains(status) { " (redirect not followed)" } else { "" })]
    Status {
        status: u16,
        /// From `Retry-After` on 429 and 503 (seconds or an HTTP date).
        retry_after: Option<Duration>,
    },
    #[error("body larger than max_body ({limit} bytes)")]
    TooLarge { limit: usize },
    /// Only the position: serde_json's messages may quote the body.
    #[error("invalid JSON at line {line} column {column}")]
    InvalidJson { line: usize, column: usize },
}

impl FetchError {
    pub fn status(&self) -> Option<u16> {
        match self {
            FetchError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn invalid_json(e: &serde_json::Error) -> FetchError {
        FetchError::InvalidJson {
            line: e.line(),
            column: e.column(),
        }
    }

    /// What caused this error, for logs: reqwest's errors without their URL, which would carry
    /// the instance's query, then what they wrap (`connection refused`, a TLS alert).
    pub fn causes(&self) -> String {
        crate::causes::of(self)
    }

    fn from_reqwest(e: reqwest::Error) -> FetchError {
        if e.is_timeout() {
            FetchError::Timeout
        } else if e.is_connect() {
            FetchError::Connect(e.without_url())
        } else {
            // reqwest's Display names the URL, query included: it would reach logs and every
            // client's `upstream-status` event.
            FetchError::Transport(e.without_url())
        }
    }
}

pub async fn fetch(client: &reqwest::Client, req: Request<'_>) -> Result<Fetched, FetchError> {
    let mut builder = client.get(req.url).timeout(req.timeout);
    for (name, value) in req.headers.iter().chain(req.forwarded) {
        builder = builder.header(name, value);
    }
    if let Some(etag) = &req.validators.etag {
        builder = builder.header(header::IF_NONE_MATCH, etag);
    }
    if let Some(lm) = &req.validators.last_modified {
        builder = builder.header(header::IF_MODIFIED_SINCE, lm);
    }
    let mut resp = builder.send().await.map_err(FetchError::from_reqwest)?;
    let status = resp.status();
    if status == StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if !status.is_success() {
        return Err(FetchError::Status {
            status: status.as_u16(),
            retry_after: retry_after(resp.headers()),
        });
    }
    let validators = Validators::from_headers(resp.headers());
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json);
    // Refuse before reading when the upstream announces a larger body.
    if resp
        .content_length()
        .is_some_and(|n| n > req.max_body as u64)
    {
        return Err(FetchError::TooLarge {
            limit: req.max_body,
        });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(FetchError::from_reqwest)? {
        if body.len() + chunk.len() > req.max_body {
            return Err(FetchError::TooLarge {
                limit: req.max_body,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched::Body {
        body: body.freeze(),
        validators,
        json,
    })
}

/// `application/json` or any `+json` type (RFC 6839 §3.1), whatever its parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let essence = essence.to_ascii_lowercase();
    essence == "application/json"
        || essence
            .split_once('/')
            .is_some_and(|(_, sub)| sub.len() > 5 && sub.ends_with("+json"))
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn same_origin_means_scheme_host_and_port() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert!(same_origin(&u("http://a:80/x?q=1"), &u("http://a/y")));
        for other in [
            "https://a/x",
            "http://b/x",
            "http://a:8080/x",
            "http://a.evil/x",
        ] {
            assert!(!same_origin(&u("http://a/x"), &u(other)), "{other}");
        }
    }

    #[test]
    fn json_is_application_json_or_a_json_suffix() {
        for t in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
            "application/vnd.api+json;v=2",
        ] {
            assert!(is_json(t), "{t}");
        }
        for t in [
            "text/plain",
            "text/html; charset=utf-8",
            "application/jsonl",
            "+json",
            "",
        ] {
            assert!(!is_json(t), "{t}");
        }
    }
}
