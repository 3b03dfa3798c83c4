//! The harness: the real gateway binary on a free loopback port, a real HTTP mock upstream
//! (wiremock) whose documents tests change, and an SSE client that parses with a real parser
//! and applies every patch, so tests compare documents.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

mod proxy;
mod record;
mod redis_server;
mod tamper;

pub use proxy::Proxy;
pub use record::{Ledger, Recorder, Seen};
pub use redis_server::{redis_text, Redis};
pub use tamper::Relay;

/// An event id's parts, `<12 hex epoch>-<seq>-<16 hex checksum>`, if it has that form.
pub fn id_parts(id: &str) -> Option<(&str, u64, &str)> {
    let mut parts = id.split('-');
    let (epoch, seq, sum) = (parts.next()?, parts.next()?, parts.next()?);
    let hex =
        |t: &str, n| t.len() == n && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let ok = parts.next().is_none() && hex(epoch, 12) && hex(sum, 16);
    Some((epoch, seq.parse().ok()?, sum)).filter(|_| ok)
}

/// The checksum an event id ends with for a JSON document (README "Event reference"): the
/// first 8 bytes of SHA-256 over its RFC 8785 form, in hex.
pub fn checksum(doc: &Value) -> String {
    use sha2::Digest;
    let canonical = serde_json_canonicalizer::to_vec(doc).expect("canonical JSON");
    hex::encode(&sha2::Sha256::digest(canonical)[..8])
}

/// The checksum for a text document: over the data as the client received it.
pub fn text_checksum(data: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(data.as_bytes())[..8])
}

/// How long any single expectation may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Whether process `pid` holds a socket listening on 127.0.0.1:`port` (from /proc).
fn listens(pid: u32, port: u16) -> bool {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = tcp
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[1] == local && f[3] == "0A")
        .map(|f| format!("socket:[{}]", f[9]))
        .collect();
    if inodes.is_empty() {
        return false;
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub fn http() -> reqwest::Client {
    pingora::tls::install_default_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

/// Polls `check` until it returns `Some`, or panics with `what` after the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "not within {DEADLINE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The real `sse-gateway` binary, killed on drop.
pub struct Gateway {
    child: Child,
    pub port: u16,
    /// The admin listener's port (a `Cfg` listens there; `Yaml` text says where it listens).
    pub admin_port: u16,
    stderr: PathBuf,
    /// The config file the gateway was started with (a symlink in `start_symlinked`).
    pub config: PathBuf,
    dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts the gateway with `cfg` on free ports.
    pub async fn start(cfg: &impl Render) -> Gateway {
        Self::start_with_env(cfg, &[]).await
    }

    pub async fn start_with_env(cfg: &impl Render, env: &[(&str, &str)]) -> Gateway {
        Self::start_opts(cfg, env, false).await
    }

    /// Starts with `gateway.yaml` a symlink into a data directory, as a Kubernetes ConfigMap has it.
    pub async fn start_symlinked(cfg: &impl Render) -> Gateway {
        Self::start_opts(cfg, &[], true).await
    }

    async fn start_opts(cfg: &impl Render, env: &[(&str, &str)], symlinked: bool) -> Gateway {
        // pingora retries a busy port for 30 s; on the rare collision, try another port.
        for _ in 0..3 {
            if let Some(gw) = Self::try_start(cfg, env, symlinked).await {
                return gw;
            }
        }
        panic!("the gateway did not start listening");
    }

    async fn try_start(
        cfg: &impl Render,
        env: &[(&str, &str)],
        symlinked: bool,
    ) -> Option<Gateway> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let admin_port = free_port();
        let config = dir.path().join("gateway.yaml");
        let text = cfg.render(port, admin_port);
        if symlinked {
            let data = dir.path().join("..data_0");
            std::fs::create_dir(&data).expect("data dir");
            std::fs::write(data.join("gateway.yaml"), text).expect("write config");
            std::os::unix::fs::symlink(data.join("gateway.yaml"), &config).expect("symlink");
        } else {
            std::fs::write(&config, text).expect("write config");
        }
        let stderr = dir.path().join("stderr.log");
        let log = std::fs::File::create(&stderr).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sse-gateway"));
        cmd.arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info,pingora_core=warn,pingora_proxy=warn")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn sse-gateway");
        let mut gw = Gateway {
            child,
            port,
            admin_port,
            stderr,
            config,
            dir,
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(status)) = gw.child.try_wait() {
                // A port taken since free_port() chose it: try others.
                if gw.stderr().contains("cannot listen on") {
                    eprintln!("port taken; retrying:\n{}", gw.stderr());
                    return None;
                }
                panic!("the gateway exited with {status}:\n{}", gw.stderr());
            }
            // Listening, and itself: a port handed out twice would otherwise let this test
            // talk to another test's gateway until that one exits.
            let pid = gw.child.id();
            if listens(pid, port) {
                return Some(gw);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("not listening on {port} yet; retrying:\n{}", gw.stderr());
        None
    }

    /// Starts a second process on the same config with `--upgrade`: it waits for this one to hand
    /// over its listening sockets (on SIGQUIT).
    pub fn take_over(&self) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr = dir.path().join("stderr.log");
        let log = std::fs::File::create(&stderr).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sse-gateway"))
            .arg("--upgrade")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info,pingora_core=info,pingora_proxy=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sse-gateway --upgrade");
        Gateway {
            child,
            port: self.port,
            admin_port: self.admin_port,
            stderr,
            config: self.config.clone(),
            dir,
        }
    }

    /// Waits until the gateway watches its config, so a change made now is seen.
    pub async fn watching(&self) {
        eventually("the gateway watches its config", || async {
            self.stderr().contains("watching the config").then_some(())
        })
        .await;
    }

    /// Replaces the config the way editors do: write a new file, rename it over the old one.
    pub fn rewrite(&self, cfg: &impl Render) {
        let tmp = self.dir.path().join("gateway.yaml.new");
        std::fs::write(&tmp, cfg.render(self.port, self.admin_port)).expect("write");
        std::fs::rename(&tmp, &self.config).expect("rename");
    }

    /// Replaces a symlinked config the way Kubernetes does: a new data directory, then an atomic
    /// swap of the symlink.
    pub fn swap_symlink(&self, cfg: &impl Render, generation: u32) {
        let data = self.dir.path().join(format!("..data_{generation}"));
        std::fs::create_dir(&data).expect("data dir");
        let file = data.join("gateway.yaml");
        std::fs::write(&file, cfg.render(self.port, self.admin_port)).expect("write");
        let tmp = self.dir.path().join("gateway.yaml.tmp");
        std::os::unix::fs::symlink(&file, &tmp).expect("symlink");
        std::fs::rename(&tmp, &self.config).expect("swap");
    }

    /// Sends a signal by name (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Waits for the process to exit, up to `limit`.
    pub async fn exit_status(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(start.elapsed() < limit, "still running after {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The gateway's process id, e.g. to change its resource limits while it runs.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// One sample of the admin listener's Prometheus exposition, e.g.
    /// `metric("sse_gateway_clients{stream=\"/sse/doc\"}")`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        admin_metric(self.admin_port, None, sample).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub async fn sse(&self, path: &str) -> SseClient {
        self.sse_with(path, &[]).await
    }

    pub async fn sse_with(&self, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let resp = self.get_sse(path, headers).await;
        assert_eq!(resp.status(), 200, "GET {path}: {}", self.stderr());
        SseClient::new(resp)
    }

    /// The raw response to a subscription request, whatever its status.
    pub async fn get_sse(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = http()
            .get(self.url(path))
            .header("accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("subscription request")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// An SSE client that keeps the document it would show up to date.
pub struct SseClient {
    events: Events,
    pub doc: Option<Value>,
    pub last_id: String,
}

impl SseClient {
    pub fn new(resp: reqwest::Response) -> SseClient {
        SseClient::from_body(resp.bytes_stream())
    }

    /// A client over any body: for responses read with another HTTP client.
    pub fn from_body<S, E>(body: S) -> SseClient
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let events = body.eventsource().map(|r| r.map_err(|e| e.to_string()));
        SseClient {
            events: Box::pin(events),
            doc: None,
            last_id: String::new(),
        }
    }

    /// The next event, or `None` when the stream ended.
    pub async fn try_next_event(&mut self) -> Option<Event> {
        let next = tokio::time::timeout(DEADLINE, self.events.next())
            .await
            .unwrap_or_else(|_| panic!("no event within {DEADLINE:?}"));
        let ev = next?.ok()?;
        self.take(&ev);
        Some(ev)
    }

    pub async fn next_event(&mut self) -> Event {
        self.try_next_event().await.expect("the stream ended")
    }

    /// Waits up to `d` for an event; `None` if none came.
    pub async fn event_within(&mut self, d: Duration) -> Option<Event> {
        match tokio::time::timeout(d, self.events.next()).await {
            Err(_) => None,
            Ok(None) => panic!("the stream ended"),
            Ok(Some(r)) => {
                let ev = r.expect("a well-formed event");
                self.take(&ev);
                Some(ev)
            }
        }
    }

    /// Waits up to `d`: `None` if nothing came, `Some(None)` when the stream ended (or broke).
    pub async fn within(&mut self, d: Duration) -> Option<Option<Event>> {
        let next = tokio::time::timeout(d, self.events.next()).await.ok()?;
        let ev = next.and_then(Result::ok);
        if let Some(ev) = &ev {
            self.take(ev);
        }
        Some(ev)
    }

    /// What a browser does with an event it receives: remember its id, update the document.
    fn take(&mut self, ev: &Event) {
        if !ev.id.is_empty() {
            self.last_id = ev.id.clone();
        }
        self.apply(ev);
    }

    /// Applies a document event, then checks its id's checksum against the document it built,
    /// as `LiveDocument` does in a browser: every test that reads events checks them.
    fn apply(&mut self, ev: &Event) {
        let text = match ev.event.as_str() {
            "snapshot" => {
                let parsed = serde_json::from_str(&ev.data).ok();
                let text = parsed.is_none();
                self.doc = Some(parsed.unwrap_or(Value::String(ev.data.clone())));
                text
            }
            "patch" | "merge-patch" => {
                self.patch(ev);
                false
            }
            _ => return,
        };
        let Some((_, _, sum)) = id_parts(&ev.id) else {
            return;
        };
        let doc = self.doc.as_ref().expect("a document");
        let expected = match (text, doc) {
            (true, Value::String(data)) => text_checksum(data),
            _ => checksum(doc),
        };
        assert_eq!(
            sum, expected,
            "{} {}: its checksum is not the one of the document it leaves: {doc}",
            ev.event, ev.id
        );
    }

    fn patch(&mut self, ev: &Event) {
        match ev.event.as_str() {
            "patch" => {
                let doc = self.doc.as_mut().expect("a patch before any snapshot");
                let patch: json_patch::Patch =
                    serde_json::from_str(&ev.data).expect("RFC 6902 patch");
                json_patch::patch(doc, &patch).expect("the patch applies");
            }
            "merge-patch" => {
                let doc = self
                    .doc
                    .as_mut()
                    .expect("a merge patch before any snapshot");
                let patch: Value = serde_json::from_str(&ev.data).expect("RFC 7396 patch");
                json_patch::merge(doc, &patch);
            }
            _ => {}
        }
    }

    /// The first event must be the snapshot; returns the document.
    pub async fn snapshot(&mut self) -> Value {
        let ev = self.next_event().await;
        assert_eq!(ev.event, "snapshot", "first event: {ev:?}");
        self.doc.clone().expect("a document")
    }

    /// The document after the next event that changes it.
    pub async fn next_document(&mut self) -> Value {
        loop {
            let ev = self.next_event().await;
            if matches!(ev.event.as_str(), "snapshot" | "patch" | "merge-patch") {
                return self.doc.clone().expect("a document");
            }
        }
    }

    /// The next event of kind `kind`, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Event {
        loop {
            let ev = self.next_event().await;
            if ev.event == kind {
                return ev;
            }
        }
    }
}

/// What the mock upstream answers for one path.
#[derive(Clone)]
struct Resource {
    body: String,
    content_type: &'static str,
    status: u16,
    headers: Vec<(String, String)>,
    delay: Duration,
    etag: bool,
    version: u64,
    /// Answers by `Authorization` header; an unknown or missing one gets 401.
    by_auth: Option<HashMap<String, Value>>,
    /// The next this many requests get this status instead.
    fail_times: (u16, usize),
    /// When each request arrived.
    arrivals: Vec<Instant>,
}

impl Default for Resource {
    /// An empty JSON document, answered at once with 200.
    fn default() -> Resource {
        Resource {
            body: String::new(),
            content_type: "application/json",
            status: 200,
            headers: Vec::new(),
            delay: Duration::ZERO,
            etag: false,
            version: 0,
            by_auth: None,
            fail_times: (200, 0),
            arrivals: Vec::new(),
        }
    }
}

#[derive(Clone, Default)]
struct State(Arc<Mutex<HashMap<String, Resource>>>);

impl Respond for State {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut map = self.0.lock().expect("state");
        let Some(r) = map.get_mut(req.url.path()) else {
            return ResponseTemplate::new(404);
        };
        r.arrivals.push(Instant::now());
        if r.fail_times.1 > 0 {
            r.fail_times.1 -= 1;
            return ResponseTemplate::new(r.fail_times.0);
        }
        let mut t = if let Some(by_auth) = &r.by_auth {
            let auth = req
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            match by_auth.get(auth) {
                Some(v) => {
                    ResponseTemplate::new(200).set_body_raw(v.to_string(), "application/json")
                }
                None => ResponseTemplate::new(401),
            }
        } else if r.etag
            && req
                .headers
                .get("if-none-match")
                .is_some_and(|v| v.as_bytes() == format!("\"v{}\"", r.version).as_bytes())
        {
            ResponseTemplate::new(304)
        } else if r.status == 200 {
            ResponseTemplate::new(200).set_body_raw(r.body.clone(), r.content_type)
        } else {
            ResponseTemplate::new(r.status)
        };
        if r.etag {
            t = t.insert_header("etag", format!("\"v{}\"", r.version).as_str());
        }
        for (k, v) in &r.headers {
            t = t.insert_header(k.as_str(), v.as_str());
        }
        t.set_delay(r.delay)
    }
}

/// A real HTTP upstream whose documents tests change.
pub struct Upstream {
    pub server: MockServer,
    state: State,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let server = MockServer::start().await;
        let state = State::default();
        Mock::given(wiremock::matchers::any())
            .respond_with(state.clone())
            .mount(&server)
            .await;
        Upstream { server, state }
    }

    pub async fn json(path: &str, doc: Value) -> Upstream {
        let up = Upstream::start().await;
        up.set(path, doc);
        up
    }

    pub fn url(&self) -> String {
        self.server.uri()
    }

    fn edit(&self, path: &str, f: impl FnOnce(&mut Resource)) {
        let mut map = self.state.0.lock().expect("state");
        let r = map.entry(path.to_string()).or_default();
        f(r);
        r.version += 1;
    }

    pub fn set(&self, path: &str, doc: Value) {
        self.edit(path, |r| {
            r.body = doc.to_string();
            r.content_type = "application/json";
        });
    }

    pub fn set_text(&self, path: &str, body: &str) {
        self.edit(path, |r| {
            r.body = body.to_string();
            r.content_type = "text/plain";
        });
    }

    /// Serves `body` as it is, with this `Content-Type` (none when empty).
    pub fn set_raw(&self, path: &str, body: &str, content_type: &'static str) {
        self.edit(path, |r| {
            r.body = body.to_string();
            r.content_type = content_type;
        });
    }

    pub fn set_html(&self, path: &str, html: &str) {
        self.edit(path, |r| {
            r.body = html.to_string();
            r.content_type = "text/html";
        });
    }

    pub fn fail(&self, path: &str, status: u16, headers: &[(&str, &str)]) {
        self.edit(path, |r| {
            r.status = status;
            r.headers = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        });
    }

    /// Answers the next `n` requests for `path` with `status`, then as before.
    pub fn fail_times(&self, path: &str, status: u16, n: usize) {
        self.edit(path, |r| r.fail_times = (status, n));
    }

    /// How many of the answers `fail_times` asked for are still to come.
    pub fn failures_left(&self, path: &str) -> usize {
        let map = self.state.0.lock().expect("state");
        map.get(path).map_or(0, |r| r.fail_times.1)
    }

    pub fn recover(&self, path: &str) {
        self.edit(path, |r| {
            r.status = 200;
            r.headers.clear();
        });
    }

    pub fn delay(&self, path: &str, d: Duration) {
        self.edit(path, |r| r.delay = d);
    }

    pub fn with_etag(&self, path: &str) {
        self.edit(path, |r| r.etag = true);
    }

    /// Answers `path` by the request's `Authorization` header; others get 401.
    pub fn by_auth(&self, path: &str, docs: &[(&str, Value)]) {
        self.edit(path, |r| {
            r.by_auth = Some(
                docs.iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            )
        });
    }

    pub async fn requests(&self, path: &str) -> Vec<Request> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == path)
            .collect()
    }

    /// When each request for `path` arrived, in order: to measure a cadence.
    pub fn arrivals(&self, path: &str) -> Vec<Instant> {
        let map = self.state.0.lock().expect("state");
        map.get(path).map_or_else(Vec::new, |r| r.arrivals.clone())
    }

    pub async fn count(&self, path: &str) -> usize {
        self.requests(path).await.len()
    }
}

/// `doc` with a field long enough that a small change costs less as a patch than as the whole
/// document: a patch longer than the snapshot is sent as the snapshot.
pub fn padded(mut doc: Value) -> Value {
    doc["padding"] =
        Value::String("a field that makes the whole document cost more than a patch".into());
    doc
}

/// What `sse-gateway check` did with a config file.
pub struct Checked {
    /// The exit code (-1 if killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The file checked, as error messages name it.
    pub path: PathBuf,
    /// Holds the file until the test is done with it.
    pub dir: tempfile::TempDir,
}

/// Writes `yaml` to a temp file and runs `sse-gateway check` on it.
pub fn check(yaml: &str) -> Checked {
    check_with_env(yaml, &[])
}

/// `check` with these environment variables set (for `${VAR}`s).
pub fn check_with_env(yaml: &str, env: &[(&str, &str)]) -> Checked {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.yaml");
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(yaml.as_bytes()).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_sse-gateway"))
        .arg("check")
        .arg(&path)
        .env_remove("LEGACY_TOKEN")
        .env_remove("ADMIN_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("run check");
    Checked {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        path,
        dir,
    }
}

/// A GET written by hand, so the path reaches the gateway exactly as given.
pub async fn raw_get(port: u16, path: &str) -> (u16, String) {
    let head = format!("GET {path} HTTP/1.1\r\nHost: gateway\r\nAccept: text/event-stream");
    raw_request(port, &head, Duration::from_secs(2)).await
}

/// A request written by hand (request line and headers, then `Connection: close`), so nothing
/// normalises it on the way; the status and everything read within `wait`.
pub async fn raw_request(port: u16, head: &str, wait: Duration) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Reads until the gateway closes the connection (or resets it), and returns what it sent;
/// fails after the deadline.
pub async fn until_closed<R: tokio::io::AsyncRead + Unpin>(conn: &mut R) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the gateway closes the connection");
    String::from_utf8_lossy(&seen).into_owned()
}

/// One sample of the Prometheus exposition of the admin listener on `admin_port`, sending
/// `token` when the listener wants one.
pub async fn admin_metric(admin_port: u16, token: Option<&str>, sample: &str) -> Option<f64> {
    let mut req = http().get(format!("http://127.0.0.1:{admin_port}/metrics"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let text = req.send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok()).flatten()
    })
}

/// A config the gateway can be started with: it is given the ports the test runs on.
pub trait Render {
    /// The whole file for a gateway listening on `port`, its admin listener on `admin_port`.
    fn render(&self, port: u16, admin_port: u16) -> String;
}

/// gateway.yaml for a test, written as JSON (which is YAML): one upstream `api` at the mock
/// upstream, the streams added in order, and whatever else a test sets. The stream options
/// (`interval`, `diff`, ...) apply to the stream added last. The gateway adds `listen` and the
/// admin listener's address; a test only says what differs (`admin_host`, `admin_token`).
#[derive(Clone)]
pub struct Cfg {
    doc: serde_json::Map<String, Value>,
    admin_host: String,
    admin_token: Option<String>,
}

impl Cfg {
    /// No streams yet; `api` is `up`.
    pub fn new(up: &Upstream) -> Cfg {
        Cfg::at(&up.url())
    }

    /// `api` is `url`, which need not answer.
    pub fn at(url: &str) -> Cfg {
        let mut doc = serde_json::Map::new();
        doc.insert("upstreams".into(), json!({"api": {"url": url}}));
        doc.insert("streams".into(), json!([]));
        Cfg {
            doc,
            admin_host: "127.0.0.1".into(),
            admin_token: None,
        }
    }

    /// `api`'s URL gets this path, which every poll and proxied request is under.
    pub fn base(mut self, path: &str) -> Cfg {
        let url = &mut self.doc["upstreams"]["api"]["url"];
        *url = Value::String(format!("{}{path}", url.as_str().unwrap_or_default()));
        self
    }

    /// A header the gateway sends `api` with every request: a credential of its own.
    pub fn upstream_header(mut self, name: &str, value: &str) -> Cfg {
        self.doc["upstreams"]["api"]["headers"][name] = value.into();
        self
    }

    /// Adds a stream at `path` that polls `poll` on `api`.
    pub fn stream(self, path: &str, poll: &str) -> Cfg {
        self.push_stream(json!({"path": path, "upstream": "api", "poll": poll}))
    }

    /// Adds a stream at `path` with no `poll`: it polls its own path on `api`.
    pub fn stream_without_poll(self, path: &str) -> Cfg {
        self.push_stream(json!({"path": path, "upstream": "api"}))
    }

    fn push_stream(mut self, stream: Value) -> Cfg {
        if let Some(streams) = self.doc["streams"].as_array_mut() {
            streams.push(stream);
        }
        self
    }

    /// Sets `key` of the stream added last.
    fn option(mut self, key: &str, value: impl Into<Value>) -> Cfg {
        let last = self.doc["streams"]
            .as_array_mut()
            .and_then(|s| s.last_mut())
            .expect("a stream option before any stream");
        last[key] = value.into();
        self
    }

    pub fn interval(self, d: &str) -> Cfg {
        self.option("interval", d)
    }
    pub fn timeout(self, d: &str) -> Cfg {
        self.option("timeout", d)
    }
    pub fn heartbeat(self, d: &str) -> Cfg {
        self.option("heartbeat", d)
    }
    pub fn retry(self, d: &str) -> Cfg {
        self.option("retry", d)
    }
    pub fn idle(self, d: &str) -> Cfg {
        self.option("idle", d)
    }
    pub fn backoff_max(self, d: &str) -> Cfg {
        self.option("backoff_max", d)
    }
    pub fn max_body(self, size: &str) -> Cfg {
        self.option("max_body", size)
    }
    /// `json-patch`, `merge-patch` or `snapshot`.
    pub fn diff(self, mode: &str) -> Cfg {
        self.option("diff", mode)
    }
    pub fn replay(self, events: u64) -> Cfg {
        self.option("replay", events)
    }
    pub fn max_instances(self, n: u64) -> Cfg {
        self.option("max_instances", n)
    }
    pub fn forward_query(self) -> Cfg {
        self.option("forward_query", true)
    }
    pub fn forward_headers(self, names: &[&str]) -> Cfg {
        self.option("forward_headers", names)
    }
    /// JSON pointers the comparison leaves out.
    pub fn ignore(self, pointers: &[&str]) -> Cfg {
        self.option("ignore", pointers)
    }
    /// Arrays diffed by key: pointer → member, e.g. `json!({"/orders": "id"})`.
    pub fn array_keys(self, keys: Value) -> Cfg {
        self.option("array_keys", keys)
    }
    /// The pattern each `{param}` of the path must match, e.g. `json!({"id": "[0-9]+"})`.
    pub fn params(self, patterns: Value) -> Cfg {
        self.option("params", patterns)
    }
    /// `false` keeps this stream in each process, outside the cluster.
    pub fn cluster(self, shared: bool) -> Cfg {
        self.option("cluster", shared)
    }
    /// This stream's own CORS policy, e.g. `json!({"origins": ["*"]})`.
    pub fn stream_cors(self, policy: Value) -> Cfg {
        self.option("cors", policy)
    }

    /// Sets a top-level `key`.
    fn top(mut self, key: &str, value: impl Into<Value>) -> Cfg {
        self.doc.insert(key.into(), value.into());
        self
    }

    /// Every request that is not a stream goes to `api`.
    pub fn proxy(self) -> Cfg {
        self.top("proxy", "api")
    }
    pub fn proxy_trust_forwarded(self) -> Cfg {
        self.top("proxy_trust_forwarded", true)
    }
    pub fn preserve_host(self) -> Cfg {
        self.top("preserve_host", true)
    }
    /// The CORS policy of every stream, e.g. `json!({"origins": [APP], "credentials": true})`.
    pub fn cors(self, policy: Value) -> Cfg {
        self.top("cors", policy)
    }
    /// Serves TLS with these PEM files.
    pub fn tls(self, cert: &Path, key: &Path) -> Cfg {
        self.top("tls", json!({"cert": cert, "key": key}))
    }
    /// The demo API and page, on its own port.
    pub fn demo(self, port: u16) -> Cfg {
        self.top("demo", json!({"listen": format!("127.0.0.1:{port}")}))
    }

    /// `client_script`: `false`, `true` or the path the browser client is served at.
    pub fn client_script(self, set: impl Into<Value>) -> Cfg {
        self.top("client_script", set)
    }

    /// Worker threads: one keeps several gateways on two cores from starving each other.
    pub fn threads(self, n: u64) -> Cfg {
        self.top("threads", n)
    }

    /// Joins the cluster on `redis` (a `redis://` URL) as `node`, under `prefix` (one per test,
    /// so tests sharing a Redis stay apart), with the timings the cluster tests are written for:
    /// a lease of 1 s, 300 ms per Redis command, `local` polling while Redis is down.
    /// Keys set before (`cluster_option`) stay.
    pub fn in_cluster(self, redis: &str, prefix: &str, node: &str) -> Cfg {
        let section = [
            ("redis", redis),
            ("prefix", prefix),
            ("node_id", node),
            ("key_secret", "0123456789abcdef0123"),
            ("lease_ttl", "1s"),
            ("timeout", "300ms"),
            ("on_redis_down", "local"),
            ("history_ttl", "1h"),
        ];
        section.into_iter().fold(self, |cfg, (key, value)| {
            let set = cfg.doc.get("cluster").is_some_and(|c| c.get(key).is_some());
            if set {
                cfg
            } else {
                cfg.cluster_option(key, value)
            }
        })
    }
    /// Sets `cluster.key`, e.g. `cluster_option("on_redis_down", "stale")`.
    pub fn cluster_option(self, key: &str, value: impl Into<Value>) -> Cfg {
        self.section("cluster", key, value.into())
    }

    /// Sets `limits.key`, e.g. `limit("max_clients", 1)` or `limit("keepalive", "1s")`.
    pub fn limit(self, key: &str, value: impl Into<Value>) -> Cfg {
        self.section("limits", key, value.into())
    }
    /// Sets `defaults.key`: what every stream has unless it says otherwise.
    pub fn stream_default(self, key: &str, value: impl Into<Value>) -> Cfg {
        self.section("defaults", key, value.into())
    }
    /// How long a shutdown waits for clients to leave.
    pub fn shutdown_grace(self, d: &str) -> Cfg {
        self.section("shutdown", "grace", d.into())
    }
    /// Where a new process asks this one for its listening sockets.
    pub fn upgrade_sock(self, path: &Path) -> Cfg {
        self.section("shutdown", "upgrade_sock", json!(path))
    }

    fn section(mut self, section: &str, key: &str, value: Value) -> Cfg {
        let entry = self
            .doc
            .entry(section)
            .or_insert_with(|| Value::Object(Default::default()));
        entry[key] = value;
        self
    }

    /// The admin listener listens on this host (at the gateway's admin port).
    pub fn admin_host(mut self, host: &str) -> Cfg {
        self.admin_host = host.into();
        self
    }
    /// The admin listener wants this bearer token (a `${VAR}` is read from the environment).
    pub fn admin_token(mut self, token: &str) -> Cfg {
        self.admin_token = Some(token.into());
        self
    }
}

impl Render for Cfg {
    fn render(&self, port: u16, admin_port: u16) -> String {
        let mut admin = json!({"listen": format!("{}:{admin_port}", self.admin_host)});
        if let Some(token) = &self.admin_token {
            admin["token"] = token.as_str().into();
        }
        let mut doc = serde_json::Map::new();
        doc.insert("listen".into(), format!("127.0.0.1:{port}").into());
        doc.insert("admin".into(), admin);
        doc.extend(self.doc.clone());
        serde_json::to_string_pretty(&doc).expect("a config serialises")
    }
}

/// Config text a test writes itself, because the text is its subject: only `listen` is added,
/// so the text sets `admin:` if it wants an admin listener.
pub struct Yaml(pub String);

impl Render for Yaml {
    fn render(&self, port: u16, _admin_port: u16) -> String {
        format!("listen: 127.0.0.1:{port}\n{}", self.0)
    }
}
