//! Every default of gateway.yaml, written once: validation fills each unset key from here, and
//! a test holds the README's configuration reference to these values.

use std::time::Duration;

use super::{DiffMode, Forwarding, Idle, Limits};

pub const LISTEN: &str = "0.0.0.0:8080";
/// Loopback: off it, the admin listener needs a token.
pub const ADMIN_LISTEN: &str = "127.0.0.1:9090";
pub const DEMO_LISTEN: &str = "127.0.0.1:3000";
pub const DEMO_PAGE: bool = true;
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub const LIMITS: Limits = Limits {
    max_clients: 50_000,
    write_timeout: Duration::from_secs(10),
    // From the open-file limit at start-up (`edge::conns::auto_max_connections`).
    max_connections: None,
    max_clients_per_ip: 0,
    // nginx's `client_header_timeout` is 60 s; a head is a few hundred bytes, so 10 s is
    // ample even on a poor mobile link.
    head_timeout: Duration::from_secs(10),
    // Browsers keep an idle connection 60 s or less (nginx's `keepalive_timeout` is 75 s).
    keepalive: Duration::from_secs(60),
    // Shorter than nginx's 60 s: three SYN retransmissions fit, and a client learns of a dead
    // upstream before it gives up itself.
    proxy_connect_timeout: Duration::from_secs(10),
    // nginx's `proxy_read_timeout` and `proxy_send_timeout`.
    proxy_timeout: Duration::from_secs(60),
    // nginx's `client_max_body_size`.
    proxy_max_body: 1 << 20,
};

pub const FORWARDING: Forwarding = Forwarding {
    trust: false,
    preserve_host: false,
    resolve_interval: Duration::from_secs(30),
};

/// What a stream gets for each key neither it nor `defaults` sets.
pub mod stream {
    use super::*;

    pub const INTERVAL: Duration = Duration::from_secs(2);
    pub const TIMEOUT: Duration = Duration::from_secs(5);
    pub const HEARTBEAT: Duration = Duration::from_secs(15);
    pub const RETRY: Duration = Duration::from_secs(3);
    pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
    pub const DIFF: DiffMode = DiffMode::JsonPatch;
    pub const REPLAY: usize = 256;
    pub const REPLAY_BYTES: usize = 4 << 20;
    pub const IDLE: Idle = Idle::After(Duration::from_secs(30));
    pub const FORWARD_QUERY: bool = false;
    pub const MAX_INSTANCES: usize = 1000;
    pub const MAX_BODY: usize = 8 << 20;
    pub const FOLLOW_REDIRECTS: bool = false;
    /// A parameter without a pattern of its own: RFC 3986 unreserved characters.
    pub const PARAM: &str = "^[A-Za-z0-9._~-]+$";

    /// A quarter of the interval: a webhook storm can't hammer the upstream, and a refresh
    /// still comes well before the next regular poll.
    pub fn refresh_limit(interval: Duration) -> Duration {
        interval / 4
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::validate::parse_size;
    use super::*;

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
}
