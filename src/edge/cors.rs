//! CORS for streams (WHATWG Fetch §3.2): so a page on another origin can use
//! `new EventSource(url, { withCredentials: true })`. Origins not listed get no CORS headers.

use http::header::{self, HeaderName, HeaderValue};

use crate::config::{Cors, StreamSpec};

/// Headers for a stream response to a request from `origin`.
///
/// `*` is answered with a literal `*`, never by echoing the origin: that is what lets the
/// browser's own rule (no `*` with credentials) apply, and config validation refuses `*` with
/// `credentials: true`. `Origin: null` (sandboxed frames, `file:` pages) can't be listed, so it
/// only ever gets that `*`. `Vary: Origin` goes on every answer of a stream with `cors`, listed
/// or not, so a shared cache never hands one origin's answer to another.
pub fn headers(cors: Option<&Cors>, origin: Option<&str>) -> Vec<(HeaderName, HeaderValue)> {
    let Some(cors) = cors else {
        return Vec::new();
    };
    let mut out = vec![(header::VARY, HeaderValue::from_static("Origin"))];
    let Some(origin) = origin else {
        return out;
    };
    let allowed = if cors.origins.iter().any(|o| o == origin) && origin != "null" {
        HeaderValue::from_str(origin).ok()
    } else if cors.origins.iter().any(|o| o == "*") && !cors.credentials {
        Some(HeaderValue::from_static("*"))
    } else {
        None
    };
    let Some(value) = allowed else {
        return out;
    };
    out.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, value));
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
    if !out
        .iter()
        .any(|(n, _)| n == header::ACCESS_CONTROL_ALLOW_ORIGIN)
    {
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
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors {
            origins: origins.iter().map(|o| o.to_string()).collect(),
            credentials,
        }
    }

    fn get(h: &[(HeaderName, HeaderValue)], name: HeaderName) -> Option<&str> {
        h.iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn a_listed_origin_is_named_with_credentials() {
        let h = headers(
            Some(&cors(&["https://app.example.com"], true)),
            Some("https://app.example.com"),
        );
        assert_eq!(
            get(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://app.example.com")
        );
        assert_eq!(
            get(&h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
            Some("true")
        );
        assert_eq!(get(&h, header::VARY), Some("Origin"));
    }

    #[test]
    fn a_star_is_answered_with_a_star_never_the_origin() {
        let any = cors(&["*"], false);
        for origin in ["https://x.test", "null"] {
            let h = headers(Some(&any), Some(origin));
            assert_eq!(
                get(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN),
                Some("*"),
                "{origin}"
            );
            assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
            assert_eq!(get(&h, header::VARY), Some("Origin"));
        }
        // Refused at load; should one get here anyway, it allows nothing.
        let h = headers(Some(&cors(&["*"], true)), Some("https://evil.test"));
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
    }

    #[test]
    fn the_null_origin_is_never_allowed_with_credentials() {
        let h = headers(Some(&cors(&["null"], true)), Some("null"));
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
        assert_eq!(get(&h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
    }

    #[test]
    fn others_get_only_vary() {
        let c = cors(&["https://app.example.com"], true);
        for origin in [Some("https://evil.test"), None] {
            let h = headers(Some(&c), origin);
            assert_eq!(h.len(), 1, "{origin:?}: {h:?}");
            assert_eq!(get(&h, header::VARY), Some("Origin"));
        }
        assert!(headers(None, Some("https://app.example.com")).is_empty());
    }
}
