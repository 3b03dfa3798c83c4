//! What the proxy path changes on the way to the upstream: a target that stays under the base
//! path, the upstream's own `Host`, forwarding headers the client can't forge, limits nginx
//! would have set, and an address that follows DNS.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName};
use parking_lot::Mutex;
use percent_encoding::percent_decode;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};
use tracing::{info, warn};

use super::reply::Reply;
use crate::config::{Forwarding, Limits, Upstream};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The connection to the proxy upstream, with timeouts: pingora sets none, so a silent upstream
/// would hold a request forever.
pub(super) fn peer(up: &Upstream, addr: SocketAddr, limits: &Limits) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, up.tls, up.host.clone());
    let o = &mut peer.options;
    o.connection_timeout = Some(limits.proxy_connect_timeout);
    o.total_connection_timeout = Some(limits.proxy_connect_timeout);
    o.read_timeout = Some(limits.proxy_timeout);
    o.write_timeout = Some(limits.proxy_timeout);
    peer
}

/// A request the proxy refuses before connecting: a target that could leave the base path, or a
/// declared body over `limits.proxy_max_body` (nothing of it has been read or sent).
pub(super) fn refusal(req: &RequestHeader, max_body: u64) -> Option<Reply> {
    let target = match origin_target(req) {
        Ok(t) => t,
        Err(why) => return Some(Reply::text(400, format!("{why}\n"))),
    };
    let path = target.split(|&b| b == b'?').next().unwrap_or(&target);
    if leaves_base(path) {
        return Some(Reply::text(
            400,
            "dot segments (`.`, `..`, `%2e`) and backslashes are not allowed in the path\n".into(),
        ));
    }
    let declared = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body) {
        return Some(Reply::text(
            413,
            format!("the request body is over {max_body} bytes\n"),
        ));
    }
    None
}

/// Bytes of a request body proxied so far, for bodies without (or beyond) a `Content-Length`.
#[derive(Default)]
pub(super) struct BodyCount(u64);

impl BodyCount {
    /// Fails with 413 once the body passes `max`; pingora then answers 413 if no response has
    /// started, and closes the connection either way, so the upstream sees a cut body.
    pub(super) fn add(&mut self, chunk: Option<&[u8]>, max: u64) -> Result<()> {
        self.0 += chunk.map_or(0, |c| c.len() as u64);
        if self.0 > max {
            return Error::e_explain(
                ErrorType::HTTPStatus(413),
                format!("request body over limits.proxy_max_body ({max} bytes)"),
            );
        }
        Ok(())
    }
}

/// Where the client is and how it came, as the upstream sees it.
pub(super) struct Client {
    pub ip: Option<IpAddr>,
    pub tls: bool,
}

/// Rewrites the request pingora is about to send: the base path in front of an origin-form
/// target (an absolute-form one must not pick the upstream's vhost), the upstream's `Host`, and
/// forwarding headers.
pub(super) fn rewrite(
    req: &mut RequestHeader,
    up: &Upstream,
    fwd: &Forwarding,
    client: &Client,
) -> Result<()> {
    let target = origin_target(req)
        .map_err(|why| Error::explain(ErrorType::InvalidHTTPHeader, why))?
        .into_owned();
    let base = up.url.path().trim_end_matches('/');
    let mut full = Vec::with_capacity(base.len() + target.len());
    full.extend_from_slice(base.as_bytes());
    full.extend_from_slice(&target);
    req.set_raw_path(&full)?;

    let client_host = req.headers.get(header::HOST).cloned();
    if !fwd.preserve_host {
        let host = up.url.host_str().unwrap_or(&up.host);
        let host = match up.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        req.insert_header(header::HOST, host)?;
    }

    let peer = client.ip.map(|ip| ip.to_canonical().to_string());
    if fwd.trust {
        let mut chain: Vec<&str> = req
            .headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        chain.extend(peer.as_deref());
        let chain = chain.join(", ");
        if !chain.is_empty() {
            req.insert_header(X_FORWARDED_FOR, chain)?;
        }
    } else {
        let forged: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|n| {
                n.as_str().starts_with("x-forwarded-") || *n == header::FORWARDED || *n == X_REAL_IP
            })
            .cloned()
            .collect();
        for name in forged {
            req.remove_header(&name);
        }
        if let Some(peer) = peer {
            req.insert_header(X_FORWARDED_FOR, peer)?;
        }
    }
    if !req.headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if client.tls { "https" } else { "http" };
        req.insert_header(X_FORWARDED_PROTO, proto)?;
    }
    if let Some(host) = client_host.filter(|_| !req.headers.contains_key(&X_FORWARDED_HOST)) {
        req.insert_header(X_FORWARDED_HOST, host)?;
    }
    Ok(())
}

/// The status a failed proxied request gets: a timeout waiting for the upstream is 504, as in
/// nginx.
pub(super) fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ if e.esource() == &ErrorSource::Upstream => 502,
        _ => 500,
    }
}

/// The origin-form path and query to send. pingora keeps an absolute-form target
/// (`GET http://other/x`) as sent, and keeps the raw bytes of a path that is not UTF-8.
fn origin_target(req: &RequestHeader) -> std::result::Result<Cow<'_, [u8]>, &'static str> {
    let raw = req.raw_path();
    if raw.first() == Some(&b'/') {
        return Ok(Cow::Borrowed(raw));
    }
    if !req.raw_path_is_utf8() {
        return Err("an absolute-form request target must be UTF-8");
    }
    // For absolute-form, pingora puts only the path and query into the URI.
    match req.uri.path_and_query().map(|pq| pq.as_str()) {
        Some(pq) if pq.starts_with('/') => Ok(Cow::Owned(pq.as_bytes().to_vec())),
        _ => Err("the request target must be a path"),
    }
}

/// Whether some upstream could resolve `path` above where it starts: a `.` or `..` segment, also
/// once percent-decoded (`%2e`, `%252e`, `..%2f`), also before a `;` parameter (`..;`, which
/// Tomcat resolves), or a backslash, which WHATWG URL parsing and some servers read as `/`.
fn leaves_base(path: &[u8]) -> bool {
    let mut form = Cow::Borrowed(path);
    // Each round peels one layer of encoding; a target still encoded after four is refused.
    for _ in 0..4 {
        if form.contains(&b'\\') || form.split(|&b| b == b'/').any(is_dot_segment) {
            return true;
        }
        let decoded: Cow<[u8]> = percent_decode(&form).into();
        if decoded.len() == form.len() {
            return false;
        }
        form = Cow::Owned(decoded.into_owned());
    }
    true
}

fn is_dot_segment(seg: &[u8]) -> bool {
    let seg = seg.split(|&b| b == b';').next().unwrap_or(seg);
    seg == b"." || seg == b".."
}

type Resolve = dyn Fn(&str, u16) -> Option<SocketAddr> + Send + Sync;

/// The proxy upstream's address, looked up again `proxy_resolve_interval` after the last look-up:
/// std's resolver gives no TTL, and pingora's `HttpPeer::new` needs an address (it panics on a
/// name it cannot resolve). A request never waits for DNS: it uses the address at hand while
/// one blocking look-up runs beside it, and a failed look-up keeps the last good address.
pub(crate) struct Dns {
    resolve: Box<Resolve>,
    slot: Mutex<Option<Slot>>,
}

struct Slot {
    /// The config's upstream this address is for; a reload brings a new one, resolved anew.
    upstream: Arc<Upstream>,
    addr: SocketAddr,
    checked: Instant,
    looking: bool,
    failing: bool,
}

impl Dns {
    pub(crate) fn new(resolve: Box<Resolve>) -> Dns {
        Dns {
            resolve,
            slot: Mutex::new(None),
        }
    }

    /// The address to connect to now, starting a look-up in the background when one is due.
    pub(super) fn addr(self: &Arc<Self>, up: &Arc<Upstream>, every: Duration) -> SocketAddr {
        let (addr, due) = self.current(up, every, Instant::now());
        if due {
            let (dns, up) = (self.clone(), up.clone());
            // Detached, but short and single: `looking` admits one at a time, and it ends with
            // the resolver's own timeout.
            tokio::task::spawn_blocking(move || dns.look_up(&up));
        }
        addr
    }

    /// The address at hand, and whether the caller should look the name up again.
    fn current(&self, up: &Arc<Upstream>, every: Duration, now: Instant) -> (SocketAddr, bool) {
        if up.host.parse::<IpAddr>().is_ok() {
            return (up.addr, false);
        }
        let mut slot = self.slot.lock();
        let s = match &mut *slot {
            Some(s) if Arc::ptr_eq(&s.upstream, up) => s,
            other => other.insert(Slot {
                upstream: up.clone(),
                addr: up.addr,
                checked: now,
                looking: false,
                failing: false,
            }),
        };
        let due = !s.looking && now.saturating_duration_since(s.checked) >= every;
        s.looking |= due;
        (s.addr, due)
    }

    fn look_up(&self, up: &Arc<Upstream>) {
        let found = (self.resolve)(&up.host, up.addr.port());
        self.found(up, found, Instant::now());
    }

    /// Stores a look-up's answer, unless a reload replaced the upstream meanwhile.
    fn found(&self, up: &Arc<Upstream>, found: Option<SocketAddr>, now: Instant) {
        let mut slot = self.slot.lock();
        let Some(s) = slot.as_mut().filter(|s| Arc::ptr_eq(&s.upstream, up)) else {
            return;
        };
        s.looking = false;
        s.checked = now;
        match found {
            Some(addr) => {
                if addr != s.addr {
                    info!(host = %up.host, old = %s.addr, new = %addr, "proxy upstream address changed");
                    s.addr = addr;
                } else if s.failing {
                    info!(host = %up.host, addr = %addr, "proxy upstream resolves again");
                }
                s.failing = false;
            }
            None => {
                if !s.failing {
                    warn!(host = %up.host, addr = %s.addr, "cannot resolve the proxy upstream; keeping its last address");
                }
                s.failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The proxy upstream of a config; names resolve to 10.0.0.1.
    fn upstream(url: &str) -> Arc<Upstream> {
        let yaml = format!("upstreams:\n  api:\n    url: {url}\nproxy: api\n");
        let resolve = |_: &str, port| Some(SocketAddr::from(([10, 0, 0, 1], port)));
        crate::config::parse("t.yaml", &yaml, &|_| None, &resolve)
            .unwrap()
            .proxy
            .unwrap()
    }

    fn request(target: &[u8], headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target, None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    fn header<'a>(req: &'a RequestHeader, name: &str) -> Vec<&'a str> {
        req.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    const FRESH: Forwarding = Forwarding {
        trust: false,
        preserve_host: false,
        resolve_interval: Duration::from_secs(30),
    };

    #[test]
    fn paths_that_could_leave_the_base_are_refused() {
        for bad in [
            "/../admin",
            "/v1/../../x",
            "/a/./b",
            "/..",
            "/%2e%2e/admin",
            "/%2E./admin",
            "/.%2e/admin",
            "/a/..%2fadmin",
            "/a/..%5cadmin",
            "/%252e%252e/admin",
            "/a/..;/admin",
            "/a\\..\\admin",
            "/a/%25252525252e%25252525252e/x",
        ] {
            assert!(leaves_base(bad.as_bytes()), "{bad}");
            let reply = refusal(&request(bad.as_bytes(), &[]), 1 << 20).unwrap();
            assert_eq!(reply.status, 400, "{bad}");
        }
        for good in [
            "/",
            "/api/orders",
            "/a/...",
            "/a/.well-known/x",
            "/a/b..c",
            "/a//b",
            "/files/a%2Fb",
            "/100%25",
        ] {
            assert!(!leaves_base(good.as_bytes()), "{good}");
        }
        let ok = request(b"/a/b?next=/../x", &[]);
        assert!(refusal(&ok, 1 << 20).is_none(), "the query is not a path");
    }

    #[test]
    fn a_declared_body_over_the_limit_is_refused() {
        let req = |n: &str| request(b"/upload", &[("content-length", n)]);
        assert_eq!(refusal(&req("1025"), 1024).unwrap().status, 413);
        assert!(refusal(&req("1024"), 1024).is_none());
        let mut count = BodyCount::default();
        assert!(count.add(Some(&[0; 1000]), 1024).is_ok());
        let e = count.add(Some(&[0; 25]), 1024).unwrap_err();
        assert_eq!(error_status(&e), 413);
    }

    #[test]
    fn the_target_gets_the_base_path_and_origin_form() {
        let up = upstream("http://api.internal:8000/v1/");
        let client = Client {
            ip: None,
            tls: false,
        };
        let mut req = request(b"/orders?x=1", &[("host", "gw")]);
        rewrite(&mut req, &up, &FRESH, &client).unwrap();
        assert_eq!(req.raw_path(), b"/v1/orders?x=1");
        assert_eq!(header(&req, "host"), ["api.internal:8000"]);
        assert_eq!(header(&req, "x-forwarded-host"), ["gw"]);

        let mut req = request(b"http://other.vhost/x?y=2", &[("host", "other.vhost")]);
        rewrite(&mut req, &up, &FRESH, &client).unwrap();
        assert_eq!(req.raw_path(), b"/v1/x?y=2");
        assert_eq!(header(&req, "host"), ["api.internal:8000"]);

        let plain = upstream("https://api.example.com");
        let mut req = request(b"/x", &[("host", "gw")]);
        let keep = Forwarding {
            preserve_host: true,
            ..FRESH
        };
        rewrite(&mut req, &plain, &keep, &client).unwrap();
        assert_eq!(req.raw_path(), b"/x");
        assert_eq!(header(&req, "host"), ["gw"]);
        let mut req = request(b"/x", &[("host", "gw")]);
        rewrite(&mut req, &plain, &FRESH, &client).unwrap();
        assert_eq!(
            header(&req, "host"),
            ["api.example.com"],
            "default port left out"
        );
        let v6 = upstream("http://[::1]:81");
        rewrite(&mut req, &v6, &FRESH, &client).unwrap();
        assert_eq!(header(&req, "host"), ["[::1]:81"]);
    }

    #[test]
    fn forwarding_headers_are_fresh_unless_trusted() {
        let up = upstream("http://10.0.0.1:8000");
        let client = Client {
            ip: Some("::ffff:192.0.2.7".parse().unwrap()),
            tls: true,
        };
        let forged = [
            ("host", "gw.example"),
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-for", "10.8.8.8"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-port", "1"),
            ("forwarded", "for=10.9.9.9"),
            ("x-real-ip", "10.9.9.9"),
        ];
        let mut req = request(b"/x", &forged);
        rewrite(&mut req, &up, &FRESH, &client).unwrap();
        assert_eq!(header(&req, "x-forwarded-for"), ["192.0.2.7"]);
        assert_eq!(header(&req, "x-forwarded-proto"), ["https"]);
        assert_eq!(header(&req, "x-forwarded-host"), ["gw.example"]);
        for gone in ["x-forwarded-port", "forwarded", "x-real-ip"] {
            assert!(header(&req, gone).is_empty(), "{gone}");
        }

        let trust = Forwarding {
            trust: true,
            ..FRESH
        };
        let mut req = request(b"/x", &forged);
        rewrite(&mut req, &up, &trust, &client).unwrap();
        assert_eq!(
            header(&req, "x-forwarded-for"),
            ["10.9.9.9, 10.8.8.8, 192.0.2.7"]
        );
        assert_eq!(header(&req, "x-forwarded-proto"), ["gopher"]);
        assert_eq!(header(&req, "x-real-ip"), ["10.9.9.9"]);
    }

    #[test]
    fn upstream_timeouts_are_504_and_other_failures_502() {
        let up = |t| Error::new(t).into_up();
        assert_eq!(error_status(&up(ErrorType::ReadTimedout)), 504);
        assert_eq!(error_status(&up(ErrorType::ConnectTimedout)), 504);
        assert_eq!(error_status(&up(ErrorType::ConnectRefused)), 502);
        assert_eq!(
            error_status(&Error::new(ErrorType::ReadTimedout).into_down()),
            500
        );
    }

    /// A resolver that answers from a list and counts its calls.
    fn resolver(answers: Vec<Option<SocketAddr>>) -> (Arc<Dns>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let dns = Dns::new(Box::new(move |host, port| {
            assert_eq!((host, port), ("api.internal", 8000));
            let i = seen.fetch_add(1, Ordering::SeqCst);
            answers.get(i).copied().flatten()
        }));
        (Arc::new(dns), calls)
    }

    #[test]
    fn a_name_is_looked_up_again_after_the_interval_and_a_failure_keeps_the_last_address() {
        let new = SocketAddr::from(([10, 0, 0, 2], 8000));
        let (dns, calls) = resolver(vec![Some(new), None]);
        let up = upstream("http://api.internal:8000");
        let every = Duration::from_secs(30);
        let t0 = Instant::now();
        assert_eq!(dns.current(&up, every, t0), (up.addr, false));
        assert_eq!(dns.current(&up, every, t0 + every / 2), (up.addr, false));
        assert_eq!(dns.current(&up, every, t0 + every), (up.addr, true));
        assert_eq!(
            dns.current(&up, every, t0 + every * 2),
            (up.addr, false),
            "one look-up at a time"
        );
        dns.look_up(&up);
        let t1 = Instant::now();
        assert_eq!(dns.current(&up, every, t1), (new, false));
        assert_eq!(dns.current(&up, every, t1 + every), (new, true));
        dns.look_up(&up);
        assert_eq!(dns.current(&up, every, Instant::now()).0, new, "kept");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn an_ip_literal_is_never_looked_up_and_a_reload_starts_afresh() {
        let (dns, calls) = resolver(vec![Some(SocketAddr::from(([10, 0, 0, 2], 8000)))]);
        let ip = upstream("http://192.0.2.1:8000");
        let t0 = Instant::now();
        let late = t0 + Duration::from_secs(3600);
        assert_eq!(
            dns.current(&ip, Duration::from_secs(1), late),
            (ip.addr, false)
        );

        let old = upstream("http://api.internal:8000");
        let every = Duration::from_secs(30);
        dns.current(&old, every, t0);
        assert!(dns.current(&old, every, t0 + every).1);
        let reloaded = upstream("http://api.internal:8000");
        assert_eq!(
            dns.current(&reloaded, every, t0 + every),
            (reloaded.addr, false)
        );
        dns.look_up(&old);
        assert_eq!(
            dns.current(&reloaded, every, t0 + every).0,
            reloaded.addr,
            "a look-up for the replaced upstream is dropped"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_due_look_up_runs_beside_the_request() {
        let new = SocketAddr::from(([10, 0, 0, 2], 8000));
        let (dns, _) = resolver(vec![Some(new)]);
        let up = upstream("http://api.internal:8000");
        let every = Duration::from_millis(1);
        assert_eq!(dns.addr(&up, every), up.addr);
        let start = Instant::now();
        loop {
            if dns.addr(&up, every) == new {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "never resolved");
            tokio::task::yield_now().await;
        }
    }
}
