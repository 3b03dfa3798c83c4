//! A slow client can't make the gateway buffer without bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// A document whose every version carries a 200 KB string, so unread events fill sockets fast.
fn big(n: u64) -> Value {
    json!({"n": n, "pad": format!("{n}{}", "x".repeat(200_000))})
}

/// `/sse/doc`, polling `up`'s `/doc` every 20 ms and keeping 16 events to replay, with
/// `limits.write_timeout` this long.
fn doc(up: &Upstream, write_timeout: &str) -> Cfg {
    Cfg::new(up)
        .stream("/sse/doc", "/doc")
        .interval("20ms")
        .replay(16)
        .limit("write_timeout", write_timeout)
}

/// Changes the document until the gateway's metric `until` counts at least one; returns the
/// last version. However slow the machine, the churn lasts exactly as long as it must.
async fn churn_until(gw: &Gateway, up: &Upstream, until: &str) -> u64 {
    let mut n = 0;
    while gw.metric(until).await.unwrap_or(0.0) < 1.0 {
        assert!(n < 2_000, "{until} never moved");
        n += 1;
        up.set("/doc", big(n));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    n
}

#[tokio::test]
async fn a_client_that_falls_behind_gets_one_fresh_snapshot_instead_of_a_gap() {
    let up = Upstream::json("/doc", big(0)).await;
    let gw = Gateway::start(&doc(&up, "60s")).await;
    let mut slow = gw.sse("/sse/doc").await;
    slow.snapshot().await;
    // The client reads, but slower than the document changes. Every patch it gets must apply
    // (the client panics otherwise), and it must end with the latest document.
    let last = Arc::new(AtomicU64::new(u64::MAX));
    let target = last.clone();
    let reader = tokio::spawn(async move {
        let mut kinds = Vec::new();
        while slow.doc.as_ref().map(|d| d["n"].as_u64())
            != Some(Some(target.load(Ordering::Acquire)))
        {
            kinds.push(slow.next_event().await.event);
            // Slow while the document churns; then it catches up.
            if target.load(Ordering::Acquire) == u64::MAX {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        (kinds, slow.doc)
    });
    let n = churn_until(&gw, &up, "sse_gateway_clients_resynced_total").await;
    last.store(n, Ordering::Release);
    let (kinds, doc) = reader.await.unwrap();
    assert!(
        kinds.iter().any(|k| k == "snapshot"),
        "resynced by a snapshot: {kinds:?}"
    );
    assert_eq!(doc, Some(big(n)));
}

#[tokio::test]
async fn a_client_whose_socket_stays_blocked_is_dropped_after_the_write_timeout() {
    let up = Upstream::json("/doc", big(0)).await;
    let gw = Gateway::start(&doc(&up, "300ms")).await;
    let mut stuck = gw.get_sse("/sse/doc", &[]).await;
    churn_until(&gw, &up, "sse_gateway_clients_dropped_slow_total").await;
    assert!(gw.stderr().contains("sse client dropped: write timed out"));
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
