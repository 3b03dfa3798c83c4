//! The admin listener's whole answers, typed: shared by its routes and its sign-in.

use http::{header, HeaderValue, Response, StatusCode};

/// Built without a fallible builder, so no answer can turn into an empty 200.
pub(super) fn typed(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub(super) fn json(status: StatusCode, body: &serde_json::Value) -> Response<Vec<u8>> {
    typed(status, "application/json", body.to_string().into_bytes())
}

pub(super) fn text(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    let mut response = typed(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    );
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
