//! One stream instance's schedule: poll, detect change, publish; jitter, backoff, Retry-After.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rand::Rng;
use serde_json::{json, Value};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::codec::diff;
use crate::codec::sse;
use crate::config::{DiffMode, StreamSpec};
use crate::hub::topic::{Frame, Readiness, Topic};
use crate::upstream::{self, FetchError, Fetched, Validators};

/// A diff that takes longer gives way to a snapshot, which is always a valid next event.
const DIFF_TIME: Duration = Duration::from_millis(500);
/// However long an upstream asks us to wait, we look again after this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why a poller stopped; the hub, which spawned it, ends the instance either way.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// The hub took the instance out and cancelled its token: no client for `idle`, its stream
    /// left or was re-keyed by a reload, or it was evicted to make room for another.
    Cancelled,
    /// The upstream refused these credentials: clients were told and closed.
    Denied(u16),
}

pub struct Poller {
    pub topic: Arc<Topic>,
    pub client: upstream::Clients,
    /// Delay before the first poll, so instances started together don't poll in one burst.
    pub first_delay: Duration,
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

enum Health {
    Healthy,
    Failing,
}

impl Poller {
    /// Polls until `cancel` or a refusal; never counts clients: the hub decides when to stop.
    pub async fn run(self, cancel: CancellationToken) -> Exit {
        let topic = self.topic.clone();
        let mut doc: Option<Arc<Doc>> = None;
        let mut validators = Validators::default();
        let mut failures: u32 = 0;
        // Size of the last body, which a 304 stands for.
        let mut last_len: u64 = 0;
        let mut health = Health::Healthy;
        // The last poll was refused access and this one is to confirm it (see `refusal`).
        let mut confirming = false;
        let mut next_poll = Instant::now() + self.first_delay;
        // Whether this poller's cadence has its own phase yet (see the end of the loop).
        let mut phase_set = false;
        let mut next_heartbeat = Instant::now() + topic.spec.load().heartbeat;
        let mut running = topic.spec.load_full();
        loop {
            let spec = topic.spec.load_full();
            if !Arc::ptr_eq(&spec, &running) {
                // Another diff mode or another source: what clients hold can't be patched into
                // it, so the next poll publishes a fresh snapshot. (A changed `poll` never gets
                // here: the hub closes the instance and its clients come back re-keyed.)
                if spec.diff != running.diff || spec.upstream.url != running.upstream.url {
                    doc = None;
                    validators = Validators::default();
                }
                info!("stream retuned by a reload");
                running = spec.clone();
            }
            let due = next_poll;
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Exit::Cancelled,
                _ = sleep_until(next_poll) => {}
                _ = sleep_until(next_heartbeat) => {
                    topic.heartbeat();
                    next_heartbeat = Instant::now() + spec.heartbeat;
                    continue;
                }
                // POST /streams/refresh: poll when the hub allowed it (`Topic::request_refresh`).
                _ = topic.refresh.notified() => {
                    if let Some(at) = topic.pending_refresh() {
                        next_poll = next_poll.min(at);
                    }
                    continue;
                }
            }
            topic.refresh_polling();

            let started = std::time::Instant::now();
            let result = upstream::fetch(
                self.client.get(spec.follow_redirects),
                upstream::Request {
                    url: target_url(&spec, &topic.key.target),
                    headers: &spec.upstream.headers,
                    forwarded: &topic.key.forwarded,
                    timeout: spec.timeout,
                    max_body: spec.max_body,
                    validators: &validators,
                },
            )
            .await;
            let metrics = &topic.metrics;
            metrics
                .upstream_latency
                .observe(started.elapsed().as_secs_f64());

            let outcome = match result {
                Ok(Fetched::NotModified) => Ok(Polled::NotModified),
                Ok(Fetched::Body {
                    body,
                    validators: v,
                    json,
                }) => {
                    let len = body.len() as u64;
                    metrics.upstream_bytes.inc_by(len);
                    let polled = examine(&topic, &spec, doc.clone(), body, json).await;
                    // A broken body keeps the last validators: a 304 must not stand for it.
                    if polled.is_ok() {
                        validators = v;
                        last_len = len;
                    }
                    polled
                }
                Err(e) => Err(e),
            };
            let delay = match outcome {
                Ok(polled) => {
                    confirming = false;
                    failures = 0;
                    if let Health::Failing = health {
                        health = Health::Healthy;
                        info!("upstream back");
                        let ev = status_event("healthy", None, None);
                        topic.set_status(None, ev);
                    }
                    let result = match polled {
                        Polled::NotModified => {
                            debug!("poll: not modified");
                            "not_modified"
                        }
                        Polled::Unchanged => {
                            debug!("poll: unchanged");
                            "unchanged"
                        }
                        Polled::Forgotten => {
                            doc = None;
                            "unchanged"
                        }
                        Polled::Changed(new, frame) => {
                            doc = Some(new);
                            publish(&topic, &spec, frame);
                            "changed"
                        }
                    };
                    // What each attached client would have downloaded polling on its own.
                    metrics
                        .polling_equivalent_bytes
                        .inc_by(last_len * topic.clients() as u64);
                    metrics.polls.with_label_values(&[result]).inc();
                    topic.record_poll(result);
                    spec.interval
                }
                Err(e) => {
                    metrics.polls.with_label_values(&["error"]).inc();
                    topic.record_poll("error");
                    let status = e.status();
                    match refusal(status, doc.is_some(), std::mem::take(&mut confirming)) {
                        Refusal::Deny(status) => {
                            warn!(status, "upstream refused credentials; closing instance");
                            topic.set_ready(Readiness::Denied(status));
                            let data =
                                json!({ "reason": "upstream refused access", "status": status });
                            topic.close(sse::event(Some("end"), None, &data.to_string()));
                            return Exit::Denied(status);
                        }
                        Refusal::Confirm => {
                            info!(status, "upstream refused access; polling again to confirm");
                            confirming = true;
                            next_poll = Instant::now();
                            continue;
                        }
                        Refusal::No => {}
                    }
                    failures = failures.saturating_add(1);
                    if let Health::Healthy = health {
                        health = Health::Failing;
                        warn!(error = %e, cause = %e.causes(), "upstream failing");
                        let ev = status_event("failing", status, Some(&e));
                        topic.set_status(Some(ev.clone()), ev);
                    } else {
                        debug!(error = %e, cause = %e.causes(), failures, "poll failed");
                    }
                    backoff(&spec, failures, &e)
                }
            };
            // The first success sets this poller's phase; later ones keep to it.
            let spread = (!phase_set && failures == 0).then(|| {
                phase_set = true;
                rand::rng().random_range(0.5..1.5)
            });
            next_poll = next_due(due, Instant::now(), delay, failures > 0, spread);
            if failures > 0 {
                topic.hold_refreshes_until(next_poll);
            }
        }
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

/// `base` + the instance's path and query; config validation guarantees the base has neither
/// query nor fragment, so concatenation is exact.
pub(crate) fn target_url(spec: &StreamSpec, target: &str) -> url::Url {
    let base = spec.upstream.url.as_str().trim_end_matches('/');
    url::Url::parse(&format!("{base}{target}")).unwrap_or_else(|_| spec.upstream.url.clone())
}

/// Capped exponential backoff with jitter, or longer when the upstream asked for it.
fn backoff(spec: &StreamSpec, failures: u32, e: &FetchError) -> Duration {
    let exp = spec
        .interval
        .saturating_mul(1u32 << failures.min(16))
        .min(spec.backoff_max.max(spec.interval));
    let jittered = rand::rng().random_range(exp / 2..=exp);
    match e {
        FetchError::Status {
            retry_after: Some(ra),
            ..
        } => jittered.max((*ra).min(MAX_RETRY_AFTER)),
        _ => jittered,
    }
}

fn status_event(state: &str, status: Option<u16>, error: Option<&FetchError>) -> Bytes {
    let since = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let data = json!({
        "state": state,
        "status": status,
        "error": error.map(|e| e.to_string()),
        "since": since,
    });
    sse::event(Some("upstream-status"), None, &data.to_string())
}

/// When the next poll is due, after one that was due at `due` and ended at `now`.
///
/// A poll that kept its appointment keeps the cadence: the next is due `delay` after this one
/// was due, not after it finished. Otherwise polls that one busy moment delayed together stay
/// bunched in every later round, and the bunch grows (the Streamdata benchmark's 100 streams of
/// 50 KB did: p99 12-28 ms instead of ~5). A failure (`delay` is then the backoff), a refresh
/// ahead of time, or a poll late by a whole interval restarts the cadence from now.
///
/// `spread` (0.5..1.5) scales the delay once, after the first poll: instances that clients
/// started together poll first within a moment, and a fixed cadence would keep them together.
fn next_due(
    due: Instant,
    now: Instant,
    delay: Duration,
    failed: bool,
    spread: Option<f64>,
) -> Instant {
    if let Some(factor) = spread {
        return now + delay.mul_f64(factor);
    }
    if !failed && due <= now && now < due + delay {
        due + delay
    } else {
        now + delay
    }
}

/// Parses the body and compares it with the last document, encoding a frame when it changed.
///
/// Always on a blocking thread: parsing and diffing cost time in proportion to the document, and
/// the hub's runtime has one thread that every other poller and heartbeat needs.
async fn examine(
    topic: &Arc<Topic>,
    spec: &Arc<StreamSpec>,
    old: Option<Arc<Doc>>,
    body: Bytes,
    json: bool,
) -> Result<Polled, FetchError> {
    let seq = topic.current_seq() + 1;
    let id = topic.id(seq).to_string();
    let wanted = [DiffMode::JsonPatch, DiffMode::MergePatch]
        .map(|m| spec.diff == m || topic.format_in_use(m));
    let ignore = spec.ignore.clone();
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
        let frame = encode(seq, &id, old.as_deref(), &new, wanted);
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

fn publish(topic: &Topic, spec: &StreamSpec, frame: Frame) {
    debug!(seq = frame.seq, "poll: changed");
    let patch = match spec.diff {
        DiffMode::JsonPatch => frame.json_patch.as_ref(),
        DiffMode::MergePatch => frame.merge_patch.as_ref(),
        DiffMode::Snapshot => None,
    };
    if let Some(p) = patch {
        topic.metrics.patch_bytes.inc_by(p.len() as u64);
        topic
            .metrics
            .snapshot_bytes
            .inc_by(frame.snapshot.len() as u64);
    }
    topic.publish(frame);
}

/// Encodes the change in every wanted format; `wanted` is [json-patch, merge-patch]. A patch
/// that would cost more than the snapshot is left out: its clients get the snapshot.
fn encode(seq: u64, id: &str, old: Option<&Doc>, new: &Doc, wanted: [bool; 2]) -> Frame {
    let text = match new {
        Doc::Json(v) => v.to_string(),
        Doc::Other(b) => String::from_utf8_lossy(b).into_owned(),
    };
    let snapshot = sse::event(Some("snapshot"), Some(id), &text);
    let (json_patch, merge_patch) = match (old, new) {
        (Some(Doc::Json(old)), Doc::Json(new)) => {
            let jp = wanted[0]
                .then(|| diff::json_patch(old, new, text.len(), DIFF_TIME))
                .flatten()
                .map(|p| sse::event(Some("patch"), Some(id), &p));
            let mp = wanted[1]
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
        seq,
        snapshot,
        json_patch,
        merge_patch,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_on_time_keeps_the_cadence_of_its_due_time() {
        let due = Instant::now();
        let s = Duration::from_secs(1);
        // Finished 300 ms late: the next is still one interval after this one was due.
        let next = next_due(due, due + s * 3 / 10, s, false, None);
        assert_eq!(next, due + s);
    }

    #[test]
    fn a_failure_an_early_refresh_or_a_whole_interval_late_restart_from_now() {
        let due = Instant::now();
        let s = Duration::from_secs(1);
        let now = due + Duration::from_millis(10);
        assert_eq!(next_due(due, now, s * 4, true, None), now + s * 4);
        let early = due - Duration::from_millis(400);
        assert_eq!(next_due(due, early, s, false, None), early + s);
        let late = due + s * 2;
        assert_eq!(next_due(due, late, s, false, None), late + s);
    }

    #[test]
    fn the_first_spread_scales_the_delay_from_now() {
        let due = Instant::now();
        let s = Duration::from_secs(1);
        let now = due + Duration::from_millis(5);
        assert_eq!(
            next_due(due, now, s, false, Some(1.25)),
            now + s.mul_f64(1.25)
        );
    }
    use crate::config;

    fn spec() -> Arc<StreamSpec> {
        let yaml = "upstreams:\n  api:\n    url: http://127.0.0.1:1/base/\nstreams:\n  - path: /s\n    upstream: api\n    interval: 1s\n    backoff_max: 30s\n";
        config::parse("p.yaml", yaml, &|_| None, &|_, _| None)
            .unwrap()
            .streams[0]
            .clone()
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        let s = spec();
        let e = FetchError::Timeout;
        for (failures, lo, hi) in [(1, 1, 2), (2, 2, 4), (3, 4, 8), (10, 15, 30), (40, 15, 30)] {
            for _ in 0..50 {
                let d = backoff(&s, failures, &e);
                assert!(
                    d >= Duration::from_secs(lo) && d <= Duration::from_secs(hi),
                    "{failures}: {d:?}"
                );
            }
        }
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let s = spec();
        let e = FetchError::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(120)),
        };
        assert_eq!(backoff(&s, 1, &e), Duration::from_secs(120));
        let e = FetchError::Status {
            status: 503,
            retry_after: Some(Duration::from_secs(86_400)),
        };
        assert_eq!(backoff(&s, 1, &e), MAX_RETRY_AFTER);
    }

    #[test]
    fn a_change_is_encoded_in_each_wanted_format() {
        let old = Doc::Json(json!({"a": 2, "b": 1}));
        let new = Doc::Json(json!({"a": 3, "b": 1}));
        let f = encode(3, "x-3", Some(&old), &new, [false, true]);
        assert!(f.json_patch.is_none());
        assert!(f.merge_patch.unwrap().ends_with(b"data: {\"a\":3}\n\n"));
        let f = encode(3, "x-3", None, &new, [true, true]);
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

    #[test]
    fn the_target_is_appended_to_the_base_path() {
        assert_eq!(
            target_url(&spec(), "/a/b?x=1").as_str(),
            "http://127.0.0.1:1/base/a/b?x=1"
        );
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
            let f = encode(2, "e-2", Some(&Doc::Json(old.clone())), &Doc::Json(new.clone()), [true, true]);
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
        let f = encode(2, "e-2", Some(&old), &new, [true, true]);
        assert!(f.json_patch.is_none() && f.merge_patch.is_none());
        let small = Doc::Json(json!({"n": 1, "about": "long enough for a patch to be cheaper"}));
        let smaller = Doc::Json(json!({"n": 2, "about": "long enough for a patch to be cheaper"}));
        let f = encode(2, "e-2", Some(&small), &smaller, [true, true]);
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
        let mut work = std::pin::pin!(examine(&t, &s, Some(old), body, true));
        let mut others_ran = false;
        tokio::select! {
            biased;
            _ = &mut work => {}
            _ = tokio::task::yield_now() => others_ran = true,
        }
        assert!(others_ran, "the examination ran on the poller's thread");
        assert!(matches!(work.await, Ok(Polled::Changed(..))));
        let broken = Bytes::from_static(b"{\"items\": [");
        let e = examine(&t, &s, None, broken, true).await.err().unwrap();
        assert_eq!(e.to_string(), "invalid JSON at line 1 column 11");
    }
}
