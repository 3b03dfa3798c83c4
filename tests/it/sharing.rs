//! Many clients of one resource share one poller, and it stops when they are gone.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn a_hundred_clients_cost_one_poll_per_interval() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let gw = Gateway::start(&Cfg::new(&up).stream("/sse/doc", "/doc").interval("200ms")).await;
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut c = gw.sse("/sse/doc").await;
        c.snapshot().await;
        clients.push(c);
    }
    let before = up.count("/doc").await;
    let window = std::time::Instant::now();
    up.set("/doc", json!({"v": 1}));
    for c in &mut clients {
        assert_eq!(c.next_document().await, json!({"v": 1}));
    }
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(window.elapsed())).await;
    let polls = up.count("/doc").await - before;
    let intervals = window.elapsed().as_millis() as usize / 200;
    // One request per interval, give or take scheduling; never one per client.
    assert!(
        polls >= 2 && polls <= intervals + 2,
        "{polls} polls in {intervals} intervals for 100 clients"
    );
}

#[tokio::test]
async fn ignored_fields_trigger_no_event_and_never_reach_clients() {
    let up = Upstream::json("/doc", json!({"price": 1, "generated_at": 100})).await;
    let gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/doc", "/doc")
            .interval("100ms")
            .ignore(&["/generated_at"]),
    )
    .await;
    let mut client = gw.sse("/sse/doc").await;
    assert_eq!(client.snapshot().await, json!({"price": 1}));
    for t in 101..105 {
        up.set("/doc", json!({"price": 1, "generated_at": t}));
        assert!(client
            .event_within(Duration::from_millis(250))
            .await
            .is_none());
    }
    up.set("/doc", json!({"price": 2, "generated_at": 200}));
    assert_eq!(client.next_document().await, json!({"price": 2}));
}

#[tokio::test]
async fn idle_never_polls_from_start_up() {
    let up = Upstream::json("/doc", json!({"v": 0})).await;
    let _gw = Gateway::start(
        &Cfg::new(&up)
            .stream("/sse/doc", "/doc")
            .interval("50ms")
            .idle("never"),
    )
    .await;
    eventually("polls without any client", || async {
        (up.count("/doc").await >= 3).then_some(())
    })
    .await;
}
