//! Request → (StreamSpec, StreamKey). Pure: no I/O, no pingora types.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use percent_encoding::percent_decode_str;

use crate::config::{Config, StreamSpec};
use crate::hub::StreamKey;

/// Query parameters the gateway reads itself and never forwards.
pub const RESERVED_QUERY: [&str; 2] = ["format", "lastEventId"];

/// The routing table of one config; replaced whole by a reload. Built once, because every
/// request head (and every read of an unfinished one) looks a path up.
pub struct Routes {
    pub config: Arc<Config>,
    /// Streams with a literal path, by that path (a template's raw text is the path it matches
    /// when it has no parameters): these win over templates.
    literals: HashMap<String, Arc<StreamSpec>>,
    /// Streams whose path has parameters, in file order.
    templates: Vec<Arc<StreamSpec>>,
}

/// A matched stream and its raw parameter values, in template order.
pub type Route<'r, 'p> = (&'r Arc<StreamSpec>, Vec<(&'r str, &'p str)>);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("path parameter `{name}` is not valid: {reason}")]
    BadParam { name: String, reason: &'static str },
}

impl Routes {
    pub fn new(config: Config) -> Routes {
        let mut literals = HashMap::new();
        let mut templates = Vec::new();
        for spec in &config.streams {
            if spec.path.is_template() {
                templates.push(spec.clone());
            } else {
                // The first of two streams on one path wins, as it did when streams were scanned.
                literals
                    .entry(spec.path.as_str().to_owned())
                    .or_insert_with(|| spec.clone());
            }
        }
        Routes {
            config: Arc::new(config),
            literals,
            templates,
        }
    }

    /// The stream serving `path`, with its raw (still percent-encoded) parameter values.
    /// A literal path wins over a template; templates match in file order.
    pub fn find<'p>(&self, path: &'p str) -> Option<Route<'_, 'p>> {
        if let Some(spec) = self.literals.get(path) {
            return Some((spec, Vec::new()));
        }
        self.templates
            .iter()
            .find_map(|s| s.path.match_path(path).map(|values| (s, values)))
    }
}

/// The instance a request subscribes to. Parameter values are decoded, checked against the
/// stream's patterns and re-encoded as single segments, so `..`, `/` or `%2F` can never change
/// which upstream path is polled.
pub fn instance(
    spec: &StreamSpec,
    raw_values: &[(&str, &str)],
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<StreamKey, RouteError> {
    let mut values = Vec::with_capacity(raw_values.len());
    for (name, raw) in raw_values {
        let bad = |reason| RouteError::BadParam {
            name: (*name).to_string(),
            reason,
        };
        let value = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| bad("not UTF-8"))?;
        if value == "." || value == ".." {
            return Err(bad("dot segments are not allowed"));
        }
        if let Some(re) = spec.params.get(*name) {
            if !re.is_match(&value) {
                return Err(bad("does not match the allowed pattern"));
            }
        }
        values.push((*name, value.into_owned()));
    }
    let mut target = spec.poll.render(&values);
    if spec.forward_query {
        let kept: Vec<&str> = query
            .unwrap_or("")
            .split('&')
            .filter(|pair| {
                let name = pair.split('=').next().unwrap_or("");
                !pair.is_empty() && !RESERVED_QUERY.contains(&name)
            })
            .collect();
        if !kept.is_empty() {
            target.push('?');
            target.push_str(&kept.join("&"));
        }
    }
    let forwarded = spec
        .forward_headers
        .iter()
        .flat_map(|name| {
            headers
                .get_all(name)
                .iter()
                .map(move |v| (name.clone(), v.clone()))
        })
        .collect();
    Ok(StreamKey {
        stream: Arc::from(spec.path.as_str()),
        target,
        forwarded,
    })
}

/// A query parameter's decoded value (`format`, `lastEventId`).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use http::HeaderValue;

    fn routes() -> Routes {
        let yaml = "upstreams:\n  api:\n    url: http://127.0.0.1:1\nstreams:\n  - path: /o/{id}\n    upstream: api\n    poll: /api/o/{id}\n    forward_headers: [authorization]\n    forward_query: true\n  - path: /o/latest\n    upstream: api\n";
        Routes::new(config::parse("r.yaml", yaml, &|_| None, &|_, _| None).unwrap())
    }

    #[test]
    fn a_literal_path_wins_over_a_template() {
        let r = routes();
        assert_eq!(r.find("/o/latest").unwrap().0.path.as_str(), "/o/latest");
        assert_eq!(r.find("/o/7").unwrap().1, vec![("id", "7")]);
        assert!(r.find("/o").is_none());
    }

    /// The table gives what scanning the streams did: literals first, then templates in file
    /// order, first match wins.
    #[test]
    fn the_table_finds_what_a_scan_of_the_streams_finds() {
        let yaml = "upstreams:\n  api:\n    url: http://127.0.0.1:1\nstreams:\n  - path: /o/{id}\n    upstream: api\n    poll: /o/{id}\n  - path: /{kind}/7\n    upstream: api\n    poll: /{kind}/7\n  - path: /o/latest\n    upstream: api\n  - path: /\n    upstream: api\n  - path: /a/b/\n    upstream: api\n";
        let r = Routes::new(config::parse("r.yaml", yaml, &|_| None, &|_, _| None).unwrap());
        fn scan<'r, 'p>(
            r: &'r Routes,
            path: &'p str,
        ) -> Option<(&'r str, Vec<(&'r str, &'p str)>)> {
            let streams = &r.config.streams;
            streams
                .iter()
                .filter(|s| !s.path.is_template())
                .chain(streams.iter().filter(|s| s.path.is_template()))
                .find_map(|s| s.path.match_path(path).map(|v| (s.path.as_str(), v)))
        }
        let paths = [
            "/",
            "",
            "/o/7",
            "/o/latest",
            "/x/7",
            "/o/",
            "/o",
            "/a/b",
            "/a/b/",
            "/o/7/",
            "//",
            "o/7",
            "/o/latest/",
        ];
        for path in paths {
            let found = r.find(path).map(|(s, v)| (s.path.as_str(), v));
            assert_eq!(found, scan(&r, path), "{path:?}");
        }
        assert_eq!(r.find("/o/7").unwrap().0.path.as_str(), "/o/{id}");
        assert_eq!(r.find("/x/7").unwrap().1, vec![("kind", "x")]);
    }

    #[test]
    fn the_instance_key_carries_values_query_and_credentials() {
        let r = routes();
        let (spec, values) = r.find("/o/7").unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer a"));
        let key = instance(spec, &values, Some("format=snapshot&x=1&lastEventId=3"), &h).unwrap();
        assert_eq!(key.target, "/api/o/7?x=1");
        assert_eq!(key.forwarded.len(), 1);
        assert!(!format!("{key:?}").contains("Bearer"), "{key:?}");
        let other = instance(spec, &values, Some("x=1"), &http::HeaderMap::new()).unwrap();
        assert_ne!(key, other, "different credentials, different instance");
    }

    #[test]
    fn values_that_could_escape_their_segment_are_refused() {
        let r = routes();
        let spec = r.find("/o/1").unwrap().0.clone();
        for raw in ["..", ".", "%2e%2E", "a%2Fb", "%FF", "a%20b"] {
            let err = instance(&spec, &[("id", raw)], None, &http::HeaderMap::new());
            assert!(err.is_err(), "{raw}");
        }
    }

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(
            query_param(Some("a=1&lastEventId=ab%2D3"), "lastEventId").as_deref(),
            Some("ab-3")
        );
        assert_eq!(query_param(Some("a=1"), "b"), None);
        assert_eq!(query_param(None, "b"), None);
    }

    /// What a request routes to stays under the upstream's base path once the poller appends it.
    #[test]
    fn a_poll_cannot_leave_the_base_path() {
        let yaml = "upstreams:\n  api:\n    url: http://127.0.0.1:1/v1\nstreams:\n  - path: /s/{id}\n    upstream: api\n    poll: /o/{id}\n    params: { id: \".+\" }\n";
        let spec = config::parse("p.yaml", yaml, &|_| None, &|_, _| None)
            .unwrap()
            .streams[0]
            .clone();
        let headers = http::HeaderMap::new();
        for raw in [
            "..",
            "%2e%2e",
            ".%2E",
            "%2E",
            "..%2F..%2Fadmin",
            "..%5C..",
            "%252e%252e",
            "..;",
            "a%00b",
            "%C3%A9",
        ] {
            let Ok(key) = instance(&spec, &[("id", raw)], None, &headers) else {
                continue;
            };
            let url = crate::hub::target_url(&spec, &key.target);
            let path = url.path();
            assert!(
                path.starts_with("/v1/o/") && path.matches('/').count() == 3,
                "{raw} => {url}"
            );
        }
    }
}
