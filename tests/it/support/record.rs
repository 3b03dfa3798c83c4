//! A recording checker for cluster tests. Every client's events are checked as they arrive against
//! what cluster mode promises a browser, whichever gateway it is connected to:
//! - an id is `<epoch: 12 hex digits>-<seq>-<checksum: 16 hex digits>`, its checksum is the one
//!   of the document the event builds (`SseClient` checks), and no id comes twice on one
//!   connection;
//! - the first event, and the first after an epoch changes, is a snapshot;
//! - within an epoch each id is the previous one plus one (a snapshot may skip ahead only where
//!   a test allows it, or as the first event of a resumed connection);
//! - every patch applies, and what it builds is a document the upstream served, never older
//!   than one the connection showed before;
//! - across all clients on all gateways, one `<epoch>-<seq>` (with one event name) never carries
//!   two payloads, and never stands for two documents.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use eventsource_stream::Event;
use serde_json::Value;

use super::{Gateway, SseClient, DEADLINE};

/// One event as a client received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub id: String,
    pub event: String,
    pub data: String,
}

impl Seen {
    /// A snapshot, patch or merge patch: an event that sets the document.
    pub fn is_document(&self) -> bool {
        matches!(self.event.as_str(), "snapshot" | "patch" | "merge-patch")
    }
}

/// What every client of one stream instance saw, on every gateway: shared by their recorders,
/// so that each event is compared with what the others got under the same id.
#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<Book>>);

#[derive(Default)]
struct Book {
    /// (id, event name) → the data, and the client that saw it first.
    payloads: HashMap<(String, String), (String, String)>,
    /// id → the document after it, and the client that saw it first.
    documents: HashMap<String, (Value, String)>,
    /// Every document the upstream served, in order; empty: not checked.
    served: Vec<Value>,
}

impl Ledger {
    /// Notes a document the upstream now serves (call before the clients can see it).
    pub fn served(&self, doc: &Value) {
        self.0.lock().expect("ledger").served.push(doc.clone());
    }

    /// Checks one event against what the others saw; returns which served version `doc` is.
    fn enter(&self, who: &str, seen: &Seen, doc: &Value) -> Option<usize> {
        let mut book = self.0.lock().expect("ledger");
        // By place, not by the whole id: two payloads at one `<epoch>-<seq>` have different
        // checksums, so their ids differ, and that is exactly what must never happen.
        let (epoch, seq) = parse_id(&seen.id).expect("a checked id");
        let place = format!("{epoch}-{seq}");
        let key = (place.clone(), seen.event.clone());
        let (data, first) = book
            .payloads
            .entry(key)
            .or_insert_with(|| (seen.data.clone(), who.to_string()));
        assert_eq!(
            *data, seen.data,
            "{who} and {first} got different payloads for {} {}",
            seen.event, seen.id
        );
        let (known, first) = book
            .documents
            .entry(place)
            .or_insert_with(|| (doc.clone(), who.to_string()));
        assert_eq!(
            known, doc,
            "{who} and {first} hold different documents at id {}",
            seen.id
        );
        let version = book.served.iter().position(|d| d == doc);
        assert!(
            book.served.is_empty() || version.is_some(),
            "{who} built a document the upstream never served at {} {}: {doc}",
            seen.event,
            seen.id
        );
        version
    }
}

/// `<12 hex digits>-<decimal>-<16 hex digits>` → (epoch, seq).
fn parse_id(id: &str) -> Option<(String, u64)> {
    let (epoch, seq, _) = super::id_parts(id)?;
    Some((epoch.to_string(), seq))
}

/// One client's connection, recorded and checked event by event.
pub struct Recorder {
    /// Names the client in failures, e.g. `b#2`.
    pub who: String,
    client: SseClient,
    ledger: Ledger,
    /// Everything this connection received, in order.
    pub seen: Vec<Seen>,
    /// Every document this connection showed, in order.
    pub shown: Vec<Value>,
    /// When each of `seen` arrived, to compare with the gateways' logs.
    arrived: Vec<SystemTime>,
    /// The newest served version shown so far (an index into `Ledger::served`).
    newest: Option<usize>,
    /// The last id applied: on this connection, or the one it resumed from.
    last: Option<(String, u64)>,
    /// No document event yet on this connection.
    fresh: bool,
    ids: HashSet<String>,
    gaps: bool,
}

impl Recorder {
    /// A new client of `path` on `gw`.
    pub async fn connect(gw: &Gateway, path: &str, who: &str, ledger: &Ledger) -> Recorder {
        Recorder::connect_with(gw, path, &[], who, ledger).await
    }

    /// A new client sending these headers.
    pub async fn connect_with(
        gw: &Gateway,
        path: &str,
        headers: &[(&str, &str)],
        who: &str,
        ledger: &Ledger,
    ) -> Recorder {
        Recorder::over(gw.sse_with(path, headers).await, who, ledger)
    }

    fn over(client: SseClient, who: &str, ledger: &Ledger) -> Recorder {
        Recorder {
            who: who.to_string(),
            client,
            ledger: ledger.clone(),
            seen: Vec::new(),
            shown: Vec::new(),
            arrived: Vec::new(),
            newest: None,
            last: None,
            fresh: true,
            ids: HashSet::new(),
            gaps: false,
        }
    }

    /// What a browser does after losing this connection: it reconnects (here to `gw`) with
    /// `Last-Event-ID`, keeping its document.
    pub async fn resume_on(&self, gw: &Gateway, path: &str, who: &str) -> Recorder {
        let id = self.last_id();
        let mut next =
            Recorder::connect_with(gw, path, &[("last-event-id", &id)], who, &self.ledger).await;
        next.client.doc = self.client.doc.clone();
        next.last = self.last.clone();
        next.newest = self.newest;
        next.gaps = self.gaps;
        next
    }

    /// Lets a snapshot skip ids: where a test makes the gateway resynchronise a client.
    pub fn allow_gaps(mut self) -> Recorder {
        self.gaps = true;
        self
    }

    /// The next event, checked; `None` when the connection ended.
    pub async fn next(&mut self) -> Option<Seen> {
        match self.client.within(DEADLINE).await {
            Some(ev) => Some(self.check(&ev?)),
            None => panic!("{}: no event within {DEADLINE:?}\n{}", self.who, self.log()),
        }
    }

    /// Reads until the client shows `doc`; returns what came meanwhile.
    pub async fn until(&mut self, doc: &Value) -> Vec<Seen> {
        let from = self.seen.len();
        while self.client.doc.as_ref() != Some(doc) {
            match self.client.within(DEADLINE).await {
                Some(Some(ev)) => {
                    self.check(&ev);
                }
                Some(None) => panic!(
                    "{}: the stream ended before {doc}\n{}",
                    self.who,
                    self.log()
                ),
                None => panic!(
                    "{}: not within {DEADLINE:?}: {doc}\n{}",
                    self.who,
                    self.log()
                ),
            }
        }
        self.seen[from..].to_vec()
    }

    /// The first event must be a snapshot of `doc`.
    pub async fn snapshot(&mut self, doc: &Value) {
        let got = self.until(doc).await;
        assert_eq!(
            got.len(),
            1,
            "{}: more than a snapshot:\n{}",
            self.who,
            self.log()
        );
    }

    /// Waits for the next event named `name`, skipping others; panics if the stream ends.
    pub async fn next_of(&mut self, name: &str) -> Seen {
        loop {
            match self.next().await {
                Some(seen) if seen.event == name => return seen,
                Some(_) => {}
                None => panic!(
                    "{}: the stream ended before a {name}\n{}",
                    self.who,
                    self.log()
                ),
            }
        }
    }

    /// Reads for `d`; fails if a document event came. Returns the other events.
    pub async fn quiet(&mut self, d: Duration) -> Vec<Seen> {
        let from = self.seen.len();
        let end = tokio::time::Instant::now() + d;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            let Some(ev) = self.client.within(left).await else {
                break;
            };
            let ev = ev.unwrap_or_else(|| panic!("{}: the stream ended\n{}", self.who, self.log()));
            let seen = self.check(&ev);
            assert!(
                !seen.is_document(),
                "{}: expected nothing, got {seen:?}\n{}",
                self.who,
                self.log()
            );
        }
        self.seen[from..].to_vec()
    }

    /// Reads until the connection ends (the gateway stopped), checking what still came.
    pub async fn until_closed(&mut self) {
        while self.next().await.is_some() {}
    }

    pub fn doc(&self) -> Option<&Value> {
        self.client.doc.as_ref()
    }

    /// What a browser would send as `Last-Event-ID`.
    pub fn last_id(&self) -> String {
        self.client.last_id.clone()
    }

    /// The epoch of the last id applied.
    pub fn epoch(&self) -> String {
        self.last.as_ref().map(|l| l.0.clone()).unwrap_or_default()
    }

    /// The sequence number of the last id applied.
    pub fn seq(&self) -> u64 {
        self.last.as_ref().map_or(0, |l| l.1)
    }

    /// How many snapshots this connection received.
    pub fn snapshots(&self) -> usize {
        self.seen.iter().filter(|s| s.event == "snapshot").count()
    }

    /// The events that set the document, in order.
    pub fn documents(&self) -> Vec<Seen> {
        self.seen
            .iter()
            .filter(|s| s.is_document())
            .cloned()
            .collect()
    }

    /// The last events received, for a failure message.
    pub fn log(&self) -> String {
        let skip = self.seen.len().saturating_sub(12);
        let lines: Vec<String> = self.seen[skip..]
            .iter()
            .zip(&self.arrived[skip..])
            .map(|(s, t)| {
                let at = humantime::format_rfc3339_millis(*t);
                format!("  {at} {} {} {}", s.id, s.event, s.data)
            })
            .collect();
        format!(
            "{} (last {} of {}):\n{}",
            self.who,
            lines.len(),
            self.seen.len(),
            lines.join("\n")
        )
    }

    fn check(&mut self, ev: &Event) -> Seen {
        let seen = Seen {
            id: ev.id.clone(),
            event: ev.event.clone(),
            data: ev.data.clone(),
        };
        self.seen.push(seen.clone());
        self.arrived.push(SystemTime::now());
        if !seen.is_document() {
            return seen;
        }
        let who = self.who.clone();
        let (epoch, seq) = parse_id(&seen.id)
            .unwrap_or_else(|| panic!("{who}: id {:?} is not <12 hex>-<seq>-<16 hex>", seen.id));
        assert!(
            self.ids.insert(seen.id.clone()),
            "{who}: id {} twice on one connection\n{}",
            seen.id,
            self.log()
        );
        self.check_order(&seen, &epoch, seq);
        self.last = Some((epoch, seq));
        self.fresh = false;
        let doc = self
            .client
            .doc
            .clone()
            .expect("a document after a document event");
        let version = self.ledger.enter(&who, &seen, &doc);
        assert!(
            version >= self.newest,
            "{who}: {} {} goes back to an older document: {doc}\n{}",
            seen.event,
            seen.id,
            self.log()
        );
        self.newest = version;
        self.shown.push(doc);
        seen
    }

    fn check_order(&self, seen: &Seen, epoch: &str, seq: u64) {
        let snapshot = seen.event == "snapshot";
        let fits = match &self.last {
            None => snapshot,
            Some((e, _)) if e != epoch => snapshot,
            Some((_, s)) if snapshot && (self.gaps || self.fresh) => seq > *s || self.fresh,
            Some((_, s)) => seq == s + 1,
        };
        assert!(
            fits,
            "{}: {} {} does not follow {:?} (a new epoch starts with a snapshot; then +1)\n{}",
            self.who,
            seen.event,
            seen.id,
            self.last,
            self.log()
        );
    }
}

/// The checker itself, on event streams written by hand: it must refuse what a broken cluster
/// would send, or the cluster tests prove nothing.
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The first snapshot, `{"n":0}`, in epoch `a`.
    fn s0() -> String {
        snapshot("00000000000a-1", 0)
    }

    fn snapshot(id: &str, n: u64) -> String {
        let sum = crate::support::checksum(&json!({ "n": n }));
        format!("event: snapshot\nid: {id}-{sum}\ndata: {{\"n\":{n}}}\n\n")
    }

    fn client(wire: &str, who: &str, ledger: &Ledger) -> Recorder {
        let body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
            bytes::Bytes::from(wire.to_string()),
        )]);
        Recorder::over(SseClient::from_body(body), who, ledger)
    }

    /// A patch to `{"n": n}`, whose id carries that document's checksum.
    fn patch(id: &str, n: u64) -> String {
        let sum = crate::support::checksum(&json!({ "n": n }));
        format!("event: patch\nid: {id}-{sum}\ndata: [{{\"op\":\"replace\",\"path\":\"/n\",\"value\":{n}}}]\n\n")
    }

    #[tokio::test]
    async fn the_checker_accepts_ids_that_follow_and_a_resume_that_continues_them() {
        let ledger = Ledger::default();
        let mut a = client(
            &format!("{}{}", s0(), patch("00000000000a-2", 1)),
            "a",
            &ledger,
        );
        a.until(&json!({"n": 1})).await;
        let mut b = client(
            &format!("{}{}", s0(), patch("00000000000a-2", 1)),
            "b",
            &ledger,
        );
        b.until(&json!({"n": 1})).await;
        let mut back = client(&patch("00000000000a-3", 2), "b2", &ledger);
        back.client.doc = b.client.doc.clone();
        back.last = b.last.clone();
        back.until(&json!({"n": 2})).await;
    }

    #[tokio::test]
    #[should_panic(expected = "different payloads")]
    async fn the_checker_refuses_two_payloads_for_one_id() {
        let ledger = Ledger::default();
        let mut a = client(
            &format!("{}{}", s0(), patch("00000000000a-2", 1)),
            "a",
            &ledger,
        );
        a.until(&json!({"n": 1})).await;
        let mut b = client(
            &format!("{}{}", s0(), patch("00000000000a-2", 2)),
            "b",
            &ledger,
        );
        b.until(&json!({"n": 2})).await;
    }

    #[tokio::test]
    #[should_panic(expected = "does not follow")]
    async fn the_checker_refuses_a_patch_that_skips_an_id() {
        let ledger = Ledger::default();
        let mut a = client(
            &format!("{}{}", s0(), patch("00000000000a-3", 1)),
            "a",
            &ledger,
        );
        a.until(&json!({"n": 1})).await;
    }

    #[tokio::test]
    #[should_panic(expected = "does not follow")]
    async fn the_checker_refuses_a_new_epoch_without_a_snapshot() {
        let ledger = Ledger::default();
        let mut a = client(
            &format!("{}{}", s0(), patch("00000000000b-2", 1)),
            "a",
            &ledger,
        );
        a.until(&json!({"n": 1})).await;
    }

    #[tokio::test]
    #[should_panic(expected = "twice on one connection")]
    async fn the_checker_refuses_an_id_twice_on_one_connection() {
        let ledger = Ledger::default();
        let wire = format!("{}{}{}", s0(), s0(), patch("00000000000a-2", 1));
        let mut a = client(&wire, "a", &ledger);
        a.until(&json!({"n": 1})).await;
    }

    #[tokio::test]
    #[should_panic(expected = "goes back to an older document")]
    async fn the_checker_refuses_a_document_older_than_one_shown() {
        let ledger = Ledger::default();
        ledger.served(&json!({"n": 0}));
        ledger.served(&json!({"n": 1}));
        let back = snapshot("00000000000b-1", 0);
        let wire = format!("{}{}{back}", s0(), patch("00000000000a-2", 1));
        let mut a = client(&wire, "a", &ledger);
        a.until(&json!({"n": 1})).await;
        a.next().await;
    }

    #[tokio::test]
    #[should_panic(expected = "never served")]
    async fn the_checker_refuses_a_document_the_upstream_never_served() {
        let ledger = Ledger::default();
        ledger.served(&json!({"n": 0}));
        let mut a = client(
            &format!("{}{}", s0(), patch("00000000000a-2", 1)),
            "a",
            &ledger,
        );
        a.until(&json!({"n": 1})).await;
    }
}
