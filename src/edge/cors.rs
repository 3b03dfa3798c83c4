//! CORS for streams (WHATWG Fetch §3.2): so a page on another origin can use
//! `new EventSource(url, { withCredentials: true })`. Origins not listed get no CORS headers.

use http::header::{self, HeaderName, HeaderValue};

use crate::config::{Cors, StreamSpec};

/// Headers for a stream response to a request from `origin`.
pub fn headers(cors: Option<&Cors>, origin: Option<&str>) -> Vec<(HeaderName, HeaderValue)> {
    let (Some(cors), Some(origin)) = (cors, origin) else {
        return Vec::new();
    };
    let listed = cors.origins.iter().any(|o| o == "*" || o == origin);
    let Ok(value) = HeaderValue::from_str(origin) else {
        return Vec::new();
    };
    if !listed {
        return Vec::new();
    }
    // Never `*` with credentials: browsers refuse it. The origin itself always works.
    let mut out = vec![
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, value),
        (header::VARY, HeaderValue::from_static("Origin")),
    ];
    if cors.credentials {
        out.push((
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        ));
    }
    out
}

/// Headers answering a preflight `OPTIONS` for a stream.
pub fn preflight(spec: &StreamSpec, origin: Option<&str>) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = headers(spec.cors.as_ref(), origin);
    if out.is_empty() {
        return out;
    }
    let mut allowed = String::from("Last-Event-ID, Cache-Control, Accept");
    for h in &spec.forward_headers {
        allowed.push_str(", ");
        allowed.push_str(h.as_str());
    }
    out.push((
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET"),
    ));
    if let Ok(v) = HeaderValue::from_str(&allowed) {
        out.push((header::ACCESS_CONTROL_ALLOW_HEADERS, v));
    }
    out.push((
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    ));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cors(credentials: bool) -> Cors {
        Cors {
            origins: vec!["https://app.example.com".into()],
            credentials,
        }
    }

    #[test]
    fn a_listed_origin_is_named_never_starred() {
        let h = headers(Some(&cors(true)), Some("https://app.example.com"));
        assert_eq!(h[0].1, "https://app.example.com");
        assert!(h
            .iter()
            .any(|(n, v)| n == header::ACCESS_CONTROL_ALLOW_CREDENTIALS && v == "true"));
        let any = Cors {
            origins: vec!["*".into()],
            credentials: true,
        };
        assert_eq!(
            headers(Some(&any), Some("https://x.test"))[0].1,
            "https://x.test"
        );
    }

    #[test]
    fn others_get_nothing() {
        assert!(headers(Some(&cors(true)), Some("https://evil.test")).is_empty());
        assert!(headers(Some(&cors(true)), None).is_empty());
        assert!(headers(None, Some("https://app.example.com")).is_empty());
    }
}
