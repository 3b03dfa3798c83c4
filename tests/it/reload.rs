//! gateway.yaml is reloaded without dropping clients; a broken one never replaces a working one.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// `/sse/doc`, polling `up`'s `/doc` every 100 ms.
fn doc_stream(up: &Upstream) -> Cfg {
    Cfg::new(up).stream("/sse/doc", "/doc").interval("100ms")
}

fn seq(id: &str) -> u64 {
    id_parts(id).expect("an <epoch>-<seq>-<checksum> id").1
}

async fn reloaded(gw: &Gateway, times: usize) {
    eventually("the reload is applied", || async {
        (gw.stderr().matches("config reloaded").count() >= times).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_reload_with_fifty_clients_attached_drops_none_and_loses_nothing() {
    let up = Upstream::json("/doc", padded(json!({"v": 0}))).await;
    up.set("/other", json!({"other": true}));
    let gw = Gateway::start(&doc_stream(&up)).await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        let mut c = gw.sse("/sse/doc").await;
        c.snapshot().await;
        clients.push(c);
    }
    up.set("/doc", padded(json!({"v": 1})));
    for c in &mut clients {
        c.next_document().await;
    }
    let before = clients[0].last_id.clone();

    // Retune the stream and add another.
    gw.watching().await;
    gw.rewrite(&doc_stream(&up).timeout("2s").stream("/sse/other", "/other"));
    reloaded(&gw, 1).await;
    let mut other = gw.sse("/sse/other").await;
    assert_eq!(other.snapshot().await, json!({"other": true}));

    up.set("/doc", padded(json!({"v": 2})));
    for c in &mut clients {
        let ev = c.next_event().await;
        assert_eq!(ev.event, "patch", "no snapshot, no gap");
        assert_eq!(seq(&ev.id), seq(&before) + 1, "ids carry on");
        assert_eq!(c.doc, Some(padded(json!({"v": 2}))));
    }
}

#[tokio::test]
async fn an_invalid_reload_keeps_the_running_config() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let gw = Gateway::start(&doc_stream(&up)).await;
    let mut client = gw.sse("/sse/doc").await;
    client.snapshot().await;
    gw.watching().await;
    gw.rewrite(&doc_stream(&up).timeout("never"));
    eventually("the refusal is logged", || async {
        let log = gw.stderr();
        (log.contains("config reload refused") && log.contains("streams[0].timeout"))
            .then_some(())
            .or_else(|| {
                eprintln!("{log}");
                None
            })
    })
    .await;
    up.set("/doc", json!({"v": 1}));
    assert_eq!(client.next_document().await, json!({"v": 1}));
    let mut again = gw.sse("/sse/doc").await;
    assert_eq!(again.snapshot().await, json!({"v": 1}));
}

#[tokio::test]
async fn a_removed_stream_says_so_and_closes_with_a_long_retry() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    up.set("/keep", json!({"keep": 1}));
    let gw = Gateway::start(&doc_stream(&up).stream("/sse/keep", "/keep")).await;
    let mut gone = gw.sse("/sse/doc").await;
    gone.snapshot().await;
    let mut kept = gw.sse("/sse/keep").await;
    kept.snapshot().await;
    gw.watching().await;
    gw.rewrite(&Cfg::new(&up).stream("/sse/keep", "/keep").interval("100ms"));
    let end = gone.next_of("end").await;
    assert!(end.data.contains("removed"), "{}", end.data);
    assert_eq!(end.retry, Some(Duration::from_secs(30)));
    assert!(gone.try_next_event().await.is_none(), "the stream ends");
    assert_eq!(gw.get_sse("/sse/doc", &[]).await.status(), 404);
    up.set("/keep", json!({"keep": 2}));
    assert_eq!(kept.next_document().await, json!({"keep": 2}));
}

#[tokio::test]
async fn sighup_reloads() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    up.set("/new", json!({"new": 1}));
    let gw = Gateway::start(&doc_stream(&up)).await;
    gw.watching().await;
    gw.rewrite(&doc_stream(&up).stream("/sse/new", "/new"));
    gw.signal("HUP");
    eventually("a SIGHUP reload", || async {
        gw.stderr().contains("trigger=\"SIGHUP\"").then_some(())
    })
    .await;
    let mut c = gw.sse("/sse/new").await;
    assert_eq!(c.snapshot().await, json!({"new": 1}));
}

#[tokio::test]
async fn a_symlink_swap_reloads_like_a_configmap_update() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    up.set("/new", json!({"new": 1}));
    let gw = Gateway::start_symlinked(&doc_stream(&up)).await;
    let mut client = gw.sse("/sse/doc").await;
    client.snapshot().await;
    gw.watching().await;
    gw.swap_symlink(&doc_stream(&up).stream("/sse/new", "/new"), 1);
    reloaded(&gw, 1).await;
    let mut c = gw.sse("/sse/new").await;
    assert_eq!(c.snapshot().await, json!({"new": 1}));
    up.set("/doc", json!({"v": 1}));
    assert_eq!(client.next_document().await, json!({"v": 1}));
}

#[tokio::test]
async fn a_new_diff_mode_gives_attached_clients_a_fresh_snapshot() {
    let up = Upstream::json("/doc", json!({"a": 1, "b": 1})).await;
    let gw = Gateway::start(&doc_stream(&up)).await;
    let mut client = gw.sse("/sse/doc").await;
    client.snapshot().await;
    gw.watching().await;
    gw.rewrite(&doc_stream(&up).diff("merge-patch"));
    reloaded(&gw, 1).await;
    // The first change after the reload comes as a snapshot, later ones as merge patches;
    // every document the client holds is the upstream's.
    let mut kinds = Vec::new();
    for a in 2..8 {
        let want = json!({"a": a, "b": 1});
        up.set("/doc", want.clone());
        let ev = client.next_event().await;
        assert_eq!(client.doc.as_ref(), Some(&want));
        kinds.push(ev.event);
    }
    assert_eq!(kinds[0], "snapshot", "{kinds:?}");
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("merge-patch"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn sigterm_tells_clients_to_come_back_and_exits_cleanly_within_the_grace() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let mut gw = Gateway::start(&doc_stream(&up).retry("1s").shutdown_grace("1s")).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = gw.sse("/sse/doc").await;
        c.snapshot().await;
        clients.push(c);
    }
    let start = Instant::now();
    gw.signal("TERM");
    for c in &mut clients {
        let end = c.next_of("end").await;
        let retry = end.retry.expect("a retry");
        assert!(
            retry >= Duration::from_secs(1) && retry <= Duration::from_secs(2),
            "{retry:?}"
        );
        assert!(
            c.try_next_event().await.is_none(),
            "the stream ends cleanly"
        );
    }
    let status = gw.exit_status(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}: {}", gw.stderr());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_new_binary_takes_over_the_sockets_on_sigquit_and_clients_come_back_to_it() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let sock = tempfile::tempdir().unwrap();
    let cfg = doc_stream(&up)
        .retry("1s")
        .shutdown_grace("1s")
        .upgrade_sock(&sock.path().join("upgrade.sock"));
    let mut old = Gateway::start(&cfg).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = old.sse("/sse/doc").await;
        c.snapshot().await;
        clients.push(c);
    }
    let new = old.take_over();
    eventually("the new process waits for the sockets", || async {
        new.stderr()
            .contains("No incoming socket transfer")
            .then_some(())
    })
    .await;
    old.signal("QUIT");
    for c in &mut clients {
        c.next_of("end").await;
        assert!(
            c.try_next_event().await.is_none(),
            "the old stream ends cleanly"
        );
    }
    let status = old.exit_status(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}: {}", old.stderr());
    // The same address, now served by the new process; the browser resumes there.
    let id = clients[0].last_id.clone();
    let mut back = new.sse_with("/sse/doc", &[("last-event-id", &id)]).await;
    assert_eq!(back.snapshot().await, json!({"v": 0}));
    up.set("/doc", json!({"v": 1}));
    assert_eq!(back.next_document().await, json!({"v": 1}));
}

#[tokio::test]
async fn reading_the_config_is_not_a_change() {
    use notify::event::{AccessKind, EventKind};
    use notify::Watcher;

    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let gw = Gateway::start(&doc_stream(&up)).await;
    gw.watching().await;
    let applied = "sse_gateway_config_reloads_total{result=\"applied\"}";
    let refused = "sse_gateway_config_reloads_total{result=\"refused\"}";
    let before = (gw.metric(applied).await, gw.metric(refused).await);

    // Every open of the file, by anyone: ours below, and any re-read by the gateway.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if matches!(ev.kind, EventKind::Access(AccessKind::Open(_))) {
                let _ = tx.send(());
            }
        }
    })
    .unwrap();
    watcher
        .watch(&gw.config, notify::RecursiveMode::NonRecursive)
        .unwrap();
    // What an operator's `cat gateway.yaml` does.
    std::fs::read(&gw.config).unwrap();
    // An absence has no event to wait for: watch an idle gateway for ten seconds (the old
    // watcher re-read its config every settle period, ~65 times in that span).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let opens = rx.try_iter().count();
    assert_eq!(opens, 1, "the gateway re-read its config on its own");
    assert_eq!((gw.metric(applied).await, gw.metric(refused).await), before);
    assert!(!gw.stderr().contains("config reload"), "{}", gw.stderr());
}

#[tokio::test]
async fn an_emptied_config_is_refused_and_the_running_one_stays() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let gw = Gateway::start_with_env(
        &doc_stream(&up).admin_token("${ADMIN_TOKEN}"),
        &[("ADMIN_TOKEN", "let-me-in")],
    )
    .await;
    let admin_port = gw.admin_port;
    let mut client = gw.sse("/sse/doc").await;
    client.snapshot().await;
    gw.watching().await;
    let refused = "sse_gateway_config_reloads_total{result=\"refused\"}";
    let before = admin_metric(admin_port, Some("let-me-in"), refused)
        .await
        .unwrap();

    // A writer that truncates first (`cat > gateway.yaml`, `envsubst > ...`), caught half-way.
    std::fs::write(&gw.config, "").unwrap();
    eventually("the empty config is refused", || async {
        (admin_metric(admin_port, Some("let-me-in"), refused).await == Some(before + 1.0))
            .then_some(())
    })
    .await;
    assert!(gw.stderr().contains("nothing to serve"), "{}", gw.stderr());

    up.set("/doc", json!({"v": 1}));
    assert_eq!(client.next_document().await, json!({"v": 1}), "not ended");
    let open = http()
        .get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 401, "the token is still required");
    let mut again = gw.sse("/sse/doc").await;
    assert_eq!(again.snapshot().await, json!({"v": 1}));
}

#[tokio::test]
async fn a_reload_cannot_drop_the_token_of_an_admin_listener_beyond_loopback() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let gw = Gateway::start_with_env(
        &doc_stream(&up)
            .admin_host("0.0.0.0")
            .admin_token("${ADMIN_TOKEN}"),
        &[("ADMIN_TOKEN", "let-me-in")],
    )
    .await;
    let admin_port = gw.admin_port;
    gw.watching().await;
    // Valid on its own (loopback needs no token), but the bound listener is still 0.0.0.0.
    gw.rewrite(&doc_stream(&up));
    eventually("the reload is refused", || async {
        gw.stderr()
            .contains("a reload cannot remove admin.token")
            .then_some(())
    })
    .await;
    let open = http()
        .get(format!("http://127.0.0.1:{admin_port}/streams"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 401);
}

#[tokio::test]
async fn removing_a_stream_ends_a_client_still_waiting_for_its_first_poll() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    up.set("/keep", json!({"keep": 1}));
    up.delay("/doc", Duration::from_secs(3));
    let gw = Gateway::start(
        &doc_stream(&up)
            .timeout("5s")
            .stream("/sse/keep", "/keep")
            .limit("max_clients", 1),
    )
    .await;
    gw.watching().await;
    let remove = async {
        eventually("the first poll is under way", || async {
            (up.count("/doc").await > 0).then_some(())
        })
        .await;
        gw.rewrite(&Cfg::new(&up).stream("/sse/keep", "/keep"));
    };
    let (resp, ()) = tokio::join!(gw.get_sse("/sse/doc", &[]), remove);
    assert_eq!(resp.status(), 200);
    let mut waiting = SseClient::new(resp);
    let end = waiting.next_of("end").await;
    assert!(end.data.contains("removed"), "{}", end.data);
    assert!(waiting.try_next_event().await.is_none(), "the stream ends");
    // Its client slot is free again.
    let mut next = eventually("a free slot", || async {
        let mut c = gw.sse("/sse/keep").await;
        let ev = c.next_event().await;
        (ev.event == "snapshot").then_some(c)
    })
    .await;
    assert_eq!(next.doc, Some(json!({"keep": 1})));
    up.set("/keep", json!({"keep": 2}));
    assert_eq!(next.next_document().await, json!({"keep": 2}));
}

#[tokio::test]
async fn a_reload_that_polls_elsewhere_brings_clients_back_to_the_new_document() {
    let up = Upstream::json("/a", json!({"from": "a"})).await;
    up.set("/b", json!({"from": "b"}));
    let stream = |poll: &str| Cfg::new(&up).stream("/sse/doc", poll).interval("100ms");
    let gw = Gateway::start(&stream("/a")).await;
    let mut client = gw.sse("/sse/doc").await;
    assert_eq!(client.snapshot().await, json!({"from": "a"}));
    gw.watching().await;
    gw.rewrite(&stream("/b"));
    let end = client.next_of("end").await;
    assert!(end.data.contains("\"reconnect\":true"), "{}", end.data);
    let retry = end.retry.expect("a retry");
    assert!(
        retry <= Duration::from_secs(1),
        "comes back at once: {retry:?}"
    );
    assert!(client.try_next_event().await.is_none(), "the stream ends");
    // The browser reconnects with its Last-Event-ID and gets what the stream polls now.
    let id = client.last_id.clone();
    let mut back = gw.sse_with("/sse/doc", &[("last-event-id", &id)]).await;
    assert_eq!(back.snapshot().await, json!({"from": "b"}));
    let before = up.count("/a").await;
    up.set("/b", json!({"from": "b", "v": 2}));
    assert_eq!(back.next_document().await, json!({"from": "b", "v": 2}));
    assert_eq!(up.count("/a").await, before, "/a is no longer polled");
}
