//! Past a limit, a browser is told to come back later rather than failing for good.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn past_the_client_limit_an_sse_client_gets_200_retry_and_overloaded() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    let gw = Gateway::start(&format!(
        "limits:\n  max_clients: 1\n{}",
        config(
            &up,
            "  - path: /sse/doc\n    upstream: api\n    poll: /doc\n"
        )
    ))
    .await;
    let mut first = gw.sse("/sse/doc").await;
    first.snapshot().await;
    let mut second = gw.sse("/sse/doc").await;
    let ev = second.next_event().await;
    assert_eq!(ev.event, "overloaded");
    let retry = ev.retry.expect("a retry field");
    assert!(retry.as_millis() >= 1000, "{retry:?}");
    assert!(second.try_next_event().await.is_none(), "the stream ends");
    assert!(
        gw.stderr().contains("client turned away"),
        "{}",
        gw.stderr()
    );
    // The first client is untouched, and its slot frees on leave.
    drop(first);
    let mut third = eventually("a free slot", || async {
        let mut c = gw.sse("/sse/doc").await;
        let ev = c.next_event().await;
        (ev.event == "snapshot").then_some(c)
    })
    .await;
    up.set("/doc", json!({"v": 2}));
    assert_eq!(third.next_document().await, json!({"v": 2}));
}

#[tokio::test]
async fn past_max_instances_others_get_503_with_retry_after() {
    let up = Upstream::json("/orders/1", json!({"id": 1})).await;
    up.set("/orders/2", json!({"id": 2}));
    let gw = Gateway::start(&config(
        &up,
        "  - path: /sse/orders/{id}\n    upstream: api\n    poll: /orders/{id}\n    max_instances: 1\n",
    ))
    .await;
    let mut one = gw.sse("/sse/orders/1").await;
    one.snapshot().await;
    // An SSE client is told to come back.
    let mut two = gw.sse("/sse/orders/2").await;
    assert_eq!(two.next_event().await.event, "overloaded");
    // Anything else gets 503 and Retry-After.
    let resp = http()
        .get(gw.url("/sse/orders/2"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    // Clients of the running instance are still welcome.
    let mut again = gw.sse("/sse/orders/1").await;
    assert_eq!(again.snapshot().await, json!({"id": 1}));
}

#[tokio::test]
async fn the_open_file_limit_is_raised_and_a_client_limit_past_it_is_warned_about() {
    let up = Upstream::json("/doc", json!({"v": 1})).await;
    // No machine here allows a billion open files.
    let gw = Gateway::start(&format!(
        "limits:\n  max_clients: 1000000000\n{}",
        config(
            &up,
            "  - path: /sse/doc\n    upstream: api\n    poll: /doc\n"
        )
    ))
    .await;
    eventually("both start-up lines", || async {
        let log = gw.stderr();
        (log.contains("open-file limit") && log.contains("below limits.max_clients")).then_some(())
    })
    .await;
    let mut client = gw.sse("/sse/doc").await;
    assert_eq!(client.snapshot().await, json!({"v": 1}));
}

#[tokio::test]
async fn at_max_instances_an_idle_instance_makes_room_for_a_new_one() {
    let up = Upstream::start().await;
    for id in 1..=3 {
        up.set(&format!("/orders/{id}"), json!({ "id": id }));
    }
    let gw = Gateway::start(&config(
        &up,
        "  - path: /sse/orders/{id}\n    upstream: api\n    poll: /orders/{id}\n    interval: 100ms\n    max_instances: 2\n",
    ))
    .await;
    // Two one-shot subscriptions that leave at once, one after the other.
    for id in 1..=2 {
        let mut c = gw.sse(&format!("/sse/orders/{id}")).await;
        assert_eq!(c.snapshot().await, json!({ "id": id }));
        drop(c);
        let instance = format!("/orders/{id}");
        eventually("the client is counted out", || async {
            let list: serde_json::Value = http()
                .get(gw.admin_url("/streams"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let left = list["instances"]
                .as_array()?
                .iter()
                .any(|i| i["instance"] == instance.as_str() && i["clients"] == 0);
            left.then_some(())
        })
        .await;
    }
    // Both wait out their idle period; the one idle longest makes room.
    let mut third = gw.sse("/sse/orders/3").await;
    assert_eq!(third.snapshot().await, json!({"id": 3}));
    let seen = up.count("/orders/1").await;
    let kept = up.count("/orders/2").await;
    eventually("the instance still there polls on", || async {
        (up.count("/orders/2").await >= kept + 5).then_some(())
    })
    .await;
    // One poll may have been under way when it was evicted.
    let evicted = up.count("/orders/1").await;
    assert!(evicted <= seen + 1, "{seen} then {evicted}");
    let kept = up.count("/orders/2").await;
    eventually("the instance still there polls on", || async {
        (up.count("/orders/2").await >= kept + 5).then_some(())
    })
    .await;
    assert_eq!(
        up.count("/orders/1").await,
        evicted,
        "the evicted one stopped"
    );
    assert!(
        gw.stderr().contains("idle instance evicted"),
        "{}",
        gw.stderr()
    );
}
