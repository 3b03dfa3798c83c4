//! The Lua scripts against a real `redis-server` on a free loopback port: the fence, the epoch,
//! the bounds. (The whole cluster, three gateways and failures, is tests/it/cluster.rs.)

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::conn::Conn;
use super::counts::Counts;
use super::keys::Keys;
use super::scripts::Scripts;
use super::wire::{epoch_text, Joined};
use crate::hub::StreamKey;
use crate::metrics::Metrics;

pub(super) struct Redis {
    child: Child,
    pub port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `redis-server` is installed; says so when not. Under `CI` a missing one fails.
pub(super) fn installed() -> bool {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "redis-server is not installed"
    );
    eprintln!("skipped: redis-server is not installed");
    false
}

pub(super) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A fresh `redis-server` on `port`, answering.
pub(super) async fn redis_on(port: u16) -> Redis {
    let mut child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Redis { child, port };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server did not start");
}

async fn redis() -> Option<Redis> {
    if !installed() {
        return None;
    }
    Some(redis_on(free_port()).await)
}

struct Setup {
    _redis: Redis,
    conn: Conn,
    scripts: Scripts,
    keys: Keys,
}

async fn setup() -> Option<Setup> {
    let redis = redis().await?;
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", redis.port)).unwrap();
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

impl Setup {
    async fn join(&self, lease: &str, ttl_ms: u64) -> Joined {
        let mut call = self.scripts.join.prepare_invoke();
        call.key(&self.keys.meta)
            .key(&self.keys.log)
            .key(&self.keys.lease)
            .key(&self.keys.want_json_patch)
            .key(&self.keys.want_merge_patch)
            .arg(lease)
            .arg(ttl_ms)
            .arg(epoch_text(0xabc))
            .arg(3600)
            .arg(100)
            .arg("")
            .arg("")
            .arg(0);
        Joined::parse(&self.conn.script(&call).await.unwrap()).unwrap()
    }

    /// Publishes `seq` with a snapshot of `size` bytes; returns the script's answer.
    async fn publish(
        &self,
        lease: &str,
        epoch: u64,
        seq: u64,
        size: usize,
        replay: usize,
        bytes: usize,
    ) -> String {
        let mut call = self.scripts.publish.prepare_invoke();
        call.key(&self.keys.meta)
            .key(&self.keys.log)
            .key(&self.keys.lease)
            .arg(lease)
            .arg(epoch_text(epoch))
            .arg(seq)
            .arg("s".repeat(size))
            .arg("")
            .arg("")
            .arg(replay)
            .arg(bytes)
            .arg(3600)
            .arg(&self.keys.channel);
        match self.conn.script(&call).await.unwrap() {
            Value::BulkString(b) => String::from_utf8(b).unwrap(),
            other => format!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn only_the_lease_holder_publishes_and_only_the_next_sequence() {
    let Some(r) = setup().await else { return };
    let a = r.join("a:1", 300).await;
    assert!(a.held && a.holder == "a:1");
    assert_eq!(
        (a.epoch, a.seq),
        (0xabc, 0),
        "the first JOIN makes the epoch"
    );
    let b = r.join("b:2", 300).await;
    assert!(!b.held && b.holder == "a:1", "one holder at a time");
    assert_eq!(
        r.publish("b:2", 0xabc, 1, 10, 8, 1 << 20).await,
        "NOTHOLDER"
    );
    assert_eq!(r.publish("a:1", 0xabc, 2, 10, 8, 1 << 20).await, "STALE");
    assert_eq!(r.publish("a:1", 0xdef, 1, 10, 8, 1 << 20).await, "EPOCH");
    assert_eq!(r.publish("a:1", 0xabc, 1, 10, 8, 1 << 20).await, "OK");
    assert_eq!(
        r.publish("a:1", 0xabc, 1, 10, 8, 1 << 20).await,
        "STALE",
        "never two payloads for one id"
    );
    // A holder paused past its lease wakes to find it gone: its late publish is refused.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        r.publish("a:1", 0xabc, 2, 10, 8, 1 << 20).await,
        "NOTHOLDER"
    );
    let b = r.join("b:2", 300).await;
    assert!(b.held);
    assert_eq!(b.seq, 1);
    assert_eq!(r.publish("b:2", 0xabc, 2, 10, 8, 1 << 20).await, "OK");
}

#[tokio::test]
async fn the_log_keeps_replay_frames_within_replay_bytes_and_always_the_last() {
    let Some(r) = setup().await else { return };
    r.join("a:1", 10_000).await;
    for seq in 1..=10 {
        assert_eq!(r.publish("a:1", 0xabc, seq, 100, 4, 1 << 20).await, "OK");
    }
    let seqs = |j: &Joined| j.frames.iter().map(|f| f.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&r.join("", 10_000).await), [7, 8, 9, 10], "replay: 4");
    // 250 bytes hold two frames of 100.
    for seq in 11..=13 {
        assert_eq!(r.publish("a:1", 0xabc, seq, 100, 4, 250).await, "OK");
    }
    assert_eq!(seqs(&r.join("", 10_000).await), [12, 13]);
    // One frame larger than the bound is still kept: it is the current document.
    assert_eq!(r.publish("a:1", 0xabc, 14, 1000, 4, 250).await, "OK");
    let j = r.join("", 10_000).await;
    assert_eq!(seqs(&j), [14]);
    assert_eq!(j.frames[0].snapshot.len(), 1000);
}

#[tokio::test]
async fn an_epoch_lives_only_on_the_redis_that_made_it() {
    let Some(r) = setup().await else { return };
    r.join("a:1", 10_000).await;
    assert_eq!(r.publish("a:1", 0xabc, 1, 10, 8, 1 << 20).await, "OK");
    // As after a restart from a dump, or a failover: the same data, another Redis process.
    let mut cmd = redis::cmd("HSET");
    cmd.arg(&r.keys.meta).arg("rid").arg("another-run");
    r.conn.cmd(&cmd).await.unwrap();
    assert_eq!(r.publish("a:1", 0xabc, 2, 10, 8, 1 << 20).await, "EPOCH");
    let mut call = r.scripts.join.prepare_invoke();
    call.key(&r.keys.meta)
        .key(&r.keys.log)
        .key(&r.keys.lease)
        .key(&r.keys.want_json_patch)
        .key(&r.keys.want_merge_patch)
        .arg("")
        .arg(10_000)
        .arg(epoch_text(0x123))
        .arg(3600)
        .arg(100)
        .arg("")
        .arg(epoch_text(0xabc))
        .arg(1);
    let j = Joined::parse(&r.conn.script(&call).await.unwrap()).unwrap();
    assert_eq!(
        (j.epoch, j.seq),
        (0x123, 0),
        "a new epoch, from the candidate"
    );
    assert!(j.frames.is_empty(), "and the old log is gone");
}

#[tokio::test]
async fn a_log_lost_while_its_meta_stayed_starts_a_new_epoch() {
    let Some(r) = setup().await else { return };
    r.join("a:1", 10_000).await;
    assert_eq!(r.publish("a:1", 0xabc, 1, 10, 8, 1 << 20).await, "OK");
    // Evicted under memory pressure: nobody could continue from a meta without its frames.
    let mut cmd = redis::cmd("DEL");
    cmd.arg(&r.keys.log);
    r.conn.cmd(&cmd).await.unwrap();
    let j = r.join("b:2", 10_000).await;
    assert_eq!(j.seq, 0, "the epoch starts over");
    assert!(j.frames.is_empty());
    assert!(j.held, "and the old holder's lease went with the old epoch");
    assert_eq!(
        r.publish("a:1", 0xabc, 2, 10, 8, 1 << 20).await,
        "NOTHOLDER"
    );
}
