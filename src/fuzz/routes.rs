//! Routing against any path, query and headers: no panic, and a matched instance polls a path
//! inside its template. A value can't add a segment, remove one, or become a dot segment, even
//! after the upstream's URL parser normalises it (WHATWG URL, RFC 3986 §5.2.4).

use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::percent_decode_str;
use proptest::prelude::*;

use crate::config::{self, PathTemplate};
use crate::routes::{instance, query_param, RouteError, Routes, RESERVED_QUERY};

const ROUTES: &str = r#"upstreams:
  api: { url: "http://127.0.0.1:1/base" }
streams:
  - path: /o/latest
    upstream: api
    poll: /api/o/latest
  - path: /o/{id}
    upstream: api
    poll: /api/v1/o/{id}
    forward_headers: [authorization, x-tenant]
    forward_query: true
  - path: /any/{a}/x/{b}
    upstream: api
    poll: /up/{b}/y/{a}/z
    params: { a: "(?s).*", b: "[^/]*" }
  - path: /u/{name}
    upstream: api
    poll: /users/{name}
    params: { name: "(?s).+" }
"#;

/// Built once: compiling the patterns for every case would take most of the run.
static TABLE: std::sync::LazyLock<Routes> = std::sync::LazyLock::new(|| {
    Routes::new(config::parse("r.yaml", ROUTES, &|_| None, &|_, _| None).unwrap())
});

/// Segments that have escaped path templates elsewhere: dots, encoded dots and slashes, broken
/// escapes, NUL, backslashes, and the stream's own literals so templates match at all.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["o", "latest", "any", "x", "u", "api", "up", "z"]).prop_map(str::to_string),
        6 => prop::sample::select(vec![
            "", ".", "..", "...", "%2e", "%2E", "%2e%2E", ".%2e", "%2F", "%2f", "a%2Fb", "%5C", "\\",
            "..\\..", "%", "%2", "%G1", "%FF", "%C0%AE", "%C3%A9", "%00", "%0A", "%0D%0A", "a b",
            "?", "#", ";", "%3F", "%23", "~", "é", "\u{202e}", "%252e", "{id}",
        ]).prop_map(str::to_string),
        3 => "[A-Za-z0-9%._~-]{1,8}",
        2 => "\\PC{0,6}",
    ]
}

/// Mostly the shape of one of the streams, so templates match and values reach `instance`.
fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("/o/latest".to_string()),
        3 => segment().prop_map(|v| format!("/o/{v}")),
        3 => (segment(), segment()).prop_map(|(a, b)| format!("/any/{a}/x/{b}")),
        3 => segment().prop_map(|v| format!("/u/{v}")),
        2 => prop::collection::vec(segment(), 0..6).prop_map(|s| format!("/{}", s.join("/"))),
        1 => "\\PC{0,30}",
    ]
}

fn query() -> impl Strategy<Value = Option<String>> {
    let name = prop_oneof![
        prop::sample::select(vec!["format", "lastEventId", "x", "", "a=b", "%66ormat"])
            .prop_map(str::to_string),
        "[a-z]{1,4}",
    ];
    let value = "[a-z0-9%#=/.?&+ ]{0,8}";
    let pair = (name, prop::option::of(value)).prop_map(|(n, v)| match v {
        Some(v) => format!("{n}={v}"),
        None => n,
    });
    prop::option::of(prop::collection::vec(pair, 0..5).prop_map(|p| p.join("&")))
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    let name = prop::sample::select(vec!["authorization", "x-tenant", "cookie", "x-other"]);
    prop::collection::vec((name, "[ -~]{0,12}"), 0..6).prop_map(|pairs| {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.append(HeaderName::from_static(n), v);
            }
        }
        h
    })
}

fn decode(raw: &str) -> Option<String> {
    percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

proptest! {
    #![proptest_config(super::config(512))]

    #[test]
    fn fuzz_routes_any_request(path in path(), query in query(), headers in headers()) {
        let Some((spec, values)) = TABLE.find(&path) else {
            return Ok(());
        };
        if !spec.path.is_template() {
            prop_assert_eq!(path.as_str(), spec.path.as_str());
        }
        prop_assert_eq!(
            values.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            spec.path.params().collect::<Vec<_>>()
        );
        for (_, v) in &values {
            prop_assert!(!v.is_empty() && !v.contains('/'), "{v:?}");
        }
        let key = match instance(spec, &values, query.as_deref(), &headers) {
            Ok(key) => key,
            Err(RouteError::BadParam { name, .. }) => {
                // Refused for a reason: its value is not UTF-8, a dot segment, or off-pattern.
                let raw = values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
                let raw = raw.ok_or_else(|| TestCaseError::fail(format!("no param {name}")))?;
                let ok = decode(raw).is_some_and(|v| {
                    v != "." && v != ".." && spec.params[&name].is_match(&v)
                });
                prop_assert!(!ok, "{name}={raw:?} refused");
                return Ok(());
            }
        };
        prop_assert_eq!(&*key.stream, spec.path.as_str());

        let (target_path, target_query) = match key.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (key.target.as_str(), None),
        };
        let poll = spec.poll.as_str();
        let prefix = &poll[..poll.find('{').unwrap_or(poll.len())];
        prop_assert!(target_path.starts_with(prefix), "{} outside {}", key.target, poll);
        // Segment by segment: literals as written, each value decoding to itself, no dots.
        let template: Vec<&str> = poll.split('/').collect();
        let got: Vec<&str> = target_path.split('/').collect();
        prop_assert_eq!(template.len(), got.len(), "{} from {:?}", key.target, values);
        for (t, g) in template.iter().zip(&got) {
            let decoded = decode(g).unwrap_or_default();
            prop_assert!(decoded != "." && decoded != "..", "{}", key.target);
            match t.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
                Some(name) => {
                    let raw = values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
                    prop_assert_eq!(Some(decoded), raw.and_then(decode));
                }
                None => prop_assert_eq!(t, g),
            }
        }
        // The upstream's URL parser normalises nothing away.
        let url = url::Url::parse(&format!("http://up.test{}", key.target)).unwrap();
        prop_assert_eq!(url.path(), target_path);

        let kept: Vec<&str> = query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty() && !RESERVED_QUERY.contains(&p.split('=').next().unwrap_or("")))
            .collect();
        match (spec.forward_query, target_query) {
            (true, Some(q)) => prop_assert_eq!(q.split('&').collect::<Vec<_>>(), kept),
            (true, None) => prop_assert!(kept.is_empty()),
            (false, q) => prop_assert_eq!(q, None),
        }

        // Exactly the configured headers, every value, in config order.
        let expected: Vec<(HeaderName, HeaderValue)> = spec
            .forward_headers
            .iter()
            .flat_map(|n| headers.get_all(n).iter().map(move |v| (n.clone(), v.clone())))
            .collect();
        prop_assert_eq!(&key.forwarded, &expected);
        prop_assert!(key.forwarded.iter().all(|(n, _)| spec.forward_headers.contains(n)));
    }

    #[test]
    fn fuzz_routes_query_param(query in query(), name in "[a-zA-Z]{0,12}") {
        if let Some(v) = query_param(query.as_deref(), &name) {
            let q = query.as_deref().unwrap_or("");
            let found = q.split('&').any(|p| p.split_once('=').map_or(p, |(k, _)| k) == name);
            prop_assert!(found, "{name}={v:?} from {q:?}");
        }
    }

    /// Any template text parses or is refused; one that parses matches what it renders, and
    /// the values come back after decoding.
    #[test]
    fn fuzz_routes_templates_match_what_they_render(
        raw in prop_oneof!["\\PC{0,30}", prop::collection::vec(prop_oneof![
            Just("{a}".to_string()), Just("{b}".to_string()), "[a-z.%]{0,4}", "\\PC{0,3}",
        ], 0..5).prop_map(|s| format!("/{}", s.join("/")))],
        a in "\\PC{1,8}",
        b in "\\PC{1,8}",
    ) {
        let Ok(t) = PathTemplate::parse(&raw) else {
            return Ok(());
        };
        prop_assert_eq!(t.as_str(), raw.as_str());
        let values = [("a", a), ("b", b)];
        let rendered = t.render(&values);
        let matched = t.match_path(&rendered);
        prop_assert!(matched.is_some(), "{raw} rendered {rendered}");
        for (name, got) in matched.unwrap_or_default() {
            let want = values.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
            prop_assert!(!got.contains('/'));
            prop_assert_eq!(decode(got), want);
        }
    }
}
