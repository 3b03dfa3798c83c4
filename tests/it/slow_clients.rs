//! A slow client can't make the gateway buffer without bound.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// A document whose every version carries a 200 KB string, so unread events fill sockets fast.
fn big(n: u64) -> Value {
    json!({"n": n, "pad": format!("{n}{}", "x".repeat(200_000))})
}

fn yaml(up: &Upstream, limits: &str) -> String {
    format!(
        "{limits}{}",
        config(up, "  - path: /sse/doc\n    upstream: api\n    poll: /doc\n    interval: 20ms\n    replay: 16\n")
    )
}

/// Changes the document `count` times, one change per poll or so.
async fn churn(up: &Upstream, count: u64) {
    for n in 1..=count {
        up.set("/doc", big(n));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test]
async fn a_client_that_falls_behind_gets_one_fresh_snapshot_instead_of_a_gap() {
    let up = Upstream::json("/doc", big(0)).await;
    let gw = Gateway::start(&yaml(&up, "limits:\n  write_timeout: 30s\n")).await;
    let mut slow = gw.sse("/sse/doc").await;
    slow.snapshot().await;
    churn(&up, 100).await;
    // Now read: every patch must apply (the client panics if one doesn't), a snapshot stands in
    // for the backlog that no longer fits, and the client ends up with the latest document.
    let mut resynced = false;
    while slow.doc.as_ref().map(|d| d["n"].clone()) != Some(json!(100)) {
        let ev = slow.next_event().await;
        resynced |= ev.event == "snapshot";
    }
    assert!(resynced, "a lagging client is resynced with a snapshot");
    assert_eq!(slow.doc, Some(big(100)));
}

#[tokio::test]
async fn a_client_whose_socket_stays_blocked_is_dropped_after_the_write_timeout() {
    let up = Upstream::json("/doc", big(0)).await;
    let gw = Gateway::start(&yaml(&up, "limits:\n  write_timeout: 300ms\n")).await;
    let mut stuck = gw.get_sse("/sse/doc", &[]).await;
    let mut fine = gw.sse("/sse/doc").await;
    fine.snapshot().await;
    let reader = tokio::spawn(async move {
        while fine.doc.as_ref().map(|d| d["n"].clone()) != Some(json!(60)) {
            fine.next_event().await;
        }
    });
    churn(&up, 60).await;
    reader.await.unwrap();
    eventually("the stuck client is dropped", || async {
        gw.stderr()
            .contains("sse client dropped: write timed out")
            .then_some(())
    })
    .await;
    // What was already in its socket still arrives, then the connection ends mid-stream.
    let ended = loop {
        match tokio::time::timeout(DEADLINE, stuck.chunk())
            .await
            .expect("data or the end")
        {
            Ok(Some(_)) => continue,
            Ok(None) => break "eof",
            Err(_) => break "cut",
        }
    };
    assert!(["eof", "cut"].contains(&ended));
}
