//! One poller for the whole cluster, the same events on every gateway, and instances that
//! stay apart: per tenant, and per process with `cluster: false`.

use std::time::Instant;

use serde_json::{json, Value};

use super::*;

#[tokio::test]
async fn three_gateways_cost_one_upstream_request_per_interval() {
    let Some(c) = cluster(|cfg| cfg).await else {
        return;
    };
    c.up.with_etag(DOC);
    let mut clients = c.clients().await;
    let h = c.holder().await;
    let before = c.up.count(DOC).await;
    let from = Instant::now();
    all_quiet(&mut clients, 10 * INTERVAL).await;
    let polls = c.polls(DOC, from, Instant::now());
    let intervals = (from.elapsed().as_millis() / INTERVAL.as_millis()) as usize;
    assert!(
        polls + 2 >= intervals && polls <= intervals + 1,
        "{polls} upstream requests in {intervals} intervals with clients on 3 gateways"
    );
    // The holder polls with the validator it has: an unchanged document costs a 304.
    let reqs = c.up.requests(DOC).await;
    let conditional = reqs[before..]
        .iter()
        .filter(|r| r.headers.contains_key("if-none-match"))
        .count();
    assert!(
        conditional + 1 >= reqs.len() - before,
        "{conditional} of {polls} conditional"
    );
    assert_eq!(c.metric_sum("sse_gateway_cluster_leases_held").await, 1.0);
    assert_eq!(c.metric_sum("sse_gateway_cluster_redis_up").await, 3.0);
    let acquired = "sse_gateway_cluster_lease_acquired_total";
    assert!(c.gw(h).metric(acquired).await.unwrap_or(0.0) >= 1.0);
    for (_, gw) in c.live() {
        let r = http().get(gw.admin_url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        let second = text.lines().nth(1).unwrap_or_default();
        assert!(second.starts_with("cluster: "), "/readyz: {text:?}");
    }
}

#[tokio::test]
async fn every_gateway_sends_the_same_ids_and_bytes() {
    let Some(mut c) = cluster(|cfg| cfg).await else {
        return;
    };
    let mut clients = Vec::new();
    for (i, node) in NODES.iter().enumerate() {
        for k in 1..=2 {
            clients.push(c.client(i, &format!("{node}#{k}")).await);
        }
    }
    c.holder().await;
    for _ in 0..3 {
        let next = c.change();
        all_reach(&mut clients, &next).await;
    }
    let first = clients[0].documents();
    assert_eq!(first.len(), 4, "{}", clients[0].log());
    for other in &clients[1..] {
        assert_eq!(
            other.documents(),
            first,
            "{} vs {}",
            other.log(),
            clients[0].log()
        );
    }
}

/// Alice's and Bob's view of order 1 at version `n`.
fn order(owner: &str, n: u64) -> Value {
    padded(json!({"owner": owner, "n": n}))
}

#[tokio::test]
async fn tenants_on_different_gateways_never_see_each_others_data() {
    let up = Upstream::start().await;
    let orders = "/orders/1";
    let (alice_seen, bob_seen) = (Ledger::default(), Ledger::default());
    let set = |up: &Upstream, n| {
        alice_seen.served(&order("alice", n));
        bob_seen.served(&order("bob", n));
        let docs = [
            ("Bearer alice", order("alice", n)),
            ("Bearer bob", order("bob", n)),
        ];
        up.by_auth(orders, &docs);
    };
    set(&up, 0);
    let Some(c) = Cluster::on(up, |up| {
        Cfg::new(up)
            .stream("/sse/orders/{id}", "/orders/{id}")
            .interval("300ms")
            .idle("1m")
            .forward_headers(&["authorization"])
    })
    .await
    else {
        return;
    };
    let mut tenants = Vec::new();
    for (who, on, ledger) in [
        ("alice", 0, &alice_seen),
        ("alice", 2, &alice_seen),
        ("bob", 1, &bob_seen),
        ("bob", 2, &bob_seen),
    ] {
        let auth = format!("Bearer {who}");
        let headers = [("authorization", auth.as_str())];
        let name = format!("{who}@{}", NODES[on]);
        let mut r =
            Recorder::connect_with(c.gw(on), "/sse/orders/1", &headers, &name, ledger).await;
        r.snapshot(&order(who, 0)).await;
        tenants.push((who, r));
    }
    for n in 1..=2 {
        set(&c.up, n);
        for (who, r) in &mut tenants {
            r.until(&order(who, n)).await;
        }
    }
    for (who, r) in &tenants {
        let other = if *who == "alice" { "bob" } else { "alice" };
        assert!(r.shown.iter().all(|d| d["owner"] == *who), "{}", r.log());
        assert!(
            r.seen.iter().all(|s| !s.data.contains(other)),
            "{}",
            r.log()
        );
    }
    // One poller per tenant for the cluster, though each has clients on two gateways.
    let from = Instant::now();
    join_all(tenants.iter_mut().map(|(_, r)| r.quiet(5 * INTERVAL))).await;
    let polls = c.polls(orders, from, Instant::now());
    assert!(
        polls <= 2 * 6,
        "{polls} requests in 5 intervals for two tenants"
    );
    // Credentials never travel through Redis: only a keyed hash names an instance.
    for key in c.redis.keys(&c.prefix).await {
        assert!(!key.contains("alice") && !key.contains("Bearer"), "{key}");
    }
}

#[tokio::test]
async fn a_stream_with_cluster_false_is_polled_by_each_gateway_for_its_own_clients() {
    let Some(c) = cluster(|cfg| cfg.cluster(false)).await else {
        return;
    };
    let mut clients = c.clients().await;
    let from = Instant::now();
    all_quiet(&mut clients, 5 * INTERVAL).await;
    let polls = c.polls(DOC, from, Instant::now());
    // One poller would make 5 or 6; three make about 15.
    assert!(
        polls >= 10,
        "{polls} requests in 5 intervals from 3 local pollers"
    );
    let epochs: std::collections::HashSet<String> = clients.iter().map(Recorder::epoch).collect();
    assert_eq!(epochs.len(), 3, "each gateway numbers its own events");
}

#[tokio::test]
async fn a_refresh_asked_of_a_follower_makes_the_holder_poll_now() {
    let Some(mut c) = cluster(|cfg| cfg.interval("1h")).await else {
        return;
    };
    let mut clients = c.clients().await;
    let h = c.holder().await;
    let follower = (h + 1) % NODES.len();
    let next = c.change();
    let r = http()
        .post(c.gw(follower).admin_url("/streams/refresh?path=/sse/doc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let got = all_reach(&mut clients, &next).await;
    one_patch_each(&got, &clients);
    // One request for the refresh, from the holder, not one per gateway.
    let from = Instant::now();
    all_quiet(&mut clients, 3 * INTERVAL).await;
    assert_eq!(c.polls(DOC, from, Instant::now()), 0);
    assert_eq!(c.up.count(DOC).await, 2, "the first poll and the refresh");
}

#[tokio::test]
async fn a_format_asked_for_on_a_follower_is_encoded_by_the_holder() {
    let Some(mut c) = cluster(|cfg| cfg).await else {
        return;
    };
    let mut clients = c.clients().await;
    let h = c.holder().await;
    let follower = (h + 1) % NODES.len();
    let path = format!("{PATH}?format=merge-patch");
    let mut merge = Recorder::connect(c.gw(follower), &path, "merge", &c.ledger).await;
    merge.snapshot(&doc(0)).await;
    clients.push(merge);
    // The holder learns what the followers' clients want when it renews its lease.
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let next = c.change();
        let got = all_reach(&mut clients, &next).await;
        kinds.push(got[3].iter().map(|s| s.event.clone()).collect::<Vec<_>>());
    }
    assert_eq!(kinds[2], ["merge-patch"], "{}", clients[3].log());
    assert_eq!(clients[3].last_id(), clients[0].last_id());
}
