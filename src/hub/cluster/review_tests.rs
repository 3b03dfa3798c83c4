//! Review findings on the Lua scripts, each a promise the scripts do not keep yet, checked
//! against a real `redis-server` on a free loopback port (skipped where none is installed).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::conn::Conn;
use super::counts::Counts;
use super::keys::Keys;
use super::scripts::Scripts;
use super::wire::{epoch_text, Joined, Renewed};
use crate::hub::StreamKey;
use crate::metrics::Metrics;

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Setup {
    _redis: Redis,
    conn: Conn,
    scripts: Scripts,
    keys: Keys,
}

async fn setup() -> Option<Setup> {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: redis-server is not installed");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let redis = Redis(child);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let counts = Arc::new(Counts::new(&Metrics::new().unwrap()).unwrap());
    let key = StreamKey {
        stream: Arc::from("/s"),
        target: "/s".into(),
        forwarded: vec![],
    };
    Some(Setup {
        conn: Conn::new(client, Duration::from_secs(2), counts),
        scripts: Scripts::new(),
        keys: Keys::new("t", None, &key),
        _redis: redis,
    })
}

/// What gateways pass as `history_ttl`: the smallest, so a test sees it run out.
const HISTORY_TTL_S: u64 = 1;
const LEASE_TTL_MS: u64 = 1000;

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    }
}

impl Setup {
    /// `JOIN` as the driver calls it; `lease` empty = only read. `have` = (epoch, seq) held.
    async fn join(&self, lease: &str, have: (u64, u64)) -> Joined {
        let mut call = self.scripts.join.prepare_invoke();
        call.key(&self.keys.meta)
            .key(&self.keys.log)
            .key(&self.keys.lease)
            .key(&self.keys.want_json_patch)
            .key(&self.keys.want_merge_patch)
            .arg(lease)
            .arg(LEASE_TTL_MS)
            .arg(epoch_text(rand::random::<u64>() & 0xffff_ffff_ffff))
            .arg(HISTORY_TTL_S)
            .arg(100)
            .arg("")
            .arg(epoch_text(have.0))
            .arg(have.1);
        Joined::parse(&self.conn.script(&call).await.unwrap()).unwrap()
    }

    async fn publish(&self, lease: &str, epoch: u64, seq: u64) -> String {
        let mut call = self.scripts.publish.prepare_invoke();
        call.key(&self.keys.meta)
            .key(&self.keys.log)
            .key(&self.keys.lease)
            .arg(lease)
            .arg(epoch_text(epoch))
            .arg(seq)
            .arg("data: the document\n\n")
            .arg("")
            .arg("")
            .arg(100)
            .arg(1 << 20)
            .arg(HISTORY_TTL_S)
            .arg(&self.keys.channel);
        text(&self.conn.script(&call).await.unwrap())
    }

    /// What the holder does between changes: renew every ttl/3, record every poll (a 304).
    async fn renew_and_poll(&self, lease: &str) {
        let mut renew = self.scripts.renew.prepare_invoke();
        renew
            .key(&self.keys.lease)
            .key(&self.keys.want_json_patch)
            .key(&self.keys.want_merge_patch)
            .arg(lease)
            .arg(LEASE_TTL_MS);
        let r = Renewed::parse(&self.conn.script(&renew).await.unwrap()).unwrap();
        assert!(r.held, "the holder keeps its lease throughout");
        let mut polled = self.scripts.polled.prepare_invoke();
        polled
            .key(&self.keys.meta)
            .key(&self.keys.lease)
            .arg(lease)
            .arg("\"v1\"")
            .arg("");
        self.conn.script(&polled).await.unwrap();
    }

    async fn ttl(&self, key: &str) -> i64 {
        let v = self.conn.cmd(redis::cmd("TTL").arg(key)).await.unwrap();
        match v {
            Value::Int(i) => i,
            other => panic!("TTL answered {other:?}"),
        }
    }
}

/// Finding 1: `history_ttl` counts from the last *change*, not the last poll. A document that
/// stays the same for `history_ttl` (24h by default) while its holder polls it and clients
/// watch it loses its epoch, document and log; the next follower `JOIN` mints an empty epoch,
/// so a gateway that starts following then has no snapshot to give, until the upstream changes.
#[tokio::test]
async fn an_instance_polled_without_changes_keeps_its_document_in_redis() {
    let Some(r) = setup().await else { return };
    let a = r.join("a:1", (0, 0)).await;
    assert!(a.held);
    assert_eq!(r.publish("a:1", a.epoch, 1).await, "OK");
    // Three times the history ttl of polls that find nothing new, the lease renewed throughout.
    for _ in 0..10 {
        r.renew_and_poll("a:1").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let b = r.join("", (0, 0)).await;
    assert_eq!(b.holder, "a:1", "a still holds the lease");
    assert_eq!(
        (b.epoch, b.seq, b.frames.len()),
        (a.epoch, 1, 1),
        "a cold follower finds the document the holder still polls"
    );
}

/// Finding 2: `JOIN` takes the lease with `SET NX` only, so a holder whose poller stopped
/// without releasing (a publish that timed out, `STALE`/`EPOCH`, local validity run out while
/// the renewal had in fact landed) is told it does not hold its own lease, and nobody polls
/// until that lease expires: a cadence gap of up to one lease ttl.
#[tokio::test]
async fn a_holder_that_joins_again_gets_its_own_lease_back() {
    let Some(r) = setup().await else { return };
    let first = r.join("a:1", (0, 0)).await;
    assert!(first.held);
    let again = r.join("a:1", (first.epoch, 0)).await;
    assert_eq!(again.holder, "a:1");
    assert!(again.held, "JOIN by the holder itself answers held = 0");
}

/// Finding 3: `STATUS` writes `st` into `meta` whether or not it exists; after `meta` expired
/// or `DENY` removed it, that makes a `meta` with no TTL (and no epoch), which stays forever if
/// no gateway `JOIN`s that instance again (instances keyed by per-user credentials).
#[tokio::test]
async fn a_status_write_never_leaves_a_key_without_a_ttl() {
    let Some(r) = setup().await else { return };
    let a = r.join("a:1", (0, 0)).await;
    assert!(a.held);
    r.conn
        .cmd(redis::cmd("DEL").arg(&r.keys.meta))
        .await
        .unwrap();
    let mut call = r.scripts.status.prepare_invoke();
    call.key(&r.keys.meta)
        .key(&r.keys.lease)
        .arg("a:1")
        .arg("1")
        .arg("event: upstream-status\ndata: {}\n\n")
        .arg(&r.keys.channel);
    assert_eq!(text(&r.conn.script(&call).await.unwrap()), "OK");
    let ttl = r.ttl(&r.keys.meta).await;
    assert!(ttl != -1, "meta left without a TTL (TTL answered {ttl})");
}
