//! One load-generator process: a slice of the clients, spread over the gateways and over
//! loopback source addresses, answering the coordinator's questions on stdin/stdout.
//!
//! A process holds at most ~15,000 sockets (the open-file limit is 20,000 here), so the
//! coordinator starts several. Client `g` (its index over the whole run) joins gateway
//! `g % gateways` from 127.0.0.`2 + g % sources`: per source address the kernel hands out at
//! most one port of the ephemeral range per socket, so 100,000 clients need several addresses.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use serde_json::json;
use sse_loadgen::stamp::{now_ns, stamp_scan};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;

use crate::wire;

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
    let mut gateways = Vec::new();
    for url in &args.urls {
        match parse_url(url) {
            Some(g) => gateways.push(g),
            None => {
                eprintln!("sse-cluster agent: `{url}` is not http://IP:PORT/PATH");
                return;
            }
        }
    }
    let scratch = wire::scratch();
    let gate = Arc::new(Semaphore::new(args.connecting.max(1)));
    let sources = usize::from(args.sources.clamp(1, 250));
    let spawner = {
        let (state, args) = (state.clone(), args.clone());
        async move {
            for i in 0..args.clients {
                let g = args.first + i;
                let Ok(permit) = gate.clone().acquire_owned().await else {
                    return;
                };
                let gateway = g % gateways.len();
                let (to, path) = gateways[gateway].clone();
                let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (g % sources) as u8));
                let open = wire::open(source, to, path, scratch.clone());
                tokio::task::spawn_local(client(open, gateway, state.clone(), permit));
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

/// `http://IP:PORT/PATH` as (address, path).
fn parse_url(url: &str) -> Option<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://")?;
    let (addr, path) = rest.split_at(rest.find('/')?);
    Some((addr.parse().ok()?, path.to_string()))
}

/// One SSE client: attach (holding a connect permit until the response head), then record the
/// latency of every stamped event until the stream ends. It does not reconnect: after a gateway
/// is killed its clients are counted as gone, since five gateways can't take 100,000 under the
/// open-file limit.
async fn client(
    open: impl std::future::Future<Output = Option<wire::Stream>>,
    gateway: usize,
    state: Rc<RefCell<State>>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let stream = open.await;
    drop(permit);
    let Some(stream) = stream else {
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
    stream
        .events(|event| {
            let at = now_ns();
            // Scanned, not parsed: the stamps are plain numbers in a snapshot or a patch.
            let text = std::str::from_utf8(event).unwrap_or("");
            if let Some((seq, t)) = stamp_scan(text) {
                let lat = (at.saturating_sub(u128::from(t)) / 1000) as u64;
                let mut s = state.borrow_mut();
                s.seen.entry(seq).or_default().push(lat);
                *s.reached.entry(seq).or_default() |= 1 << (gateway % 64);
            }
        })
        .await;
    let mut s = state.borrow_mut();
    s.connected[gateway] -= 1;
    s.dropped += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_url_is_an_address_and_a_path() {
        let (addr, path) = parse_url("http://127.0.0.1:8080/sse/doc").unwrap();
        assert_eq!(addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(path, "/sse/doc");
        assert!(parse_url("http://localhost:8080/sse").is_none());
    }
}
