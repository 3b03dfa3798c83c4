//! A failing upstream never ends a stream: clients hear about it, and about the recovery.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// `/sse/doc`, polling `up`'s `/doc` every 100 ms and at least every 200 ms while it fails.
fn doc(up: &Upstream) -> Cfg {
    Cfg::new(up)
        .stream("/sse/doc", "/doc")
        .interval("100ms")
        .backoff_max("200ms")
}

fn status(ev: &eventsource_stream::Event) -> Value {
    assert_eq!(ev.event, "upstream-status");
    serde_json::from_str(&ev.data).expect("an upstream-status event")
}

#[tokio::test]
async fn a_500_is_reported_and_recovery_resumes_patches() {
    let up = Upstream::json("/doc", padded(json!({"v": 1}))).await;
    let gw = Gateway::start(&doc(&up)).await;
    let mut client = gw.sse("/sse/doc").await;
    client.snapshot().await;

    up.fail("/doc", 500, &[]);
    let failing = status(&client.next_event().await);
    assert_eq!(failing["state"], "failing");
    assert_eq!(failing["status"], 500);
    assert!(failing["since"].as_str().unwrap().ends_with('Z'));

    // A new client during the outage gets the last good snapshot, then the status.
    let mut late = gw.sse("/sse/doc").await;
    assert_eq!(late.snapshot().await, padded(json!({"v": 1})));
    assert_eq!(status(&late.next_event().await)["state"], "failing");

    up.set("/doc", padded(json!({"v": 2})));
    up.recover("/doc");
    assert_eq!(status(&client.next_event().await)["state"], "healthy");
    assert_eq!(client.next_document().await, padded(json!({"v": 2})));
    assert_eq!(late.next_of("patch").await.event, "patch");
    assert_eq!(late.doc, Some(padded(json!({"v": 2}))));
}

#[tokio::test]
async fn a_timeout_is_reported_as_failing() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(&doc(&up).timeout("200ms")).await;
    let mut client = gw.sse("/sse/doc").await;
    client.snapshot().await;
    up.delay("/doc", Duration::from_secs(2));
    let failing = status(&client.next_event().await);
    assert_eq!(failing["state"], "failing");
    assert_eq!(failing["error"], "timed out");
}

#[tokio::test]
async fn a_first_poll_that_fails_still_opens_the_stream() {
    let up = Upstream::start().await;
    up.fail("/doc", 503, &[]);
    let gw = Gateway::start(&doc(&up)).await;
    let mut client = gw.sse("/sse/doc").await;
    assert_eq!(status(&client.next_event().await)["state"], "failing");
    up.set("/doc", json!({"v": 1}));
    up.recover("/doc");
    assert_eq!(status(&client.next_event().await)["state"], "healthy");
    assert_eq!(client.snapshot().await, json!({"v": 1}));
}

#[tokio::test]
async fn conditional_polls_turn_an_unchanged_resource_into_304s() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    up.with_etag("/doc");
    let gw = Gateway::start(&doc(&up)).await;
    let mut client = gw.sse("/sse/doc").await;
    client.snapshot().await;
    eventually("a conditional poll", || async {
        let reqs = up.requests("/doc").await;
        reqs.iter()
            .any(|r| r.headers.get("if-none-match").is_some())
            .then_some(())
    })
    .await;
    let first = &up.requests("/doc").await[0];
    assert!(first.headers["accept-encoding"]
        .to_str()
        .unwrap()
        .contains("gzip"));
    assert!(client
        .event_within(Duration::from_millis(300))
        .await
        .is_none());
    up.set("/doc", json!({"v": 2}));
    assert_eq!(client.next_document().await, json!({"v": 2}));
}

#[tokio::test]
async fn a_body_over_max_body_is_refused() {
    let up = Upstream::json("/doc", json!({"small": true})).await;
    let gw = Gateway::start(&doc(&up).max_body("1KiB")).await;
    let mut client = gw.sse("/sse/doc").await;
    client.snapshot().await;
    up.set("/doc", json!({"big": "x".repeat(4096)}));
    let failing = status(&client.next_event().await);
    assert_eq!(failing["state"], "failing");
    assert!(
        failing["error"].as_str().unwrap().contains("max_body"),
        "{failing}"
    );
    assert_eq!(client.doc, Some(json!({"small": true})));
}

#[tokio::test]
async fn one_failing_stream_leaves_the_others_alone() {
    let up = Upstream::json("/a", json!({"a": 1})).await;
    up.set("/b", json!({"b": 1}));
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/a", "/a")
            .interval("100ms")
            .stream("/sse/b", "/b")
            .interval("100ms"),
    )
    .await;
    let mut a = gw.sse("/sse/a").await;
    let mut b = gw.sse("/sse/b").await;
    a.snapshot().await;
    b.snapshot().await;
    up.fail("/a", 500, &[]);
    assert_eq!(status(&a.next_event().await)["state"], "failing");
    up.set("/b", json!({"b": 2}));
    assert_eq!(b.next_document().await, json!({"b": 2}));
}

#[tokio::test]
async fn a_truncated_json_body_is_a_failed_poll_and_clients_keep_the_last_good_document() {
    let good = json!({"v": 1, "items": [1, 2]});
    let up = Upstream::json("/doc", good.clone()).await;
    let gw = Gateway::start(&doc(&up)).await;
    let mut client = gw.sse("/sse/doc").await;
    assert_eq!(client.snapshot().await, good);

    let truncated = r#"{"v": 2, "items": [1,"#;
    up.set_raw("/doc", truncated, "application/json; charset=utf-8");
    // The very next event says so: no snapshot of the broken text comes first.
    let failing = status(&client.next_event().await);
    assert_eq!(failing["state"], "failing");
    let e = serde_json::from_str::<Value>(truncated).unwrap_err();
    let expected = format!("invalid JSON at line {} column {}", e.line(), e.column());
    assert_eq!(failing["error"], expected.as_str());
    assert_eq!(client.doc, Some(good.clone()));

    let mut late = gw.sse("/sse/doc").await;
    assert_eq!(late.snapshot().await, good);
    assert_eq!(status(&late.next_event().await)["state"], "failing");

    up.set("/doc", json!({"v": 3}));
    assert_eq!(status(&client.next_event().await)["state"], "healthy");
    assert_eq!(client.next_document().await, json!({"v": 3}));
}

#[tokio::test]
async fn a_body_that_does_not_say_it_is_json_and_is_not_goes_as_text() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    up.set_raw("/plain", "{not json", "");
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/plain", "/plain")
            .interval("100ms"),
    )
    .await;
    let mut client = gw.sse("/sse/plain").await;
    let ev = client.next_event().await;
    assert_eq!(
        (ev.event.as_str(), ev.data.as_str()),
        ("snapshot", "{not json")
    );
}

/// An upstream with a credential in its own headers, for streams on it.
fn with_secrets(up: &Upstream) -> Cfg {
    Cfg::new(up)
        .upstream_header("Authorization", "Bearer gateway-secret")
        .upstream_header("X-Api-Key", "k3y")
}

#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed_and_that_host_hears_nothing() {
    let up = Upstream::start().await;
    let elsewhere = Upstream::json("/doc", json!({"internal": true})).await;
    let location = format!("{}/doc", elsewhere.url());
    up.fail("/doc", 302, &[("location", &location)]);
    let gw = Gateway::start(
        &with_secrets(&up)
            .stream("/sse/doc", "/doc")
            .interval("100ms")
            .backoff_max("200ms"),
    )
    .await;
    let mut client = gw.sse("/sse/doc").await;
    let failing = status(&client.next_event().await);
    assert_eq!(
        (failing["state"].as_str(), failing["status"].as_u64()),
        (Some("failing"), Some(302))
    );
    assert!(!failing.to_string().contains(&elsewhere.url()), "{failing}");
    eventually("a few polls refused by redirect", || async {
        (up.count("/doc").await >= 3).then_some(())
    })
    .await;
    assert_eq!(up.requests("/doc").await[0].headers["x-api-key"], "k3y");
    let heard = elsewhere.server.received_requests().await.unwrap();
    assert!(heard.is_empty(), "{heard:?}");
}

#[tokio::test]
async fn follow_redirects_follows_the_same_origin_only() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let elsewhere = Upstream::json("/doc", json!({"internal": true})).await;
    up.fail("/old", 302, &[("location", &format!("{}/doc", up.url()))]);
    up.fail(
        "/away",
        307,
        &[("location", &format!("{}/doc", elsewhere.url()))],
    );
    let gw = Gateway::start(
        &with_secrets(&up)
            .stream_default("follow_redirects", true)
            .stream_default("interval", "100ms")
            .stream_default("backoff_max", "200ms")
            .stream("/sse/old", "/old")
            .stream("/sse/away", "/away"),
    )
    .await;
    let mut moved = gw.sse("/sse/old").await;
    assert_eq!(moved.snapshot().await, json!({"v": 1}));
    assert_eq!(up.requests("/doc").await[0].headers["x-api-key"], "k3y");

    let mut away = gw.sse("/sse/away").await;
    let failing = status(&away.next_event().await);
    assert_eq!(failing["status"], 307);
    eventually("a few polls of /away", || async {
        (up.count("/away").await >= 3).then_some(())
    })
    .await;
    let heard = elsewhere.server.received_requests().await.unwrap();
    assert!(heard.is_empty(), "{heard:?}");
}

#[tokio::test]
async fn a_failure_tells_clients_why_but_never_where_the_upstream_is() {
    let port = free_port();
    let gw = Gateway::start(
        &Cfg::at(&format!("http://127.0.0.1:{port}/v1"))
            .stream("/sse/doc", "/doc")
            .forward_query()
            .interval("100ms"),
    )
    .await;
    let mut client = gw.sse("/sse/doc?token=s3cr3t").await;
    let ev = client.next_event().await;
    let failing = status(&ev);
    assert_eq!(failing["error"], "cannot connect");
    for leak in ["127.0.0.1", &port.to_string(), "http://", "/v1", "s3cr3t"] {
        assert!(!ev.data.contains(leak), "{leak} in {}", ev.data);
    }
    // The operator's log keeps the cause.
    eventually("the cause in the log", || async {
        gw.stderr().contains("upstream failing").then_some(())
    })
    .await;
    assert!(
        gw.stderr().to_lowercase().contains("connection refused"),
        "{}",
        gw.stderr()
    );
}
