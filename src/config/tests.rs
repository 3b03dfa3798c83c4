use super::{
    parse, Config, ConfigErrors, Cors, DiffMode, Idle, PathTemplate, Pattern, StreamSpec, Upstream,
};
use http::HeaderName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

fn env(var: &str) -> Option<String> {
    (var == "TOKEN").then(|| "t0k".to_string())
}

fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    (host == "api.internal").then(|| SocketAddr::from(([10, 0, 0, 1], port)))
}

fn load(text: &str) -> Result<Config, ConfigErrors> {
    parse("g.yaml", text, &env, &resolve)
}

const BASE: &str = "upstreams:\n  api:\n    url: http://api.internal:8000/v1\n    headers: { Authorization: \"Bearer ${TOKEN}\" }\n";

#[test]
fn defaults_fill_in_and_streams_override() {
    let c = load(&format!(
        "{BASE}defaults:\n  interval: 5s\n  upstream: api\n  idle: never\n  max_body: 512KiB\n  diff: merge-patch\nstreams:\n  - path: /a\n    interval: 250ms\n  - path: /b/{{id}}\n    poll: /x/{{id}}\n    max_body: 1MB\n    params: {{ id: \"[0-9]+\" }}\n"
    ))
    .unwrap();
    let (a, b) = (&c.streams[0], &c.streams[1]);
    assert_eq!(a.interval, Duration::from_millis(250));
    assert_eq!(b.interval, Duration::from_secs(5));
    assert_eq!(a.idle, Idle::Never);
    assert_eq!(a.diff, DiffMode::MergePatch);
    assert_eq!(a.max_body, 512 * 1024);
    assert_eq!(b.max_body, 1_000_000);
    assert_eq!(a.poll.as_str(), "/a");
    assert_eq!(a.max_instances, 1);
    assert_eq!(b.max_instances, 1000);
    assert!(b.params["id"].is_match("42") && !b.params["id"].is_match("42a"));
    let up = &c.upstreams["api"];
    assert_eq!(up.addr, SocketAddr::from(([10, 0, 0, 1], 8000)));
    assert_eq!(up.headers[0].1, "Bearer t0k");
    assert!(
        !format!("{up:?}").contains("t0k"),
        "Debug hides credentials"
    );
    assert_eq!(c.limits.max_clients, 50_000);
    assert_eq!(c.limits.head_timeout, Duration::from_secs(10));
    assert_eq!(c.limits.keepalive, Duration::from_secs(60));
}

#[test]
fn connection_timeouts_are_set_and_never_zero() {
    let c = load(&format!(
        "{BASE}proxy: api\nlimits:\n  head_timeout: 2s\n  keepalive: 500ms\n"
    ))
    .unwrap();
    assert_eq!(c.limits.head_timeout, Duration::from_secs(2));
    assert_eq!(c.limits.keepalive, Duration::from_millis(500));
    for key in ["head_timeout", "keepalive"] {
        let err = load(&format!("{BASE}proxy: api\nlimits:\n  {key}: 0s\n"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!("g.yaml:7:3: limits.{key}:")) && err.contains("more than zero"),
            "{err}"
        );
    }
}

#[test]
fn a_password_in_an_upstream_url_is_never_shown() {
    let c =
        load("upstreams:\n  api:\n    url: http://user:pa55@127.0.0.1:1/v1\nproxy: api\n").unwrap();
    let up = &c.upstreams["api"];
    assert_eq!(up.url.password(), Some("pa55"), "still used");
    let shown = format!("{}{up:?}", c.describe());
    assert!(
        !shown.contains("pa55") && shown.contains("user:redacted@"),
        "{shown}"
    );
}

#[test]
fn the_proxy_has_nginx_like_limits_and_fresh_forwarding_headers_by_default() {
    let c = load(&format!("{BASE}proxy: api\nstreams: []\n")).unwrap();
    let l = &c.limits;
    assert_eq!(l.proxy_connect_timeout, Duration::from_secs(10));
    assert_eq!(l.proxy_timeout, Duration::from_secs(60));
    assert_eq!(l.proxy_max_body, 1 << 20);
    let f = &c.forwarding;
    assert!(!f.trust && !f.preserve_host);
    assert_eq!(f.resolve_interval, Duration::from_secs(30));
    let c = load(&format!("{BASE}proxy: api\nproxy_trust_forwarded: true\npreserve_host: true\nproxy_resolve_interval: 5m\nlimits:\n  proxy_connect_timeout: 2s\n  proxy_max_body: 10MiB\nstreams: []\n")).unwrap();
    assert!(c.forwarding.trust && c.forwarding.preserve_host);
    assert_eq!(c.forwarding.resolve_interval, Duration::from_secs(300));
    assert_eq!(c.limits.proxy_connect_timeout, Duration::from_secs(2));
    assert_eq!(c.limits.proxy_max_body, 10 << 20);
}

#[test]
fn a_literal_dollar_brace_is_kept() {
    let c = load(
        "upstreams:\n  api:\n    url: http://127.0.0.1:1\n    headers: { X-T: \"$${NOT_A_VAR}\" }\nproxy: api\n",
    )
    .unwrap();
    assert_eq!(c.upstreams["api"].headers[0].1, "${NOT_A_VAR}");
}

#[test]
fn semantic_errors_point_at_their_line_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "streams:\n  - path: /a\n    upstream: nope\n",
            "g.yaml:7:5: streams[0].upstream:",
            "no upstream named `nope`",
        ),
        (
            "streams:\n  - path: /a\n    upstream: api\n    interval: 0s\n",
            "g.yaml:8:5: streams[0].interval:",
            "more than zero",
        ),
        (
            "streams:\n  - path: /a\n    upstream: api\n    ignore: [generated_at]\n",
            "streams[0].ignore[0]:",
            "JSON pointer",
        ),
        (
            "streams:\n  - path: /a/{id}\n    upstream: api\n    params: { x: \"1\" }\n",
            "streams[0].params.x:",
            "not a parameter",
        ),
        (
            "streams:\n  - path: /a/{id}\n    upstream: api\n    params: { id: \"(\" }\n",
            "streams[0].params.id:",
            "bad regex",
        ),
        (
            "streams:\n  - path: /a{id}\n    upstream: api\n",
            "g.yaml:6:5: streams[0].path:",
            "whole path segment",
        ),
        (
            "streams:\n  - path: /a\n    upstream: api\n    poll: /../admin\n",
            "g.yaml:8:5: streams[0].poll:",
            "dot segments",
        ),
        (
            "limits:\n  proxy_timeout: 0s\n  proxy_max_body: 0\nstreams: []\n",
            "g.yaml:6:3: limits.proxy_timeout:",
            "more than zero",
        ),
        (
            "streams:\n  - path: /a\n    upstream: api\n    forward_headers: [\"bad header\"]\n",
            "streams[0].forward_headers[0]:",
            "header name",
        ),
        (
            "streams:\n  - path: /a\n    upstream: api\n    max_body: 8 parsecs\n",
            "streams[0].max_body:",
            "not a size",
        ),
        (
            "defaults:\n  path: /x\nstreams: []\n",
            "g.yaml:6:3: defaults.path:",
            "not to defaults",
        ),
        (
            "listen: nowhere\nstreams: []\n",
            "g.yaml:5:1: listen:",
            "not an address",
        ),
    ];
    for (tail, at, words) in cases {
        let err = load(&format!("{BASE}{tail}")).err().unwrap().to_string();
        assert!(err.contains(at) && err.contains(words), "{tail}\n=> {err}");
    }
}

#[test]
fn upstream_urls_are_checked() {
    for (url, words) in [
        ("ftp://x", "scheme `ftp`"),
        ("http://127.0.0.1:1/?q=1", "query"),
        ("http://unknown.host", "cannot resolve"),
        ("not a url", "is not a URL"),
        ("http://${MISSING}/", "`MISSING` is not set"),
    ] {
        let err = load(&format!(
            "upstreams:\n  api:\n    url: {url}\nstreams: []\n"
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("g.yaml:3:5: upstreams.api.url:") && err.contains(words),
            "{url} => {err}"
        );
    }
}

#[test]
fn type_errors_name_the_key() {
    let err = load(&format!(
        "{BASE}streams:\n  - path: /a\n    upstream: api\n    replay: many\n"
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.starts_with("g.yaml:8:13: streams[0].replay: invalid type"),
        "{err}"
    );
    let err = load(&format!(
        "{BASE}streams:\n  - path: /a\n    upstream: api\n    idle: sometimes\n"
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("streams[0].idle") && err.contains("never"),
        "{err}"
    );
}

#[test]
fn connection_limits_default_off_and_refuse_zero_with_their_line() {
    let c = load(&format!("{BASE}proxy: api\n")).unwrap();
    assert_eq!(c.limits.max_connections, None, "from the open-file limit");
    assert_eq!(c.limits.max_clients_per_ip, 0);
    let c = load(&format!(
        "{BASE}limits:\n  max_connections: 900\n  max_clients_per_ip: 20\nproxy: api\n"
    ))
    .unwrap();
    assert_eq!(c.limits.max_connections, Some(900));
    assert_eq!(c.limits.max_clients_per_ip, 20);
    let err = load(&format!(
        "{BASE}limits:\n  max_connections: 0\nproxy: api\n"
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("g.yaml:6:3: limits.max_connections:") && err.contains("at least 1"),
        "{err}"
    );
}

#[test]
fn a_header_both_static_and_forwarded_is_refused() {
    for fwd in ["Authorization", "authorization", "AUTHORIZATION"] {
        let err = load(&format!(
            "{BASE}streams:\n  - path: /a\n    upstream: api\n    forward_headers: [x-user, {fwd}]\n"
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.starts_with("g.yaml:8:5: streams[0].forward_headers[1]: `authorization` is also set in upstreams.api.headers"),
            "{err}"
        );
    }
    // From defaults, the error points at defaults.
    let err = load(&format!(
        "{BASE}defaults:\n  forward_headers: [authorization]\nstreams:\n  - path: /a\n    upstream: api\n"
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("defaults.forward_headers[0]:"), "{err}");
}

#[test]
fn headers_that_make_no_sense_forwarded_are_refused() {
    for h in [
        "host",
        "Host",
        "if-none-match",
        "if-modified-since",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "proxy-authorization",
    ] {
        let err = load(&format!(
            "upstreams:\n  api:\n    url: http://127.0.0.1:1\nstreams:\n  - path: /a\n    upstream: api\n    forward_headers: [{h}]\n"
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.starts_with("g.yaml:7:5: streams[0].forward_headers[0]:")
                && err.contains("cannot be forwarded"),
            "{h} => {err}"
        );
    }
}

#[test]
fn a_star_with_credentials_is_refused() {
    let err = load(&format!(
        "{BASE}cors:\n  origins: [\"*\"]\n  credentials: true\nproxy: api\n"
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.starts_with("g.yaml:6:3: cors.origins[0]: `*` with `credentials: true`"),
        "{err}"
    );
    let ok = load(&format!(
        "{BASE}cors:\n  origins: [\"*\"]\nstreams:\n  - path: /a\n    upstream: api\n"
    ))
    .unwrap();
    assert!(!ok.streams[0].cors.as_ref().unwrap().credentials);
}

#[test]
fn a_config_with_nothing_to_serve_is_refused() {
    for text in ["", "\n# all comments\n", "listen: 0.0.0.0:8080\n", BASE] {
        let err = load(text).err().unwrap().to_string();
        assert!(
            err.contains("streams: nothing to serve"),
            "{text:?} => {err}"
        );
    }
    load(&format!("{BASE}proxy: api\n")).unwrap();
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let err = load(&format!(
        "{BASE}proxy: api\nadmin:\n  listen: 0.0.0.0:9090\n"
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.starts_with("g.yaml:7:3: admin.listen: `0.0.0.0:9090` is not a loopback address"),
        "{err}"
    );
    let c = load(&format!(
        "{BASE}proxy: api\nadmin:\n  listen: 0.0.0.0:9090\n  token: \"${{TOKEN}}\"\n"
    ))
    .unwrap();
    assert_eq!(c.admin.token.as_deref(), Some("t0k"));
    load(&format!(
        "{BASE}proxy: api\nadmin:\n  listen: \"[::1]:9090\"\n"
    ))
    .unwrap();
}

#[test]
fn durations_past_a_year_are_refused() {
    let keys = [
        "interval",
        "timeout",
        "heartbeat",
        "retry",
        "backoff_max",
        "idle",
    ];
    for key in keys {
        let err = load(&format!(
            "{BASE}streams:\n  - path: /a\n    upstream: api\n    {key}: 1000000000y\n"
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.starts_with(&format!("g.yaml:8:5: streams[0].{key}: at most a year")),
            "{key} => {err}"
        );
    }
    for (section, key) in [("limits", "write_timeout"), ("shutdown", "grace")] {
        let err = load(&format!("{BASE}proxy: api\n{section}:\n  {key}: 400days\n"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!("{section}.{key}: at most a year")),
            "{err}"
        );
    }
    let c = load(&format!(
        "{BASE}streams:\n  - path: /a\n    upstream: api\n    interval: 1y\n    idle: 1y\n"
    ))
    .unwrap();
    assert_eq!(c.streams[0].interval, super::defaults::MAX_DURATION);
}

#[test]
fn refreshes_are_limited_to_a_quarter_interval_unless_set() {
    let c = load(&format!(
        "{BASE}streams:\n  - path: /a\n    upstream: api\n    interval: 1h\n  - path: /b\n    upstream: api\n    refresh_limit: 100ms\n"
    ))
    .unwrap();
    assert_eq!(c.streams[0].refresh_limit, Duration::from_secs(900));
    assert_eq!(c.streams[1].refresh_limit, Duration::from_millis(100));
    let err = load(&format!(
        "{BASE}streams:\n  - path: /a\n    upstream: api\n    refresh_limit: 0s\n"
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("g.yaml:8:5: streams[0].refresh_limit: must be more than zero"),
        "{err}"
    );
}

#[test]
fn redirects_are_followed_only_when_asked_in_defaults_or_the_stream() {
    let c = load(&format!(
        "{BASE}defaults:\n  follow_redirects: true\nstreams:\n  - path: /a\n    upstream: api\n  - path: /b\n    upstream: api\n    follow_redirects: false\n"
    ))
    .unwrap();
    assert!(c.streams[0].follow_redirects && !c.streams[1].follow_redirects);
    let c = load(&format!(
        "{BASE}streams:\n  - path: /a\n    upstream: api\n"
    ))
    .unwrap();
    assert!(!c.streams[0].follow_redirects);
}

/// Changes field number `n` of `spec`; false once there are no more. The pattern names
/// every field, so a new one fails to compile here, and stays unused until it is changed.
fn change_field(spec: &mut StreamSpec, n: usize) -> bool {
    let StreamSpec {
        path,
        poll,
        upstream,
        interval,
        timeout,
        heartbeat,
        retry,
        backoff_max,
        diff,
        replay,
        replay_bytes,
        idle,
        ignore,
        array_keys,
        forward_headers,
        forward_query,
        max_instances,
        max_body,
        params,
        cors,
        follow_redirects,
        refresh_limit,
        cluster,
    } = spec;
    let ms = Duration::from_millis(1);
    match n {
        0 => *path = PathTemplate::parse("/b/{id}").unwrap(),
        1 => *poll = PathTemplate::parse("/p/{id}").unwrap(),
        2 => {
            *upstream = Arc::new(Upstream {
                name: "other".into(),
                ..Upstream::clone(upstream)
            })
        }
        3 => *interval += ms,
        4 => *timeout += ms,
        5 => *heartbeat += ms,
        6 => *retry += ms,
        7 => *backoff_max += ms,
        8 => *diff = DiffMode::Snapshot,
        9 => *replay += 1,
        10 => *replay_bytes += 1,
        11 => *idle = Idle::Never,
        12 => ignore.push("/x".into()),
        13 => forward_headers.push(HeaderName::from_static("x-user")),
        14 => *forward_query = !*forward_query,
        15 => *max_instances += 1,
        16 => *max_body += 1,
        17 => {
            params.insert("id".into(), Pattern::new("^x$").unwrap());
        }
        18 => {
            *cors = Some(Cors {
                origins: vec!["*".into()],
                credentials: false,
            })
        }
        19 => *follow_redirects = !*follow_redirects,
        20 => *refresh_limit += ms,
        21 => *cluster = !*cluster,
        22 => {
            array_keys.insert("/items".into(), "id".into());
        }
        _ => return false,
    }
    true
}

/// A reload keeps a stream's instances when its spec is `==` to the running one
/// (`ops::reload::keep_unchanged`), so a change to any field must make it unequal.
#[test]
fn changing_any_field_of_a_stream_makes_its_spec_unequal() {
    let fresh = || {
        let mut c = load(&format!(
            "{BASE}streams:\n  - path: /a/{{id}}\n    upstream: api\n"
        ))
        .unwrap();
        Arc::try_unwrap(c.streams.remove(0)).unwrap()
    };
    assert_eq!(fresh(), fresh());
    let mut n = 0;
    loop {
        let mut spec = fresh();
        if !change_field(&mut spec, n) {
            break;
        }
        assert_ne!(spec, fresh(), "field {n} changed");
        n += 1;
    }
    assert_eq!(n, 23, "every field was changed");
}

#[test]
fn a_stream_has_one_instance_when_nothing_can_vary_its_key() {
    let c = load(&format!(
        "{BASE}streams:\n  - path: /a\n    upstream: api\n    max_instances: 0\n  - path: /q\n    upstream: api\n    forward_query: true\n  - path: /h\n    upstream: api\n    forward_headers: [x-user]\n  - path: /t/{{id}}\n    upstream: api\n"
    ))
    .unwrap();
    let single: Vec<bool> = c.streams.iter().map(|s| s.is_single_instance()).collect();
    assert_eq!(single, [true, false, false, false]);
    let max: Vec<usize> = c.streams.iter().map(|s| s.max_instances).collect();
    assert_eq!(max, [1, 1000, 1000, 1000]);
}

#[test]
fn an_ignore_pointer_with_a_bad_escape_is_refused_at_its_line() {
    let err = load(&format!(
        "{BASE}streams:\n  - path: /a\n    upstream: api\n    ignore:\n      - /ok~0~1\n      - /a~2\n"
    ))
    .err()
    .unwrap()
    .to_string();
    assert_eq!(
        err,
        "g.yaml:10:7: streams[0].ignore[1]: `/a~2` is not a JSON pointer (RFC 6901): a `~` must be followed by `0` or `1`"
    );
}

#[test]
fn a_diff_mode_parses_from_the_name_it_shows() {
    for mode in [
        DiffMode::JsonPatch,
        DiffMode::MergePatch,
        DiffMode::Snapshot,
    ] {
        // A new mode fails to compile here until it is listed above.
        match mode {
            DiffMode::JsonPatch | DiffMode::MergePatch | DiffMode::Snapshot => {}
        }
        assert_eq!(DiffMode::parse(mode.as_str()), Some(mode));
    }
    assert_eq!(DiffMode::parse("json_patch"), None);
    assert_eq!(DiffMode::parse(""), None);
}

#[test]
fn a_semantic_error_in_a_flow_stream_names_its_line() {
    let text = "upstreams:\n  api:\n    url: http://127.0.0.1:1\nstreams: [\n  {path: /a, upstream: api},\n  {path: /b, upstream: nope},\n]\n";
    let resolve = |_: &str, port| Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let err = parse("g.yaml", text, &|_| None, &resolve)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("g.yaml:6:14: streams[1].upstream: "),
        "{err}"
    );
}

#[test]
fn a_value_its_own_check_refuses_is_placed_at_its_key() {
    // serde_yaml places these at the stream's map (line 5); the key is on line 7.
    let text = "upstreams:\n  api:\n    url: http://127.0.0.1:1\nstreams:\n  - path: /a\n    upstream: api\n    idle: soon\n";
    let resolve = |_: &str, port| Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let err = parse("g.yaml", text, &|_| None, &resolve)
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("g.yaml:7:5: streams[0].idle: "), "{err}");
}

#[test]
fn a_bad_value_from_defaults_is_reported_where_defaults_set_it() {
    let text = "defaults:\n  replay: 200000\n  max_instances: 0\n  ignore: [\"/a~2\"]\nupstreams:\n  api:\n    url: http://127.0.0.1:1\nstreams:\n  - path: /o/{id}\n    upstream: api\n  - path: /p/{id}\n    upstream: api\n";
    let resolve = |_: &str, port| Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let err = parse("g.yaml", text, &|_| None, &resolve)
        .err()
        .unwrap()
        .to_string();
    for want in [
        "g.yaml:2:3: defaults.replay: at most 100000",
        "g.yaml:3:3: defaults.max_instances: must be at least 1",
        "g.yaml:4:3: defaults.ignore[0]: `/a~2` is not a JSON pointer",
    ] {
        assert_eq!(err.matches(want).count(), 1, "{want}, once:\n{err}");
    }
}

#[test]
fn array_keys_come_from_defaults_or_the_stream() {
    let c = load(&format!(
        "{BASE}defaults:\n  array_keys: {{ /items: id }}\nstreams:\n  - path: /a\n    upstream: api\n  - path: /b\n    upstream: api\n    array_keys:\n      /orders/*/lines: sku\n      /a~1b: id\n"
    ))
    .unwrap();
    let keys = |i: usize| {
        let k = &c.streams[i].array_keys;
        k.iter()
            .map(|(p, m)| format!("{p}={m}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(0), ["/items=id"]);
    assert_eq!(keys(1), ["/a~1b=id", "/orders/*/lines=sku"]);
    assert!(c
        .describe()
        .contains(", array_keys {/a~1b: id, /orders/*/lines: sku}"));
}

#[test]
fn a_bad_array_keys_entry_is_refused_at_its_line() {
    let keys: String = (0..65).map(|i| format!("      /k{i}: id\n")).collect();
    let err = load(&format!(
        "{BASE}streams:\n  - path: /a\n    upstream: api\n    array_keys:\n      items: id\n      /x~2: id\n      /ok: \"\"\n  - path: /b\n    upstream: api\n    array_keys:\n{keys}"
    ))
    .err()
    .unwrap()
    .to_string();
    for want in [
        "g.yaml:9:7: streams[0].array_keys.items: `items` is not a JSON pointer (RFC 6901): it must start with `/`",
        "g.yaml:10:7: streams[0].array_keys./x~2: `/x~2` is not a JSON pointer (RFC 6901): a `~` must be followed by `0` or `1`",
        "g.yaml:11:7: streams[0].array_keys./ok: the member that identifies an element can't be empty",
        "g.yaml:14:5: streams[1].array_keys: at most 64 arrays",
    ] {
        assert!(err.contains(want), "{want}\nin:\n{err}");
    }
}
