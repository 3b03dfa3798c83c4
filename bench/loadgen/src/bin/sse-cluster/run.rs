//! The coordinator: serves the upstream, starts the agents, and measures in phases: attach and
//! memory, an idle window (upstream requests per interval, Redis's background cost), changes
//! (fan-out latency to every client, Redis commands and CPU per change), and the holder's
//! SIGKILL (takeover under load). Prints one JSON object.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sse_loadgen::procfs::{cpu_ms, host_cpu_ms, host_softirq_ms, memory, tree_cpu_ms};
use sse_loadgen::stamp::pct;

use crate::agents::Agents;
use crate::gateways::{Admin, Gateway};
use crate::redis::{Redis, Sample};
use crate::upstream::{self, Upstream};

#[derive(clap::Args)]
pub struct RunArgs {
    /// A gateway as `pid,port,admin_port`; give one per gateway, in node order (g1, g2, ...).
    #[arg(long = "gateway", required = true)]
    pub gateways: Vec<Gateway>,
    /// Where to serve the upstream the gateways poll.
    #[arg(long)]
    pub upstream: SocketAddr,
    /// The stream path clients subscribe to (and refresh).
    #[arg(long, default_value = "/sse/doc")]
    pub path: String,
    #[arg(long, default_value_t = 100_000)]
    pub clients: usize,
    /// Clients per agent process at most (each process is under the open-file limit).
    #[arg(long, default_value_t = 15_000)]
    pub per_agent: usize,
    #[arg(long, default_value_t = 16)]
    pub sources: u8,
    #[arg(long, default_value_t = 5)]
    pub changes: u64,
    /// Bytes of the document, and of each change.
    #[arg(long, default_value_t = 1000)]
    pub size: usize,
    /// The stream's poll interval in seconds (as in the gateways' config).
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Seconds without changes, counting upstream requests and Redis's background work.
    #[arg(long, default_value_t = 10.0)]
    pub idle: f64,
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    #[arg(long)]
    pub redis_pid: Option<u32>,
    #[arg(long)]
    pub redis_port: Option<u16>,
    /// SIGKILL the lease holder after the changes and time its replacement.
    #[arg(long)]
    pub kill_holder: bool,
    /// Refresh on every gateway (each polls alone without `cluster:`); else on the holder.
    #[arg(long)]
    pub refresh_all: bool,
    /// Seconds the clients may take to attach.
    #[arg(long, default_value_t = 240.0)]
    pub attach_timeout: f64,
}

/// What every phase works with.
pub struct Bench {
    pub args: RunArgs,
    pub up: Rc<RefCell<Upstream>>,
    pub agents: Agents,
    pub admin: Admin,
    pub redis: Option<Redis>,
    /// The next change's seq.
    pub seq: u64,
}

pub async fn run(args: RunArgs) -> Value {
    let up = Upstream::new(args.size);
    tokio::task::spawn_local(upstream::serve(args.upstream, up.clone()));
    let before: Vec<u64> = args.gateways.iter().map(|g| memory(g.pid).0).collect();
    let urls: Vec<String> = args
        .gateways
        .iter()
        .map(|g| format!("http://127.0.0.1:{}{}", g.port, args.path))
        .collect();
    let n_agents = args.clients.div_ceil(args.per_agent.max(1)).max(2);
    let agents = match Agents::start(n_agents, args.clients, &urls, args.sources) {
        Ok(a) => a,
        Err(e) => return json!({ "error": format!("cannot start the agents: {e}") }),
    };
    let redis = match (args.redis_pid, args.redis_port) {
        (Some(pid), Some(port)) => Some(Redis { pid, port }),
        _ => None,
    };
    let mut b = Bench {
        args,
        up,
        agents,
        admin: Admin::new(),
        redis,
        seq: 1,
    };
    let mut report = attach(&mut b, &before).await;
    if b.args.idle > 0.0 {
        report["idle"] = idle(&mut b).await;
    }
    if b.args.changes > 0 {
        report["changes"] = changes(&mut b).await;
    }
    if b.args.kill_holder {
        report["takeover"] = crate::takeover::run(&mut b).await;
    }
    report
}

/// Attaches every client; then each gateway's PSS per client of its own.
async fn attach(b: &mut Bench, before: &[u64]) -> Value {
    let started = Instant::now();
    let g = b.args.gateways.len();
    let mut status = b.agents.status(g).await;
    while !status.attached && started.elapsed().as_secs_f64() < b.args.attach_timeout {
        tokio::time::sleep(Duration::from_millis(200)).await;
        status = b.agents.status(g).await;
    }
    let attach_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(b.args.settle)).await;
    let status = b.agents.status(g).await;
    let mut per_gateway = Vec::new();
    for (i, gw) in b.args.gateways.iter().enumerate() {
        let (pss, rss) = memory(gw.pid);
        let clients = status.connected[i];
        per_gateway.push(json!({
            "node": format!("g{}", i + 1),
            "pid": gw.pid,
            "clients": clients,
            "pss_kb": [before[i], pss],
            "rss_kb": rss,
            "pss_kb_per_client": (pss as f64 - before[i] as f64) / clients.max(1) as f64,
        }));
    }
    json!({
        "clients": b.args.clients,
        "agents": b.agents.pids().len(),
        "agent_pss_kb": b.agents.pids().iter().map(|p| memory(*p).0).sum::<u64>(),
        "gateways": b.args.gateways.len(),
        "connected": status.total(),
        "dropped": status.dropped,
        "attach_s": attach_s,
        "per_gateway": per_gateway,
    })
}

/// No changes for `idle` seconds: what the upstream and Redis see while nothing happens.
async fn idle(b: &mut Bench) -> Value {
    let c0 = b.up.borrow().counts();
    let r0 = sample(b).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(b.args.idle)).await;
    let secs = t0.elapsed().as_secs_f64();
    let ups = b.up.borrow().counts().since(&c0);
    let redis = match (&b.redis, r0) {
        (Some(r), Some(r0)) => r.sample().await.since(&r0, secs),
        _ => Value::Null,
    };
    let per_interval = b.up.borrow().counts().per_interval(&c0, b.args.interval);
    let mut nodes = Vec::new();
    for (i, g) in b.args.gateways.iter().enumerate() {
        let role = b.admin.role(g).await;
        nodes.push(json!({
            "node": format!("g{}", i + 1),
            "role": role.role,
            "holder": role.holder,
            "leases_held": b.admin.metric(g, "sse_gateway_cluster_leases_held").await,
            "redis_up": b.admin.metric(g, "sse_gateway_cluster_redis_up").await,
        }));
    }
    json!({
        "seconds": secs,
        "interval_s": b.args.interval,
        "upstream": ups,
        "upstream_requests_per_interval": per_interval,
        "redis_per_s": redis,
        "nodes": nodes,
    })
}

/// One change: its latency to every streaming client (µs, sorted), and what Redis did from
/// just before it until a client of every gateway had it (by then each gateway has read it from
/// Redis; the rest is fan-out), with that window's length in seconds.
pub struct Changed {
    pub lat: Vec<u64>,
    pub redis: Option<(Sample, f64)>,
}

/// Changes the document, asks for a refresh, and waits until every streaming client has it.
pub async fn change(b: &mut Bench, refresh_on: &[Gateway]) -> Changed {
    let seq = b.seq;
    b.seq += 1;
    let before = sample(b).await;
    let t0 = Instant::now();
    b.up.borrow_mut().change(seq);
    for g in refresh_on {
        b.admin.refresh(g, &b.args.path).await;
    }
    let mut redis = None;
    let mut pending = before;
    loop {
        let reach = b.agents.count(seq).await;
        if reach.on_every_gateway() {
            if let Some(before) = pending.take() {
                let window = t0.elapsed().as_secs_f64();
                if let Some(after) = sample(b).await {
                    let mut d = Sample::default();
                    after.add_since(&before, &mut d);
                    redis = Some((d, window));
                }
            }
        }
        if reach.everywhere() || t0.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Changed {
        lat: b.agents.latencies(seq).await,
        redis,
    }
}

/// Until every streaming client has `seq` (true), or `limit` passes (false).
pub async fn wait_delivered(b: &mut Bench, seq: u64, limit: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        if b.agents.count(seq).await.everywhere() {
            return true;
        }
        if t0.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn latency(lat: &[u64]) -> Value {
    json!({
        "clients": lat.len(),
        "p50_ms": pct(lat, 0.5),
        "p99_ms": pct(lat, 0.99),
        "max_ms": pct(lat, 1.0),
    })
}

/// `changes` changes a second apart: each one's latency to every client, and the CPU and Redis
/// commands they cost. Redis is sampled in a short window around each change (`Changed`), so
/// little of its background work (the idle window's rate, which the report subtracts) falls in.
async fn changes(b: &mut Bench) -> Value {
    let refresh_on = refresh_targets(b).await;
    let gw_cpu = |b: &Bench| -> f64 { b.args.gateways.iter().map(|g| tree_cpu_ms(g.pid)).sum() };
    let (cpu0, own0, host0) = (gw_cpu(b), tree_cpu_ms(std::process::id()), host_cpu_ms());
    let (soft0, redis0) = (host_softirq_ms(), redis_cpu(b));
    let c0 = b.up.borrow().counts();
    let t0 = Instant::now();
    let (mut each, mut all, mut last) = (Vec::new(), Vec::new(), Vec::new());
    let (mut in_windows, mut window_s) = (Sample::default(), 0.0);
    for _ in 0..b.args.changes {
        let Changed { lat, redis } = change(b, &refresh_on).await;
        if let Some((d, secs)) = redis {
            d.add_since(&Sample::default(), &mut in_windows);
            window_s += secs;
        }
        each.push(latency(&lat));
        last.push(pct(&lat, 1.0));
        all.extend(lat);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = b.args.changes as f64;
    let (cpu, own) = (gw_cpu(b) - cpu0, tree_cpu_ms(std::process::id()) - own0);
    let redis = redis_cpu(b) - redis0;
    all.sort_unstable();
    last.sort_by(f64::total_cmp);
    json!({
        "seconds": secs,
        "refresh_on": refresh_on.iter().map(|g| g.pid).collect::<Vec<_>>(),
        "each": each,
        "latency": latency(&all),
        "last_client_ms_median": last.get(last.len() / 2).copied().unwrap_or(0.0),
        "upstream": b.up.borrow().counts().since(&c0),
        "redis_per_change": b.redis.map(|_| in_windows.per(n)),
        "redis_window_s_per_change": window_s / n,
        "gateways_cpu_ms_per_change": cpu / n,
        "loadgen_cpu_ms_per_change": own / n,
        "host_other_cpu_ms_per_change": ((host_cpu_ms() - host0) - cpu - own - redis).max(0.0) / n,
        "host_softirq_ms_per_change": (host_softirq_ms() - soft0) / n,
    })
}

/// Where a change's refresh goes: every gateway without a cluster (each polls alone); else the
/// holder, so a change costs Redis what the holder's own poll finding it would (a refresh on a
/// follower travels to the holder through Redis: one more PUBLISH).
async fn refresh_targets(b: &Bench) -> Vec<Gateway> {
    if b.args.refresh_all {
        return b.args.gateways.clone();
    }
    for g in &b.args.gateways {
        if b.admin.role(g).await.role.as_deref() == Some("holder") {
            return vec![g.clone()];
        }
    }
    b.args.gateways.iter().take(1).cloned().collect()
}

async fn sample(b: &Bench) -> Option<Sample> {
    match &b.redis {
        Some(r) => Some(r.sample().await),
        None => None,
    }
}

fn redis_cpu(b: &Bench) -> f64 {
    b.redis.map_or(0.0, |r| cpu_ms(&r.pid.to_string()))
}
