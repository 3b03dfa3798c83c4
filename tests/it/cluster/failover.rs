//! A holder that dies, stops or hangs is replaced, and its clients and everyone else carry on
//! without a snapshot; a holder that lost its lease can no longer publish.

use std::time::{Duration, Instant};

use super::*;

#[tokio::test]
async fn a_killed_holder_is_replaced_and_survivors_get_no_snapshot() {
    let Some(mut c) = cluster(|cfg| cfg).await else {
        return;
    };
    let mut clients = c.clients().await;
    let h = c.holder().await;
    let killed_at = Instant::now();
    c.kill(h);
    let next = c.change();
    let mut orphan = clients.remove(h);
    orphan.until_closed().await;
    let got = all_reach(&mut clients, &next).await;
    one_patch_each(&got, &clients);
    let first = c.up.arrivals(DOC).into_iter().find(|t| *t > killed_at);
    let took = first.expect("a poll after the kill") - killed_at;
    assert!(
        took <= TTL * 3 / 2 + INTERVAL + Duration::from_millis(300),
        "the first poll after the holder died came {took:?} later"
    );
    // Nobody polled twice while the lease changed hands.
    let settled = Instant::now();
    assert!(c.polls(DOC, killed_at, settled) <= 2);
    let h2 = c.holder().await;
    assert_ne!(h2, h);

    // The dead gateway's client reconnects elsewhere and catches up without a snapshot.
    let mut back = orphan.resume_on(c.gw(h2), PATH, "orphan").await;
    let got = back.until(&next).await;
    one_patch_each(&[got], std::slice::from_ref(&back));
    clients.push(back);
    let from = Instant::now();
    all_quiet(&mut clients, 5 * INTERVAL).await;
    let polls = c.polls(DOC, from, Instant::now());
    assert!(
        polls <= 6,
        "{polls} requests in 5 intervals after the takeover"
    );
    let acquired = "sse_gateway_cluster_lease_acquired_total";
    assert!(c.gw(h2).metric(acquired).await.unwrap_or(0.0) >= 1.0);
}

#[tokio::test]
async fn a_stopped_holder_hands_over_at_once_and_the_cadence_holds() {
    let Some(mut c) = cluster(|cfg| cfg).await else {
        return;
    };
    let mut clients = c.clients().await;
    let h = c.holder().await;
    // Stop it a third into an interval, so that "at once" and "one ttl later" differ.
    let polled = c.up.count(DOC).await;
    eventually("a poll", || async {
        (c.up.count(DOC).await > polled).then_some(())
    })
    .await;
    let last = *c.up.arrivals(DOC).last().expect("a poll");
    eventually("a third of an interval", || async {
        (last.elapsed() >= INTERVAL / 3).then_some(())
    })
    .await;
    c.terminate(h);
    let mut leaving = clients.remove(h);
    let next = c.change();
    let got = all_reach(&mut clients, &next).await;
    one_patch_each(&got, &clients);
    let arrivals = c.up.arrivals(DOC);
    let after = arrivals
        .iter()
        .find(|t| **t > last)
        .expect("a poll after the stop");
    let gap = *after - last;
    assert!(
        gap >= INTERVAL / 2 && gap <= INTERVAL + TTL / 3,
        "{gap:?} between the last poll of the stopped holder and the next (interval {INTERVAL:?})"
    );
    assert_ne!(c.holder().await, h);
    leaving.until_closed().await;
    assert!(
        leaving.seen.iter().any(|s| s.event == "end"),
        "{}",
        leaving.log()
    );
    c.wait_gone().await;
    let mut back = leaving.resume_on(c.gw((h + 1) % 3), PATH, "leaver").await;
    let got = back.until(&next).await;
    one_patch_each(&[got], std::slice::from_ref(&back));
}

#[tokio::test]
async fn a_paused_holder_cannot_publish_late_and_no_id_has_two_payloads() {
    let Some(mut c) = cluster(|cfg| cfg).await else {
        return;
    };
    let mut clients = c.clients().await;
    let h = c.holder().await;
    // The holder is stopped while its request for version 1 is in flight, so that it holds a
    // change to publish when it wakes up, long after its lease expired.
    c.up.delay(DOC, Duration::from_millis(250));
    let v1 = c.change();
    let asked = Instant::now();
    eventually("the holder asks for version 1", || async {
        (c.polls(DOC, asked, Instant::now()) > 0).then_some(())
    })
    .await;
    c.gw(h).signal("STOP");
    c.up.delay(DOC, Duration::ZERO);
    let v2 = c.change();
    let mut held = clients.remove(h);
    let got = all_reach(&mut clients, &v2).await;
    one_patch_each(&got, &clients);

    c.gw(h).signal("CONT");
    // The woken holder's own client ends at the cluster's version 2 through the same ids: a
    // version 1 published under an id that carries version 2 elsewhere fails the ledger.
    held.until(&v2).await;
    let h2 = c.holder().await;
    assert_ne!(h2, h, "the woken gateway took its lease back");
    let rejected = "sse_gateway_cluster_publish_rejected_total{reason=\"not_holder\"}";
    let lost = "sse_gateway_cluster_lease_lost_total";
    eprintln!(
        "woken holder: publish rejected {:?}, lease lost {:?}",
        c.gw(h).metric(rejected).await,
        c.gw(h).metric(lost).await
    );
    let v3 = c.change();
    clients.push(held);
    let got = all_reach(&mut clients, &v3).await;
    one_patch_each(&got, &clients);
    for client in &clients {
        assert!(
            !client.shown.contains(&v1),
            "the late version 1 reached\n{}",
            client.log()
        );
    }
}

#[tokio::test]
async fn a_holder_whose_lease_was_taken_has_its_publish_refused() {
    // A long lease, renewed rarely: the holder's next publish comes before its next renewal.
    let Some(mut c) = cluster(|cfg| cfg.cluster_option("lease_ttl", "9s")).await else {
        return;
    };
    let mut clients = c.clients().await;
    let rejected = "sse_gateway_cluster_publish_rejected_total{reason=\"not_holder\"}";
    for _ in 0..3 {
        let h = c.holder().await;
        // What a lost key or a failover does: the lease is someone else's for a second.
        let keys = c.redis.keys(&c.prefix).await;
        let lease = keys
            .iter()
            .find(|k| k.ends_with(":lease"))
            .expect("a lease key");
        c.redis.cmd(&["SET", lease, "z:forged", "PX", "1000"]).await;
        let next = c.change();
        let got = all_reach(&mut clients, &next).await;
        one_patch_each(&got, &clients);
        if c.gw(h).metric(rejected).await.unwrap_or(0.0) >= 1.0 {
            return;
        }
    }
    panic!("no publish was refused in three tries");
}
