//! The browser client (`clients/js/live-document.js`) as a file any page may load: cached for a
//! while, revalidated by ETag, and readable from other origins, since a module script from
//! another origin loads only with CORS.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use pingora::http::RequestHeader;

use super::reply::Reply;
use crate::assets::CLIENT_JS;

/// FNV-1a of the script, computed by the compiler: the file is part of the binary, so its tag
/// changes exactly when a new build serves a different file.
const TAG: u64 = fnv1a(CLIENT_JS.as_bytes());

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h = (h ^ bytes[i] as u64).wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// `200` with the script, or `304` when the client holds this version (RFC 9110 §13.1.2).
pub(super) fn reply(req: &RequestHeader) -> Reply {
    let etag = format!("\"{TAG:016x}\"");
    let fresh = req
        .headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*");
    let mut reply = if fresh {
        Reply::new(304, "text/javascript; charset=utf-8", Bytes::new())
    } else {
        Reply::new(
            200,
            "text/javascript; charset=utf-8",
            Bytes::from_static(CLIENT_JS.as_bytes()),
        )
    };
    reply.set(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    if let Ok(tag) = HeaderValue::from_str(&etag) {
        reply.set(header::ETAG, tag);
    }
    reply.set(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    reply
}
