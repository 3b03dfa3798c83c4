//! The console's sign-in. A browser can't put `Authorization` on an `EventSource`, so with
//! `admin.token` set the page trades the token for a cookie: `HttpOnly`, `SameSite=Strict`, and
//! holding a hash of the token rather than the token. It is honoured only for reading (`GET`),
//! and only from this listener's own pages: a request that names another origin is refused, so
//! a page elsewhere on the same site (the gateway's own client port, say) can't use it.

use http::{header, HeaderValue, Method, Response, StatusCode};
use pingora::http::RequestHeader;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::reply::text;
use crate::routes;

const COOKIE: &str = "sse_gateway_admin";
/// A console left open overnight signs in again in the morning.
const MAX_AGE_SECS: u32 = 12 * 3600;
/// Larger bodies are not a token.
pub(super) const MAX_BODY: usize = 4096;

/// The cookie's value for `token`: changing the token signs every console out.
fn value(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"sse-gateway admin console\n");
    h.update(token.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Whether the request carries the console's cookie for `token`, from this listener's own
/// page, to read.
pub(super) fn signed_in(req: &RequestHeader, token: &str) -> bool {
    if !matches!(req.method, Method::GET | Method::HEAD) || !same_origin(req) {
        return false;
    }
    let want = value(token);
    req.headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, given)| name == COOKIE && bool::from(given.as_bytes().ct_eq(want.as_bytes())))
}

/// No `Origin`, or this listener's own (`http://` and the request's `Host`).
fn same_origin(req: &RequestHeader) -> bool {
    let Some(origin) = req.headers.get(header::ORIGIN) else {
        return true;
    };
    let host = req.headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (
        origin.to_str().ok().and_then(|o| o.strip_prefix("http://")),
        host,
    ) {
        (Some(origin), Some(host)) => origin.eq_ignore_ascii_case(host),
        _ => false,
    }
}

/// `POST /login` with `token=<token>` (a form body): the cookie if the token is right.
pub(super) fn login(req: &RequestHeader, body: &[u8], token: Option<&str>) -> Response<Vec<u8>> {
    let Some(token) = token else {
        return text(
            StatusCode::NOT_FOUND,
            "admin.token is not set: the console needs no sign-in\n",
        );
    };
    if !same_origin(req) {
        return text(
            StatusCode::FORBIDDEN,
            "sign in from the console's own page\n",
        );
    }
    let form = String::from_utf8_lossy(body);
    let given = routes::query_param(Some(form.trim()), "token").unwrap_or_default();
    if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        return text(StatusCode::UNAUTHORIZED, "wrong token\n");
    }
    with_cookie(&format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={MAX_AGE_SECS}",
        value(token)
    ))
}

/// `POST /logout`: the cookie, expired.
pub(super) fn logout() -> Response<Vec<u8>> {
    with_cookie(&format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    ))
}

fn with_cookie(cookie: &str) -> Response<Vec<u8>> {
    let mut r = text(StatusCode::NO_CONTENT, "");
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, cookie: &str, origin: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build(method, b"/streams", None).unwrap();
        req.insert_header(header::HOST, "127.0.0.1:9090").unwrap();
        req.insert_header(header::COOKIE, cookie).unwrap();
        if let Some(origin) = origin {
            req.insert_header(header::ORIGIN, origin).unwrap();
        }
        req
    }

    #[test]
    fn the_cookie_reads_from_the_console_s_own_page_only() {
        let good = format!("theme=dark; {COOKIE}={}", value("let-me-in"));
        assert!(signed_in(&request("GET", &good, None), "let-me-in"));
        assert!(signed_in(
            &request("GET", &good, Some("http://127.0.0.1:9090")),
            "let-me-in"
        ));
        // Another port of the same host is the same site, but not this origin.
        assert!(!signed_in(
            &request("GET", &good, Some("http://127.0.0.1:8080")),
            "let-me-in"
        ));
        assert!(!signed_in(&request("POST", &good, None), "let-me-in"));
        assert!(!signed_in(&request("GET", &good, None), "another-token"));
        let raw = format!("{COOKIE}=let-me-in");
        assert!(!signed_in(&request("GET", &raw, None), "let-me-in"));
    }
}
