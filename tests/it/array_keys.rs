//! A list named in `array_keys` changes by small patches: an order put on top is one `add`,
//! a changed order is patched inside, whatever the list's length.

use serde_json::{json, Value};

use crate::support::*;

fn order(id: u32, status: &str) -> Value {
    json!({
        "id": id,
        "customer": format!("customer-{}", id % 17),
        "lines": [{"sku": format!("sku-{}", id % 5), "qty": 1 + id % 3}],
        "total": f64::from(id) * 9.5,
        "status": status,
        "created_at": format!("2026-12-01T10:{:02}:00Z", id % 60),
    })
}

fn orders(ids: impl Iterator<Item = u32>) -> Value {
    json!({"orders": ids.map(|i| order(i, "open")).collect::<Vec<_>>(), "count": 40})
}

/// The ops of the next patch event, after it is applied.
async fn next_ops(client: &mut SseClient) -> Vec<Value> {
    let ev = client.next_of("patch").await;
    serde_json::from_str(&ev.data).expect("RFC 6902 patch")
}

#[tokio::test]
async fn an_order_on_top_is_one_add_and_a_changed_order_a_patch_inside_it() {
    let up = Upstream::json("/api/orders", orders((1..=40).rev())).await;
    let cfg = Cfg::new(&up)
        .stream("/sse/orders", "/api/orders")
        .interval("100ms")
        .array_keys(json!({"/orders": "id"}))
        .stream("/sse/by-index", "/api/orders")
        .interval("100ms");
    let gw = Gateway::start(&cfg).await;
    let mut keyed = gw.sse("/sse/orders").await;
    let mut by_index = gw.sse("/sse/by-index").await;
    keyed.snapshot().await;
    by_index.snapshot().await;

    let mut next = orders((1..=40).rev());
    let list = next["orders"].as_array_mut().unwrap();
    list.insert(0, order(41, "new"));
    list[10]["status"] = json!("shipped");
    up.set("/api/orders", next.clone());

    assert_eq!(
        next_ops(&mut keyed).await,
        [
            json!({"op": "add", "path": "/orders/0", "value": order(41, "new")}),
            json!({"op": "replace", "path": "/orders/10/status", "value": "shipped"}),
        ]
    );
    assert_eq!(keyed.doc.as_ref(), Some(&next));
    // Without `array_keys` every order below the new one shifts: a replace inside each.
    let ops = next_ops(&mut by_index).await;
    assert!(ops.len() > 40, "{} ops by index", ops.len());
    assert_eq!(by_index.doc.as_ref(), Some(&next));
}

#[tokio::test]
async fn a_reload_that_keys_an_array_retunes_the_stream_without_a_snapshot() {
    let up = Upstream::json("/api/orders", orders(1..=40)).await;
    let stream = |keys: Option<Value>| {
        let cfg = Cfg::new(&up)
            .stream("/sse/orders", "/api/orders")
            .interval("100ms");
        match keys {
            Some(k) => cfg.array_keys(k),
            None => cfg,
        }
    };
    let gw = Gateway::start(&stream(None)).await;
    let mut client = gw.sse("/sse/orders").await;
    client.snapshot().await;
    gw.watching().await;
    gw.rewrite(&stream(Some(json!({"/orders": "id"}))));
    // The poll already waiting when the reload lands still runs on the old spec.
    eventually("the poller runs the new spec", || async {
        gw.stderr()
            .contains("stream retuned by a reload")
            .then_some(())
    })
    .await;

    let mut next = orders(1..=40);
    let moved = next["orders"].as_array_mut().unwrap().remove(39);
    next["orders"].as_array_mut().unwrap().insert(0, moved);
    up.set("/api/orders", next.clone());
    let ev = client.next_event().await;
    assert_eq!(ev.event, "patch", "the client's document carries on");
    let ops: Vec<Value> = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(
        ops,
        [json!({"op": "move", "from": "/orders/39", "path": "/orders/0"})]
    );
    assert_eq!(client.doc.as_ref(), Some(&next));
}
