//! Redis restarted empty, paused (in both `on_redis_down` modes) or cutting the subscriptions:
//! each has a defined outcome for clients, and the cluster returns to one poller.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

#[tokio::test]
async fn a_redis_restarted_empty_gives_each_client_one_snapshot_under_a_new_epoch() {
    let Some(mut c) = cluster(|cfg| cfg).await else {
        return;
    };
    let mut clients = c.clients().await;
    c.holder().await;
    let next = c.change();
    all_reach(&mut clients, &next).await;
    let old_epoch = clients[0].epoch();

    let restarted = Instant::now();
    c.redis.restart().await;
    let next = c.change();
    let got = all_reach(&mut clients, &next).await;
    for (seen, client) in got.iter().zip(&clients) {
        let docs: Vec<&Seen> = seen.iter().filter(|s| s.is_document()).collect();
        assert_eq!(docs.len(), 1, "{}", client.log());
        assert_eq!(docs[0].event, "snapshot", "{}", client.log());
        assert_ne!(client.epoch(), old_epoch);
        assert_eq!(client.epoch(), clients[0].epoch(), "one new epoch for all");
    }
    c.holder().await;
    assert!(
        restarted.elapsed() <= 2 * TTL + Duration::from_secs(2),
        "one holder again only after {:?}",
        restarted.elapsed()
    );
    let next = c.change();
    let got = all_reach(&mut clients, &next).await;
    one_patch_each(&got, &clients);
}

/// The `state` of an `upstream-status` event, if `seen` is one.
fn status(seen: &Seen) -> Option<String> {
    if seen.event != "upstream-status" {
        return None;
    }
    let data: Value = serde_json::from_str(&seen.data).ok()?;
    Some(data["state"].as_str()?.to_string())
}

#[tokio::test]
async fn with_redis_paused_each_gateway_polls_for_its_own_clients_until_it_returns() {
    let Some(mut c) = cluster(|cfg| cfg).await else {
        return;
    };
    let mut clients = c.clients().await;
    c.holder().await;
    let redis_epoch = clients[0].epoch();
    c.redis.pause();
    let next = c.change();
    all_reach(&mut clients, &next).await;
    for client in &clients {
        assert_eq!(
            client.snapshots(),
            2,
            "one snapshot at the switch\n{}",
            client.log()
        );
        assert_ne!(
            client.epoch(),
            redis_epoch,
            "a local epoch\n{}",
            client.log()
        );
    }
    for (_, gw) in c.live() {
        let state = Cluster::state(gw).await.expect("the instance");
        assert_eq!(state["role"], "local", "{state}");
    }
    let from = Instant::now();
    let next = c.change();
    let got = all_reach(&mut clients, &next).await;
    one_patch_each(&got, &clients);
    all_quiet(&mut clients, 3 * INTERVAL).await;
    let polls = c.polls(DOC, from, Instant::now());
    let intervals = (from.elapsed().as_millis() / INTERVAL.as_millis()) as usize;
    assert!(
        polls <= 3 * (intervals + 1),
        "{polls} requests in {intervals} intervals from 3 gateways"
    );

    let resumed = Instant::now();
    c.redis.resume();
    c.holder().await;
    assert!(resumed.elapsed() <= 2 * TTL + Duration::from_secs(1));
    let next = c.change();
    all_reach(&mut clients, &next).await;
    for client in &clients {
        assert_eq!(client.snapshots(), 3, "one snapshot back\n{}", client.log());
        assert_eq!(client.epoch(), clients[0].epoch(), "one epoch again");
    }
    let from = Instant::now();
    all_quiet(&mut clients, 5 * INTERVAL).await;
    let polls = c.polls(DOC, from, Instant::now());
    assert!(
        polls <= 6,
        "{polls} requests in 5 intervals after Redis returned"
    );
    assert_eq!(c.metric_sum("sse_gateway_cluster_redis_up").await, 3.0);
}

#[tokio::test]
async fn with_redis_paused_and_on_redis_down_stale_clients_keep_their_document_and_are_told() {
    let Some(mut c) = cluster(|cfg| cfg.cluster_option("on_redis_down", "stale")).await else {
        return;
    };
    let mut clients = c.clients().await;
    c.holder().await;
    c.redis.pause();
    for client in &mut clients {
        while status(&client.next_of("upstream-status").await).as_deref() != Some("stale") {}
        assert_eq!(client.documents().len(), 1, "{}", client.log());
    }
    for (_, gw) in c.live() {
        assert_eq!(gw.metric("sse_gateway_cluster_redis_up").await, Some(0.0));
        let state = Cluster::state(gw).await.expect("the instance");
        assert_eq!(state["role"], "stale", "{state}");
    }
    // Nobody polls while Redis is away; the change waits for it.
    let from = Instant::now();
    let next = c.change();
    all_quiet(&mut clients, 4 * INTERVAL).await;
    assert_eq!(c.polls(DOC, from, Instant::now()), 0);

    c.redis.resume();
    c.holder().await;
    let got = all_reach(&mut clients, &next).await;
    one_patch_each(&got, &clients);
}

#[tokio::test]
async fn a_killed_redis_subscription_is_replaced_and_no_event_is_skipped() {
    let Some(mut c) = cluster(|cfg| cfg).await else {
        return;
    };
    let mut clients: Vec<Recorder> = c
        .clients()
        .await
        .into_iter()
        .map(Recorder::allow_gaps)
        .collect();
    c.holder().await;
    let subscribed = c.subscriptions().await;
    let killed = c.redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    assert!(
        matches!(killed, redis::Value::Int(n) if n >= 2),
        "{killed:?} subscriptions"
    );
    // Changes while the followers resubscribe reach everyone, as patches or one snapshot.
    for _ in 0..2 {
        let next = c.change();
        all_reach(&mut clients, &next).await;
    }
    eventually("every gateway subscribed again", || async {
        (c.subscriptions().await == subscribed).then_some(())
    })
    .await;
    let next = c.change();
    let got = all_reach(&mut clients, &next).await;
    one_patch_each(&got, &clients);
}

#[tokio::test]
async fn with_redis_gone_for_a_while_clients_are_served_and_an_empty_redis_starts_a_new_epoch() {
    let Some(mut c) = cluster(|cfg| cfg).await else {
        return;
    };
    let mut clients = c.clients().await;
    c.holder().await;
    let redis_epoch = clients[0].epoch();
    // Refused connections, not timeouts: the gateways poll alone all the same.
    c.redis.kill();
    let next = c.change();
    all_reach(&mut clients, &next).await;
    for client in &clients {
        assert_ne!(
            client.epoch(),
            redis_epoch,
            "a local epoch\n{}",
            client.log()
        );
    }
    c.redis.restart().await;
    c.holder().await;
    let next = c.change();
    all_reach(&mut clients, &next).await;
    for client in &clients {
        assert!(
            client.snapshots() <= 3,
            "at most one snapshot at each switch\n{}",
            client.log()
        );
        assert_ne!(client.epoch(), redis_epoch, "a new epoch\n{}", client.log());
        assert_eq!(client.epoch(), clients[0].epoch(), "one epoch again");
    }
    let next = c.change();
    let got = all_reach(&mut clients, &next).await;
    one_patch_each(&got, &clients);
}

// On two threads: the test's own relay must keep pace while the test waits for clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_redis_that_go_silent_are_replaced_and_no_event_is_skipped() {
    let Some(mut c) = cluster(|cfg| cfg).await else {
        return;
    };
    let relay = Proxy::to(c.redis.port).await;
    c.reboot_via(1, &relay.redis_url()).await;
    let mut clients: Vec<Recorder> = c
        .clients()
        .await
        .into_iter()
        .map(Recorder::allow_gaps)
        .collect();
    c.holder().await;
    // b's command connection and subscription stay open and carry nothing, as after a NAT
    // forgot them: b must notice, connect again and catch up.
    relay.silence_open_connections();
    for _ in 0..2 {
        let next = c.change();
        all_reach(&mut clients, &next).await;
    }
    c.holder().await;
    let next = c.change();
    let got = all_reach(&mut clients, &next).await;
    one_patch_each(&got, &clients);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_goes_silent_while_commands_work_delays_no_event_past_a_lease_ttl() {
    let Some(mut c) = cluster(|cfg| cfg).await else {
        return;
    };
    let relay = Proxy::to(c.redis.port).await;
    c.reboot_via(1, &relay.redis_url()).await;
    let mut clients: Vec<Recorder> = c
        .clients()
        .await
        .into_iter()
        .map(Recorder::allow_gaps)
        .collect();
    c.holder().await;
    // The pitfall of every Redis pub/sub user: a feed that looks open and carries nothing,
    // while Redis answers every command.
    relay.silence_open_subscriptions();
    for _ in 0..2 {
        let changed = Instant::now();
        let next = c.change();
        all_reach(&mut clients, &next).await;
        let took = changed.elapsed();
        assert!(
            took <= TTL + 2 * INTERVAL,
            "a change took {took:?} to reach b's client"
        );
    }
    // Its ping notices (within a second or two) and b subscribes again.
    all_quiet(&mut clients, 2 * TTL).await;
    let next = c.change();
    let got = all_reach(&mut clients, &next).await;
    one_patch_each(&got, &clients);
}

#[tokio::test]
async fn with_redis_taking_no_writes_for_a_while_every_client_still_gets_every_change() {
    let Some(mut c) = cluster(|cfg| cfg).await else {
        return;
    };
    let mut clients = c.clients().await;
    c.holder().await;
    // Reads answer, writes (renewals, publishes) wait: a replica promoted slowly, a full disk.
    c.redis.cmd(&["CLIENT", "PAUSE", "2500", "WRITE"]).await;
    let next = c.change();
    all_reach(&mut clients, &next).await;
    c.holder().await;
    let next = c.change();
    all_reach(&mut clients, &next).await;
    for client in &clients {
        assert!(
            client.snapshots() <= 3,
            "at most one snapshot at each switch\n{}",
            client.log()
        );
        assert_eq!(client.epoch(), clients[0].epoch(), "one epoch again");
    }
    let next = c.change();
    let got = all_reach(&mut clients, &next).await;
    one_patch_each(&got, &clients);
}
