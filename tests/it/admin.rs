//! The admin listener: metrics that move, health, the stream list, and refresh on demand.

use serde_json::{json, Value};

use crate::support::*;

/// `/sse/doc`, polling `up`'s `/doc` this often.
fn doc(up: &Upstream, interval: &str) -> Cfg {
    Cfg::new(up).stream("/sse/doc", "/doc").interval(interval)
}

#[tokio::test]
async fn metrics_move_as_clients_attach_and_polls_happen() {
    let up = Upstream::json("/doc", json!({"v": 0, "pad": "x".repeat(1000)})).await;
    let gw = Gateway::start(&doc(&up, "100ms")).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = gw.sse("/sse/doc").await;
        c.snapshot().await;
        clients.push(c);
    }
    let clients_gauge = "sse_gateway_clients{stream=\"/sse/doc\"}";
    assert_eq!(gw.metric(clients_gauge).await, Some(3.0));
    assert_eq!(gw.metric("sse_gateway_pollers").await, Some(1.0));
    let changed = "sse_gateway_polls_total{result=\"changed\"}";
    let before = gw.metric(changed).await.unwrap();
    up.set("/doc", json!({"v": 1, "pad": "x".repeat(1000)}));
    for c in &mut clients {
        c.next_document().await;
    }
    assert_eq!(gw.metric(changed).await, Some(before + 1.0));
    assert!(gw.metric("sse_gateway_events_sent_total").await.unwrap() >= 6.0);
    // What the gateway saves: patches are far smaller than the snapshots they replace, and the
    // clients would have fetched three times what the upstream sent.
    let patch = gw.metric("sse_gateway_patch_bytes_total").await.unwrap();
    let snapshot = gw.metric("sse_gateway_snapshot_bytes_total").await.unwrap();
    assert!(
        patch > 0.0 && patch * 10.0 < snapshot,
        "{patch} vs {snapshot}"
    );
    let upstream = gw.metric("sse_gateway_upstream_bytes_total").await.unwrap();
    let polling = gw
        .metric("sse_gateway_polling_equivalent_bytes_total")
        .await
        .unwrap();
    assert!(polling >= upstream * 2.0, "{polling} vs {upstream}");
    assert!(gw.metric("sse_gateway_process_open_fds").await.unwrap() > 0.0);
    assert!(gw.metric("sse_gateway_process_max_fds").await.unwrap() > 0.0);
    drop(clients);
    eventually("the gauge drops", || async {
        (gw.metric(clients_gauge).await == Some(0.0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn health_readiness_and_the_stream_list() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let gw = Gateway::start(&doc(&up, "100ms")).await;
    for path in ["/healthz", "/readyz"] {
        let r = http().get(gw.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let mut c = gw.sse("/sse/doc").await;
    c.snapshot().await;
    let list: Value = http()
        .get(gw.admin_url("/streams"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let i = &list["instances"][0];
    assert_eq!(i["stream"], "/sse/doc");
    assert_eq!(i["instance"], "/doc");
    assert_eq!(i["clients"], 1);
    assert_eq!(i["event_id"], c.last_id.as_str());
    assert_eq!(i["upstream_healthy"], true);
    assert!(i["last_poll"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn refresh_polls_at_once_instead_of_waiting_for_the_interval() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let gw = Gateway::start(&doc(&up, "1h")).await;
    let mut c = gw.sse("/sse/doc").await;
    c.snapshot().await;
    up.set("/doc", json!({"v": 1}));
    let r = http()
        .post(gw.admin_url("/streams/refresh?path=/sse/doc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap()["refreshed"], 1);
    assert_eq!(c.next_document().await, json!({"v": 1}));
    let r = http()
        .post(gw.admin_url("/streams/refresh?path=/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn an_admin_token_is_required_when_set() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let gw = Gateway::start_with_env(
        &doc(&up, "1s").admin_token("${ADMIN_TOKEN}"),
        &[("ADMIN_TOKEN", "let-me-in")],
    )
    .await;
    let url = gw.admin_url("/metrics");
    eventually("the admin listener is up", || async {
        http().get(&url).send().await.ok().map(|_| ())
    })
    .await;
    assert_eq!(http().get(&url).send().await.unwrap().status(), 401);
    let wrong = http()
        .get(&url)
        .bearer_auth("let-me-out")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = http()
        .get(&url)
        .bearer_auth("let-me-in")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);

    // Probes carry no token and learn nothing; everything else needs it.
    let admin = |path: &str| gw.admin_url(path);
    for path in ["/healthz", "/readyz"] {
        let r = http().get(admin(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    for path in ["/metrics", "/streams"] {
        let r = http().get(admin(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = http()
        .post(admin("/streams/refresh?path=/sse/doc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn query_values_and_credentials_never_reach_the_stream_list_or_the_logs() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/doc", "/doc")
            .forward_query()
            .forward_headers(&["x-user"]),
    )
    .await;
    let mut c = gw
        .sse_with("/sse/doc?token=secret&page=2", &[("x-user", "secret-user")])
        .await;
    assert_eq!(c.snapshot().await, json!({"v": 0}));
    let polled = up.requests("/doc").await;
    assert_eq!(
        polled[0].url.query(),
        Some("token=secret&page=2"),
        "the upstream still gets it"
    );

    let list = http()
        .get(gw.admin_url("/streams"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!list.contains("secret"), "{list}");
    let v: Value = serde_json::from_str(&list).unwrap();
    let instance = v["instances"][0]["instance"].as_str().unwrap();
    assert!(
        instance.starts_with("/doc?token=…&page=… [credentials #"),
        "{instance}"
    );
    drop(c);
    let log = gw.stderr();
    assert!(log.contains("poller started"), "{log}");
    assert!(!log.contains("secret"), "{log}");
}

#[tokio::test]
async fn text_replies_say_nosniff() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let gw = Gateway::start(&doc(&up, "1s")).await;
    let (status, text) = raw_get(gw.port, "/elsewhere").await;
    assert_eq!(status, 404);
    assert!(
        text.to_ascii_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{text}"
    );
    let r = http().get(gw.admin_url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

async fn refresh(gw: &Gateway) -> Value {
    let r = http()
        .post(gw.admin_url("/streams/refresh?path=/sse/doc"))
        .send()
        .await
        .expect("refresh request");
    assert_eq!(r.status(), 202);
    r.json().await.expect("a JSON answer")
}

#[tokio::test]
async fn refresh_never_cuts_an_upstreams_retry_after_short() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let gw = Gateway::start(&doc(&up, "100ms")).await;
    let mut c = gw.sse("/sse/doc").await;
    c.snapshot().await;
    up.fail("/doc", 429, &[("retry-after", "3600")]);
    c.next_of("upstream-status").await;
    // Once the poller has taken the hour it was asked for, every refresh waits for it.
    eventually("refreshes are deferred", || async {
        (refresh(&gw).await["deferred"] == 1).then_some(())
    })
    .await;
    let polls = up.count("/doc").await;
    for _ in 0..50 {
        assert_eq!(
            refresh(&gw).await,
            json!({"path": "/sse/doc", "refreshed": 0, "deferred": 1})
        );
    }
    assert_eq!(
        up.count("/doc").await,
        polls,
        "the upstream saw no new request"
    );
}

#[tokio::test]
async fn twenty_refreshes_in_a_row_cost_one_poll_now_and_one_later() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let gw = Gateway::start(&doc(&up, "1h")).await;
    let mut c = gw.sse("/sse/doc").await;
    c.snapshot().await;
    let polls = up.count("/doc").await;
    up.set("/doc", json!({"v": 1}));
    let mut answers = Vec::new();
    for _ in 0..20 {
        answers.push(refresh(&gw).await);
    }
    assert_eq!(answers[0]["refreshed"], 1, "{answers:?}");
    assert_eq!(c.next_document().await, json!({"v": 1}));
    // Those that came before that poll started joined it; the rest, and any now, wait for the
    // window (a quarter interval), where one more poll serves them all.
    assert!(
        answers
            .iter()
            .all(|a| a["refreshed"].as_u64().unwrap() + a["deferred"].as_u64().unwrap() == 1),
        "{answers:?}"
    );
    assert_eq!(refresh(&gw).await["deferred"], 1);
    assert_eq!(up.count("/doc").await, polls + 1);
}

#[tokio::test]
async fn without_a_token_admin_answers_no_request_addressed_by_another_name() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let gw = Gateway::start(&doc(&up, "1h")).await;
    // What a page on evil.example gets after re-pointing its name at 127.0.0.1 (DNS rebinding).
    let rebound = http()
        .get(gw.admin_url("/streams"))
        .header("host", format!("evil.example:{}", gw.admin_port))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    assert!(rebound
        .text()
        .await
        .unwrap()
        .contains("IP address or localhost"));
    let refresh = http()
        .post(gw.admin_url("/streams/refresh?path=/sse/doc"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), 403);
    // A page's own POST to the loopback address (CSRF): its browser names it in `Origin`.
    let csrf = http()
        .post(gw.admin_url("/streams/refresh?path=/sse/doc"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(csrf.status(), 403);
    assert!(csrf.text().await.unwrap().contains("web page"));
    // Probes, and the operator's own requests by IP or localhost, are answered.
    for host in [
        format!("127.0.0.1:{}", gw.admin_port),
        format!("localhost:{}", gw.admin_port),
        "[::1]".to_string(),
    ] {
        let resp = http()
            .get(gw.admin_url("/streams"))
            .header("host", host.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{host}");
    }
    let probe = http()
        .get(gw.admin_url("/healthz"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
}

/// An admin event stream, read and checked as any stream is (every id's checksum verified).
async fn admin_sse(gw: &Gateway, path: &str) -> SseClient {
    let resp = http()
        .get(gw.admin_url(path))
        .send()
        .await
        .expect("admin answers");
    assert_eq!(resp.status(), 200, "GET {path}");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    SseClient::new(resp)
}

/// The console's feed until `instance` shows `clients`.
async fn until_clients(feed: &mut SseClient, instance: &str, clients: u64) -> Value {
    loop {
        let doc = feed.next_document().await;
        let found = doc["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["instance"] == instance && i["clients"].as_u64() == Some(clients));
        if let Some(found) = found {
            return found.clone();
        }
    }
}

#[tokio::test]
async fn the_console_feed_is_a_verified_live_document_of_the_streams() {
    let up = Upstream::json("/doc", json!({"v": 0, "pad": "x".repeat(1000)})).await;
    let gw = Gateway::start(&doc(&up, "100ms")).await;
    let mut feed = admin_sse(&gw, "/streams?watch").await;
    assert_eq!(feed.snapshot().await["instances"], json!([]));

    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = gw.sse("/sse/doc").await;
        c.snapshot().await;
        clients.push(c);
    }
    let entry = until_clients(&mut feed, "/doc", 3).await;
    assert_eq!(entry["stream"], "/sse/doc");
    assert_eq!(entry["upstream_healthy"], true);
    // Each poll stands for three clients' downloads; the upstream served one.
    up.set("/doc", json!({"v": 1, "pad": "x".repeat(1000)}));
    for c in &mut clients {
        c.next_document().await;
    }
    let saved = loop {
        let doc = feed.next_document().await;
        let b = &doc["instances"][0]["bytes"];
        if b["upstream"].as_u64().unwrap() >= 2000 {
            break doc;
        }
    };
    let b = &saved["instances"][0]["bytes"];
    let (upstream, polling) = (
        b["upstream"].as_u64().unwrap(),
        b["polling_equivalent"].as_u64().unwrap(),
    );
    assert!(polling >= upstream * 2, "{b}");
    assert_eq!(b["saved"].as_u64().unwrap(), polling - upstream);
    assert!(
        b["pushed"].as_u64().unwrap() > 3 * 1000,
        "three snapshots at least: {b}"
    );
    assert_eq!(saved["totals"]["clients"], 3);
    assert_eq!(saved["totals"]["saved"], b["saved"]);
    // `/streams` answers the same document.
    let list: Value = http()
        .get(gw.admin_url("/streams"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["totals"]["instances"], 1);

    clients.pop();
    until_clients(&mut feed, "/doc", 2).await;
}

#[tokio::test]
async fn the_tail_shows_an_instance_s_events_without_counting_as_its_client() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let gw = Gateway::start(&doc(&up, "100ms")).await;
    let r = http()
        .get(gw.admin_url("/streams/tail?instance=%2Fdoc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no instance runs yet");

    let mut c = gw.sse("/sse/doc").await;
    c.snapshot().await;
    let mut tail = admin_sse(&gw, "/streams/tail?instance=%2Fdoc").await;
    assert_eq!(tail.snapshot().await, json!({"v": 0}));
    up.set("/doc", json!({"v": 1}));
    assert_eq!(tail.next_document().await, json!({"v": 1}));
    assert_eq!(c.next_document().await, json!({"v": 1}));
    assert_eq!(tail.last_id, c.last_id, "the same events as the client's");
    let list: Value = http()
        .get(gw.admin_url("/streams"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["instances"][0]["clients"], 1,
        "the tail is not a client"
    );
}

#[tokio::test]
async fn the_console_page_is_served_by_the_binary_under_a_strict_policy() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let gw = Gateway::start(&doc(&up, "1s")).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/console.js", "text/javascript"),
        ("/console.css", "text/css"),
        ("/client.js", "text/javascript"),
    ] {
        let r = http().get(gw.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert!(!r.text().await.unwrap().is_empty());
    }
    // A page elsewhere may not read the feed.
    let r = http()
        .get(gw.admin_url("/streams?watch"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn with_a_token_the_console_signs_in_for_a_cookie_that_only_reads() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let gw = Gateway::start_with_env(
        &doc(&up, "1s").admin_token("${ADMIN_TOKEN}"),
        &[("ADMIN_TOKEN", "let-me-in")],
    )
    .await;
    let page = gw.admin_url("/");
    eventually("the admin listener is up", || async {
        http().get(&page).send().await.ok().map(|_| ())
    })
    .await;
    // The page itself holds no data; the list needs the token.
    assert_eq!(http().get(&page).send().await.unwrap().status(), 200);
    assert_eq!(
        http()
            .get(gw.admin_url("/streams"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let login = |token: &str| {
        http()
            .post(gw.admin_url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
    };
    assert_eq!(login("let-me-out").await.unwrap().status(), 401);
    let signed = login("let-me-in").await.unwrap();
    assert_eq!(signed.status(), 204);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("let-me-in"),
        "the cookie is not the token: {cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();

    let with_cookie = |path: &str| {
        http()
            .get(gw.admin_url(path))
            .header("cookie", pair.clone())
    };
    assert_eq!(with_cookie("/streams").send().await.unwrap().status(), 200);
    let feed = with_cookie("/streams?watch").send().await.unwrap();
    assert_eq!(feed.status(), 200);
    assert_eq!(
        SseClient::new(feed).snapshot().await["instances"],
        json!([])
    );
    // Not from another origin, even one on the same host, and never to act.
    let r = with_cookie("/streams")
        .header("origin", format!("http://127.0.0.1:{}", gw.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http()
        .post(gw.admin_url("/streams/refresh?path=/sse/doc"))
        .header("cookie", pair.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let out = http().post(gw.admin_url("/logout")).send().await.unwrap();
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
}
