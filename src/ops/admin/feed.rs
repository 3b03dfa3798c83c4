//! The admin listener's event streams. `/streams?watch` is the stream list as one live document:
//! a snapshot, then a JSON Patch whenever it changes, each id ending with the checksum of the
//! document it leaves, so the console's `LiveDocument` verifies and heals it like any stream.
//! `/streams/tail?instance=` is one instance's own events, as its clients get them.

use std::time::Duration;

use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use rand::Rng;
use serde_json::{json, Value};

use crate::codec::{checksum, sse};
use crate::hub::{ByteCounts, Delivery, EventId, Hub, InstanceInfo, LastEventId, Subscription};

/// How often the list is read: a client count or a poll shows within this.
const TICK: Duration = Duration::from_secs(1);
/// A comment this often keeps proxies and the browser from timing an idle feed out.
const HEARTBEAT_TICKS: u32 = 15;
/// A console that stops reading is dropped after this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `GET /streams` answers and the feed follows: instances in a stable order, so a change
/// patches one entry, with totals for the console's header.
pub(super) fn document(hub: &dyn Hub) -> Value {
    let mut list: Vec<InstanceInfo> = hub.instances();
    list.sort_by(|a, b| (&a.stream, &a.instance).cmp(&(&b.stream, &b.instance)));
    let mut bytes = ByteCounts::default();
    for i in &list {
        bytes.add(&i.bytes);
    }
    let clients: usize = list.iter().map(|i| i.clients).sum();
    json!({
        "instances": list,
        "cluster": hub.cluster_state(),
        "totals": {
            "instances": list.len(),
            "clients": clients,
            "upstream": bytes.upstream,
            "polling_equivalent": bytes.polling_equivalent,
            "pushed": bytes.pushed,
            "saved": bytes.saved,
        },
    })
}

/// A 200 `text/event-stream` head, chunked (pingora would otherwise close-delimit the body).
async fn open(session: &mut ServerSession) -> pingora::Result<()> {
    session.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut head = ResponseHeader::build(200, Some(5))?;
    head.insert_header(header::CONTENT_TYPE, "text/event-stream")?;
    head.insert_header(header::CACHE_CONTROL, "no-store")?;
    head.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    head.insert_header("cross-origin-resource-policy", "same-origin")?;
    session.write_response_header(Box::new(head)).await
}

/// Follows the stream list until the console leaves or the gateway stops.
pub(super) async fn watch(
    session: &mut ServerSession,
    hub: &dyn Hub,
    shutdown: &ShutdownWatch,
) -> pingora::Result<()> {
    open(session).await?;
    // Each connection numbers its own document: a console that reconnects starts afresh.
    let epoch = rand::rng().random_range(0..1u64 << 48);
    let mut seq = 1u64;
    let mut doc = document(hub);
    let first = event("snapshot", epoch, seq, &doc, &doc.to_string());
    session
        .write_response_body(sse::with_retry(Duration::from_secs(1), &[first]), false)
        .await?;
    let mut shutdown = shutdown.clone();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quiet = 0u32;
    loop {
        tokio::select! {
            _ = session.read_body_or_idle(true) => return Ok(()),
            _ = shutdown.changed() => return goodbye(session).await,
            _ = tick.tick() => {}
        }
        let next = document(hub);
        let out = if next == doc {
            quiet += 1;
            if quiet < HEARTBEAT_TICKS {
                continue;
            }
            Bytes::from_static(sse::HEARTBEAT)
        } else {
            let patch = json_patch::diff(&doc, &next);
            seq += 1;
            let data = serde_json::to_string(&patch).unwrap_or_else(|_| "[]".into());
            doc = next;
            event("patch", epoch, seq, &doc, &data)
        };
        quiet = 0;
        session.write_response_body(out, false).await?;
    }
}

/// One instance's events, from its current document on, until it ends, the console leaves or
/// the gateway stops.
pub(super) async fn tail(
    session: &mut ServerSession,
    mut sub: Subscription,
    shutdown: &ShutdownWatch,
) -> pingora::Result<()> {
    open(session).await?;
    let start = sub.take_start();
    session
        .write_response_body(sse::with_retry(Duration::from_secs(1), &start), false)
        .await?;
    let mut shutdown = shutdown.clone();
    loop {
        let delivery = tokio::select! {
            _ = session.read_body_or_idle(true) => return Ok(()),
            _ = shutdown.changed() => return goodbye(session).await,
            d = sub.next() => d,
        };
        match delivery {
            Delivery::Send(bytes) => session.write_response_body(bytes, false).await?,
            Delivery::Close(last) => {
                session.write_response_body(last, false).await?;
                return session.write_response_body(Bytes::new(), true).await;
            }
        }
    }
}

async fn goodbye(session: &mut ServerSession) -> pingora::Result<()> {
    let end = sse::Event::new("end")
        .data(r#"{"reason":"gateway stopping","reconnect":true}"#)
        .encode();
    session.write_response_body(end, false).await?;
    session.write_response_body(Bytes::new(), true).await
}

/// An event of the feed: its id is `<epoch>-<seq>-<checksum of doc>`, as every stream's.
fn event(name: &str, epoch: u64, seq: u64, doc: &Value, data: &str) -> Bytes {
    let id = LastEventId {
        at: EventId { epoch, seq },
        checksum: checksum::of_json(doc),
    };
    sse::event(Some(name), Some(&id.to_string()), data)
}
