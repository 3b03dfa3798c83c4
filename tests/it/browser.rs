//! A real browser (Debian's chromium, headless, driven through playwright-core) watches the demo
//! page update live, subscribes from another origin with `withCredentials`, and follows streams
//! with the gateway's client (`/_gateway/client.js`) through a relay that drops and alters, and
//! over HTTPS on HTTP/2.
//!
//! Needs `/usr/bin/chromium` and `npm install` in tests/browser (.ci/run does both). Elsewhere
//! these tests say why they did not run, and fail if `CI` is set.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::support::*;
use crate::tls::tls_gateway;

struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Browser {
    async fn start() -> Option<Browser> {
        Browser::launch(&[]).await
    }

    /// A browser that accepts `cert` (PEM) for any host, as if a CA it trusts had signed it.
    async fn trusting(cert: &Path) -> Option<Browser> {
        Browser::launch(&[("TRUST_CERT", cert.as_os_str())]).await
    }

    async fn launch(env: &[(&str, &OsStr)]) -> Option<Browser> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        let missing = [
            Path::new("/usr/bin/chromium").to_path_buf(),
            dir.join("node_modules/playwright-core"),
        ]
        .into_iter()
        .find(|p| !p.exists());
        if let Some(p) = missing {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must provide {}",
                p.display()
            );
            eprintln!(
                "browser test not run: {} is missing (see .ci/run)",
                p.display()
            );
            return None;
        }
        let mut child = Command::new("node")
            .arg(dir.join("driver.mjs"))
            .current_dir(&dir)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let stdin = child.stdin.take().expect("the browser's stdin");
        let lines = BufReader::new(child.stdout.take().expect("the browser's stdout")).lines();
        let mut b = Browser {
            child,
            stdin,
            lines,
        };
        assert_eq!(b.read().await, "ready");
        Some(b)
    }

    async fn read(&mut self) -> String {
        tokio::time::timeout(DEADLINE * 2, self.lines.next_line())
            .await
            .expect("the browser answers")
            .expect("a line from the browser")
            .expect("the browser is running")
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to the browser");
        let answer = self.read().await;
        assert!(!answer.starts_with("error"), "{line} -> {answer}");
        answer
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
async fn the_demo_page_shows_the_stream_live_in_a_real_browser() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let up = Upstream::json("/prices", json!({"quotes": {"AAA/USD": {"price": 1.5}}})).await;
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/prices", "/prices")
            .interval("100ms")
            .demo(free_port()),
    )
    .await;
    browser.cmd(&format!("goto {}", gw.url("/"))).await;
    let doc: Value = serde_json::from_str(&browser.cmd("doc").await).unwrap();
    assert_eq!(doc, json!({"quotes": {"AAA/USD": {"price": 1.5}}}));
    let cell = "#q-AAA\\/USD td.price";
    assert_eq!(browser.cmd(&format!("text {cell}")).await, "\"1.5\"");

    let next = json!({"quotes": {"AAA/USD": {"price": 2.25}, "BBB/USD": {"price": 7}}});
    up.set("/prices", next.clone());
    browser.cmd(&format!("wait-doc {next}")).await;
    assert_eq!(browser.cmd(&format!("text {cell}")).await, "\"2.25\"");
    assert_eq!(browser.cmd("text #state").await, "\"live\"");

    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("demo.png");
    browser.cmd(&format!("screenshot {}", shot.display())).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
}

/// A page on its own origin that subscribes with credentials and records what happened.
fn page(gateway: &str) -> String {
    format!(
        r#"<!doctype html><script>
const es = new EventSource("{gateway}/sse/doc", {{ withCredentials: true }});
es.addEventListener("snapshot", (e) => {{ window.outcome = e.data; es.close(); }});
es.onerror = () => {{ if (!window.outcome) window.outcome = "refused"; es.close(); }};
</script>"#
    )
}

const OUTCOME: &str = "eval new Promise((r) => { const t = setInterval(() => { if (window.outcome) { clearInterval(t); r(window.outcome); } }, 50); })";

#[tokio::test]
async fn a_page_on_a_listed_origin_subscribes_with_credentials_and_others_cannot() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let stranger = Upstream::start().await;
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/doc", "/doc")
            .cors(json!({"origins": [up.url()], "credentials": true})),
    )
    .await;
    let html = page(&gw.url(""));
    up.set_html("/page.html", &html);
    stranger.set_html("/page.html", &html);

    browser.cmd(&format!("goto {}/page.html", up.url())).await;
    assert_eq!(
        browser.cmd(OUTCOME).await,
        json!(json!({"v": 1}).to_string()).to_string()
    );

    browser
        .cmd(&format!("goto {}/page.html", stranger.url()))
        .await;
    assert_eq!(browser.cmd(OUTCOME).await, "\"refused\"");
}

#[tokio::test]
async fn the_demo_page_subscribes_only_on_its_own_origin() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let up = Upstream::json("/prices", json!({"v": 1})).await;
    up.set("/other", json!({"other": true}));
    let stranger = Upstream::json("/sse/x", json!({"stolen": true})).await;
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/prices", "/prices")
            .stream("/sse/other", "/other")
            .demo(free_port()),
    )
    .await;
    let far = stranger.url().replace("http://", "");
    for asked in [
        format!("//{far}/sse/x"),
        format!("/\\{far}/sse/x"),
        format!("/\t/{far}/sse/x"),
        format!("http://{far}/sse/x"),
        "javascript:alert(1)".to_string(),
    ] {
        let q: String = url::form_urlencoded::byte_serialize(asked.as_bytes()).collect();
        browser
            .cmd(&format!("goto {}", gw.url(&format!("/?stream={q}"))))
            .await;
        let doc: Value = serde_json::from_str(&browser.cmd("doc").await).unwrap();
        assert_eq!(doc, json!({"v": 1}), "{asked:?}");
        assert_eq!(browser.cmd("text #stream").await, "\"/sse/prices\"");
    }
    assert_eq!(
        stranger.count("/sse/x").await,
        0,
        "no request left the origin"
    );

    browser
        .cmd(&format!("goto {}", gw.url("/?stream=/sse/other")))
        .await;
    let doc: Value = serde_json::from_str(&browser.cmd("doc").await).unwrap();
    assert_eq!(doc, json!({"other": true}));
}

#[tokio::test]
async fn a_document_cannot_reach_the_page_s_prototypes() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    // Padded, so the change is cheaper as a patch than as a snapshot: a patch is what is tried.
    let pad = "a field that makes the document cost more than a patch ".repeat(8);
    let up = Upstream::json("/patch", json!({"v": 1, "pad": pad})).await;
    up.set("/merge", json!({"v": 1, "pad": pad}));
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/prices", "/patch")
            .interval("100ms")
            .stream("/sse/merge", "/merge")
            .interval("100ms")
            .diff("merge-patch")
            .demo(free_port()),
    )
    .await;
    let hostile = json!({
        "v": 2,
        "pad": pad,
        "__proto__": {"polluted": "yes"},
        "constructor": {"prototype": {"polluted": "yes"}},
    });
    for (page, poll) in [("/", "/patch"), ("/?stream=/sse/merge", "/merge")] {
        browser.cmd(&format!("goto {}", gw.url(page))).await;
        browser
            .cmd(&format!("wait-doc {}", json!({"v": 1, "pad": pad})))
            .await;
        up.set(poll, hostile.clone());
        // The keys are the document's own members, as in the upstream's; no prototype changes,
        // and the page's copy hashes as the gateway's does.
        browser.cmd(&format!("wait-doc {hostile}")).await;
        let clean = "eval ({}).polluted === undefined && Object.getPrototypeOf(window.sseDocument()) === Object.prototype && Object.hasOwn(window.sseDocument(), '__proto__')";
        assert_eq!(browser.cmd(clean).await, "true", "{page}");
        assert_eq!(browser.cmd("eval window.sseLive.resyncs").await, "0");
    }
}

/// A page of the app (proxied to the upstream, so on the gateway's origin) that follows
/// `/sse/doc` with the gateway's client and records what it did.
const CLIENT_PAGE: &str = r#"<!doctype html><script type="module">
import { LiveDocument } from "/_gateway/client.js";
const format = new URLSearchParams(location.search).get("format");
const live = new LiveDocument("/sse/doc", { format });
window.live = live;
window.sseDocument = () => live.document ?? null;
window.kinds = [];
window.states = [];
live.addEventListener("change", (e) => kinds.push(e.detail.event));
live.addEventListener("status", (e) => states.push(e.detail.state));
</script>"#;

/// The upstream's document at step `n`: padded, so a change is cheaper as a patch than as a
/// snapshot, and with numbers the relay can alter.
fn step(n: u64) -> Value {
    let pad = "a field that makes the document cost more than a patch ".repeat(8);
    json!({"n": n, "price": {"eur": 1 + n, "usd": 2 * n}, "list": (0..n).collect::<Vec<_>>(), "pad": pad})
}

async fn client_page(up: &Upstream) -> (Gateway, Relay) {
    client_page_with(up, |cfg| cfg).await
}

async fn client_page_with(up: &Upstream, more: impl FnOnce(Cfg) -> Cfg) -> (Gateway, Relay) {
    up.set("/doc", step(0));
    up.set_html("/page.html", CLIENT_PAGE);
    let cfg = Cfg::new(up)
        .stream("/sse/doc", "/doc")
        .interval("100ms")
        .retry("200ms")
        .proxy();
    let gw = Gateway::start(&more(cfg)).await;
    let relay = Relay::to(gw.port).await;
    (gw, relay)
}

/// The page and its stream come over one TLS connection with the generated certificate, and
/// the stream is served on its own HTTP/2 stream beside pingora's.
#[tokio::test]
async fn events_arrive_over_http2_in_chromium_over_https() {
    let up = Upstream::start().await;
    up.set("/doc", step(0));
    up.set_html("/page.html", CLIENT_PAGE);
    let dir = tempfile::tempdir().unwrap();
    let (gw, _pem) = tls_gateway(&up, dir.path(), Cfg::proxy).await;
    let Some(mut browser) = Browser::trusting(&dir.path().join("a.crt")).await else {
        return;
    };
    let origin = format!("https://localhost:{}", gw.port);
    browser.cmd(&format!("goto {origin}/page.html")).await;
    browser.cmd(&format!("wait-doc {}", step(0))).await;
    up.set("/doc", step(1));
    browser.cmd(&format!("wait-doc {}", step(1))).await;
    assert_eq!(
        browser.cmd("eval window.kinds").await,
        json!(["snapshot", "patch"]).to_string()
    );

    assert_eq!(
        browser.cmd(&format!("protocol {origin}/sse/doc")).await,
        "\"h2\""
    );
    assert_eq!(gw.metric("sse_gateway_connections").await, Some(1.0));
    assert_eq!(gw.metric("sse_gateway_client_slots").await, Some(1.0));
    assert_eq!(
        gw.metric("sse_gateway_clients_pingora_session").await,
        Some(0.0)
    );
}

#[tokio::test]
async fn the_client_follows_json_patch_and_merge_patch_through_a_dropped_connection() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let up = Upstream::start().await;
    let (_gw, relay) = client_page(&up).await;
    let mut n = 0;
    for (format, kind) in [("json-patch", "patch"), ("merge-patch", "merge-patch")] {
        up.set("/doc", step(n));
        browser
            .cmd(&format!(
                "goto {}",
                relay.url(&format!("/page.html?format={format}"))
            ))
            .await;
        browser.cmd(&format!("wait-doc {}", step(n))).await;
        for _ in 0..3 {
            n += 1;
            up.set("/doc", step(n));
            browser.cmd(&format!("wait-doc {}", step(n))).await;
        }
        relay.cut();
        n += 1;
        up.set("/doc", step(n));
        browser.cmd(&format!("wait-doc {}", step(n))).await;
        n += 1;
        up.set("/doc", step(n));
        browser.cmd(&format!("wait-doc {}", step(n))).await;

        let kinds: Vec<String> =
            serde_json::from_str(&browser.cmd("eval window.kinds").await).unwrap();
        assert_eq!(kinds[0], "snapshot", "{format}: {kinds:?}");
        assert!(
            kinds.iter().filter(|k| *k == kind).count() >= 3,
            "{format}: {kinds:?}"
        );
        let states = browser.cmd("eval window.states").await;
        assert!(states.contains("reconnecting"), "{format}: {states}");
        assert_eq!(
            browser.cmd("eval window.live.resyncs").await,
            "0",
            "{format}"
        );
    }
}

/// Needs the gateway's ids to carry the document's hash (`<epoch>-<seq>-<hash>`): without one
/// the client has nothing to check the altered patch against.
#[tokio::test]
async fn a_patch_altered_on_the_way_is_caught_by_its_hash_and_the_page_resyncs() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let up = Upstream::start().await;
    let (_gw, relay) = client_page(&up).await;
    for (format, kind) in [("json-patch", "patch"), ("merge-patch", "merge-patch")] {
        up.set("/doc", step(1));
        browser
            .cmd(&format!(
                "goto {}",
                relay.url(&format!("/page.html?format={format}"))
            ))
            .await;
        browser.cmd(&format!("wait-doc {}", step(1))).await;

        let altered = relay.altered();
        relay.alter_next(kind);
        up.set("/doc", step(2));
        eventually("the relay alters the change", || async {
            (relay.altered() > altered).then_some(())
        })
        .await;
        // The page holds exactly the upstream's document, fetched again as a snapshot.
        browser.cmd(&format!("wait-doc {}", step(2))).await;
        let resyncs: u64 = browser
            .cmd("eval window.live.resyncs")
            .await
            .parse()
            .unwrap();
        assert!(resyncs >= 1, "{format}: {resyncs}");
        assert!(browser.cmd("eval window.states").await.contains("resync"));

        up.set("/doc", step(3));
        browser.cmd(&format!("wait-doc {}", step(3))).await;
        let doc: Value = serde_json::from_str(&browser.cmd("doc").await).unwrap();
        assert_eq!(doc, step(3), "{format}");
    }
}

/// Chromium's own EventSource comes back after an `overloaded` (a 200 with `retry:`), so the
/// client leaves it to the browser and resyncs nothing.
#[tokio::test]
async fn a_page_turned_away_as_overloaded_comes_back_by_itself() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let up = Upstream::start().await;
    let (gw, relay) = client_page_with(&up, |cfg| cfg.limit("max_clients", 1)).await;
    let mut first = gw.sse("/sse/doc").await;
    assert_eq!(first.snapshot().await, step(0));

    browser
        .cmd(&format!("goto {}", relay.url("/page.html")))
        .await;
    let turned_away = "eval new Promise((r) => { const t = setInterval(() => { if (window.states.includes('overloaded')) { clearInterval(t); r(true); } }, 50); })";
    assert_eq!(browser.cmd(turned_away).await, "true");
    assert_eq!(browser.cmd("eval window.sseDocument()").await, "null");

    drop(first);
    browser.cmd(&format!("wait-doc {}", step(0))).await;
    up.set("/doc", step(1));
    browser.cmd(&format!("wait-doc {}", step(1))).await;
    assert_eq!(browser.cmd("eval window.live.resyncs").await, "0");
}

#[tokio::test]
async fn the_console_lists_the_streams_counts_clients_and_tails_a_change() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let doc = |v: u64| json!({"v": v, "note": "a document long enough that a change is a patch"});
    let up = Upstream::json("/doc", doc(0)).await;
    let gw = Gateway::start(&Cfg::new(&up).stream("/sse/doc", "/doc").interval("100ms")).await;
    let mut first = gw.sse("/sse/doc").await;
    first.snapshot().await;
    browser
        .cmd(&format!("goto {}", gw.admin_url("/?tail=%2Fdoc")))
        .await;
    let wait = |js: &str| {
        format!("eval new Promise((r, j) => {{ const t0 = Date.now(); const t = setInterval(() => {{ let v = false; try {{ v = {js}; }} catch {{}} if (v) {{ clearInterval(t); r(true); }} else if (Date.now() - t0 > 10000) {{ clearInterval(t); j(new Error('timed out: ' + {js:?})); }} }}, 50); }})")
    };
    let row = r#"document.querySelector('#streams tr[data-instance="/doc"]')"#;
    browser
        .cmd(&wait(&format!(
            "{row}?.querySelector('td.clients')?.textContent === '1'"
        )))
        .await;
    assert_eq!(browser.cmd("text #state").await, "\"live\"");
    assert_eq!(
        browser
            .cmd(&format!(
                "eval {row}.querySelector('td.stream').textContent"
            ))
            .await,
        "\"/sse/doc\""
    );

    // The client count moves when a client attaches.
    let mut second = gw.sse("/sse/doc").await;
    second.snapshot().await;
    browser
        .cmd(&wait(&format!(
            "{row}.querySelector('td.clients').textContent === '2'"
        )))
        .await;

    // The tail shows the change as the clients get it.
    up.set("/doc", doc(1));
    assert_eq!(second.next_of("patch").await.id, second.last_id);

    browser
        .cmd(&wait(&format!(
            "window.consoleTail().some((e) => e.event === 'patch' && e.id === {:?})",
            second.last_id
        )))
        .await;
    let shot = std::env::var_os("CONSOLE_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("console-{}.png", std::process::id()))
        });
    browser.cmd(&format!("screenshot {}", shot.display())).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    drop(first);
}

#[tokio::test]
async fn with_a_token_the_console_asks_for_it_once_and_then_follows_the_streams() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let cfg = Cfg::new(&up)
        .stream("/sse/doc", "/doc")
        .interval("100ms")
        .admin_token("${ADMIN_TOKEN}");
    let gw = Gateway::start_with_env(&cfg, &[("ADMIN_TOKEN", "let-me-in")]).await;
    let mut c = gw.sse("/sse/doc").await;
    c.snapshot().await;
    browser.cmd(&format!("goto {}", gw.admin_url("/"))).await;
    let wait = |js: &str| {
        format!("eval new Promise((r, j) => {{ const t0 = Date.now(); const t = setInterval(() => {{ let v = false; try {{ v = {js}; }} catch {{}} if (v) {{ clearInterval(t); r(true); }} else if (Date.now() - t0 > 10000) {{ clearInterval(t); j(new Error('timed out: ' + {js:?})); }} }}, 50); }})")
    };
    browser
        .cmd(&wait(
            "document.querySelector('#state').textContent === 'login'",
        ))
        .await;
    browser
        .cmd("eval (document.querySelector('#token').value = 'let-me-out', document.querySelector('#login').requestSubmit(), true)")
        .await;
    browser
        .cmd(&wait(
            "document.querySelector('#login-error').textContent === 'wrong token'",
        ))
        .await;
    browser
        .cmd("eval (document.querySelector('#token').value = 'let-me-in', document.querySelector('#login').requestSubmit(), true)")
        .await;
    let row = r#"document.querySelector('#streams tr[data-instance="/doc"] td.clients')"#;
    browser
        .cmd(&wait(&format!("{row}?.textContent === '1'")))
        .await;
    assert_eq!(browser.cmd("text #state").await, "\"live\"");
}
