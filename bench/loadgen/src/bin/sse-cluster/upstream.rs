//! The upstream every gateway polls: one document, changed by the coordinator, and a count of
//! the requests it got from each gateway (each sends its node name in `x-bench-node`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;

use serde_json::{json, Value};
use sse_loadgen::http1::{header, read_head};
use sse_loadgen::stamp::now_ns;
use tokio::io::AsyncWriteExt;

#[derive(Default)]
pub struct Upstream {
    seq: u64,
    body: String,
    size: usize,
    pub requests: u64,
    pub not_modified: u64,
    pub by_node: BTreeMap<String, u64>,
    /// When each request came, in ns on CLOCK_MONOTONIC.
    pub times: Vec<u128>,
}

/// Counts at one moment, to subtract.
#[derive(Clone)]
pub struct Counts {
    pub requests: u64,
    pub not_modified: u64,
    pub by_node: BTreeMap<String, u64>,
    pub times: Vec<u128>,
}

impl Counts {
    /// Requests per `interval` seconds since `before`, from the span between the first and last
    /// of them: counting a window's requests would be off by one at either edge.
    pub fn per_interval(&self, before: &Counts, interval: f64) -> Option<f64> {
        let times = self.times.get(before.times.len()..)?;
        let (first, last) = (times.first()?, times.last()?);
        let span = (last - first) as f64 / 1e9;
        (times.len() >= 2 && span > 0.0).then(|| (times.len() - 1) as f64 * interval / span)
    }

    /// What happened since `before`, as JSON.
    pub fn since(&self, before: &Counts) -> Value {
        let by_node: BTreeMap<&String, u64> = self
            .by_node
            .iter()
            .map(|(k, v)| (k, v - before.by_node.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        json!({
            "requests": self.requests - before.requests,
            "not_modified": self.not_modified - before.not_modified,
            "by_node": by_node,
        })
    }
}

impl Upstream {
    pub fn new(size: usize) -> Rc<RefCell<Upstream>> {
        let mut u = Upstream {
            size,
            ..Upstream::default()
        };
        u.change(0);
        Rc::new(RefCell::new(u))
    }

    /// Serves version `seq`, stamped now: a ~`size`-byte document whose padding is rewritten
    /// on every change, so each change is a patch of about `size` bytes, not just the stamps.
    pub fn change(&mut self, seq: u64) {
        let letter = char::from(b'a' + (seq % 26) as u8);
        let pad: String = std::iter::repeat_n(letter, self.size).collect();
        self.seq = seq;
        self.body = json!({ "seq": seq, "t": now_ns() as u64, "pad": pad }).to_string();
    }

    pub fn counts(&self) -> Counts {
        Counts {
            requests: self.requests,
            not_modified: self.not_modified,
            by_node: self.by_node.clone(),
            times: self.times.clone(),
        }
    }
}

pub async fn serve(addr: SocketAddr, up: Rc<RefCell<Upstream>>) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sse-cluster: cannot bind the upstream on {addr}: {e}");
            return;
        }
    };
    while let Ok((mut sock, _)) = listener.accept().await {
        let up = up.clone();
        tokio::task::spawn_local(async move {
            let mut buf = Vec::with_capacity(8192);
            while let Some(head) = read_head(&mut sock, &mut buf).await {
                let req = String::from_utf8_lossy(&head);
                let resp = answer(&mut up.borrow_mut(), &req);
                if sock.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The response to one GET (any path: the document), counted.
fn answer(up: &mut Upstream, req: &str) -> String {
    let etag = format!("\"{}\"", up.seq);
    let not_modified = header(req, "if-none-match") == Some(etag.as_str());
    let node = header(req, "x-bench-node").unwrap_or("?").to_string();
    up.requests += 1;
    up.times.push(now_ns());
    up.not_modified += u64::from(not_modified);
    *up.by_node.entry(node).or_default() += 1;
    if not_modified {
        format!("HTTP/1.1 304 Not Modified\r\netag: {etag}\r\ncontent-length: 0\r\n\r\n")
    } else {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\netag: {etag}\r\ncontent-length: {}\r\n\r\n{}",
            up.body.len(),
            up.body
        )
    }
}
