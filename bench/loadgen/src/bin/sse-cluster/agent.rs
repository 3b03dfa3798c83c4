//! One load-generator process: a slice of the clients, spread over the gateways and over
//! loopback source addresses, answering the coordinator's questions on stdin/stdout.
//!
//! A process holds at most ~15,000 sockets (the open-file limit is 20,000 here), so the
//! coordinator starts several. Client `g` (its index over the whole run) joins gateway
//! `g % gateways` from 127.0.0.`2 + g % sources`: per source address the kernel hands out at
//! most one port of the ephemeral range per socket, so 100,000 clients need several addresses.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::json;
use sse_loadgen::stamp::{now_ns, stamp_scan};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;

#[derive(clap::Args, Clone)]
pub struct AgentArgs {
    /// The SSE URL on each gateway, in gateway order.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Clients in this process.
    #[arg(long)]
    pub clients: usize,
    /// Index of this process's first client over the whole run.
    #[arg(long, default_value_t = 0)]
    pub first: usize,
    /// Source addresses 127.0.0.2 ..= 127.0.0.(1 + sources).
    #[arg(long, default_value_t = 16)]
    pub sources: u8,
    /// Connections being opened at once: enough to keep the gateways accepting, few enough
    /// that their listen backlogs never overflow (a dropped SYN costs a client a 1 s retry).
    #[arg(long, default_value_t = 128)]
    pub connecting: usize,
}

#[derive(Default)]
struct State {
    /// seq -> receive latencies in µs, one per client that had it.
    seen: HashMap<u64, Vec<u64>>,
    /// seq -> the gateways (bit i: gateway i) at least one client had it from.
    reached: HashMap<u64, u64>,
    /// Clients streaming, per gateway.
    connected: Vec<usize>,
    /// Clients whose stream ended or never started.
    dropped: usize,
    /// Clients whose attach is settled either way.
    settled: usize,
}

pub async fn run(args: AgentArgs) {
    // A coordinator that dies takes its agents with it, even by SIGKILL.
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let state = Rc::new(RefCell::new(State {
        connected: vec![0; args.urls.len()],
        ..State::default()
    }));
    let http: Vec<reqwest::Client> = (0..args.sources.max(1))
        .filter_map(|i| {
            reqwest::Client::builder()
                .no_proxy()
                .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i)))
                .pool_max_idle_per_host(0)
                .build()
                .ok()
        })
        .collect();
    if http.is_empty() {
        eprintln!("sse-cluster agent: no HTTP client could be built");
        return;
    }
    let gate = Arc::new(Semaphore::new(args.connecting.max(1)));
    let spawner = {
        let (state, args) = (state.clone(), args.clone());
        async move {
            for i in 0..args.clients {
                let g = args.first + i;
                let Ok(permit) = gate.clone().acquire_owned().await else {
                    return;
                };
                let gateway = g % args.urls.len();
                let h = http[g % http.len()].clone();
                let url = args.urls[gateway].clone();
                tokio::task::spawn_local(client(h, url, gateway, state.clone(), permit));
            }
        }
    };
    tokio::task::spawn_local(spawner);
    serve_questions(&state, args.clients).await;
}

/// Answers one JSON line per question line until stdin closes (the coordinator is done).
async fn serve_questions(state: &Rc<RefCell<State>>, clients: usize) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Ok(Some(line)) = lines.next_line().await {
        let text = format!("{}\n", answer(&state.borrow(), &line, clients));
        if out.write_all(text.as_bytes()).await.is_err() || out.flush().await.is_err() {
            return;
        }
    }
}

fn answer(s: &State, line: &str, clients: usize) -> serde_json::Value {
    let mut words = line.split_whitespace();
    let question = words.next();
    let seq = words
        .next()
        .and_then(|x| x.parse::<u64>().ok())
        .unwrap_or(0);
    match question {
        Some("status") => json!({
            "connected": s.connected,
            "dropped": s.dropped,
            "attached": s.settled >= clients,
        }),
        Some("count") => json!({
            "n": s.seen.get(&seq).map_or(0, Vec::len),
            "connected": s.connected,
            "reached": s.reached.get(&seq).copied().unwrap_or(0),
        }),
        Some("lat") => json!({ "lat_us": s.seen.get(&seq) }),
        _ => json!({ "error": format!("unknown question `{line}`") }),
    }
}

/// One SSE client: attach (holding a connect permit until the response head), then record the
/// latency of every stamped event until the stream ends. It does not reconnect: after a gateway
/// is killed its clients are counted as gone, since five gateways can't take 100,000 under the
/// open-file limit.
async fn client(
    http: reqwest::Client,
    url: String,
    gateway: usize,
    state: Rc<RefCell<State>>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let resp = http
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await;
    drop(permit);
    let streaming = resp.ok().filter(|r| {
        r.status() == 200
            && r.headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
    });
    let Some(resp) = streaming else {
        let mut s = state.borrow_mut();
        s.dropped += 1;
        s.settled += 1;
        return;
    };
    {
        let mut s = state.borrow_mut();
        s.connected[gateway] += 1;
        s.settled += 1;
    }
    let mut events = resp.bytes_stream().eventsource();
    while let Some(Ok(ev)) = events.next().await {
        let at = now_ns();
        // Scanned, not parsed: at 100,000 clients the load generator's CPU is on the
        // critical path of every change (it shares the two cores with the gateways).
        if let Some((seq, t)) = stamp_scan(&ev.data) {
            let lat = (at.saturating_sub(u128::from(t)) / 1000) as u64;
            let mut s = state.borrow_mut();
            s.seen.entry(seq).or_default().push(lat);
            *s.reached.entry(seq).or_default() |= 1 << (gateway % 64);
        }
    }
    let mut s = state.borrow_mut();
    s.connected[gateway] -= 1;
    s.dropped += 1;
}
