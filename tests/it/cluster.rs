//! Cluster mode: three gateways on one real Redis act as one system. One of them polls each
//! stream instance, every client on every gateway gets the same events under the same ids, a
//! browser resumes on any gateway, and a dead gateway or a failing Redis has a defined outcome.
//!
//! Every client is a `Recorder`, which checks each event as it arrives (ids in order, patches
//! that rebuild the upstream's document, never two payloads for one id across the cluster).
//! Needs `redis-server` (see `support::Redis`). The tests take turns: three gateways and a Redis
//! are all two cores hold, and timings are what these tests measure.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio::sync::{Mutex, MutexGuard};

use crate::support::*;

mod failover;
mod redis_down;
mod resume;
mod sharing;
mod tls;

/// One cluster test at a time, across the whole test binary.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

const NODES: [&str; 3] = ["a", "b", "c"];
const PATH: &str = "/sse/doc";
const DOC: &str = "/doc";
const INTERVAL: Duration = Duration::from_millis(300);
/// `cluster.lease_ttl` as `Cfg::in_cluster` sets it.
const TTL: Duration = Duration::from_secs(1);

/// Version `n` of the upstream's document, padded so that a change costs less as a patch.
fn doc(n: u64) -> Value {
    padded(json!({"n": n}))
}

/// Three gateways (`a`, `b`, `c`) on one Redis, and the upstream they poll.
struct Cluster {
    up: Upstream,
    redis: Redis,
    /// `a`'s config; the others differ only in `node_id`.
    cfg: Cfg,
    /// This test's `cluster.prefix`.
    prefix: String,
    /// `None` once stopped or killed.
    gws: Vec<Option<Gateway>>,
    /// Stopped or killed gateways, kept so a failure can show what they logged.
    gone: Vec<(usize, Gateway)>,
    ledger: Ledger,
    /// The version the upstream serves.
    n: u64,
    _turn: MutexGuard<'static, ()>,
}

/// `/sse/doc` polling `/doc` every 300 ms, in a cluster, changed by `tweak`; `None` without
/// `redis-server`.
async fn cluster(tweak: impl FnOnce(Cfg) -> Cfg) -> Option<Cluster> {
    let up = Upstream::json(DOC, doc(0)).await;
    Cluster::on(up, |up| {
        tweak(Cfg::new(up).stream(PATH, DOC).interval("300ms").idle("1m"))
    })
    .await
}

impl Cluster {
    /// Starts Redis and three gateways on `up` with `streams(up)` plus the cluster section.
    async fn on(up: Upstream, streams: impl FnOnce(&Upstream) -> Cfg) -> Option<Cluster> {
        let turn = ONE_AT_A_TIME.lock().await;
        let redis = Redis::start().await?;
        let prefix = format!("t-{:08x}", rand::random::<u32>());
        let cfg = streams(&up).threads(1).shutdown_grace("1s").in_cluster(
            &redis.url(),
            &prefix,
            NODES[0],
        );
        let ledger = Ledger::default();
        ledger.served(&doc(0));
        let mut c = Cluster {
            up,
            redis,
            cfg,
            prefix,
            gws: Vec::new(),
            gone: Vec::new(),
            ledger,
            n: 0,
            _turn: turn,
        };
        let gws = join_all((0..NODES.len()).map(|i| c.boot(i))).await;
        c.gws = gws.into_iter().map(Some).collect();
        Some(c)
    }

    /// Starts gateway `i` (it must not be running).
    fn boot(&self, i: usize) -> impl std::future::Future<Output = Gateway> {
        let cfg = self.cfg.clone().cluster_option("node_id", NODES[i]);
        async move { Gateway::start(&cfg).await }
    }

    /// Starts every gateway that is not running.
    async fn boot_missing(&mut self) {
        for i in 0..NODES.len() {
            if self.gws[i].is_none() {
                self.gws[i] = Some(self.boot(i).await);
            }
        }
    }

    /// Restarts gateway `i` reaching Redis at `redis` (e.g. through a `Proxy`).
    async fn reboot_via(&mut self, i: usize, redis: &str) {
        self.kill(i);
        let cfg = self
            .cfg
            .clone()
            .cluster_option("node_id", NODES[i])
            .cluster_option("redis", redis);
        self.gws[i] = Some(Gateway::start(&cfg).await);
    }

    fn gw(&self, i: usize) -> &Gateway {
        self.gws[i].as_ref().expect("a running gateway")
    }

    fn live(&self) -> impl Iterator<Item = (usize, &Gateway)> {
        self.gws
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.as_ref().map(|g| (i, g)))
    }

    /// A new client on gateway `i`, past its snapshot of the current document.
    async fn client(&self, i: usize, who: &str) -> Recorder {
        let mut r = Recorder::connect(self.gw(i), PATH, who, &self.ledger).await;
        r.snapshot(&doc(self.n)).await;
        r
    }

    /// One client on each gateway, named by it.
    async fn clients(&self) -> Vec<Recorder> {
        let mut all = Vec::new();
        for (i, node) in NODES.iter().enumerate() {
            all.push(self.client(i, node).await);
        }
        all
    }

    /// The upstream serves the next version; returns it.
    fn change(&mut self) -> Value {
        self.n += 1;
        let next = doc(self.n);
        self.ledger.served(&next);
        self.up.set(DOC, next.clone());
        next
    }

    /// SIGKILL gateway `i`.
    fn kill(&mut self, i: usize) {
        let gw = self.gws[i].take().expect("a running gateway");
        gw.signal("KILL");
        self.gone.push((i, gw));
    }

    /// SIGTERM gateway `i`; it finishes (releasing what it holds) in the background.
    fn terminate(&mut self, i: usize) {
        let gw = self.gws[i].take().expect("a running gateway");
        gw.signal("TERM");
        self.gone.push((i, gw));
    }

    /// Waits until every stopped gateway has exited.
    async fn wait_gone(&mut self) {
        for (_, gw) in &mut self.gone {
            gw.exit_status(Duration::from_secs(5)).await;
        }
    }

    /// Upstream requests for `path` that arrived between `from` and `to`.
    fn polls(&self, path: &str, from: Instant, to: Instant) -> usize {
        let arrivals = self.up.arrivals(path);
        arrivals.iter().filter(|t| **t >= from && **t <= to).count()
    }

    /// The `cluster` object of `/sse/doc`'s instance in gateway `gw`'s `/streams`.
    async fn state(gw: &Gateway) -> Option<Value> {
        let list: Value = http()
            .get(gw.admin_url("/streams"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let instances = list["instances"].as_array()?;
        let i = instances.iter().find(|i| i["stream"] == PATH)?;
        Some(i["cluster"].clone())
    }

    /// Waits until exactly one running gateway is the holder, the others followers, and all
    /// name the same holder; returns its index.
    async fn holder(&self) -> usize {
        eventually("one holder, named by every gateway", || async {
            let mut holders = Vec::new();
            let mut named = Vec::new();
            for (i, gw) in self.live() {
                let state = Cluster::state(gw).await?;
                match state["role"].as_str()? {
                    "holder" => holders.push(i),
                    "follower" => {}
                    _ => return None,
                }
                named.push(state["holder"].as_str()?.to_string());
            }
            let h = *holders.first()?;
            (holders.len() == 1 && named.iter().all(|n| n == NODES[h])).then_some(h)
        })
        .await
    }

    /// Each channel under this test's prefix with its subscriber count, and the pattern
    /// count: what the gateways subscribe to.
    async fn subscriptions(&self) -> (Vec<(String, String)>, String) {
        let pattern = format!("{}*", self.prefix);
        let mut list = Vec::new();
        if let redis::Value::Array(names) = self.redis.cmd(&["PUBSUB", "CHANNELS", &pattern]).await
        {
            for name in names {
                let name = redis_text(&name);
                let count = self.redis.cmd(&["PUBSUB", "NUMSUB", &name]).await;
                list.push((name, format!("{count:?}")));
            }
        }
        list.sort();
        let patterns = self.redis.cmd(&["PUBSUB", "NUMPAT"]).await;
        (list, format!("{patterns:?}"))
    }

    /// The sum of one metric sample over the running gateways.
    async fn metric_sum(&self, sample: &str) -> f64 {
        let mut sum = 0.0;
        for (_, gw) in self.live() {
            sum += gw.metric(sample).await.unwrap_or(0.0);
        }
        sum
    }
}

impl Drop for Cluster {
    /// On failure, shows what each gateway and Redis logged: that is where a cluster bug shows.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let all = self.live().chain(self.gone.iter().map(|(i, g)| (*i, g)));
        for (i, gw) in all {
            let log = gw.stderr();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- gateway {} (last 40 lines):\n{tail}", NODES[i]);
        }
        let log = self.redis.log();
        let noise = ["overcommit", "Configuration loaded", "version="];
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !noise.iter().any(|n| l.contains(n)))
            .collect();
        eprintln!("--- redis-server:\n{}", lines.join("\n"));
    }
}

/// Reads every client for `d` concurrently, failing if any gets a document event.
async fn all_quiet(clients: &mut [Recorder], d: Duration) {
    join_all(clients.iter_mut().map(|c| c.quiet(d))).await;
}

/// Each client reaches `doc`; returns what each received on the way.
async fn all_reach(clients: &mut [Recorder], doc: &Value) -> Vec<Vec<Seen>> {
    join_all(clients.iter_mut().map(|c| c.until(doc))).await
}

/// Whether each client got exactly one event on the way, a patch one past its previous id.
fn one_patch_each(got: &[Vec<Seen>], clients: &[Recorder]) {
    for (seen, c) in got.iter().zip(clients) {
        let docs: Vec<&Seen> = seen.iter().filter(|s| s.is_document()).collect();
        assert_eq!(docs.len(), 1, "{}: one event expected\n{}", c.who, c.log());
        assert_eq!(
            docs[0].event,
            "patch",
            "{}: a patch expected\n{}",
            c.who,
            c.log()
        );
    }
}
