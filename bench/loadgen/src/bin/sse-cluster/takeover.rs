//! The lease holder's SIGKILL under load: how long until another gateway's `/streams` says
//! `holder`, and until a change made at the kill reaches the surviving clients (no refresh: the
//! new holder's own poll must find it). Then one refreshed change under the new holder, and the
//! upstream's requests per interval again.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::gateways::Gateway;
use crate::run::{change, latency, wait_delivered, Bench};

/// Five intervals after the takeover, counting upstream requests.
const AFTER_INTERVALS: f64 = 5.0;

pub async fn run(b: &mut Bench) -> Value {
    let mut roles = Vec::new();
    for g in &b.args.gateways {
        roles.push(b.admin.role(g).await);
    }
    let Some(h) = roles
        .iter()
        .position(|r| r.role.as_deref() == Some("holder"))
    else {
        return json!({ "skipped": "no gateway's /streams reports cluster.role holder" });
    };
    let killed = b.args.gateways[h].clone();
    let alive: Vec<usize> = (0..b.args.gateways.len()).filter(|&i| i != h).collect();
    let survivors: Vec<Gateway> = alive.iter().map(|&i| b.args.gateways[i].clone()).collect();
    let c0 = b.up.borrow().counts();
    let seq = b.seq;
    b.seq += 1;
    // SAFETY: kill(2) on a pid this run was given; an error (already gone) changes nothing.
    unsafe { libc::kill(killed.pid as i32, libc::SIGKILL) };
    let t0 = Instant::now();
    b.up.borrow_mut().change(seq);
    let (mut holder_at, mut delivered_at) = (None, None);
    while t0.elapsed() < Duration::from_secs(30) && (holder_at.is_none() || delivered_at.is_none())
    {
        if holder_at.is_none() {
            for (i, g) in survivors.iter().enumerate() {
                if b.admin.role(g).await.role.as_deref() == Some("holder") {
                    holder_at = Some((i, t0.elapsed().as_secs_f64() * 1000.0));
                    break;
                }
            }
        }
        if delivered_at.is_none() && wait_delivered(b, seq, Duration::ZERO).await {
            delivered_at = Some(t0.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during = b.up.borrow().counts().since(&c0);
    let lat = b.agents.latencies(seq).await;
    let status = b.agents.status(b.args.gateways.len()).await;
    let on = &survivors[holder_at.map_or(0, |(i, _)| i)];
    let next = change(b, std::slice::from_ref(on)).await.lat;
    let c1 = b.up.borrow().counts();
    let window = b.args.interval * AFTER_INTERVALS;
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    let c2 = b.up.borrow().counts();
    let (after, per_interval) = (c2.since(&c1), c2.per_interval(&c1, b.args.interval));
    json!({
        "killed": format!("g{}", h + 1),
        "killed_named_holder": roles[h].holder,
        "new_holder": holder_at.map(|(i, _)| format!("g{}", alive[i] + 1)),
        "holder_after_ms": holder_at.map(|(_, ms)| ms),
        "change_reached_all_ms": delivered_at,
        "change_at_kill": latency(&lat),
        "surviving_clients": status.total(),
        "upstream_during": during,
        "next_change": latency(&next),
        "upstream_requests_per_interval_after": per_interval,
        "upstream_after": after,
    })
}
