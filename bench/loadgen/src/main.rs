//! N SSE clients against one server: memory per idle client, fan-out latency of each change, and
//! the server's CPU per change. One thread, so it takes one of the machine's cores at most.
//! `--transport` picks HTTP/1.1, HTTP/1.1 over TLS or HTTP/2 (see `transport`); the same events
//! are timed the same way over each. `--handshakes` measures connection setup instead.
//!
//! Each change carries its send time (`t`, ns on CLOCK_MONOTONIC) and sequence (`seq`); a client
//! reads them from the snapshot, the patch ops or the published message, so one parser serves the
//! gateway and its peers alike.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{json, Value};
use sse_loadgen::handshakes;
use sse_loadgen::http1::{header, read_head};
use sse_loadgen::procfs::{cpu_ms, host_cpu_ms, memory, tree_cpu_ms};
use sse_loadgen::stamp::{now_ns, pct, stamp};
use sse_loadgen::transport::{Body, Connector, Options, Transport};
use tokio::io::AsyncWriteExt;

#[derive(Parser, Clone)]
struct Args {
    /// The SSE URL every client subscribes to.
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Loopback source addresses (127.0.0.1..=N), to stay under the ephemeral port range.
    #[arg(long, default_value_t = 8)]
    sources: u8,
    #[arg(long, default_value_t = 5)]
    changes: u64,
    /// Bytes of padding in each message.
    #[arg(long, default_value_t = 1000)]
    size: usize,
    /// Serve the document here (gateway mode): the gateway polls it.
    #[arg(long)]
    upstream: Option<SocketAddr>,
    /// POSTed after each change in gateway mode (`/streams/refresh?path=...` on the admin port).
    #[arg(long)]
    refresh: Option<String>,
    /// POST each message here instead (nchan, Pushpin, Node).
    #[arg(long)]
    publish: Option<String>,
    /// `raw` posts the message itself (nchan, Node); `pushpin` wraps it in a GRIP publish item.
    #[arg(long, default_value = "raw")]
    publish_format: String,
    /// The server's PID, for memory and CPU (its whole process tree).
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// Polled mode (the Streamdata scenario): the upstream serves a new version of each
    /// document on every GET, with this share of its items changed; the gateway's own polling
    /// drives the changes and latency counts from the moment the upstream served a version.
    #[arg(long)]
    change_ratio: Option<f64>,
    /// Polled mode: documents (stream instances); client i subscribes to `{i}` = i % streams
    /// in `url` and the upstream serves `/doc/{i}`.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Polled mode: seconds to measure after all clients are attached.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// How clients reach the server: `tls`, `h2` and `h2mux` need an https URL and `--ca`.
    #[arg(long, value_enum, default_value_t = Transport::H1)]
    transport: Transport,
    /// PEM certificates to trust (TLS transports): the server's self-signed one.
    #[arg(long)]
    ca: Option<String>,
    /// h2mux: clients (streams) per HTTP/2 connection; N clients take N / K connections.
    #[arg(long, default_value_t = 100)]
    streams_per_conn: usize,
    /// TLS transports: connections in setup (handshake to response head) at once.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Instead of clients: open fresh connections for this many seconds, each closed after its
    /// handshake and response head, and report handshakes per second.
    #[arg(long)]
    handshakes: Option<f64>,
    /// Handshake mode: connections at once (about twice the cores: enough to keep the server
    /// busy, few enough that it measures the server and not a queue).
    #[arg(long, default_value_t = 8)]
    handshake_in_flight: usize,
}

fn message(seq: u64, size: usize) -> Value {
    json!({ "seq": seq, "t": now_ns() as u64, "pad": "x".repeat(size) })
}

/// A document of about `size` bytes: `items` of ~100 bytes each, a share of them rewritten
/// per version, and the version's `seq` and serve time `t`.
struct PolledDoc {
    items: Vec<String>,
    /// The current version, as served.
    body: String,
    seq: u64,
    rng: u64,
}

impl PolledDoc {
    fn new(size: usize, seed: u64) -> PolledDoc {
        let mut d = PolledDoc {
            items: Vec::new(),
            body: String::new(),
            seq: 0,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        };
        d.items = (0..(size / 100).max(1)).map(|_| d.word()).collect();
        d
    }

    fn word(&mut self) -> String {
        (0..64)
            .map(|_| {
                // xorshift64: the loadgen needs variety, not quality.
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                char::from(b'a' + (self.rng % 26) as u8)
            })
            .collect()
    }

    /// The next version's body, stamped now; `None` when nothing changes (ratio 0), so the
    /// upstream can answer a conditional GET with 304.
    fn next(&mut self, ratio: f64) -> Option<String> {
        let n = self.items.len();
        let changed = ((n as f64 * ratio).round() as usize).min(n);
        if changed == 0 && self.seq > 0 {
            return None;
        }
        for _ in 0..changed {
            let i = (self.rng % n as u64) as usize;
            self.items[i] = self.word();
        }
        self.seq += 1;
        let items: Vec<Value> = self
            .items
            .iter()
            .enumerate()
            .map(|(i, w)| json!({ "id": i, "name": w, "qty": w.len() }))
            .collect();
        let body = json!({ "seq": self.seq, "t": now_ns() as u64, "items": items }).to_string();
        self.body = body.clone();
        Some(body)
    }
}

struct Shared {
    /// seq -> receive latencies in µs.
    seen: HashMap<u64, Vec<u64>>,
    connected: usize,
    dropped: usize,
    doc: Value,
    upstream_requests: u64,
    upstream_bytes: u64,
    upstream_not_modified: u64,
    /// Size of the last whole (200) response, head included.
    full_response_bytes: u64,
    /// Polled mode: one document per stream, a new version on every GET.
    polled: Vec<PolledDoc>,
    change_ratio: f64,
    /// Polled mode: latencies (µs) of every event received while measuring.
    window: Option<Vec<u64>>,
    /// Polled mode: (stream, seq) -> latency (µs) of the first client to receive it.
    first: HashMap<(usize, u64), u64>,
}

async fn serve_upstream(addr: SocketAddr, shared: Rc<RefCell<Shared>>) {
    let Ok(listener) = tokio::net::TcpListener::bind(addr).await else {
        eprintln!("cannot bind the upstream on {addr}");
        return;
    };
    while let Ok((mut sock, _)) = listener.accept().await {
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            let mut buf = Vec::with_capacity(8192);
            loop {
                let Some(head) = read_head(&mut sock, &mut buf).await else {
                    return;
                };
                let req = String::from_utf8_lossy(&head);
                let (body, etag) = {
                    let mut s = shared.borrow_mut();
                    if s.polled.is_empty() {
                        (s.doc.to_string(), format!("\"{}\"", s.doc["seq"]))
                    } else {
                        // GET /doc/{i} HTTP/1.1
                        let i = req
                            .split_whitespace()
                            .nth(1)
                            .and_then(|p| p.rsplit('/').next())
                            .and_then(|i| i.parse::<usize>().ok())
                            .unwrap_or(0)
                            % s.polled.len();
                        let ratio = s.change_ratio;
                        let doc = &mut s.polled[i];
                        let body = doc.next(ratio).unwrap_or_else(|| doc.body.clone());
                        (body, format!("\"{i}-{}\"", doc.seq))
                    }
                };
                let not_modified = header(&req, "if-none-match") == Some(etag.as_str());
                let resp = if not_modified {
                    format!(
                        "HTTP/1.1 304 Not Modified\r\netag: {etag}\r\ncontent-length: 0\r\n\r\n"
                    )
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\netag: {etag}\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                };
                {
                    let mut s = shared.borrow_mut();
                    s.upstream_requests += 1;
                    s.upstream_not_modified += u64::from(not_modified);
                    if !not_modified {
                        s.full_response_bytes = resp.len() as u64;
                    }
                    s.upstream_bytes += resp.len() as u64;
                }
                if sock.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn client(
    connector: Rc<Connector>,
    i: usize,
    url: String,
    stream: usize,
    shared: Rc<RefCell<Shared>>,
) {
    let body: Body = match connector.subscribe(i, &url).await {
        Ok(body) => body,
        Err(e) => {
            let mut s = shared.borrow_mut();
            if s.dropped == 0 {
                eprintln!("sse-loadgen: a client failed: {e:?}");
            }
            s.dropped += 1;
            return;
        }
    };
    shared.borrow_mut().connected += 1;
    let mut events = body.map(Ok::<_, Infallible>).eventsource();
    while let Some(ev) = events.next().await {
        let Ok(ev) = ev else { break };
        let at = now_ns();
        if let Some((seq, t)) = stamp(&ev.data) {
            let lat = (at.saturating_sub(t as u128) / 1000) as u64;
            let mut s = shared.borrow_mut();
            match s.window.as_mut() {
                Some(window) => {
                    window.push(lat);
                    // The first client of a change to get it: what the server path took.
                    let first = s.first.entry((stream, seq)).or_insert(lat);
                    *first = (*first).min(lat);
                }
                None => s.seen.entry(seq).or_default().push(lat),
            }
        }
    }
    let mut s = shared.borrow_mut();
    s.connected -= 1;
    s.dropped += 1;
}

async fn run(args: Args) -> Value {
    let shared = Rc::new(RefCell::new(Shared {
        seen: HashMap::new(),
        connected: 0,
        dropped: 0,
        doc: message(0, args.size),
        upstream_requests: 0,
        upstream_bytes: 0,
        upstream_not_modified: 0,
        full_response_bytes: 0,
        polled: match args.change_ratio {
            Some(_) => (0..args.streams.max(1))
                .map(|i| PolledDoc::new(args.size, i as u64 + 1))
                .collect(),
            None => Vec::new(),
        },
        change_ratio: args.change_ratio.unwrap_or(0.0),
        window: None,
        first: HashMap::new(),
    }));
    if let Some(addr) = args.upstream {
        tokio::task::spawn_local(serve_upstream(addr, shared.clone()));
    }
    let pid = args.pid;
    let connector = match Connector::new(&Options {
        transport: args.transport,
        url: &args.url,
        ca: args.ca.as_deref(),
        sources: args.sources,
        clients: args.clients,
        streams_per_conn: args.streams_per_conn,
        in_flight: args.in_flight,
    }) {
        Ok(c) => Rc::new(c),
        Err(e) => {
            eprintln!("sse-loadgen: {e:?}");
            std::process::exit(2);
        }
    };
    if let Some(seconds) = args.handshakes {
        let url = args.url.replace("{i}", "0");
        if let Some(publish) = &args.publish {
            // One stored message, which nchan sends every new subscriber as the gateway sends
            // its snapshot: both servers then answer each connection with a 1 KB document.
            if let Ok(p) = reqwest::Client::builder().no_proxy().build() {
                let _ = p
                    .post(publish)
                    .body(message(1, args.size).to_string())
                    .send()
                    .await;
            }
        }
        let mut report =
            handshakes::measure(&connector, &url, seconds, args.handshake_in_flight, pid).await;
        report["transport"] = json!(args.transport.name());
        return report;
    }
    let (pss0, rss0) = memory(pid);
    let started = Instant::now();
    for i in 0..args.clients {
        let stream = i % args.streams.max(1);
        let url = args.url.replace("{i}", &stream.to_string());
        tokio::task::spawn_local(client(connector.clone(), i, url, stream, shared.clone()));
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while shared.borrow().connected + shared.borrow().dropped < args.clients {
        if started.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let attach_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let (pss1, rss1) = memory(pid);
    let n = shared.borrow().connected.max(1) as f64;
    if args.change_ratio.is_some() {
        return polled(&args, &shared, attach_s, (pss1 as f64 - pss0 as f64) / n).await;
    }

    let publisher = reqwest::Client::builder().no_proxy().build().ok();
    let cpu0 = tree_cpu_ms(pid);
    let own0 = cpu_ms("self");
    let host0 = host_cpu_ms();
    let up0 = (
        shared.borrow().upstream_requests,
        shared.borrow().upstream_bytes,
    );
    let mut lat = Vec::new();
    let mut last = Vec::new();
    for seq in 1..=args.changes {
        let msg = message(seq, args.size);
        shared.borrow_mut().doc = msg.clone();
        if let (Some(p), Some(url)) = (&publisher, &args.publish) {
            let body = match args.publish_format.as_str() {
                "pushpin" => json!({ "items": [{
                    "channel": "bench",
                    "formats": { "http-stream": { "content": format!("data: {msg}\n\n") } }
                }]})
                .to_string(),
                _ => msg.to_string(),
            };
            let _ = p.post(url).body(body).send().await;
        }
        if let (Some(p), Some(url)) = (&publisher, &args.refresh) {
            let _ = p.post(url).send().await;
        }
        let t0 = Instant::now();
        loop {
            let got = shared.borrow().seen.get(&seq).map_or(0, Vec::len);
            if got >= shared.borrow().connected || t0.elapsed() > Duration::from_secs(10) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut v = shared.borrow().seen.get(&seq).cloned().unwrap_or_default();
        v.sort_unstable();
        last.push(pct(&v, 1.0));
        lat.extend(v);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu = tree_cpu_ms(pid) - cpu0;
    let own = cpu_ms("self") - own0;
    let other = (host_cpu_ms() - host0 - cpu - own).max(0.0);
    lat.sort_unstable();
    last.sort_by(f64::total_cmp);
    let s = shared.borrow();
    let received: usize = (1..=args.changes)
        .map(|q| s.seen.get(&q).map_or(0, Vec::len))
        .sum();
    json!({
        "clients": args.clients,
        "transport": args.transport.name(),
        "streams_per_conn": (args.transport == Transport::H2mux).then_some(args.streams_per_conn),
        "connected": s.connected,
        "dropped": s.dropped,
        "attach_s": attach_s,
        "pss_kb_per_client": (pss1 as f64 - pss0 as f64) / n,
        "rss_kb_per_client": (rss1 as f64 - rss0 as f64) / n,
        "pss_kb": [pss0, pss1],
        "latency_ms": { "p50": pct(&lat, 0.5), "p99": pct(&lat, 0.99), "max": pct(&lat, 1.0) },
        "last_client_ms_median": last.get(last.len() / 2).copied().unwrap_or(0.0),
        "events_missing": (args.changes as usize * s.connected).saturating_sub(received),
        "server_cpu_ms_per_change": cpu / args.changes.max(1) as f64,
        "loadgen_cpu_ms_per_change": own / args.changes.max(1) as f64,
        "host_other_cpu_ms_per_change": other / args.changes.max(1) as f64,
        "upstream_requests": s.upstream_requests - up0.0,
        "upstream_bytes": s.upstream_bytes - up0.1,
    })
}

/// Polled mode: for `duration` seconds, every event's latency from the upstream serving its
/// version, events per second, and what the upstream served.
async fn polled(args: &Args, shared: &Rc<RefCell<Shared>>, attach_s: f64, pss_kb: f64) -> Value {
    let pid = args.pid;
    let cpu0 = tree_cpu_ms(pid);
    let own0 = cpu_ms("self");
    let host0 = host_cpu_ms();
    let up0 = {
        let mut s = shared.borrow_mut();
        s.window = Some(Vec::new());
        (
            s.upstream_requests,
            s.upstream_bytes,
            s.upstream_not_modified,
        )
    };
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let secs = started.elapsed().as_secs_f64();
    let mut s = shared.borrow_mut();
    let mut lat = s.window.take().unwrap_or_default();
    let cpu = tree_cpu_ms(pid) - cpu0;
    let own = cpu_ms("self") - own0;
    let other = (host_cpu_ms() - host0 - cpu - own).max(0.0);
    lat.sort_unstable();
    let mut first: Vec<u64> = s.first.values().copied().collect();
    first.sort_unstable();
    let requests = s.upstream_requests - up0.0;
    json!({
        "scenario": "polled",
        "clients": args.clients,
        "streams": args.streams,
        "doc_bytes": args.size,
        "change_ratio": args.change_ratio,
        "connected": s.connected,
        "dropped": s.dropped,
        "attach_s": attach_s,
        "pss_kb_per_client": pss_kb,
        "seconds": secs,
        "events": lat.len(),
        "events_per_s": lat.len() as f64 / secs,
        "latency_ms": { "p50": pct(&lat, 0.5), "p99": pct(&lat, 0.99), "max": pct(&lat, 1.0) },
        // Per change, its first client: the upstream-to-socket path without the fan-out.
        "first_client_ms": { "p50": pct(&first, 0.5), "p99": pct(&first, 0.99), "max": pct(&first, 1.0) },
        "server_cpu_pct": cpu / secs / 10.0,
        "loadgen_cpu_pct": own / secs / 10.0,
        "host_other_cpu_pct": other / secs / 10.0,
        "upstream_requests_per_s": requests as f64 / secs,
        "upstream_not_modified_per_s": (s.upstream_not_modified - up0.2) as f64 / secs,
        "upstream_bytes_per_s": (s.upstream_bytes - up0.1) as f64 / secs,
        // What the same clients would cost the upstream polling it themselves, once per
        // request the gateway made, each fetching the whole current document (head included).
        "self_polling_bytes_per_s": requests as f64 / secs * s.connected as f64
            * s.full_response_bytes as f64 / args.streams.max(1) as f64,
    })
}

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sse-loadgen: {e}");
            std::process::exit(1);
        }
    };
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&rt, run(args));
    println!("{report}");
}
