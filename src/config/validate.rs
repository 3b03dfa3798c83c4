//! File structs → `Config`: every semantic check, every error reported. No I/O: the
//! environment and name resolution come in as functions.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::file::{CorsFile, File, IdleFile, Size, StreamFile, UpstreamFile};
use super::index::KeyIndex;
use super::{
    Admin, Config, ConfigError, ConfigErrors, Cors, Demo, DiffMode, Idle, Limits, PathTemplate,
    StreamSpec, Tls, Upstream,
};

const DEFAULT_PARAM: &str = "^[A-Za-z0-9._~-]+$";

/// Collects errors with their place in the file.
struct Errors<'a> {
    source: Arc<str>,
    index: KeyIndex,
    _text: &'a str,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    fn add(&mut self, key: impl Into<String>, msg: impl Into<String>) {
        let key = key.into();
        let (line, col) = self.index.locate(&key);
        self.list.push(ConfigError {
            file: self.source.clone(),
            line,
            col,
            key,
            msg: msg.into(),
        });
    }
}

pub fn validate(
    source: Arc<str>,
    text: &str,
    file: File,
    env: &dyn Fn(&str) -> Option<String>,
    resolve: &dyn Fn(&str, u16) -> Option<SocketAddr>,
) -> Result<Config, ConfigErrors> {
    let mut errs = Errors {
        source: source.clone(),
        index: KeyIndex::build(text),
        _text: text,
        list: Vec::new(),
    };

    let listen = socket_addr(&mut errs, "listen", file.listen.as_deref(), "0.0.0.0:8080");
    let threads = match file.threads {
        Some(0) => {
            errs.add("threads", "must be at least 1");
            1
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };

    let mut upstreams = BTreeMap::new();
    for (name, up) in &file.upstreams {
        if let Some(u) = upstream(&mut errs, name, up, env, resolve) {
            upstreams.insert(name.clone(), Arc::new(u));
        }
    }

    let defaults = file.defaults.unwrap_or_default();
    for (key, set) in [
        ("path", defaults.path.is_some()),
        ("poll", defaults.poll.is_some()),
        ("params", defaults.params.is_some()),
    ] {
        if set {
            errs.add(
                format!("defaults.{key}"),
                "belongs to each stream, not to defaults",
            );
        }
    }

    let global_cors = file.cors.as_ref().and_then(|c| cors(&mut errs, "cors", c));
    if defaults.cors.is_some() {
        errs.add(
            "defaults.cors",
            "set `cors` at the top level, or per stream",
        );
    }
    let mut streams = Vec::new();
    let mut seen = HashSet::new();
    for (i, st) in file.streams.iter().enumerate() {
        let key = format!("streams[{i}]");
        if let Some(mut spec) = stream(&mut errs, &key, st, &defaults, &file.upstreams, &upstreams)
        {
            spec.cors = match &st.cors {
                Some(c) => cors(&mut errs, &format!("{key}.cors"), c),
                None => global_cors.clone(),
            };
            if !seen.insert(spec.path.as_str().to_string()) {
                errs.add(
                    format!("{key}.path"),
                    format!("two streams have the path `{}`", spec.path.as_str()),
                );
            }
            streams.push(Arc::new(spec));
        }
    }

    let proxy = file.proxy.as_ref().and_then(|name| {
        let found = upstreams.get(name).cloned();
        if found.is_none() && !file.upstreams.contains_key(name) {
            errs.add("proxy", format!("no upstream named `{name}`"));
        }
        found
    });

    let demo = file.demo.map(|d| Demo {
        listen: socket_addr(
            &mut errs,
            "demo.listen",
            d.listen.as_deref(),
            "127.0.0.1:3000",
        ),
        page: d.page.unwrap_or(true),
    });

    let limits = file.limits.map_or(
        Limits {
            max_clients: 50_000,
            write_timeout: Duration::from_secs(10),
        },
        |l| {
            if l.max_clients == Some(0) {
                errs.add("limits.max_clients", "must be at least 1");
            }
            if l.write_timeout == Some(Duration::ZERO) {
                errs.add("limits.write_timeout", "must be more than zero");
            }
            Limits {
                max_clients: l.max_clients.unwrap_or(50_000),
                write_timeout: l.write_timeout.unwrap_or(Duration::from_secs(10)),
            }
        },
    );

    let admin = {
        let a = file.admin.as_ref();
        let listen = socket_addr(
            &mut errs,
            "admin.listen",
            a.and_then(|a| a.listen.as_deref()),
            "127.0.0.1:9090",
        );
        let token = a.and_then(|a| a.token.as_deref()).and_then(|t| {
            let t = expand(&mut errs, "admin.token", t, env)?;
            if t.is_empty() {
                errs.add(
                    "admin.token",
                    "is empty: omit `token` to serve admin without one",
                );
            }
            Some(t)
        });
        if listen == socket_addr_of(file.listen.as_deref()) {
            errs.add("admin.listen", "must differ from `listen`");
        }
        Admin { listen, token }
    };
    // Relative paths are relative to the config file, like every path in it.
    let base = std::path::Path::new(&*source)
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let tls = file.tls.as_ref().map(|t| Tls {
        cert: base.join(&t.cert),
        key: base.join(&t.key),
    });
    let shutdown_grace = file
        .shutdown
        .as_ref()
        .and_then(|s| s.grace)
        .unwrap_or(Duration::from_secs(5));
    let upgrade_sock = file
        .shutdown
        .as_ref()
        .and_then(|s| s.upgrade_sock.as_ref())
        .map_or_else(
            || std::path::PathBuf::from("/tmp/sse-gateway-upgrade.sock"),
            |p| base.join(p),
        );

    if !errs.list.is_empty() {
        return Err(ConfigErrors(errs.list));
    }
    Ok(Config {
        source,
        listen,
        threads,
        upstreams,
        streams,
        proxy,
        demo,
        limits,
        shutdown_grace,
        upgrade_sock,
        admin,
        tls,
    })
}

fn socket_addr(errs: &mut Errors, key: &str, value: Option<&str>, default: &str) -> SocketAddr {
    let fallback = SocketAddr::from(([127, 0, 0, 1], 0));
    let v = value.unwrap_or(default);
    v.parse().unwrap_or_else(|_| {
        errs.add(key, format!("`{v}` is not an address like 0.0.0.0:8080"));
        fallback
    })
}

/// Expands `${VAR}` from the environment; `$${` is a literal `${`.
fn expand(
    errs: &mut Errors,
    key: &str,
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut ok = true;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                errs.add(key, "`${` without a closing `}`");
                return None;
            };
            let var = &tail[..end];
            match env(var) {
                Some(v) => out.push_str(&v),
                None => {
                    errs.add(key, format!("environment variable `{var}` is not set"));
                    ok = false;
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    ok.then_some(out)
}

fn upstream(
    errs: &mut Errors,
    name: &str,
    up: &UpstreamFile,
    env: &dyn Fn(&str) -> Option<String>,
    resolve: &dyn Fn(&str, u16) -> Option<SocketAddr>,
) -> Option<Upstream> {
    let key = format!("upstreams.{name}.url");
    let mut headers = Vec::new();
    let mut headers_ok = true;
    for (h, v) in &up.headers {
        let hkey = format!("upstreams.{name}.headers.{h}");
        let Ok(hn) = HeaderName::from_bytes(h.as_bytes()) else {
            errs.add(hkey, format!("`{h}` is not a valid header name"));
            headers_ok = false;
            continue;
        };
        let Some(v) = expand(errs, &hkey, v, env) else {
            headers_ok = false;
            continue;
        };
        match HeaderValue::from_str(&v) {
            Ok(hv) => headers.push((hn, hv)),
            Err(_) => {
                errs.add(hkey, "not a valid header value");
                headers_ok = false;
            }
        }
    }
    let raw = expand(errs, &key, &up.url, env)?;
    let url = match url::Url::parse(&raw) {
        Ok(u) => u,
        Err(e) => {
            errs.add(key, format!("`{raw}` is not a URL: {e}"));
            return None;
        }
    };
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        other => {
            errs.add(key, format!("scheme `{other}` is not http or https"));
            return None;
        }
    };
    if url.query().is_some() || url.fragment().is_some() {
        errs.add(key, "must not have a query or fragment");
        return None;
    }
    let Some(host) = url
        .host_str()
        .map(|h| h.trim_matches(['[', ']']).to_string())
    else {
        errs.add(key, "has no host");
        return None;
    };
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let addr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => match resolve(&host, port) {
            Some(a) => a,
            None => {
                errs.add(key, format!("cannot resolve host `{host}`"));
                return None;
            }
        },
    };
    headers_ok.then(|| Upstream {
        name: name.to_string(),
        url,
        addr,
        tls,
        host,
        headers,
    })
}

fn size(errs: &mut Errors, key: &str, s: &Size) -> Option<usize> {
    let n = match s {
        Size::Bytes(n) => Some(*n),
        Size::Text(t) => parse_size(t),
    };
    match n {
        Some(0) => {
            errs.add(key, "must be more than zero");
            None
        }
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => {
            errs.add(
                key,
                "not a size like `8MiB`, `512KiB`, `1MB` or a number of bytes",
            );
            None
        }
    }
}

fn parse_size(t: &str) -> Option<u64> {
    let t = t.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn stream(
    errs: &mut Errors,
    key: &str,
    st: &StreamFile,
    d: &StreamFile,
    declared: &BTreeMap<String, UpstreamFile>,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
) -> Option<StreamSpec> {
    let before = errs.list.len();
    let k = |field: &str| format!("{key}.{field}");

    let path = match &st.path {
        None => {
            errs.add(key, "missing `path`");
            None
        }
        Some(p) => PathTemplate::parse(p)
            .map_err(|e| errs.add(k("path"), e))
            .ok(),
    };
    let poll_raw = st.poll.as_ref().or(st.path.as_ref());
    let poll = poll_raw.and_then(|p| {
        PathTemplate::parse(p)
            .map_err(|e| errs.add(k("poll"), e))
            .ok()
    });
    if let (Some(path), Some(poll)) = (&path, &poll) {
        for p in poll.params() {
            if !path.params().any(|q| q == p) {
                errs.add(
                    k("poll"),
                    format!("`{{{p}}}` is not a parameter of path `{}`", path.as_str()),
                );
            }
        }
    }

    let upstream = match st.upstream.as_ref().or(d.upstream.as_ref()) {
        None => {
            errs.add(key, "missing `upstream` (set it here or in defaults)");
            None
        }
        Some(name) => {
            let found = upstreams.get(name).cloned();
            // A declared upstream that failed validation has its own error already.
            if found.is_none() && !declared.contains_key(name) {
                let ukey = if st.upstream.is_some() {
                    k("upstream")
                } else {
                    "defaults.upstream".to_string()
                };
                errs.add(ukey, format!("no upstream named `{name}`"));
            }
            found
        }
    };

    let dur = |errs: &mut Errors,
               field: &str,
               own: Option<Duration>,
               def: Option<Duration>,
               fallback: u64| {
        let v = own.or(def).unwrap_or(Duration::from_millis(fallback));
        if v.is_zero() {
            let at = if own.is_some() {
                k(field)
            } else {
                format!("defaults.{field}")
            };
            errs.add(at, "must be more than zero");
        }
        v
    };
    let interval = dur(errs, "interval", st.interval, d.interval, 2_000);
    let timeout = dur(errs, "timeout", st.timeout, d.timeout, 5_000);
    let heartbeat = dur(errs, "heartbeat", st.heartbeat, d.heartbeat, 15_000);
    let retry = st.retry.or(d.retry).unwrap_or(Duration::from_secs(3));
    let backoff_max = st
        .backoff_max
        .or(d.backoff_max)
        .unwrap_or(Duration::from_secs(60));

    let replay = st.replay.or(d.replay).unwrap_or(256);
    if replay > 100_000 {
        errs.add(k("replay"), "at most 100000");
    }
    let size_of = |errs: &mut Errors,
                   field: &str,
                   own: &Option<Size>,
                   def: &Option<Size>,
                   fallback: usize| {
        match (own, def) {
            (Some(s), _) => size(errs, &k(field), s),
            (None, Some(s)) => size(errs, &format!("defaults.{field}"), s),
            (None, None) => Some(fallback),
        }
        .unwrap_or(fallback)
    };
    let replay_bytes = size_of(
        errs,
        "replay_bytes",
        &st.replay_bytes,
        &d.replay_bytes,
        4 << 20,
    );
    let max_body = size_of(errs, "max_body", &st.max_body, &d.max_body, 8 << 20);

    let idle = match st.idle.as_ref().or(d.idle.as_ref()) {
        None => Idle::After(Duration::from_secs(30)),
        Some(IdleFile::Never) => Idle::Never,
        Some(IdleFile::After(x)) => Idle::After(*x),
    };

    let ignore = st
        .ignore
        .as_ref()
        .or(d.ignore.as_ref())
        .cloned()
        .unwrap_or_default();
    for (i, p) in ignore.iter().enumerate() {
        if !p.starts_with('/') {
            errs.add(
                format!("{}[{i}]", k("ignore")),
                format!("`{p}` is not a JSON pointer (RFC 6901): it must start with `/`"),
            );
        }
    }

    let mut forward_headers = Vec::new();
    for (i, h) in st
        .forward_headers
        .as_ref()
        .or(d.forward_headers.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        match HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => forward_headers.push(name),
            Err(_) => errs.add(
                format!("{}[{i}]", k("forward_headers")),
                format!("`{h}` is not a valid header name"),
            ),
        }
    }
    let forward_query = st.forward_query.or(d.forward_query).unwrap_or(false);
    let diff = st.diff.or(d.diff).unwrap_or(DiffMode::JsonPatch);
    let follow_redirects = st.follow_redirects.or(d.follow_redirects).unwrap_or(false);

    let mut params = BTreeMap::new();
    if let Some(path) = &path {
        let own = st.params.clone().unwrap_or_default();
        for name in own.keys() {
            if !path.params().any(|p| p == name) {
                errs.add(
                    format!("{}.{name}", k("params")),
                    format!("`{name}` is not a parameter of path `{}`", path.as_str()),
                );
            }
        }
        for name in path.params() {
            let pattern = own
                .get(name)
                .map_or_else(|| DEFAULT_PARAM.to_string(), |p| format!("^(?:{p})$"));
            match regex::Regex::new(&pattern) {
                Ok(re) => {
                    params.insert(name.to_string(), re);
                }
                Err(e) => errs.add(format!("{}.{name}", k("params")), format!("bad regex: {e}")),
            }
        }
    }
    // A plain path with nothing forwarded has exactly one instance.
    let single = path.as_ref().is_some_and(|p| !p.is_template())
        && !forward_query
        && forward_headers.is_empty();
    let max_instances = if single {
        1
    } else {
        st.max_instances.or(d.max_instances).unwrap_or(1000)
    };
    if max_instances == 0 {
        errs.add(k("max_instances"), "must be at least 1");
    }

    if errs.list.len() > before {
        return None;
    }
    Some(StreamSpec {
        path: path?,
        poll: poll?,
        upstream: upstream?,
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
        forward_headers,
        forward_query,
        max_instances,
        max_body,
        params,
        cors: None,
        follow_redirects,
    })
}

fn cors(errs: &mut Errors, key: &str, c: &CorsFile) -> Option<Cors> {
    let mut ok = true;
    for (i, o) in c.origins.iter().enumerate() {
        let valid = o == "*"
            || url::Url::parse(o).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.path() == "/"
                    && !o.ends_with('/')
                    && u.query().is_none()
            });
        if !valid {
            errs.add(
                format!("{key}.origins[{i}]"),
                format!("`{o}` is not an origin like https://app.example.com (or `*`)"),
            );
            ok = false;
        }
    }
    ok.then(|| Cors {
        origins: c.origins.clone(),
        credentials: c.credentials,
    })
}

/// The client listener's address as configured, for comparisons (parse errors are reported elsewhere).
fn socket_addr_of(value: Option<&str>) -> SocketAddr {
    value
        .unwrap_or("0.0.0.0:8080")
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{parse, Config, ConfigErrors, DiffMode, Idle};
    use std::net::SocketAddr;
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
    }

    #[test]
    fn a_literal_dollar_brace_is_kept() {
        let c = load(
            "upstreams:\n  api:\n    url: http://127.0.0.1:1\n    headers: { X-T: \"$${NOT_A_VAR}\" }\nstreams: []\n",
        )
        .unwrap();
        assert_eq!(c.upstreams["api"].headers[0].1, "${NOT_A_VAR}");
    }

    #[test]
    fn semantic_errors_point_at_their_line_and_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("streams:\n  - path: /a\n    upstream: nope\n", "g.yaml:7:5: streams[0].upstream:", "no upstream named `nope`"),
            ("streams:\n  - path: /a\n    upstream: api\n    interval: 0s\n", "g.yaml:8:5: streams[0].interval:", "more than zero"),
            ("streams:\n  - path: /a\n    upstream: api\n    ignore: [generated_at]\n", "streams[0].ignore[0]:", "JSON pointer"),
            ("streams:\n  - path: /a/{id}\n    upstream: api\n    params: { x: \"1\" }\n", "streams[0].params.x:", "not a parameter"),
            ("streams:\n  - path: /a/{id}\n    upstream: api\n    params: { id: \"(\" }\n", "streams[0].params.id:", "bad regex"),
            ("streams:\n  - path: /a{id}\n    upstream: api\n", "g.yaml:6:5: streams[0].path:", "whole path segment"),
            ("streams:\n  - path: /a\n    upstream: api\n    forward_headers: [\"bad header\"]\n", "streams[0].forward_headers[0]:", "header name"),
            ("streams:\n  - path: /a\n    upstream: api\n    max_body: 8 parsecs\n", "streams[0].max_body:", "not a size"),
            ("defaults:\n  path: /x\nstreams: []\n", "g.yaml:6:3: defaults.path:", "not to defaults"),
            ("listen: nowhere\nstreams: []\n", "g.yaml:5:1: listen:", "not an address"),
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
}
