//! What a review found the scripts and the driver did wrong, each now a promise they keep,
//! checked against a real `redis-server` on a free loopback port.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::conn::Conn;
use super::counts::Counts;
use super::keys::Keys;
use super::scripts::Scripts;
use super::tests::{free_port, installed, redis_on, Redis};
use super::wire::{epoch_text, Joined, Renewed};
use super::{Cluster, Driver};
use crate::config;
use crate::hub::script::{body, Script};
use crate::hub::topic::Topic;
use crate::hub::{fixtures, StreamKey};
use crate::metrics::Metrics;

struct Setup {
    _redis: Redis,
    port: u16,
    conn: Conn,
    scripts: Scripts,
    keys: Keys,
}

async fn setup() -> Option<Setup> {
    if !installed() {
        return None;
    }
    Some(setup_on(free_port()).await)
}

/// A `redis-server` on `port`, and what the tests call it with.
async fn setup_on(port: u16) -> Setup {
    let redis = redis_on(port).await;
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let counts = Arc::new(Counts::new(&Metrics::new().unwrap()).unwrap());
    Setup {
        conn: Conn::new(client, Duration::from_secs(2), counts),
        scripts: Scripts::new(),
        keys: Keys::new("t", None, &key()),
        _redis: redis,
        port,
    }
}

/// The instance every test here names: `/s` with no forwarded headers.
fn key() -> StreamKey {
    StreamKey {
        stream: Arc::from("/s"),
        target: "/s".into(),
        forwarded: vec![],
    }
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
        self.publish_doc(lease, epoch, seq, "data: the document\n\n")
            .await
    }

    async fn publish_doc(&self, lease: &str, epoch: u64, seq: u64, snapshot: &str) -> String {
        let mut call = self.scripts.publish.prepare_invoke();
        call.key(&self.keys.meta)
            .key(&self.keys.log)
            .key(&self.keys.lease)
            .arg(lease)
            .arg(epoch_text(epoch))
            .arg(seq)
            .arg(snapshot)
            .arg("")
            .arg("")
            .arg(100)
            .arg(1 << 20)
            .arg(HISTORY_TTL_S)
            .arg(&self.keys.channel);
        text(&self.conn.script(&call).await.unwrap())
    }

    /// What the holder does between changes: renew every ttl/3, record every poll (a 304).
    async fn renew_and_poll(&self, lease: &str, epoch: u64) {
        let mut renew = self.scripts.renew.prepare_invoke();
        renew
            .key(&self.keys.lease)
            .key(&self.keys.want_json_patch)
            .key(&self.keys.want_merge_patch)
            .key(&self.keys.meta)
            .key(&self.keys.log)
            .arg(lease)
            .arg(LEASE_TTL_MS)
            .arg(epoch_text(epoch))
            .arg(HISTORY_TTL_S);
        let r = Renewed::parse(&self.conn.script(&renew).await.unwrap()).unwrap();
        assert!(r.held, "the holder keeps its lease throughout");
        let mut polled = self.scripts.polled.prepare_invoke();
        polled
            .key(&self.keys.meta)
            .key(&self.keys.lease)
            .arg(lease)
            .arg("\"v1\"")
            .arg("")
            .arg(epoch_text(epoch));
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
        r.renew_and_poll("a:1", a.epoch).await;
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
    // Refused: the epoch is gone, and no key without a TTL is made.
    assert_eq!(text(&r.conn.script(&call).await.unwrap()), "EPOCH");
    let ttl = r.ttl(&r.keys.meta).await;
    assert_eq!(ttl, -2, "no meta left behind (TTL answered {ttl})");
}

/// This gateway ("a") in a cluster on `port`, with one stream instance to drive.
fn driver(port: u16, lease_ttl: Duration, source: Arc<Script>) -> (Driver, Arc<Topic>) {
    let spec = config::Cluster {
        redis: url::Url::parse(&format!("redis://127.0.0.1:{port}/0")).unwrap(),
        prefix: "t".into(),
        node_id: "a".into(),
        key_secret: None,
        lease_ttl: Some(lease_ttl),
        timeout: Duration::from_millis(200),
        on_redis_down: config::OnRedisDown::Local,
        history_ttl: Duration::from_secs(3600),
    };
    let metrics = Arc::new(Metrics::new().unwrap());
    let cluster = Arc::new(Cluster::start(Arc::new(spec), &metrics).unwrap());
    let topic = Arc::new(Topic::new(fixtures::spec(""), key(), "/s".into(), metrics));
    let driver = Driver {
        cluster,
        topic: topic.clone(),
        source,
        first_delay: Duration::ZERO,
    };
    (driver, topic)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..250 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn shows(topic: &Topic, text: &str) -> bool {
    topic
        .current_snapshot()
        .is_some_and(|s| String::from_utf8_lossy(&s).contains(text))
}

fn role(topic: &Topic) -> Option<&'static str> {
    topic.cluster.lock().as_ref().map(|c| c.role)
}

impl Setup {
    /// Another gateway, "b", takes the lease for a minute and publishes `snapshot` as seq 1.
    async fn held_elsewhere(&self, snapshot: &str) -> u64 {
        let b = self.join("b:1", (0, 0)).await;
        assert!(b.held);
        let mut longer = redis::cmd("PEXPIRE");
        longer.arg(&self.keys.lease).arg(60_000);
        self.conn.cmd(&longer).await.unwrap();
        assert_eq!(self.publish_doc("b:1", b.epoch, 1, snapshot).await, "OK");
        b.epoch
    }
}

/// Finding 4: `catch_up` copies a failing status from Redis but never clears one Redis no
/// longer holds. A follower that missed the holder's `s 0` (feed reconnect, queue overflow), or
/// whose own local poller failed while Redis was down, keeps greeting every new client with
/// `upstream-status: failing` while the data flows.
#[tokio::test]
async fn a_follower_drops_a_failing_status_that_redis_no_longer_holds() {
    let Some(r) = setup().await else { return };
    let epoch = r.held_elsewhere("data: {}\n\n").await;
    let (driver, topic) = driver(r.port, Duration::from_secs(3), Script::new(|_| body("{}")));
    // The failing status arrived; the "healthy" after it was lost with the subscription.
    let failing = Bytes::from_static(b"event: upstream-status\ndata: {\"state\":\"failing\"}\n\n");
    topic.set_status(Some(failing.clone()), failing);
    let cancel = CancellationToken::new();
    let run = tokio::spawn(driver.run(cancel.clone()));
    until("the follower catches up", || {
        topic
            .current_id()
            .is_some_and(|id| (id.epoch, id.seq) == (epoch, 1))
    })
    .await;
    let still_failing = topic.failing();
    cancel.cancel();
    let _ = run.await;
    assert!(
        !still_failing,
        "Redis says healthy; the follower still says failing"
    );
}

/// Finding 3: back from polling alone (`on_redis_down: local`), `catch_up` publishes what the
/// cluster held before the outage as a fresh ring, so every client here goes back to that older
/// document (a snapshot) until the holder's next poll brings the current one again.
#[tokio::test]
async fn coming_back_from_polling_alone_never_shows_clients_an_older_document() {
    if !installed() {
        return;
    }
    let port = free_port();
    let source = Script::new(|_| body(r#"{"v":"new"}"#));
    let (driver, topic) = driver(port, Duration::from_secs(1), source);
    let cancel = CancellationToken::new();
    let run = tokio::spawn(driver.run(cancel.clone()));
    until("polling alone", || {
        role(&topic) == Some("local") && shows(&topic, "new")
    })
    .await;
    // Redis comes back holding the document from before the outage.
    let r = setup_on(port).await;
    r.held_elsewhere("data: {\"v\":\"old\"}\n\n").await;
    until("following again", || role(&topic) == Some("follower")).await;
    let went_back = shows(&topic, "old");
    cancel.cancel();
    let _ = run.await;
    assert!(!went_back, "clients were sent the pre-outage document");
}
