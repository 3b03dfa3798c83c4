//! Clients never see data fetched with someone else's credentials, and paths stay in bounds.

use serde_json::json;

use crate::support::*;

/// `/sse/orders/{id}`, polling `up` every 100 ms with each client's `Authorization`.
fn orders(up: &Upstream) -> Cfg {
    Cfg::new(up)
        .stream("/sse/orders/{id}", "/orders/{id}")
        .interval("100ms")
        .forward_headers(&["Authorization"])
}

/// One order that Alice and Bob each may read, with their own view of it, and a client each.
async fn alice_and_bob() -> (Upstream, Gateway, SseClient, SseClient) {
    let up = Upstream::start().await;
    up.by_auth(
        "/orders/1",
        &[
            ("Bearer alice", json!({"owner": "alice"})),
            ("Bearer bob", json!({"owner": "bob"})),
        ],
    );
    let gw = Gateway::start(&orders(&up)).await;
    let alice = gw
        .sse_with("/sse/orders/1", &[("authorization", "Bearer alice")])
        .await;
    let bob = gw
        .sse_with("/sse/orders/1", &[("authorization", "Bearer bob")])
        .await;
    (up, gw, alice, bob)
}

#[tokio::test]
async fn clients_with_different_credentials_get_their_own_data_and_poller() {
    let (up, _gw, mut alice, mut bob) = alice_and_bob().await;
    assert_eq!(alice.snapshot().await, json!({"owner": "alice"}));
    assert_eq!(bob.snapshot().await, json!({"owner": "bob"}));
    let reqs = up.requests("/orders/1").await;
    let alice_polls = reqs
        .iter()
        .filter(|r| r.headers["authorization"] == "Bearer alice")
        .count();
    let bob_polls = reqs
        .iter()
        .filter(|r| r.headers["authorization"] == "Bearer bob")
        .count();
    assert!(alice_polls >= 1 && bob_polls >= 1);
}

#[tokio::test]
async fn a_first_poll_refused_with_401_gives_the_client_401() {
    let up = Upstream::start().await;
    up.by_auth("/orders/1", &[("Bearer alice", json!({"owner": "alice"}))]);
    let gw = Gateway::start(&orders(&up)).await;
    let resp = gw
        .get_sse("/sse/orders/1", &[("authorization", "Bearer mallory")])
        .await;
    assert_eq!(resp.status(), 401);
    let resp = gw.get_sse("/sse/orders/1", &[]).await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn a_missing_resource_on_first_poll_gives_404() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&orders(&up)).await;
    let resp = gw.get_sse("/sse/orders/404", &[]).await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn revoked_access_closes_that_instances_clients() {
    let (up, _gw, mut alice, mut bob) = alice_and_bob().await;
    alice.snapshot().await;
    bob.snapshot().await;
    up.by_auth(
        "/orders/1",
        &[("Bearer bob", json!({"owner": "bob", "v": 2}))],
    );
    let end = alice.next_of("end").await;
    assert!(end.data.contains("401"), "{}", end.data);
    assert!(
        alice.try_next_event().await.is_none(),
        "alice's stream ends"
    );
    assert_eq!(bob.next_document().await, json!({"owner": "bob", "v": 2}));
}

#[tokio::test]
async fn path_traversal_values_are_refused_and_never_polled() {
    let up = Upstream::json("/orders/1", json!({})).await;
    let gw = Gateway::start(&orders(&up)).await;
    // Sent raw: an HTTP client library would normalise the dot segments away.
    for bad in [
        "..", "%2e%2e", "%2E.", "a%2Fb", "%2F", "a%00b", "%252F", ".",
    ] {
        let (status, body) = raw_get(gw.port, &format!("/sse/orders/{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("`id`"), "{bad}: {body}");
    }
    // No instance was started, so nothing can poll later either.
    assert_eq!(
        gw.metric("sse_gateway_pollers").await.unwrap_or(0.0),
        0.0,
        "no poller for a refused value"
    );
    let polled: Vec<String> = up
        .server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_string())
        .collect();
    assert!(polled.is_empty(), "{polled:?}");
}

#[tokio::test]
async fn a_param_pattern_narrows_what_values_are_accepted() {
    let up = Upstream::json("/orders/42", json!({"id": 42})).await;
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/orders/{id}", "/orders/{id}")
            .params(json!({"id": "[0-9]+"})),
    )
    .await;
    assert_eq!(gw.get_sse("/sse/orders/abc", &[]).await.status(), 400);
    let mut c = gw.sse("/sse/orders/42").await;
    assert_eq!(c.snapshot().await, json!({"id": 42}));
}

#[tokio::test]
async fn a_query_is_forwarded_only_when_the_stream_says_so_and_splits_instances() {
    let up = Upstream::json("/search", json!({"hits": []})).await;
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/search", "/search")
            .forward_query()
            .stream("/sse/plain", "/search"),
    )
    .await;
    let mut a = gw.sse("/sse/search?q=tea&format=merge-patch").await;
    let mut b = gw.sse("/sse/search?q=coffee").await;
    let mut plain = gw.sse("/sse/plain?q=ignored").await;
    for c in [&mut a, &mut b, &mut plain] {
        c.snapshot().await;
    }
    let queries: Vec<Option<String>> = up
        .requests("/search")
        .await
        .iter()
        .map(|r| r.url.query().map(str::to_string))
        .collect();
    assert!(queries.contains(&Some("q=tea".into())), "{queries:?}");
    assert!(queries.contains(&Some("q=coffee".into())), "{queries:?}");
    assert!(
        queries.contains(&None),
        "the plain stream forwards no query: {queries:?}"
    );
    assert!(
        !queries.iter().flatten().any(|q| q.contains("format")),
        "{queries:?}"
    );
}

/// `/sse/doc`, polling `up`'s `/doc` every 100 ms, with no credentials: one instance for all.
fn shared_doc(up: &Upstream) -> Cfg {
    Cfg::new(up).stream("/sse/doc", "/doc").interval("100ms")
}

#[tokio::test]
async fn one_stray_refusal_does_not_end_the_clients_of_a_healthy_instance() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(&shared_doc(&up)).await;
    let mut client = gw.sse("/sse/doc").await;
    client.snapshot().await;
    up.fail_times("/doc", 403, 1);
    eventually("the stray 403 was answered", || async {
        (up.failures_left("/doc") == 0).then_some(())
    })
    .await;
    up.set("/doc", json!({"v": 2}));
    let ev = client.next_event().await;
    assert!(matches!(ev.event.as_str(), "snapshot" | "patch"), "{ev:?}");
    assert_eq!(client.doc, Some(json!({"v": 2})));
    assert_eq!(gw.get_sse("/sse/doc", &[]).await.status(), 200);
}

#[tokio::test]
async fn a_refusal_confirmed_by_the_next_poll_ends_the_clients() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(&shared_doc(&up)).await;
    let mut client = gw.sse("/sse/doc").await;
    client.snapshot().await;
    up.fail_times("/doc", 401, 2);
    let end = client.next_of("end").await;
    assert!(end.data.contains("401"), "{}", end.data);
    assert!(client.try_next_event().await.is_none(), "the stream ends");
}
