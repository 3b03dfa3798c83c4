//! The README's configuration reference states the code's defaults: `defaults.rs` and the
//! tables a user reads can never drift apart.

use std::collections::BTreeSet;
use std::time::Duration;

use super::defaults::*;
use super::validate::parse_size;
use super::{DiffMode, Idle};

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

/// Whether the README's default `cell` for stream key `key` is the code's.
fn stream_default_matches(key: &str, cell: &str) -> bool {
    use stream::*;
    let literal = cell.trim_matches('`');
    match key {
        "path" | "upstream" => cell == "required",
        "poll" => cell == "`path`",
        "cors" => cell == "the global `cors`",
        "ignore" | "forward_headers" => literal == "[]",
        "params" => literal == "{}",
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
        other => panic!("the README lists stream key `{other}`: add its default here"),
    }
}

#[test]
fn the_readme_states_every_stream_default_of_the_code() {
    let reference = readme_reference();
    let mut keys = BTreeSet::new();
    for row in reference.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let key = cells[1].trim_matches('`');
        assert!(
            stream_default_matches(key, cells[2]),
            "README: `{key}` defaults to {}, which is not the code's default",
            cells[2]
        );
        keys.insert(key);
    }
    assert_eq!(keys.len(), 21, "one row per stream key: {keys:?}");
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
        // An example, not a default: `threads` is one per CPU, `max_connections` comes
        // from the open-file limit, and the rest have none.
        "threads"
        | "proxy"
        | "limits.max_connections"
        | "shutdown.upgrade_sock"
        | "admin.token"
        | "defaults.interval"
        | "tls.cert"
        | "tls.key"
        | "cors.origins"
        | "cors.credentials" => return None,
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
    assert_eq!(checked, 16, "every default the example shows was checked");
}
