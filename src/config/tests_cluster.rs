//! The `cluster:` section and each stream's `cluster` flag, as the README promises them.

use super::{parse, Config, ConfigErrors, OnRedisDown};
use std::net::SocketAddr;
use std::time::Duration;

fn env(var: &str) -> Option<String> {
    match var {
        "REDIS_PASSWORD" => Some("hunter2".into()),
        "SSE_CLUSTER_SECRET" => Some("0123456789abcdef0123".into()),
        "HOSTNAME" => Some("gw-7".into()),
        "SHORT" => Some("tiny".into()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Config, ConfigErrors> {
    let resolve = |_: &str, port| Some(SocketAddr::from(([127, 0, 0, 1], port)));
    parse("g.yaml", text, &env, &resolve)
}

/// Six lines, so `cluster:` is line 7 and its first key line 8.
const STREAMS: &str =
    "upstreams:\n  api:\n    url: http://127.0.0.1:1\nstreams:\n  - path: /a\n    upstream: api\n";

fn with_cluster(keys: &str) -> String {
    format!("{STREAMS}cluster:\n{keys}")
}

fn refused(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_cluster_section_with_only_redis_takes_every_default() {
    let c = load(&with_cluster("  redis: redis://127.0.0.1:6379/0\n")).unwrap();
    let cl = c.cluster.as_deref().unwrap();
    assert_eq!(cl.redis.as_str(), "redis://127.0.0.1:6379/0");
    assert_eq!(cl.prefix, "sse-gateway");
    assert_eq!(cl.key_secret, None);
    assert_eq!(cl.lease_ttl, None);
    assert_eq!(cl.lease_ttl(c.streams[0].interval), Duration::from_secs(2));
    assert_eq!(cl.timeout, Duration::from_millis(500));
    assert_eq!(cl.on_redis_down, OnRedisDown::Local);
    assert_eq!(cl.history_ttl, Duration::from_secs(24 * 3600));
    let (host, suffix) = cl.node_id.rsplit_once('-').unwrap();
    assert!(!host.is_empty(), "{}", cl.node_id);
    assert!(
        suffix.len() == 4 && suffix.chars().all(|c| c.is_ascii_hexdigit()),
        "{}",
        cl.node_id
    );
    assert!(c.streams[0].cluster, "a stream is shared by default");
    assert!(load(STREAMS).unwrap().cluster.is_none(), "absent: none");
}

#[test]
fn every_cluster_key_is_read_and_expands_variables() {
    let c = load(&with_cluster(
        "  redis: rediss://:${REDIS_PASSWORD}@redis.internal:6380/2\n  prefix: shop-eu\n  node_id: ${HOSTNAME}\n  key_secret: \"${SSE_CLUSTER_SECRET}\"\n  lease_ttl: 2s\n  timeout: 200ms\n  on_redis_down: stale\n  history_ttl: 1h\n",
    ))
    .unwrap();
    let cl = c.cluster.as_deref().unwrap();
    assert_eq!(cl.redis.scheme(), "rediss");
    assert_eq!(cl.redis.password(), Some("hunter2"), "still used");
    assert_eq!(cl.redis.host_str(), Some("redis.internal"));
    assert_eq!(cl.prefix, "shop-eu");
    assert_eq!(cl.node_id, "gw-7");
    assert_eq!(cl.key_secret.as_deref(), Some("0123456789abcdef0123"));
    assert_eq!(cl.lease_ttl, Some(Duration::from_secs(2)));
    assert_eq!(
        cl.lease_ttl(Duration::from_secs(30)),
        Duration::from_secs(2)
    );
    assert_eq!(cl.timeout, Duration::from_millis(200));
    assert_eq!(cl.on_redis_down, OnRedisDown::Stale);
    assert_eq!(cl.history_ttl, Duration::from_secs(3600));
}

#[test]
fn an_unset_node_id_is_the_host_name_and_a_random_suffix() {
    let ids: Vec<String> = (0..4)
        .map(|_| {
            let c = load(&with_cluster("  redis: redis://h\n")).unwrap();
            c.cluster.as_deref().unwrap().node_id.clone()
        })
        .collect();
    assert!(ids.iter().any(|id| *id != ids[0]), "random: {ids:?}");
    let hosts: Vec<&str> = ids
        .iter()
        .filter_map(|id| id.rsplit_once('-'))
        .map(|p| p.0)
        .collect();
    assert!(hosts.iter().all(|h| *h == hosts[0]), "{ids:?}");
    for _ in 0..100 {
        let id = super::default_node_id();
        assert!(
            id.len() <= 64 && !id.contains(char::is_whitespace),
            "{id:?}"
        );
    }
}

#[test]
fn a_stream_stays_in_its_process_with_cluster_false_in_defaults_or_itself() {
    let text = format!(
        "{STREAMS}  - path: /b\n    upstream: api\n    cluster: false\ncluster:\n  redis: redis://h\n"
    );
    let c = load(&text).unwrap();
    let shared: Vec<bool> = c.streams.iter().map(|s| s.cluster).collect();
    assert_eq!(shared, [true, false]);
    let text = format!(
        "defaults:\n  cluster: false\n{STREAMS}  - path: /b\n    upstream: api\n    cluster: true\n"
    );
    let c = load(&text).unwrap();
    let shared: Vec<bool> = c.streams.iter().map(|s| s.cluster).collect();
    assert_eq!(
        shared,
        [false, true],
        "and `true` without a section is fine"
    );
}

/// The `cluster:` section's lines, where the error is, and what it says.
const REFUSALS: &[(&str, &str, &str)] = &[
    (
        "  prefix: a\n",
        "g.yaml:7:1: cluster: ",
        "missing field `redis`",
    ),
    (
        "  redis: redis://h\n  port: 1\n",
        "g.yaml:9:3: cluster.port: ",
        "unknown field `port`",
    ),
    (
        "  redis: http://h:6379\n",
        "g.yaml:8:3: cluster.redis: ",
        "scheme `http` is not redis or rediss",
    ),
    (
        "  redis: not a url\n",
        "g.yaml:8:3: cluster.redis: ",
        "not a URL like redis://",
    ),
    (
        "  redis: redis://\n",
        "g.yaml:8:3: cluster.redis: ",
        "has no host",
    ),
    (
        "  redis: redis://h/db1\n",
        "g.yaml:8:3: cluster.redis: ",
        "`/db1` is not a database number",
    ),
    (
        "  redis: redis://${NOPE}\n",
        "g.yaml:8:3: cluster.redis: ",
        "`NOPE` is not set",
    ),
    (
        "  redis: redis://h\n  prefix: \"\"\n",
        "g.yaml:9:3: cluster.prefix: ",
        "must not be empty",
    ),
    (
        "  redis: redis://h\n  prefix: a b\n",
        "g.yaml:9:3: cluster.prefix: ",
        "holds a space",
    ),
    (
        "  redis: redis://h\n  prefix: \"{t}\"\n",
        "g.yaml:9:3: cluster.prefix: ",
        "hash tag",
    ),
    (
        "  redis: redis://h\n  node_id: \"a\\u0007b\"\n",
        "g.yaml:9:3: cluster.node_id: ",
        "control character",
    ),
    (
        "  redis: redis://h\n  node_id: \"\"\n",
        "g.yaml:9:3: cluster.node_id: ",
        "must not be empty",
    ),
    (
        "  redis: redis://h\n  key_secret: ${SHORT}\n",
        "g.yaml:9:3: cluster.key_secret: ",
        "at least 16 bytes (it has 4)",
    ),
    (
        "  redis: redis://h\n  lease_ttl: 500ms\n",
        "g.yaml:9:3: cluster.lease_ttl: ",
        "500ms is not between 1s and 60s",
    ),
    (
        "  redis: redis://h\n  lease_ttl: 61s\n",
        "g.yaml:9:3: cluster.lease_ttl: ",
        "not between 1s and 60s",
    ),
    (
        "  redis: redis://h\n  lease_ttl: 1s\n  timeout: 600ms\n",
        "g.yaml:9:3: cluster.lease_ttl: ",
        "1s is shorter than 2 × timeout (1s 200ms)",
    ),
    (
        "  redis: redis://h\n  timeout: 0s\n",
        "g.yaml:9:3: cluster.timeout: ",
        "more than zero and at most 10s",
    ),
    (
        "  redis: redis://h\n  timeout: 11s\n",
        "g.yaml:9:3: cluster.timeout: ",
        "at most 10s",
    ),
    (
        "  redis: redis://h\n  history_ttl: 30s\n",
        "g.yaml:9:3: cluster.history_ttl: ",
        "at least 1m",
    ),
    (
        "  redis: redis://h\n  history_ttl: 2y\n",
        "g.yaml:9:3: cluster.history_ttl: ",
        "at most a year",
    ),
    (
        "  redis: redis://h\n  on_redis_down: panic\n",
        "g.yaml:9:18: cluster.on_redis_down: ",
        "unknown variant `panic`",
    ),
];

#[test]
fn cluster_refusals_name_their_line_and_key() {
    let long = "x".repeat(65);
    for (keys, at, words) in REFUSALS {
        let err = refused(&with_cluster(keys));
        assert!(err.contains(at) && err.contains(words), "{keys}\n=> {err}");
    }
    for name in ["prefix", "node_id"] {
        let err = refused(&with_cluster(&format!(
            "  redis: redis://h\n  {name}: {long}\n"
        )));
        assert!(
            err.contains(&format!(
                "g.yaml:9:3: cluster.{name}: at most 64 bytes (it has 65)"
            )),
            "{err}"
        );
    }
}

#[test]
fn a_shared_stream_that_forwards_headers_needs_a_key_secret() {
    let text = "upstreams:\n  api:\n    url: http://127.0.0.1:1\nstreams:\n  - path: /o\n    upstream: api\n    forward_headers: [authorization]\ncluster:\n  redis: redis://h\n";
    let err = refused(text);
    assert!(
        err.starts_with(
            "g.yaml:8:1: cluster.key_secret: required: stream `/o` forwards [authorization]"
        ),
        "{err}"
    );
    load(&format!("{text}  key_secret: ${{SSE_CLUSTER_SECRET}}\n")).unwrap();
    load(&text.replace(
        "    forward_headers",
        "    cluster: false\n    forward_headers",
    ))
    .unwrap();
}

/// Found by the config fuzzer: twice the largest duration overflowed, a panic at load.
#[test]
fn a_timeout_too_large_to_double_is_refused_not_a_panic() {
    let text = format!("{STREAMS}cluster:\n  redis: redis://h\n  timeout: 18446744073709551615s\n");
    let err = refused(&text);
    assert!(err.contains("cluster.timeout"), "{err}");
    let err = refused(&format!("{text}  lease_ttl: 2s\n"));
    assert!(err.contains("cluster.lease_ttl"), "{err}");
}

#[test]
fn a_lease_from_a_short_interval_must_outlive_two_timeouts() {
    let text =
        format!("{STREAMS}    interval: 250ms\ncluster:\n  redis: redis://h\n  timeout: 600ms\n");
    let err = refused(&text);
    assert_eq!(
        err,
        "g.yaml:10:3: cluster.timeout: 2 × 600ms = 1s 200ms outlives the 1s lease of stream `/a` \
         (its interval 250ms, within 1s..10s): a lease must outlive a few Redis command \
         timeouts; set `lease_ttl` to at least 1s 200ms, or `timeout` to at most 500ms"
    );
    // The defaults go together: a 1s lease, a 500ms timeout.
    load(&text.replace("  timeout: 600ms\n", "")).unwrap();
    load(&format!("{text}  lease_ttl: 2s\n")).unwrap();
    load(&text.replace(
        "    interval: 250ms\n",
        "    interval: 250ms\n    cluster: false\n",
    ))
    .unwrap();
}

#[test]
fn the_redis_password_and_key_secret_are_never_shown() {
    let c = load(&with_cluster(
        "  redis: redis://user:${REDIS_PASSWORD}@h:6379/0\n  key_secret: ${SSE_CLUSTER_SECRET}\n",
    ))
    .unwrap();
    let cl = c.cluster.as_deref().unwrap();
    let shown = format!("{}{cl:?}", c.describe());
    assert!(shown.contains("redis://user:redacted@h:6379/0"), "{shown}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("0123456789abcdef"),
        "{shown}"
    );
    for redis in [
        "redis://:hunter2@h:99999/0",
        "redis://:hunter2@h/x",
        "http://:hunter2@h/",
        "redis://:hunter2@",
        "redis://:${REDIS_PASSWORD}@h:99999",
    ] {
        let err = refused(&with_cluster(&format!("  redis: {redis}\n")));
        assert!(
            err.contains("cluster.redis") && !err.contains("hunter2"),
            "{err}"
        );
    }
}

#[test]
fn check_shows_the_cluster_and_each_streams_share() {
    let c = load(&format!(
        "{STREAMS}  - path: /b\n    upstream: api\n    cluster: false\ncluster:\n  redis: redis://h:6379/0\n  node_id: gw-1\n  on_redis_down: stale\n"
    ))
    .unwrap();
    let out = c.describe();
    let line = |p: &str| out.lines().find(|l| l.starts_with(p)).unwrap().to_string();
    assert!(
        line("stream /a ").ends_with(", shared, lease_ttl 2s"),
        "{out}"
    );
    assert!(
        line("stream /b ").ends_with(", cluster: false (in this process only)"),
        "{out}"
    );
    assert_eq!(
        line("cluster: "),
        "cluster: redis redis://h:6379/0 as node gw-1, prefix sse-gateway, key_secret none, \
         lease_ttl each stream's interval (1s..10s), timeout 500ms, on_redis_down stale \
         (nobody polls; clients are told), history_ttl 1day"
    );
}
