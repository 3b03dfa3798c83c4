//! File structs → `Config`: every semantic check, every error reported. No I/O: the
//! environment and name resolution come in as functions.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::defaults::{self, stream as sd, FORWARDING, LIMITS};
use super::file::{CorsFile, File, IdleFile, Size, StreamFile, UpstreamFile};
use super::index::KeyIndex;
use super::{
    single_instance, Admin, Config, ConfigError, ConfigErrors, Cors, Demo, Forwarding, Idle,
    Limits, PathTemplate, Pattern, StreamSpec, Tls, Upstream,
};

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

    let listen = socket_addr(
        &mut errs,
        "listen",
        file.listen.as_deref(),
        defaults::LISTEN,
    );
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
            defaults::DEMO_LISTEN,
        ),
        page: d.page.unwrap_or(defaults::DEMO_PAGE),
    });

    let l = file.limits.unwrap_or_default();
    if l.max_clients == Some(0) {
        errs.add("limits.max_clients", "must be at least 1");
    }
    if l.max_connections == Some(0) {
        errs.add("limits.max_connections", "must be at least 1");
    }
    let limits = Limits {
        max_clients: l.max_clients.unwrap_or(LIMITS.max_clients),
        write_timeout: positive(
            &mut errs,
            "limits.write_timeout",
            l.write_timeout,
            LIMITS.write_timeout,
        ),
        max_connections: l.max_connections,
        max_clients_per_ip: l.max_clients_per_ip.unwrap_or(LIMITS.max_clients_per_ip),
        head_timeout: positive(
            &mut errs,
            "limits.head_timeout",
            l.head_timeout,
            LIMITS.head_timeout,
        ),
        keepalive: positive(&mut errs, "limits.keepalive", l.keepalive, LIMITS.keepalive),
        proxy_connect_timeout: positive(
            &mut errs,
            "limits.proxy_connect_timeout",
            l.proxy_connect_timeout,
            LIMITS.proxy_connect_timeout,
        ),
        proxy_timeout: positive(
            &mut errs,
            "limits.proxy_timeout",
            l.proxy_timeout,
            LIMITS.proxy_timeout,
        ),
        proxy_max_body: l
            .proxy_max_body
            .as_ref()
            .and_then(|s| size(&mut errs, "limits.proxy_max_body", s))
            .map_or(LIMITS.proxy_max_body, |n| n as u64),
    };
    let forwarding = Forwarding {
        trust: file.proxy_trust_forwarded.unwrap_or(FORWARDING.trust),
        preserve_host: file.preserve_host.unwrap_or(FORWARDING.preserve_host),
        resolve_interval: positive(
            &mut errs,
            "proxy_resolve_interval",
            file.proxy_resolve_interval,
            FORWARDING.resolve_interval,
        ),
    };

    let admin = {
        let a = file.admin.as_ref();
        let listen = socket_addr(
            &mut errs,
            "admin.listen",
            a.and_then(|a| a.listen.as_deref()),
            defaults::ADMIN_LISTEN,
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
        // Anyone who reaches it can read every instance and trigger polls (security review F8).
        if !listen.ip().is_loopback() && a.and_then(|a| a.token.as_ref()).is_none() {
            errs.add(
                "admin.listen",
                format!(
                    "`{listen}` is not a loopback address: set `admin.token` (e.g. \"${{ADMIN_TOKEN}}\") \
                     so that only operators reach /metrics, /streams and refresh"
                ),
            );
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
        .unwrap_or(defaults::SHUTDOWN_GRACE);
    let shutdown_grace = capped(&mut errs, "shutdown.grace", shutdown_grace);
    let upgrade_sock = file
        .shutdown
        .as_ref()
        .and_then(|s| s.upgrade_sock.as_ref())
        .map(|p| base.join(p));

    // An empty or cut-short file is valid YAML: refusing it keeps a half-written reload from
    // closing every stream and the proxy (security review F7).
    if file.streams.is_empty() && file.proxy.is_none() {
        errs.add(
            "streams",
            "nothing to serve: no `streams` and no `proxy` (is the file empty or cut short?)",
        );
    }

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
        forwarding,
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

pub(super) fn parse_size(t: &str) -> Option<u64> {
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

    // Where a key's value came from: the stream itself, or `defaults`.
    let at = |field: &str, own: bool| {
        if own {
            k(field)
        } else {
            format!("defaults.{field}")
        }
    };
    let dur = |errs: &mut Errors,
               field: &str,
               own: Option<Duration>,
               def: Option<Duration>,
               fallback: Duration,
               nonzero: bool| {
        let v = own.or(def).unwrap_or(fallback);
        if nonzero && v.is_zero() {
            errs.add(at(field, own.is_some()), "must be more than zero");
        }
        capped(errs, &at(field, own.is_some()), v)
    };
    let interval = dur(
        errs,
        "interval",
        st.interval,
        d.interval,
        sd::INTERVAL,
        true,
    );
    let timeout = dur(errs, "timeout", st.timeout, d.timeout, sd::TIMEOUT, true);
    let heartbeat = dur(
        errs,
        "heartbeat",
        st.heartbeat,
        d.heartbeat,
        sd::HEARTBEAT,
        true,
    );
    let retry = dur(errs, "retry", st.retry, d.retry, sd::RETRY, false);
    let refresh_limit = match st.refresh_limit.or(d.refresh_limit) {
        None => sd::refresh_limit(interval),
        Some(_) => dur(
            errs,
            "refresh_limit",
            st.refresh_limit,
            d.refresh_limit,
            Duration::ZERO,
            true,
        ),
    };
    let backoff_max = dur(
        errs,
        "backoff_max",
        st.backoff_max,
        d.backoff_max,
        sd::BACKOFF_MAX,
        false,
    );

    let replay = st.replay.or(d.replay).unwrap_or(sd::REPLAY);
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
        sd::REPLAY_BYTES,
    );
    let max_body = size_of(errs, "max_body", &st.max_body, &d.max_body, sd::MAX_BODY);

    let idle = match st.idle.as_ref().or(d.idle.as_ref()) {
        None => sd::IDLE,
        Some(IdleFile::Never) => Idle::Never,
        Some(IdleFile::After(x)) => Idle::After(capped(errs, &at("idle", st.idle.is_some()), *x)),
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
    let fkey = at("forward_headers", st.forward_headers.is_some());
    let up_name = st.upstream.as_ref().or(d.upstream.as_ref());
    let static_headers = up_name.and_then(|n| declared.get(n).map(|u| (n, &u.headers)));
    for (i, h) in st
        .forward_headers
        .as_ref()
        .or(d.forward_headers.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let hkey = format!("{fkey}[{i}]");
        let Ok(name) = HeaderName::from_bytes(h.as_bytes()) else {
            errs.add(hkey, format!("`{h}` is not a valid header name"));
            continue;
        };
        if let Some(why) = not_forwardable(&name) {
            errs.add(hkey, format!("`{name}` cannot be forwarded: {why}"));
            continue;
        }
        // reqwest appends, so a poll would carry both values, and most servers read the first:
        // the gateway's own credential would answer for every client (security review F3).
        if let Some((up, _)) = static_headers
            .filter(|(_, hs)| hs.keys().any(|s| s.eq_ignore_ascii_case(name.as_str())))
        {
            errs.add(
                hkey,
                format!(
                    "`{name}` is also set in upstreams.{up}.headers: a poll must carry either \
                     the gateway's value or the client's, never both"
                ),
            );
            continue;
        }
        forward_headers.push(name);
    }
    let forward_query = st
        .forward_query
        .or(d.forward_query)
        .unwrap_or(sd::FORWARD_QUERY);
    let diff = st.diff.or(d.diff).unwrap_or(sd::DIFF);
    let follow_redirects = st
        .follow_redirects
        .or(d.follow_redirects)
        .unwrap_or(sd::FOLLOW_REDIRECTS);

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
                .map_or_else(|| sd::PARAM.to_string(), |p| format!("^(?:{p})$"));
            match Pattern::new(&pattern) {
                Ok(re) => {
                    params.insert(name.to_string(), re);
                }
                Err(e) => errs.add(format!("{}.{name}", k("params")), format!("bad regex: {e}")),
            }
        }
    }
    let single = path
        .as_ref()
        .is_some_and(|p| single_instance(p, forward_query, &forward_headers));
    let max_instances = if single {
        1
    } else {
        st.max_instances
            .or(d.max_instances)
            .unwrap_or(sd::MAX_INSTANCES)
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
        refresh_limit,
    })
}

fn cors(errs: &mut Errors, key: &str, c: &CorsFile) -> Option<Cors> {
    let mut ok = true;
    for (i, o) in c.origins.iter().enumerate() {
        // Browsers refuse `*` with credentials so that no site can read another's with its
        // visitors' cookies; answering with each origin would undo that (security review F2).
        if o == "*" && c.credentials {
            errs.add(
                format!("{key}.origins[{i}]"),
                "`*` with `credentials: true` would let every site read the stream with its \
                 visitors' cookies: list the origins, or drop `credentials`",
            );
            ok = false;
            continue;
        }
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

/// The longest duration any key accepts: `1y` as humantime reads it (365.25 days). Far beyond
/// any useful interval or timeout, and small enough that `Instant + d` and the jitter multiples
/// (`retry * 5`) can never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(31_557_600);

/// `d`, or an error at `key` when it is past `MAX_DURATION` (then the maximum, so later checks
/// run on a value that can't overflow).
/// A duration that must be more than zero and at most a year: `own` if set, else `default`.
fn positive(errs: &mut Errors, key: &str, own: Option<Duration>, default: Duration) -> Duration {
    let d = own.unwrap_or(default);
    if d.is_zero() {
        errs.add(key, "must be more than zero");
    }
    capped(errs, key, d)
}

fn capped(errs: &mut Errors, key: &str, d: Duration) -> Duration {
    if d > MAX_DURATION {
        errs.add(key, "at most a year (1y)");
        return MAX_DURATION;
    }
    d
}

/// Why a header makes no sense in `forward_headers`, if it doesn't.
fn not_forwardable(name: &HeaderName) -> Option<&'static str> {
    use http::header::*;
    let n = name.as_str();
    if name == HOST {
        Some("the upstream's Host comes from its URL; the client's would pick another virtual host")
    } else if [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
        RANGE,
    ]
    .contains(name)
    {
        Some("the gateway makes its own conditional requests; a client's could leave the instance without a document")
    } else if [
        CONNECTION,
        TRANSFER_ENCODING,
        TE,
        TRAILER,
        UPGRADE,
        CONTENT_LENGTH,
    ]
    .contains(name)
        || n == "keep-alive"
        || n.starts_with("proxy-")
    {
        Some("a hop-by-hop or framing header describes the client's connection, not the poll (RFC 9110 §7.6.1)")
    } else {
        None
    }
}

/// The client listener's address as configured, for comparisons (parse errors are reported elsewhere).
fn socket_addr_of(value: Option<&str>) -> SocketAddr {
    value
        .unwrap_or(defaults::LISTEN)
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{
        parse, Config, ConfigErrors, Cors, DiffMode, Idle, PathTemplate, Pattern, StreamSpec,
        Upstream,
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
                err.contains(&format!("g.yaml:7:3: limits.{key}:"))
                    && err.contains("more than zero"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_password_in_an_upstream_url_is_never_shown() {
        let c = load("upstreams:\n  api:\n    url: http://user:pa55@127.0.0.1:1/v1\nproxy: api\n")
            .unwrap();
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
            ("streams:\n  - path: /a\n    upstream: nope\n", "g.yaml:7:5: streams[0].upstream:", "no upstream named `nope`"),
            ("streams:\n  - path: /a\n    upstream: api\n    interval: 0s\n", "g.yaml:8:5: streams[0].interval:", "more than zero"),
            ("streams:\n  - path: /a\n    upstream: api\n    ignore: [generated_at]\n", "streams[0].ignore[0]:", "JSON pointer"),
            ("streams:\n  - path: /a/{id}\n    upstream: api\n    params: { x: \"1\" }\n", "streams[0].params.x:", "not a parameter"),
            ("streams:\n  - path: /a/{id}\n    upstream: api\n    params: { id: \"(\" }\n", "streams[0].params.id:", "bad regex"),
            ("streams:\n  - path: /a{id}\n    upstream: api\n", "g.yaml:6:5: streams[0].path:", "whole path segment"),
            ("streams:\n  - path: /a\n    upstream: api\n    poll: /../admin\n", "g.yaml:8:5: streams[0].poll:", "dot segments"),
            ("limits:\n  proxy_timeout: 0s\n  proxy_max_body: 0\nstreams: []\n", "g.yaml:6:3: limits.proxy_timeout:", "more than zero"),
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
        assert_eq!(c.streams[0].interval, super::MAX_DURATION);
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
            forward_headers,
            forward_query,
            max_instances,
            max_body,
            params,
            cors,
            follow_redirects,
            refresh_limit,
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
        assert_eq!(n, 21, "every field was changed");
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
}
