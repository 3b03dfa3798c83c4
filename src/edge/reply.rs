//! A whole response the gateway writes itself (demo page, refusals, preflights), the same on
//! either transport: pingora's session or the direct path.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};

/// A response with a body; the transport adds `Content-Length` (`Reply::content_length`).
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Reply {
    pub(super) fn new(status: u16, content_type: &'static str, body: Bytes) -> Reply {
        Reply {
            status,
            headers: vec![
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            body,
        }
    }

    pub(super) fn text(status: u16, body: String) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", body.into())
    }

    /// Sets a header, replacing any of that name.
    pub(super) fn set(&mut self, name: HeaderName, value: HeaderValue) {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value));
    }

    /// The `Content-Length` the transport writes: none on a `304`, which has no body and whose
    /// length would have to be the `200`'s (RFC 9110 §8.6).
    pub(super) fn content_length(&self) -> Option<usize> {
        (self.status != 304).then_some(self.body.len())
    }
}
