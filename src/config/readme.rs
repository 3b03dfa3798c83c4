//! The README's configuration reference states the code's defaults: `defaults.rs` and the
//! tables a user reads can never drift apart.

use std::collections::BTreeSet;
use std::time::Duration;

use super::defaults::*;
use super::validate::parse_size;
use super::{Cluster, DiffMode, Idle, OnRedisDown};

fn readme_reference() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find("## Configuration reference").unwrap();
    let end = start + text[start..].find("\n## ").unwrap();
    text[start..end].to_string()
}

fn duration(cell: &str) -> Duration {
    humantime::parse_duration(cell).unwrap_or_else(|e| panic!("`{cell}`: {e}"))
}

fn size(cell: &str) -> usize {
    let n = parse_size(cell).unwrap_or_else(|| panic!("`{cell}` is not a size"));
    usize::try_from(n).unwrap()
}

/// The (key, default) cells of the table after the line that starts with `label`.
fn table<'a>(reference: &'a str, label: &str) -> Vec<(&'a str, &'a str)> {
    let start = reference
        .lines()
        .position(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("README: no line starting `{label}` above its table"));
    reference
        .lines()
        .skip(start)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter(|l| l.starts_with("| `"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`'), cells[2])
        })
        .collect()
}

/// Whether the README's default `cell` for stream key `key` is the code's.
fn stream_default_matches(key: &str, cell: &str) -> bool {
    use stream::*;
    let literal = cell.trim_matches('`');
    match key {
        "path" | "upstream" => cell == "required",
        "poll" => cell == "`path`",
        "cors" => cell == "the global `cors`",
        "ignore" | "forward_headers" => literal == "[]",
        "params" | "array_keys" => literal == "{}",
        "interval" => duration(literal) == INTERVAL,
        "timeout" => duration(literal) == TIMEOUT,
        "heartbeat" => duration(literal) == HEARTBEAT,
        "retry" => duration(literal) == RETRY,
        "backoff_max" => duration(literal) == BACKOFF_MAX,
        "idle" => Idle::After(duration(literal)) == IDLE,
        "refresh_limit" => {
            cell == "`interval` / 4"
                && refresh_limit(Duration::from_secs(4)) == Duration::from_secs(1)
        }
        "diff" => serde_json::from_value::<DiffMode>(literal.into()).unwrap() == DIFF,
        "replay" => literal.parse::<usize>().unwrap() == REPLAY,
        "replay_bytes" => size(literal) == REPLAY_BYTES,
        "max_body" => size(literal) == MAX_BODY,
        "max_instances" => literal.parse::<usize>().unwrap() == MAX_INSTANCES,
        "forward_query" => literal.parse::<bool>().unwrap() == FORWARD_QUERY,
        "follow_redirects" => literal.parse::<bool>().unwrap() == FOLLOW_REDIRECTS,
        "cluster" => literal.parse::<bool>().unwrap() == CLUSTER,
        other => panic!("the README lists stream key `{other}`: add its default here"),
    }
}

#[test]
fn the_readme_states_every_stream_default_of_the_code() {
    let reference = readme_reference();
    let mut keys = BTreeSet::new();
    for (key, cell) in table(&reference, "Stream keys") {
        assert!(
            stream_default_matches(key, cell),
            "README: `{key}` defaults to {cell}, which is not the code's default"
        );
        keys.insert(key);
    }
    assert_eq!(keys.len(), 23, "one row per stream key: {keys:?}");
}

/// Whether the README's default `cell` for `cluster.<key>` is the code's.
fn cluster_default_matches(key: &str, cell: &str) -> bool {
    use cluster::*;
    let literal = cell.trim_matches('`');
    match key {
        "redis" => cell == "required",
        "key_secret" => cell == "none",
        "node_id" => cell == "the host name, `-`, 4 random hex digits",
        "prefix" => literal == PREFIX,
        "timeout" => duration(literal) == TIMEOUT,
        "history_ttl" => duration(literal) == HISTORY_TTL,
        "on_redis_down" => {
            serde_json::from_value::<OnRedisDown>(literal.into()).unwrap() == ON_REDIS_DOWN
        }
        "lease_ttl" => cell == "the stream's `interval`, within `1s`..`10s`" && lease_is_clamped(),
        other => panic!("the README lists cluster key `{other}`: add its default here"),
    }
}

/// An unset `lease_ttl` is the interval, clamped to 1s..10s.
fn lease_is_clamped() -> bool {
    let c = Cluster {
        redis: url::Url::parse("redis://h").unwrap(),
        prefix: cluster::PREFIX.into(),
        node_id: "n".into(),
        key_secret: None,
        lease_ttl: None,
        timeout: cluster::TIMEOUT,
        on_redis_down: cluster::ON_REDIS_DOWN,
        history_ttl: cluster::HISTORY_TTL,
    };
    let s = Duration::from_secs;
    [
        (Duration::from_millis(100), s(1)),
        (s(3), s(3)),
        (s(3600), s(10)),
    ]
    .iter()
    .all(|&(interval, lease)| c.lease_ttl(interval) == lease)
}

#[test]
fn the_readme_states_every_cluster_default_of_the_code() {
    let reference = readme_reference();
    let mut keys = BTreeSet::new();
    for (key, cell) in table(&reference, "`cluster:` keys") {
        assert!(
            cluster_default_matches(key, cell),
            "README: `cluster.{key}` defaults to {cell}, which is not the code's default"
        );
        keys.insert(key);
    }
    assert_eq!(keys.len(), 8, "one row per cluster key: {keys:?}");
}

/// Whether the README example's value for `key` (dotted) is the code's default; `None` for
/// a key whose example value is not a default (or that has none).
fn example_is_default(key: &str, value: &str) -> Option<bool> {
    let l = &LIMITS;
    Some(match key {
        "listen" => value == LISTEN,
        "admin.listen" => value == ADMIN_LISTEN,
        "demo.listen" => value == DEMO_LISTEN,
        "demo.page" => value.parse::<bool>().unwrap() == DEMO_PAGE,
        "client_script" => value == "true" || value == CLIENT_SCRIPT,
        "shutdown.grace" => duration(value) == SHUTDOWN_GRACE,
        "proxy_trust_forwarded" => value.parse::<bool>().unwrap() == FORWARDING.trust,
        "preserve_host" => value.parse::<bool>().unwrap() == FORWARDING.preserve_host,
        "proxy_resolve_interval" => duration(value) == FORWARDING.resolve_interval,
        "limits.max_clients" => value.parse::<usize>().unwrap() == l.max_clients,
        "limits.max_clients_per_ip" => value.parse::<usize>().unwrap() == l.max_clients_per_ip,
        "limits.write_timeout" => duration(value) == l.write_timeout,
        "limits.head_timeout" => duration(value) == l.head_timeout,
        "limits.keepalive" => duration(value) == l.keepalive,
        "limits.proxy_connect_timeout" => duration(value) == l.proxy_connect_timeout,
        "limits.proxy_timeout" => duration(value) == l.proxy_timeout,
        "limits.proxy_max_body" => size(value) as u64 == l.proxy_max_body,
        "cluster.prefix" => value == cluster::PREFIX,
        "cluster.timeout" => duration(value) == cluster::TIMEOUT,
        "cluster.history_ttl" => duration(value) == cluster::HISTORY_TTL,
        "cluster.on_redis_down" => {
            serde_json::from_value::<OnRedisDown>(value.into()).unwrap() == cluster::ON_REDIS_DOWN
        }
        // An example, not a default: `threads` is one per CPU, `max_connections` comes
        // from the open-file limit, `cluster.node_id` from the host name and `lease_ttl` from
        // each stream's interval, and the rest have none.
        "threads"
        | "proxy"
        | "limits.max_connections"
        | "shutdown.upgrade_sock"
        | "admin.token"
        | "defaults.interval"
        | "tls.cert"
        | "tls.key"
        | "cors.origins"
        | "cors.credentials"
        | "cluster.redis"
        | "cluster.node_id"
        | "cluster.key_secret"
        | "cluster.lease_ttl" => return None,
        other => {
            panic!("the README's example sets `{other}`: say here whether it is a default")
        }
    })
}

#[test]
fn the_readme_example_shows_the_code_defaults() {
    let reference = readme_reference();
    let start = reference.find("```yaml\n").unwrap() + "```yaml\n".len();
    let end = start + reference[start..].find("```").unwrap();
    let mut section = "";
    let mut checked = 0;
    for line in reference[start..end].lines() {
        let line = line.split(" #").next().unwrap().trim_end();
        let (key, value) = line.split_once(':').unwrap();
        let value = value.trim().trim_matches('"');
        let depth = key.len() - key.trim_start().len();
        let key = key.trim();
        if depth == 0 {
            section = if value.is_empty() { key } else { "" };
        }
        // Upstreams and streams are examples by name; deeper lines belong to one of them.
        if value.is_empty() || depth > 2 || ["upstreams", "streams"].contains(&section) {
            continue;
        }
        let dotted = if depth == 0 {
            key.to_string()
        } else {
            format!("{section}.{key}")
        };
        if let Some(same) = example_is_default(&dotted, value) {
            assert!(
                same,
                "README: `{dotted}: {value}` is not the code's default"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 21, "every default the example shows was checked");
}
