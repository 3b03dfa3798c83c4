//! One stream instance's poller: poll, detect change, publish, on the `Schedule`'s clock.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::publish::{Lost, PollResult, Publish};
use super::schedule::{backoff, Schedule, Step};
use super::source::Source;
use crate::codec::sse;
use crate::codec::{checksum, diff};
use crate::config::{ArrayKeys, DiffMode, StreamSpec};
use crate::hub::topic::{Frame, Topic};
use crate::hub::{EventId, LastEventId};
use crate::metrics::Metrics;
use crate::upstream::{FetchError, Fetched, Validators};

/// A diff that takes longer gives way to a snapshot, which is always a valid next event.
const DIFF_TIME: Duration = Duration::from_millis(500);

/// Why a poller stopped; the hub, which spawned it, ends the instance either way.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// The hub took the instance out and cancelled its token: no client for `idle`, its stream
    /// left or was re-keyed by a reload, or it was evicted to make room for another.
    Cancelled,
    /// The upstream refused these credentials: clients were told and closed.
    Denied(u16),
    /// It may no longer publish (cluster mode: the lease went elsewhere, or Redis is gone).
    Lost,
}

pub struct Poller {
    /// The instance polled: its key, its spec (which a reload may swap) and refresh window.
    pub topic: Arc<Topic>,
    pub source: Arc<dyn Source>,
    /// Delay before the first poll, so instances started together don't poll in one burst.
    pub first_delay: Duration,
    /// What an earlier poller of this instance left (cluster mode: the replica that held it
    /// before): its document, so the first change is a patch against what clients hold, and
    /// its validators, so the first poll can be a 304.
    pub seed: Option<Seed>,
}

/// What a poller starts from.
pub struct Seed {
    /// The document's text, as the snapshot event carried it.
    pub doc: Option<String>,
    pub validators: Validators,
    /// The upstream was failing: the first good poll says it is back.
    pub failing: bool,
}

/// The last document, as change detection compares it.
#[derive(PartialEq)]
enum Doc {
    Json(Value),
    /// Not JSON: compared byte for byte and always sent as a snapshot.
    Other(Bytes),
}

/// What a poll that got an answer brought.
enum Polled {
    NotModified,
    Unchanged,
    Changed(Arc<Doc>, Frame),
    /// The diff failed: the next poll publishes a fresh snapshot.
    Forgotten,
}

/// What the last good answer left.
#[derive(Default)]
struct Last {
    doc: Option<Arc<Doc>>,
    validators: Validators,
    /// The body's size, which a 304 stands for.
    len: u64,
}

impl Last {
    fn seeded(seed: Option<Seed>) -> Last {
        let Some(Seed {
            doc: Some(doc),
            validators,
            ..
        }) = seed
        else {
            return Last::default();
        };
        let doc = match serde_json::from_str::<Value>(&doc) {
            Ok(v) => Doc::Json(v),
            Err(_) => Doc::Other(Bytes::from(doc)),
        };
        let len = match &doc {
            Doc::Json(v) => v.to_string().len(),
            Doc::Other(b) => b.len(),
        };
        Last {
            doc: Some(Arc::new(doc)),
            validators,
            len: len as u64,
        }
    }

    /// Another diff mode or another source: what clients hold can't be patched into it, so the
    /// next poll publishes a fresh snapshot. (A changed `poll` never gets here: the hub closes
    /// the instance and its clients come back re-keyed.)
    fn retune(&mut self, old: &StreamSpec, new: &StreamSpec) {
        if new.diff != old.diff || new.upstream.url != old.upstream.url {
            self.doc = None;
            self.validators = Validators::default();
        }
        info!("stream retuned by a reload");
    }
}

impl Poller {
    /// Polls until the hub cancels it or the upstream refuses access. Never counts clients:
    /// whether anyone still listens is the hub's business.
    pub async fn run(mut self, out: &dyn Publish, cancel: CancellationToken) -> Exit {
        let seed = self.seed.take();
        let failing = seed.as_ref().is_some_and(|s| s.failing);
        let mut last = Last::seeded(seed);
        let topic = &self.topic;
        let mut running = topic.spec.load_full();
        let mut at = Schedule::new(Instant::now(), self.first_delay, running.heartbeat);
        at.failures = u32::from(failing);
        loop {
            let spec = topic.spec.load_full();
            if !Arc::ptr_eq(&spec, &running) {
                last.retune(&running, &spec);
                running = spec.clone();
            }
            let due = at.next_poll;
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Exit::Cancelled,
                () = sleep_until(at.next_poll) => {}
                () = sleep_until(at.next_heartbeat) => {
                    out.heartbeat();
                    at.beat(Instant::now(), spec.heartbeat);
                    continue;
                }
                // POST /streams/refresh: poll when the hub allowed it (`Topic::request_refresh`).
                () = topic.refresh.notified() => {
                    at.refresh(topic.pending_refresh());
                    continue;
                }
            }
            topic.refresh_polling();
            let step = match self.poll(out, &spec, &mut last).await {
                Ok(polled) => self.on_fetched(out, &spec, &at, &mut last, polled).await,
                Err(e) => self.on_failed(out, &spec, &at, &last, &e).await,
            };
            let step = match step {
                Ok(Step::Stop(status)) => return Exit::Denied(status),
                Ok(step) => step,
                Err(Lost) => return Exit::Lost,
            };
            at.next(&step, due, Instant::now(), spec.interval);
            if at.failing() {
                topic.hold_refreshes_until(at.next_poll);
            }
        }
    }

    /// One GET, and its body examined. A broken body keeps the last validators: a 304 must not
    /// stand for it.
    async fn poll(
        &self,
        out: &dyn Publish,
        spec: &Arc<StreamSpec>,
        last: &mut Last,
    ) -> Result<Polled, FetchError> {
        let metrics = &self.topic.metrics;
        let started = std::time::Instant::now();
        let fetched = self
            .source
            .get(spec, &self.topic.key, &last.validators)
            .await;
        metrics
            .upstream_latency
            .observe(started.elapsed().as_secs_f64());
        let (body, validators, json) = match fetched? {
            Fetched::NotModified => return Ok(Polled::NotModified),
            Fetched::Body {
                body,
                validators,
                json,
            } => (body, validators, json),
        };
        let len = body.len() as u64;
        metrics.upstream_bytes.inc_by(len);
        let polled = examine(out, spec, last.doc.clone(), body, json).await?;
        last.validators = validators;
        last.len = len;
        Ok(polled)
    }

    async fn on_fetched(
        &self,
        out: &dyn Publish,
        spec: &StreamSpec,
        at: &Schedule,
        last: &mut Last,
        polled: Polled,
    ) -> Result<Step, Lost> {
        if at.failing() {
            info!("upstream back");
            out.set_status(None, status_event("healthy", None, None))
                .await?;
        }
        let result = self.publish_if_changed(out, spec, last, polled).await?;
        out.record_poll(result, last.len, &last.validators);
        Ok(Step::Cadence)
    }

    /// Publishes what changed; the result says whether it did (`Changed`).
    async fn publish_if_changed(
        &self,
        out: &dyn Publish,
        spec: &StreamSpec,
        last: &mut Last,
        polled: Polled,
    ) -> Result<PollResult, Lost> {
        let result = match polled {
            Polled::NotModified => PollResult::NotModified,
            Polled::Unchanged => PollResult::Unchanged,
            Polled::Forgotten => {
                last.doc = None;
                PollResult::Unchanged
            }
            Polled::Changed(new, frame) => {
                last.doc = Some(new);
                debug!(seq = frame.seq, "poll: changed");
                count_bytes(&self.topic.metrics, spec, &frame);
                out.publish(frame).await?;
                return Ok(PollResult::Changed);
            }
        };
        debug!(result = result.as_str(), "poll");
        Ok(result)
    }

    async fn on_failed(
        &self,
        out: &dyn Publish,
        spec: &StreamSpec,
        at: &Schedule,
        last: &Last,
        e: &FetchError,
    ) -> Result<Step, Lost> {
        out.record_poll(PollResult::Error, 0, &last.validators);
        let status = e.status();
        match refusal(status, last.doc.is_some(), at.confirming) {
            Refusal::Deny(status) => {
                warn!(status, "upstream refused credentials; closing instance");
                let data = json!({ "reason": "upstream refused access", "status": status });
                out.deny(status, sse::event(Some("end"), None, &data.to_string()))
                    .await;
                return Ok(Step::Stop(status));
            }
            Refusal::Confirm => {
                info!(status, "upstream refused access; polling again to confirm");
                return Ok(Step::Confirm);
            }
            Refusal::No => {}
        }
        let failures = at.failures.saturating_add(1);
        if at.failing() {
            debug!(error = %e, cause = %e.causes(), failures, "poll failed");
        } else {
            warn!(error = %e, cause = %e.causes(), "upstream failing");
            let ev = status_event("failing", status, Some(e));
            out.set_status(Some(ev.clone()), ev).await?;
        }
        Ok(Step::Backoff(backoff(spec, failures, e)))
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    No,
    /// Poll again at once before believing it.
    Confirm,
    /// Close the instance's clients with this status.
    Deny(u16),
}

/// Whether an answer refuses access. A 401 or 403, or a 404 before any document, ends the
/// instance's clients, and a browser that then reconnects gets that status and stops for good. So
/// an instance that had a document believes a 401 or 403 only when an immediate re-poll confirms
/// it: one stray refusal from a WAF or CDN must not end every browser. A first poll refused
/// still refuses at once.
fn refusal(status: Option<u16>, had_doc: bool, confirming: bool) -> Refusal {
    match status {
        Some(401 | 403) if had_doc && !confirming => Refusal::Confirm,
        Some(s @ (401 | 403)) => Refusal::Deny(s),
        Some(404) if !had_doc => Refusal::Deny(404),
        _ => Refusal::No,
    }
}

/// An `upstream-status` event: `failing` with why, or `healthy`.
pub(super) fn status_event(state: &str, status: Option<u16>, error: Option<&FetchError>) -> Bytes {
    let since = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let data = json!({
        "state": state,
        "status": status,
        "error": error.map(|e| e.to_string()),
        "since": since,
    });
    sse::event(Some("upstream-status"), None, &data.to_string())
}

/// What the stream's own format saves over snapshots.
fn count_bytes(metrics: &Metrics, spec: &StreamSpec, frame: &Frame) {
    if let Some(p) = frame.patch(spec.diff) {
        metrics.patch_bytes.inc_by(p.len() as u64);
        metrics.snapshot_bytes.inc_by(frame.snapshot.len() as u64);
    }
}

/// Parses the body and compares it with the last document, encoding a frame when it changed.
///
/// Always on a blocking thread: parsing and diffing cost time in proportion to the document, and
/// the hub's runtime has one thread that every other poller and heartbeat needs.
async fn examine(
    out: &dyn Publish,
    spec: &Arc<StreamSpec>,
    old: Option<Arc<Doc>>,
    body: Bytes,
    json: bool,
) -> Result<Polled, FetchError> {
    let next = out.next_id();
    let wants = |m| spec.diff == m || out.wants(m);
    let wanted = Wanted {
        json_patch: wants(DiffMode::JsonPatch),
        merge_patch: wants(DiffMode::MergePatch),
    };
    let ignore = spec.ignore.clone();
    let keys = spec.array_keys.clone();
    let work = move || -> Result<Polled, FetchError> {
        let new = match serde_json::from_slice::<Value>(&body) {
            Ok(mut v) => {
                diff::strip(&mut v, &ignore);
                Doc::Json(v)
            }
            Err(e) if json => return Err(FetchError::invalid_json(&e)),
            Err(_) => Doc::Other(body),
        };
        if old.as_deref() == Some(&new) {
            return Ok(Polled::Unchanged);
        }
        let frame = encode(next, old.as_deref(), &new, wanted, &keys);
        Ok(Polled::Changed(Arc::new(new), frame))
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(polled) => polled,
        Err(e) => {
            warn!(error = %e, "diff task failed");
            Ok(Polled::Forgotten)
        }
    }
}

/// The patch formats a change is encoded in: the stream's own, and those clients chose.
#[derive(Clone, Copy)]
struct Wanted {
    json_patch: bool,
    merge_patch: bool,
}

/// Encodes the change in every wanted format. A patch that would cost more than the snapshot
/// is left out: its clients get the snapshot.
///
/// The checksum of the new document is computed here, once per change, for the id that every
/// format's event carries.
fn encode(next: EventId, old: Option<&Doc>, new: &Doc, wanted: Wanted, keys: &ArrayKeys) -> Frame {
    let (text, sum) = match new {
        Doc::Json(v) => (v.to_string(), checksum::of_json(v)),
        Doc::Other(b) => {
            let text = String::from_utf8_lossy(b).into_owned();
            let sum = checksum::of_text(&text);
            (text, sum)
        }
    };
    let id = &LastEventId {
        at: next,
        checksum: sum,
    }
    .to_string();
    let snapshot = sse::event(Some("snapshot"), Some(id), &text);
    let (json_patch, merge_patch) = match (old, new) {
        (Some(Doc::Json(old)), Doc::Json(new)) => {
            let jp = wanted
                .json_patch
                .then(|| diff::json_patch(old, new, keys, text.len(), DIFF_TIME))
                .flatten()
                .map(|p| sse::event(Some("patch"), Some(id), &p));
            let mp = wanted
                .merge_patch
                .then(|| diff::merge_patch(old, new))
                .flatten()
                .map(|p| sse::event(Some("merge-patch"), Some(id), &p.to_string()));
            let cheaper = |e: Bytes| (e.len() <= snapshot.len()).then_some(e);
            (jp.and_then(cheaper), mp.and_then(cheaper))
        }
        // No previous JSON document to patch: only a snapshot can say it.
        _ => (None, None),
    };
    Frame {
        epoch: next.epoch,
        seq: next.seq,
        checksum: sum,
        snapshot,
        json_patch,
        merge_patch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Arc<StreamSpec> {
        crate::hub::fixtures::spec("    interval: 1s\n    backoff_max: 30s\n")
    }

    #[test]
    fn a_change_is_encoded_in_each_wanted_format() {
        let old = Doc::Json(json!({"a": 2, "b": 1}));
        let new = Doc::Json(json!({"a": 3, "b": 1}));
        let f = encode(
            EventId { epoch: 1, seq: 3 },
            Some(&old),
            &new,
            Wanted {
                json_patch: false,
                merge_patch: true,
            },
            &ArrayKeys::new(),
        );
        assert!(f.json_patch.is_none());
        assert!(f.merge_patch.unwrap().ends_with(b"data: {\"a\":3}\n\n"));
        let f = encode(
            EventId { epoch: 1, seq: 3 },
            None,
            &new,
            Wanted {
                json_patch: true,
                merge_patch: true,
            },
            &ArrayKeys::new(),
        );
        assert!(
            f.json_patch.is_none() && f.merge_patch.is_none(),
            "no document to patch"
        );
    }

    #[test]
    fn a_refusal_after_a_document_is_believed_only_twice_in_a_row() {
        assert_eq!(refusal(Some(401), true, false), Refusal::Confirm);
        assert_eq!(refusal(Some(403), true, true), Refusal::Deny(403));
        assert_eq!(refusal(Some(401), false, false), Refusal::Deny(401));
        assert_eq!(refusal(Some(404), false, false), Refusal::Deny(404));
        assert_eq!(refusal(Some(404), true, false), Refusal::No);
        assert_eq!(refusal(Some(500), true, true), Refusal::No);
        assert_eq!(refusal(None, true, false), Refusal::No);
    }

    /// The data of one SSE event, as a client reads it.
    fn data(event: &Bytes) -> String {
        let text = String::from_utf8_lossy(event);
        let lines: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        lines.join("\n")
    }

    use crate::codec::diff::tests::{apply, json_doc, wire};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn what_a_client_is_sent_rebuilds_the_new_document_and_never_costs_more(
            old in json_doc(),
            new in json_doc(),
        ) {
            let f = encode(EventId { epoch: 1, seq: 2 }, Some(&Doc::Json(old.clone())), &Doc::Json(new.clone()), Wanted { json_patch: true, merge_patch: true }, &ArrayKeys::new());
            let snapshot: Value = serde_json::from_str(&data(&f.snapshot)).unwrap();
            prop_assert_eq!(&snapshot, &wire(&new));
            if let Some(p) = &f.json_patch {
                prop_assert!(p.len() <= f.snapshot.len());
                prop_assert_eq!(apply(&old, &data(p)), wire(&new));
            }
            if let Some(p) = &f.merge_patch {
                prop_assert!(p.len() <= f.snapshot.len());
                let mut doc = wire(&old);
                json_patch::merge(&mut doc, &serde_json::from_str(&data(p)).unwrap());
                prop_assert_eq!(doc, wire(&new));
            }
        }
    }

    #[test]
    fn a_patch_that_would_outgrow_the_document_gives_way_to_the_snapshot() {
        let key = "k".repeat(100_000);
        let old = Doc::Json(json!({ key.clone(): vec![0; 50_000] }));
        let new = Doc::Json(json!({ key: vec![1; 50_000] }));
        let f = encode(
            EventId { epoch: 1, seq: 2 },
            Some(&old),
            &new,
            Wanted {
                json_patch: true,
                merge_patch: true,
            },
            &ArrayKeys::new(),
        );
        assert!(f.json_patch.is_none() && f.merge_patch.is_none());
        let small = Doc::Json(json!({"n": 1, "about": "long enough for a patch to be cheaper"}));
        let smaller = Doc::Json(json!({"n": 2, "about": "long enough for a patch to be cheaper"}));
        let f = encode(
            EventId { epoch: 1, seq: 2 },
            Some(&small),
            &smaller,
            Wanted {
                json_patch: true,
                merge_patch: true,
            },
            &ArrayKeys::new(),
        );
        assert!(f.json_patch.is_some() && f.merge_patch.is_some());
    }

    fn topic() -> Arc<Topic> {
        let key = crate::hub::StreamKey {
            stream: Arc::from("/s"),
            target: "/s".into(),
            forwarded: vec![],
        };
        let metrics = Arc::new(crate::metrics::Metrics::new().unwrap());
        Arc::new(Topic::new(spec(), key, "/s".into(), metrics))
    }

    /// The hub runs every poller and heartbeat on one thread: a big document's parse and diff
    /// must not run on it, or every other stream waits.
    #[tokio::test(flavor = "current_thread")]
    async fn parsing_and_diffing_leave_the_pollers_thread_free() {
        let (t, s) = (topic(), spec());
        let items: Vec<Value> = (0..100_000).map(|i| json!({"id": i, "v": "x"})).collect();
        let old = Arc::new(Doc::Json(json!({ "items": items })));
        let body = Bytes::from(json!({ "items": items, "more": true }).to_string());
        let mut work = std::pin::pin!(examine(&*t, &s, Some(old), body, true));
        let mut others_ran = false;
        tokio::select! {
            biased;
            _ = &mut work => {}
            _ = tokio::task::yield_now() => others_ran = true,
        }
        assert!(others_ran, "the examination ran on the poller's thread");
        assert!(matches!(work.await, Ok(Polled::Changed(..))));
        let broken = Bytes::from_static(b"{\"items\": [");
        let e = examine(&*t, &s, None, broken, true).await.err().unwrap();
        assert_eq!(e.to_string(), "invalid JSON at line 1 column 11");
    }
}

/// The poller's clock under paused time, with a scripted source and the real `Topic`: each test
/// covers minutes or hours of schedule in milliseconds.
#[cfg(test)]
mod timing {
    use std::time::Duration;

    use tokio::task::JoinHandle;
    use tokio::time::sleep;

    use super::*;
    use crate::codec::sse::HEARTBEAT;
    use crate::hub::script::{body, Script};
    use crate::hub::topic::Readiness;
    use crate::hub::{Delivery, StreamKey, Subscription};

    const S: Duration = Duration::from_secs(1);

    fn spec(extra: &str) -> Arc<StreamSpec> {
        crate::hub::fixtures::spec(extra)
    }

    /// Starts a poller on a new topic, polling at once.
    fn start(spec: Arc<StreamSpec>, script: &Arc<Script>) -> (Arc<Topic>, JoinHandle<Exit>) {
        let key = StreamKey {
            stream: Arc::from("/s"),
            target: "/s".into(),
            forwarded: vec![],
        };
        let metrics = Arc::new(crate::metrics::Metrics::new().unwrap());
        let topic = Arc::new(Topic::new(spec, key, "/s".into(), metrics));
        let poller = Poller {
            topic: topic.clone(),
            source: script.clone(),
            first_delay: Duration::ZERO,
            seed: None,
        };
        let out = topic.clone();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(async move { poller.run(&*out, cancel).await });
        (topic, task)
    }

    /// What a client has been sent so far, without waiting.
    async fn drain(sub: &mut Subscription) -> Vec<Bytes> {
        let mut out = sub.take_start();
        loop {
            tokio::select! {
                biased;
                d = sub.next() => match d {
                    Delivery::Send(b) | Delivery::Close(b) => out.push(b),
                },
                () = std::future::ready(()) => return out,
            }
        }
    }

    fn between(d: Duration, lo: Duration, hi: Duration) -> bool {
        lo <= d && d <= hi
    }

    #[tokio::test(start_paused = true)]
    async fn polls_keep_the_interval_and_heartbeats_their_own() {
        let script = Script::new(|n| body(&format!("{{\"n\": {n}}}")));
        let (topic, _task) = start(spec("    interval: 1s\n    heartbeat: 2500ms\n"), &script);
        let mut sub = topic.join().attach(None, None);
        sleep(S * 10 + S / 2).await;
        let gaps = script.gaps();
        // The first success sets the phase (0.5..1.5 interval); then one interval exactly.
        assert!(between(gaps[0], S / 2, S * 3 / 2), "{gaps:?}");
        assert!(gaps[1..].iter().all(|g| *g == S), "{gaps:?}");
        let sent = drain(&mut sub).await;
        let beats = sent.iter().filter(|b| b.as_ref() == HEARTBEAT).count();
        assert_eq!(beats, 4, "at 2.5, 5, 7.5 and 10 s");
        assert_eq!(
            sent.len() - beats,
            script.asked().len(),
            "one event per change"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_up_to_the_cap_then_recover() {
        let script = Script::new(|n| {
            if n < 6 {
                Err(FetchError::Timeout)
            } else {
                body("{}")
            }
        });
        let (topic, _task) = start(spec("    interval: 1s\n    backoff_max: 8s\n"), &script);
        let mut sub = topic.join().attach(None, None);
        sleep(S * 60).await;
        let gaps = script.gaps();
        // Jittered within the upper half of 2, 4, 8, then capped at 8 s.
        for (i, cap) in [2, 4, 8, 8, 8, 8].into_iter().enumerate() {
            assert!(between(gaps[i], S * cap / 2, S * cap), "{i}: {gaps:?}");
        }
        assert!(
            gaps[7..].iter().all(|g| *g == S),
            "back to the cadence: {gaps:?}"
        );
        let statuses: Vec<String> = drain(&mut sub)
            .await
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .filter(|e| e.starts_with("event: upstream-status"))
            .collect();
        assert_eq!(
            statuses.len(),
            2,
            "failing once, healthy once: {statuses:?}"
        );
        assert!(statuses[0].contains("\"failing\"") && statuses[1].contains("\"healthy\""));
        assert!(topic.info().upstream_healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_and_capped() {
        // Retry-After arrives as a duration, whether the upstream sent seconds or an HTTP date
        // (`upstream::retry_after` turns one into the other).
        let script = Script::new(|n| match n {
            0 => Err(FetchError::Status {
                status: 429,
                retry_after: Some(S * 120),
            }),
            1 => Err(FetchError::Status {
                status: 503,
                retry_after: Some(S * 86_400),
            }),
            _ => body("{}"),
        });
        let (_topic, _task) = start(spec("    interval: 1s\n    backoff_max: 30s\n"), &script);
        sleep(S * 3800).await;
        let gaps = script.gaps();
        assert_eq!(gaps[0], S * 120, "longer than the backoff: honoured");
        assert_eq!(gaps[1], S * 3600, "a day is capped at an hour");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_polls_early_once_per_window_and_a_later_one_is_deferred() {
        let script = Script::new(|_| body("{}"));
        let (topic, _task) = start(spec("    interval: 60s\n    refresh_limit: 15s\n"), &script);
        let t0 = tokio::time::Instant::now();
        sleep(S * 5).await;
        assert!(topic.request_refresh(), "the first polls at once");
        sleep(S).await;
        assert!(!topic.request_refresh(), "inside the window: deferred");
        sleep(S).await;
        assert!(!topic.request_refresh(), "joins the deferred one");
        sleep(S * 14).await;
        let at: Vec<Duration> = script.asked().iter().map(|t| *t - t0).collect();
        assert_eq!(at, [Duration::ZERO, S * 5, S * 20], "deferred, not dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_never_polls_inside_a_backoff() {
        let script = Script::new(|n| match n {
            0 => Err(FetchError::Status {
                status: 503,
                retry_after: Some(S * 100),
            }),
            _ => body("{}"),
        });
        let (topic, _task) = start(spec("    interval: 1s\n    refresh_limit: 1s\n"), &script);
        let t0 = tokio::time::Instant::now();
        sleep(S * 10).await;
        assert!(
            !topic.request_refresh(),
            "deferred to the end of the Retry-After"
        );
        sleep(S * 95).await;
        let at: Vec<Duration> = script.asked().iter().map(|t| *t - t0).collect();
        assert_eq!(at[..2], [Duration::ZERO, S * 100], "{at:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_304_keeps_the_document_and_counts_what_it_stands_for() {
        let doc = "{\"price\": 1}";
        let script = Script::new(move |n| {
            if n == 0 {
                body(doc)
            } else {
                Ok(Fetched::NotModified)
            }
        });
        let (topic, _task) = start(spec("    interval: 1s\n"), &script);
        let _a = topic.join();
        let _b = topic.join();
        sleep(S * 5 + S / 2).await;
        let polls = script.asked().len() as u64;
        assert!(polls >= 5, "{polls}");
        let info = topic.info();
        assert_eq!(info.last_result, Some("not_modified"));
        let sum = checksum::hex(checksum::of_json(&json!({ "price": 1 })));
        assert_eq!(
            info.event_id,
            topic.current_id().map(|id| format!("{id}-{sum}")),
            "still the first document"
        );
        let m = &topic.metrics;
        let counted = m.polls.with_label_values(&["not_modified"]).get();
        assert_eq!(counted, polls - 1);
        // Each poll stands for the first body, for each of the two clients.
        let equivalent = m.polling_equivalent_bytes.get();
        assert_eq!(equivalent, polls * doc.len() as u64 * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_closes_the_clients_and_ends_the_poller() {
        let script = Script::new(|_| {
            Err(FetchError::Status {
                status: 401,
                retry_after: None,
            })
        });
        let (topic, task) = start(spec("    interval: 1s\n"), &script);
        let mut sub = topic.join().attach(None, None);
        assert_eq!(task.await.unwrap(), Exit::Denied(401));
        assert_eq!(*topic.readiness().borrow(), Readiness::Denied(401));
        match sub.next().await {
            Delivery::Close(b) => assert!(String::from_utf8_lossy(&b).contains("401")),
            Delivery::Send(b) => panic!("not the end: {b:?}"),
        }
    }
}
