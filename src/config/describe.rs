//! What `sse-gateway check` prints: everything the gateway would serve, one line per part,
//! without secrets (upstream and Redis URLs lose their password, headers show names only, the
//! cluster's key secret only whether it is set).

use std::fmt::Write as _;
use std::time::Duration;

use super::{Cluster, Config, Idle, OnRedisDown, StreamSpec};

impl Config {
    /// The operator's view of this config; writing to a `String` cannot fail.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        listeners(&mut s, self);
        for up in self.upstreams.values() {
            let names: Vec<&str> = up.headers.iter().map(|(n, _)| n.as_str()).collect();
            let _ = writeln!(
                s,
                "upstream {}: {} ({}), headers [{}]",
                up.name,
                up.shown_url(),
                up.addr,
                names.join(", ")
            );
        }
        for st in &self.streams {
            stream(&mut s, st, self.cluster.as_deref());
        }
        proxy(&mut s, self);
        if let Some(c) = &self.cluster {
            cluster(&mut s, c);
        }
        operator(&mut s, self);
        s
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// The client listener and its limits.
fn listeners(s: &mut String, c: &Config) {
    let l = &c.limits;
    let _ = writeln!(
        s,
        "listen: {} ({} threads), shutdown grace {}",
        c.listen,
        c.threads,
        human(c.shutdown_grace)
    );
    let _ = writeln!(
        s,
        "limits: max_clients {}, write_timeout {}",
        l.max_clients,
        human(l.write_timeout)
    );
    let _ = writeln!(
        s,
        "connections: max_connections {}, max_clients_per_ip {}, head_timeout {}, keepalive {}",
        l.max_connections
            .map_or("from the open-file limit".into(), |n| n.to_string()),
        match l.max_clients_per_ip {
            0 => "off".into(),
            n => n.to_string(),
        },
        human(l.head_timeout),
        human(l.keepalive)
    );
}

/// One line per stream: its settings, then what it forwards and follows, and how it is shared.
fn stream(s: &mut String, st: &StreamSpec, cluster: Option<&Cluster>) {
    let idle = match st.idle {
        Idle::Never => "never".to_string(),
        Idle::After(x) => human(x),
    };
    let _ = write!(
        s,
        "stream {} -> {} {}: every {}, timeout {}, diff {}, heartbeat {}, replay {}, idle {}, max_instances {}, max_body {} B, refresh_limit {}",
        st.path.as_str(),
        st.upstream.name,
        st.poll.as_str(),
        human(st.interval),
        human(st.timeout),
        st.diff.as_str(),
        human(st.heartbeat),
        st.replay,
        idle,
        st.max_instances,
        st.max_body,
        human(st.refresh_limit),
    );
    if !st.ignore.is_empty() {
        let _ = write!(s, ", ignore {:?}", st.ignore);
    }
    if !st.array_keys.is_empty() {
        let keys: Vec<String> = st
            .array_keys
            .iter()
            .map(|(p, m)| format!("{p}: {m}"))
            .collect();
        let _ = write!(s, ", array_keys {{{}}}", keys.join(", "));
    }
    if !st.forward_headers.is_empty() {
        let h: Vec<&str> = st.forward_headers.iter().map(|h| h.as_str()).collect();
        let _ = write!(s, ", forwards [{}]", h.join(", "));
    }
    if st.forward_query {
        s.push_str(", forwards query");
    }
    if st.follow_redirects {
        s.push_str(", follows same-origin redirects");
    }
    match (st.cluster, cluster) {
        (false, _) => s.push_str(", cluster: false (in this process only)"),
        (true, Some(c)) => {
            let _ = write!(s, ", shared, lease_ttl {}", human(c.lease_ttl(st.interval)));
        }
        (true, None) => {}
    }
    s.push('\n');
}

/// The Redis every shared stream goes through, and how this gateway behaves when it is down.
fn cluster(s: &mut String, c: &Cluster) {
    let lease = c
        .lease_ttl
        .map_or("each stream's interval (1s..10s)".into(), human);
    let down = match c.on_redis_down {
        OnRedisDown::Local => "local (each gateway polls for its own clients)",
        OnRedisDown::Stale => "stale (nobody polls; clients are told)",
    };
    let _ = writeln!(
        s,
        "cluster: redis {} as node {}, prefix {}, key_secret {}, lease_ttl {lease}, timeout {}, on_redis_down {down}, history_ttl {}",
        c.shown_redis(),
        c.node_id,
        c.prefix,
        if c.key_secret.is_some() { "set" } else { "none" },
        human(c.timeout),
        human(c.history_ttl),
    );
}

/// Where every request that is not a stream goes.
fn proxy(s: &mut String, c: &Config) {
    let Some(p) = &c.proxy else {
        let _ = writeln!(s, "proxy: none (other paths get 404)");
        return;
    };
    let (l, f) = (&c.limits, &c.forwarding);
    let _ = writeln!(
        s,
        "proxy: every other request to {} ({}), connect timeout {}, timeout {}, max body {} B, Host {}, X-Forwarded-* {}, re-resolved every {}",
        p.name,
        p.shown_url(),
        human(l.proxy_connect_timeout),
        human(l.proxy_timeout),
        l.proxy_max_body,
        if f.preserve_host { "the client's" } else { "the upstream's" },
        if f.trust { "trusted and appended to" } else { "set fresh" },
        human(f.resolve_interval),
    );
}

/// TLS, the admin listener and the demo.
fn operator(s: &mut String, c: &Config) {
    if let Some(tls) = &c.tls {
        let _ = writeln!(
            s,
            "tls: cert {}, key {} (HTTP/2 by ALPN)",
            tls.cert.display(),
            tls.key.display()
        );
    }
    let token = if c.admin.token.is_some() {
        " (bearer token required)"
    } else {
        ""
    };
    let _ = writeln!(s, "admin: {}{token}", c.admin.listen);
    if let Some(path) = &c.client_script {
        let _ = writeln!(s, "client script: {path}");
    }
    if let Some(demo) = &c.demo {
        let page = if demo.page { ", page at /" } else { "" };
        let _ = writeln!(s, "demo: API on {}{page}", demo.listen);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    fn describe(streams: &str) -> String {
        let text =
            format!("upstreams:\n  api:\n    url: http://u:pw@127.0.0.1:1\nstreams:\n{streams}");
        let resolve = |_: &str, port| Some(SocketAddr::from(([127, 0, 0, 1], port)));
        match super::super::parse("g.yaml", &text, &|_| None, &resolve) {
            Ok(c) => c.describe(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_streams_line_shows_its_refresh_limit_and_redirects() {
        let out = describe(
            "  - path: /a\n    upstream: api\n    interval: 4s\n  - path: /b\n    upstream: api\n    refresh_limit: 3s\n    follow_redirects: true\n",
        );
        let line = |p: &str| out.lines().find(|l| l.starts_with(p)).unwrap().to_string();
        let a = line("stream /a ");
        assert!(a.contains(", refresh_limit 1s"), "{a}");
        assert!(!a.contains("redirects"), "{a}");
        let b = line("stream /b ");
        assert!(b.contains(", refresh_limit 3s"), "{b}");
        assert!(b.ends_with(", follows same-origin redirects"), "{b}");
        assert!(!out.contains("pw"), "secrets are never printed: {out}");
    }
}
