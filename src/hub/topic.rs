//! One stream instance: its current document, event ids, replay ring and broadcast sender.
//!
//! The poller is the only writer. Every change is encoded once per format in use, and every
//! session shares those `Bytes`: there is no per-client serialisation or copy.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::{broadcast, watch, Notify};

use super::savings::Savings;
use super::{ClusterInfo, Delivery, EventId, InstanceInfo, LastEventId, StreamKey};
use crate::codec::sse;
use crate::config::{DiffMode, StreamSpec};
use crate::metrics::Metrics;

/// One change, as every format encodes it. Formats nobody used when it was published are `None`;
/// a client wanting one gets the snapshot instead, which is always a valid next event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Every frame of a ring shares one epoch; a frame of another starts the ring afresh.
    pub epoch: u64,
    pub seq: u64,
    /// The checksum of the document after this change, the last part of its id.
    pub checksum: u64,
    pub snapshot: Bytes,
    pub json_patch: Option<Bytes>,
    pub merge_patch: Option<Bytes>,
}

impl Frame {
    /// Its id, `<epoch>-<seq>-<checksum>`, which every format's event carries.
    pub fn id(&self) -> LastEventId {
        LastEventId {
            at: EventId {
                epoch: self.epoch,
                seq: self.seq,
            },
            checksum: self.checksum,
        }
    }

    /// The change in `format`, if it was encoded that way; a snapshot is no patch.
    pub fn patch(&self, format: DiffMode) -> Option<&Bytes> {
        match format {
            DiffMode::JsonPatch => self.json_patch.as_ref(),
            DiffMode::MergePatch => self.merge_patch.as_ref(),
            DiffMode::Snapshot => None,
        }
    }

    /// What a client following `format` gets: its patch, or the snapshot when there is none.
    fn bytes_for(&self, format: DiffMode) -> &Bytes {
        self.patch(format).unwrap_or(&self.snapshot)
    }

    fn size(&self) -> usize {
        self.snapshot.len()
            + self.json_patch.as_ref().map_or(0, Bytes::len)
            + self.merge_patch.as_ref().map_or(0, Bytes::len)
    }
}

/// What travels on a topic's broadcast channel: small messages only. tokio frees a slot only once
/// every receiver has read it, so a slow reader pins the whole channel; an event is therefore
/// its sequence number, and its bytes are read from the ring, which `replay_bytes` bounds.
#[derive(Clone)]
enum Message {
    /// The epoch and sequence of a frame: a client compares both with what it holds.
    Event(u64, u64),
    /// An `upstream-status` event (a few hundred bytes): not replayed, so it carries no id.
    Status(Bytes),
    Heartbeat,
    /// The last event is in `State::closed`, where a receiver that lagged past this still finds it.
    Close,
}

/// Where the first poll stands; subscribers wait for it to leave `Pending`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    Pending,
    /// A poll finished: there is a document, or an `upstream-status` saying why not.
    Ready,
    /// The upstream refused these credentials; new subscribers get this status.
    Denied(u16),
}

/// One value per format, named: no code has to remember an order.
#[derive(Default)]
struct PerFormat<T> {
    json_patch: T,
    merge_patch: T,
    snapshot: T,
}

impl<T> PerFormat<T> {
    fn get(&self, format: DiffMode) -> &T {
        match format {
            DiffMode::JsonPatch => &self.json_patch,
            DiffMode::MergePatch => &self.merge_patch,
            DiffMode::Snapshot => &self.snapshot,
        }
    }
}

#[derive(Default)]
struct State {
    /// What the ring's ids start with: random per instance here, the cluster's in cluster mode,
    /// where it changes when Redis lost its data or this replica polls alone for a while.
    epoch: u64,
    /// The recent frames, oldest first, with consecutive sequences. Never empty after the first
    /// publish (it keeps at least the last frame whatever `replay` and `replay_bytes` say), so
    /// its back is the current document and its sequence.
    ring: VecDeque<Arc<Frame>>,
    ring_bytes: usize,
    /// The id of the frame just before the ring's first, once trimmed: a client that holds it
    /// can still be brought up to date with the whole ring.
    trimmed: Option<LastEventId>,
    /// The current `upstream-status` event while the upstream fails.
    failing: Option<Bytes>,
    /// The last event once the instance has ended: whoever attaches or resyncs later gets it
    /// instead of a stream that nothing will ever write to again.
    closed: Option<Bytes>,
}

impl State {
    /// How many frames of the ring a client that last saw `id` already has, if the ring follows
    /// on from it and its checksum is the one the client names: only then do the rest rebuild
    /// this instance's document from the client's.
    fn already_sent(&self, id: LastEventId) -> Option<usize> {
        let first = self.ring.front()?;
        if self.trimmed == Some(id) {
            return Some(0);
        }
        if id.at.epoch != self.epoch || id.at.seq < first.seq {
            return None;
        }
        let at = usize::try_from(id.at.seq - first.seq).ok()?;
        (self.ring.get(at)?.id() == id).then_some(at + 1)
    }

    /// Empties the ring, for a new epoch or a gap.
    fn clear(&mut self) {
        self.ring.clear();
        self.ring_bytes = 0;
        self.trimmed = None;
    }

    /// Sequence of the current document; 0 before the first one.
    fn seq(&self) -> u64 {
        self.ring.back().map_or(0, |f| f.seq)
    }

    /// The current document as a snapshot event, ready for new clients.
    fn snapshot(&self) -> Option<Bytes> {
        self.ring.back().map(|f| f.snapshot.clone())
    }
}

pub struct Topic {
    pub key: StreamKey,
    /// How logs and `/streams` name this instance (`Fingerprint::label`): never the key itself.
    pub label: String,
    /// Swapped by a reload that retunes the stream; the poller reads it before every poll.
    pub spec: ArcSwap<StreamSpec>,
    /// Read by every client for every event, written once per change. A blocking lock, not
    /// tokio's: no section holds it across an `.await`, and each is a few field reads or writes.
    state: RwLock<State>,
    tx: broadcast::Sender<Message>,
    ready: watch::Sender<Readiness>,
    /// The clients counted in, watched by the hub, which stops the instance after `idle` at 0.
    clients: watch::Sender<Occupancy>,
    /// Clients per format they chose, so only formats in use are encoded.
    formats: PerFormat<AtomicUsize>,
    /// Tells the poller a refresh is pending (`request_refresh`).
    pub refresh: Notify,
    refresh_window: Mutex<RefreshWindow>,
    pub metrics: Arc<Metrics>,
    /// When the last poll ended, and its result.
    last_poll: Mutex<Option<(std::time::SystemTime, &'static str)>>,
    /// Set by the cluster driver: who polls this instance.
    pub cluster: Mutex<Option<ClusterInfo>>,
    /// What sharing this instance's polls saved, for `/streams` and the console.
    pub(super) savings: Savings,
}

/// How many clients an instance has, and since when: the hub stops an instance that has had
/// none for its stream's `idle`, and evicts the one idle longest to make room.
#[derive(Clone, Copy, Debug)]
pub struct Occupancy {
    pub clients: usize,
    /// When the count last changed.
    pub since: tokio::time::Instant,
}

impl Occupancy {
    fn count(&mut self, delta: isize) {
        self.clients = self.clients.saturating_add_signed(delta);
        self.since = tokio::time::Instant::now();
    }
}

impl Topic {
    pub fn new(
        spec: Arc<StreamSpec>,
        key: StreamKey,
        label: String,
        metrics: Arc<Metrics>,
    ) -> Topic {
        // Lagging past the ring means a client cannot be caught up by replay anyway: it resyncs.
        let capacity = spec.replay.clamp(16, 4096);
        let (tx, _) = broadcast::channel(capacity);
        Topic {
            key,
            label,
            spec: ArcSwap::new(spec),
            state: RwLock::new(State {
                epoch: random_epoch(),
                ..State::default()
            }),
            tx,
            ready: watch::channel(Readiness::Pending).0,
            clients: watch::channel(Occupancy {
                clients: 0,
                since: tokio::time::Instant::now(),
            })
            .0,
            formats: Default::default(),
            refresh: Notify::new(),
            refresh_window: Mutex::new(RefreshWindow {
                from: tokio::time::Instant::now(),
                pending: None,
            }),
            metrics,
            last_poll: Mutex::new(None),
            cluster: Mutex::new(None),
            savings: Savings::default(),
        }
    }

    fn state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write()
    }

    /// Also held while a client subscribes to the channel, so no change slips in between what
    /// it read and what it receives.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read()
    }

    pub fn clients(&self) -> usize {
        self.clients.borrow().clients
    }

    pub fn occupancy(&self) -> Occupancy {
        *self.clients.borrow()
    }

    /// Follows the client count: the hub's idle countdown starts when it reaches 0.
    pub fn watch_clients(&self) -> watch::Receiver<Occupancy> {
        self.clients.subscribe()
    }

    /// Counts a client in; called under the hub's map lock, where the hub also decides that an
    /// instance is idle, so a joining client can't lose its instance. Dropping the `Member`
    /// counts it out.
    pub fn join(self: &Arc<Self>) -> Member {
        self.clients.send_modify(|o| o.count(1));
        Member {
            topic: self.clone(),
            counted: true,
        }
    }

    /// A member that is not counted as a client: the admin console's tail, which must neither
    /// keep an instance from going idle nor show up in its client count.
    pub fn watch(self: &Arc<Self>) -> Member {
        Member {
            topic: self.clone(),
            counted: false,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.read().epoch
    }

    /// The id the next change carries: one past the current document's, in the current epoch.
    pub fn next_id(&self) -> EventId {
        let st = self.read();
        EventId {
            epoch: st.epoch,
            seq: st.seq() + 1,
        }
    }

    /// Where the topic stands: its epoch, and the current document's sequence (0 before one).
    pub fn position(&self) -> EventId {
        let st = self.read();
        EventId {
            epoch: st.epoch,
            seq: st.seq(),
        }
    }

    /// The current document's place, if there is one.
    pub fn current_id(&self) -> Option<EventId> {
        Some(self.position()).filter(|at| at.seq > 0)
    }

    /// The current document as a snapshot event.
    pub fn current_snapshot(&self) -> Option<Bytes> {
        self.read().snapshot()
    }

    /// Starts numbering under `epoch` with no document: clients keep theirs until the next
    /// frame, a snapshot for them since its epoch is not theirs.
    pub fn begin_epoch(&self, epoch: u64) {
        let mut st = self.state();
        st.epoch = epoch;
        st.clear();
    }

    pub fn format_in_use(&self, format: DiffMode) -> bool {
        self.formats.get(format).load(Ordering::Acquire) > 0
    }

    pub fn readiness(&self) -> watch::Receiver<Readiness> {
        self.ready.subscribe()
    }

    pub fn set_ready(&self, r: Readiness) {
        self.ready.send_replace(r);
    }

    /// Publishes a new document version: normally the next sequence of the epoch. Any other
    /// (a cluster feed that skipped some, or another epoch) starts the ring afresh, so a replay
    /// never spans a gap, and clients get it as a snapshot.
    pub fn publish(&self, frame: Frame) {
        self.publish_all(vec![frame]);
    }

    /// Publishes frames in order, under one lock: a client that attaches meanwhile sees all of
    /// them or none, never half a catch-up (cluster mode loads a replica's history this way).
    pub fn publish_all(&self, frames: Vec<Frame>) {
        if frames.is_empty() {
            return;
        }
        let spec = self.spec.load();
        let mut st = self.state();
        for frame in frames {
            self.push(&mut st, &spec, Arc::new(frame), true);
        }
        drop(st);
        self.set_ready(Readiness::Ready);
    }

    /// Puts frames in the ring without telling anyone: attached clients keep what they hold
    /// until the next published frame (a snapshot for them, as its epoch or sequence does not
    /// follow theirs), and waiting clients keep waiting. Cluster mode loads a document this way
    /// that clients must not be shown yet: one nobody vouches for (forwarded credentials nobody
    /// polls now), or an older one than this gateway's own (back from polling alone).
    pub fn load(&self, frames: Vec<Frame>) {
        let spec = self.spec.load();
        let mut st = self.state();
        for frame in frames {
            self.push(&mut st, &spec, Arc::new(frame), false);
        }
    }

    fn push(&self, st: &mut State, spec: &StreamSpec, frame: Arc<Frame>, announce: bool) {
        if frame.epoch != st.epoch || frame.seq != st.seq() + 1 {
            st.epoch = frame.epoch;
            st.clear();
        }
        st.ring_bytes += frame.size();
        st.ring.push_back(frame.clone());
        while st.ring.len() > spec.replay.max(1)
            || (st.ring_bytes > spec.replay_bytes && st.ring.len() > 1)
        {
            if let Some(old) = st.ring.pop_front() {
                st.ring_bytes -= old.size();
                st.trimmed = Some(old.id());
            }
        }
        // Sent under the lock, so a subscriber that read the state sees exactly what follows it.
        if announce {
            self.savings.pushed(self.fan_out_bytes(&frame, spec.diff));
            let _ = self.tx.send(Message::Event(frame.epoch, frame.seq));
        }
    }

    /// What one change costs on the wire to this instance's clients, each in its format; those
    /// that chose none follow the stream's `diff`. Counted per change, not per client per event.
    fn fan_out_bytes(&self, frame: &Frame, diff: DiffMode) -> u64 {
        let mut chosen = 0u64;
        let mut bytes = 0u64;
        for format in [
            DiffMode::JsonPatch,
            DiffMode::MergePatch,
            DiffMode::Snapshot,
        ] {
            let n = self.formats.get(format).load(Ordering::Relaxed) as u64;
            chosen += n;
            bytes += n * frame.bytes_for(format).len() as u64;
        }
        let following = (self.clients() as u64).saturating_sub(chosen);
        bytes + following * frame.bytes_for(diff).len() as u64
    }

    /// Records the upstream's health: `Some(event)` while failing, `None` when healthy again;
    /// `event` is broadcast either way.
    pub fn set_status(&self, failing: Option<Bytes>, event: Bytes) {
        let mut st = self.state();
        st.failing = failing;
        let _ = self.tx.send(Message::Status(event));
        drop(st);
        self.set_ready(Readiness::Ready);
    }

    /// Whether the upstream is failing (an `upstream-status` is kept for new clients).
    pub fn failing(&self) -> bool {
        self.read().failing.is_some()
    }

    pub fn record_poll(&self, result: &'static str) {
        *self.last_poll.lock() = Some((std::time::SystemTime::now(), result));
    }

    pub fn info(&self) -> InstanceInfo {
        let (id, healthy) = {
            let st = self.read();
            (st.ring.back().map(|f| f.id()), st.failing.is_none())
        };
        let last = *self.last_poll.lock();
        InstanceInfo {
            stream: self.key.stream.to_string(),
            instance: self.label.clone(),
            clients: self.clients(),
            event_id: id.map(|id| id.to_string()),
            last_poll: last.map(|(t, _)| humantime::format_rfc3339_millis(t).to_string()),
            last_result: last.map(|(_, r)| r),
            upstream_healthy: healthy,
            cluster: self.cluster.lock().clone(),
            bytes: self.savings.reading(),
        }
    }

    pub fn heartbeat(&self) {
        let _ = self.tx.send(Message::Heartbeat);
    }

    /// Ends every attached stream with `last`, and every later one: the first reason wins. Wakes
    /// clients still waiting for the first poll, so they end now rather than after `timeout`.
    pub fn close(&self, last: Bytes) {
        let mut st = self.state();
        if st.closed.is_some() {
            return;
        }
        st.closed = Some(last);
        let _ = self.tx.send(Message::Close);
        drop(st);
        self.ready.send_if_modified(|r| {
            let pending = *r == Readiness::Pending;
            if pending {
                *r = Readiness::Ready;
            }
            pending
        });
    }

    fn refresh_window(&self) -> MutexGuard<'_, RefreshWindow> {
        self.refresh_window.lock()
    }

    /// Schedules a poll for `POST /streams/refresh`; returns whether it happens at once (else
    /// when the refresh window opens). Decided here, under one lock, so the admin's answer is
    /// what the poller will do.
    pub fn request_refresh(&self) -> bool {
        let limit = self.spec.load().refresh_limit;
        let now = self
            .refresh_window()
            .request(tokio::time::Instant::now(), limit);
        self.refresh.notify_one();
        now
    }

    /// When the pending refresh may poll, if one is pending.
    pub fn pending_refresh(&self) -> Option<tokio::time::Instant> {
        self.refresh_window().pending
    }

    /// A poll is starting: it serves every refresh asked for until now.
    pub fn refresh_polling(&self) {
        self.refresh_window().pending = None;
    }

    /// After a failed poll: no refresh polls before `at`, the end of the backoff or of the
    /// upstream's `Retry-After`.
    pub fn hold_refreshes_until(&self, at: tokio::time::Instant) {
        let mut w = self.refresh_window();
        w.from = w.from.max(at);
        // One asked for while that poll ran waits too.
        if let Some(pending) = &mut w.pending {
            *pending = (*pending).max(at);
        }
    }
}

/// 48 bits, so an id's epoch stays 12 hex digits.
pub fn random_epoch() -> u64 {
    rand::random::<u64>() & 0xffff_ffff_ffff
}

/// When refreshes may poll: at most once per `refresh_limit` (by default a quarter interval, so a
/// flood of them adds at most four polls per interval), and never before a failing upstream's
/// backoff or `Retry-After` ends.
#[derive(Debug)]
struct RefreshWindow {
    /// The earliest the next refresh poll may start.
    from: tokio::time::Instant,
    /// The refresh poll asked for and not yet started: later refreshes join it.
    pending: Option<tokio::time::Instant>,
}

impl RefreshWindow {
    /// Schedules a poll for a refresh asked for at `now`; returns whether it is at once. One
    /// inside the window is deferred to its end, not dropped: a webhook's caller expects the
    /// change it announced to arrive, if later.
    fn request(&mut self, now: tokio::time::Instant, limit: Duration) -> bool {
        if let Some(at) = self.pending {
            return at <= now;
        }
        let at = self.from.max(now);
        self.pending = Some(at);
        self.from = at + limit;
        at == now
    }
}

/// A client counted in a topic, before or after it attached (or the console's uncounted tail).
pub struct Member {
    topic: Arc<Topic>,
    counted: bool,
}

impl Member {
    pub fn topic(&self) -> &Arc<Topic> {
        &self.topic
    }

    /// Builds a subscription that starts from the current state: the missed events if `resume`
    /// names a frame still in the ring, checksum and all, the snapshot otherwise, then the
    /// upstream status if it is failing.
    pub fn attach(self, chosen: Option<DiffMode>, resume: Option<LastEventId>) -> Subscription {
        let topic = &self.topic;
        if let Some(f) = chosen {
            topic.formats.get(f).fetch_add(1, Ordering::AcqRel);
        }
        let format = chosen.unwrap_or_else(|| topic.spec.load().diff);
        let st = topic.read();
        let ended = st.closed.clone();
        let mut start = Vec::new();
        if ended.is_none() {
            match resume.and_then(|id| st.already_sent(id)) {
                Some(sent) => {
                    let missed = st.ring.iter().skip(sent);
                    start.extend(missed.map(|f| f.bytes_for(format).clone()));
                }
                None => start.extend(st.snapshot()),
            }
            start.extend(st.failing.clone());
            let bytes: usize = start.iter().map(Bytes::len).sum();
            topic.savings.pushed(bytes as u64);
        }
        let rx = topic.tx.subscribe();
        let (epoch, last_seq) = (st.epoch, st.seq());
        drop(st);
        Subscription {
            member: self,
            start,
            rx,
            epoch,
            last_seq,
            chosen,
            ended,
        }
    }
}

/// A client's place in a topic. Dropping it leaves the topic.
pub struct Subscription {
    /// Counts this client in, and is its way to the topic.
    member: Member,
    start: Vec<Bytes>,
    rx: broadcast::Receiver<Message>,
    /// Frames up to this sequence are already reflected in what the client has. Above 0, the
    /// client has a document a patch can apply to: every path that raises it from 0 sends one
    /// (the snapshot at attach or resync, a replay from an id of this topic, or frame 1).
    last_seq: u64,
    /// The epoch `last_seq` counts in.
    epoch: u64,
    chosen: Option<DiffMode>,
    /// The instance's last event, once this subscription has seen it end.
    ended: Option<Bytes>,
}

impl Subscription {
    /// What to send before any live event.
    pub fn take_start(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.start)
    }

    /// The instance's name for logs (`Fingerprint::label`).
    pub fn label(&self) -> &str {
        &self.member.topic().label
    }

    /// Waits for the next thing to write. Cancel-safe: it can sit in a `select!`.
    pub async fn next(&mut self) -> Delivery {
        loop {
            if let Some(last) = &self.ended {
                return Delivery::Close(last.clone());
            }
            match self.rx.recv().await {
                Ok(Message::Event(epoch, seq)) => {
                    if epoch == self.epoch && seq <= self.last_seq {
                        continue;
                    }
                    if let Some(bytes) = self.event(epoch, seq) {
                        return Delivery::Send(bytes);
                    }
                }
                Ok(Message::Status(b)) => return Delivery::Send(b),
                Ok(Message::Heartbeat) => {
                    return Delivery::Send(Bytes::from_static(sse::HEARTBEAT))
                }
                Ok(Message::Close) => {
                    self.ended = Some(self.member.topic.read().closed.clone().unwrap_or_default());
                }
                // Fell behind the channel: replace the backlog with one fresh snapshot.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let topic = &self.member.topic;
                    topic.metrics.clients_resynced.inc();
                    let st = topic.read();
                    // The skipped backlog may hold the `Close`: the state still has it.
                    if let Some(last) = st.closed.clone() {
                        self.ended = Some(last);
                        continue;
                    }
                    (self.epoch, self.last_seq) = (st.epoch, st.seq());
                    // Skip the rest of the backlog too: it is older than the snapshot.
                    self.rx = topic.tx.subscribe();
                    if let Some(snapshot) = st.snapshot() {
                        return Delivery::Send(snapshot);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return Delivery::Close(Bytes::new()),
            }
        }
    }

    /// The bytes for event `seq` of `epoch`: its patch when it follows what this client holds,
    /// from the ring; else the current snapshot (this client fell behind the replay bounds, or
    /// the epoch changed, or a cluster feed skipped some). `None` for a message older than the
    /// state: the state's own message is still on its way.
    fn event(&mut self, epoch: u64, seq: u64) -> Option<Bytes> {
        let topic = &self.member.topic;
        let st = topic.read();
        if epoch != st.epoch {
            return None;
        }
        let follows = epoch == self.epoch && seq == self.last_seq + 1;
        let frame = st
            .ring
            .front()
            .and_then(|first| seq.checked_sub(first.seq))
            .and_then(|i| st.ring.get(usize::try_from(i).ok()?))
            .filter(|f| f.seq == seq && follows);
        let Some(frame) = frame else {
            topic.metrics.clients_resynced.inc();
            (self.epoch, self.last_seq) = (st.epoch, st.seq());
            return st.snapshot();
        };
        let format = self.chosen.unwrap_or_else(|| topic.spec.load().diff);
        let bytes = if self.last_seq > 0 {
            frame.bytes_for(format)
        } else {
            &frame.snapshot
        };
        self.last_seq = seq;
        Some(bytes.clone())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(f) = self.chosen {
            self.member
                .topic
                .formats
                .get(f)
                .fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.counted {
            self.topic.clients.send_modify(|o| o.count(-1));
        }
    }
}

#[cfg(test)]
impl Topic {
    /// The id the test frame `seq` carries in this topic's epoch.
    fn id(&self, seq: u64) -> LastEventId {
        LastEventId {
            at: EventId {
                epoch: self.epoch(),
                seq,
            },
            checksum: tests::sum(seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(replay: usize) -> Arc<Topic> {
        topic_with(&format!("replay: {replay}"))
    }

    fn topic_with(extra: &str) -> Arc<Topic> {
        let spec = crate::hub::fixtures::spec(&format!("    {extra}\n"));
        let key = StreamKey {
            stream: Arc::from("/s"),
            target: "/s".into(),
            forwarded: vec![],
        };
        Arc::new(Topic::new(
            spec,
            key,
            "/s".into(),
            Arc::new(Metrics::new().unwrap()),
        ))
    }

    /// The test documents' checksums: one per sequence.
    pub(super) fn sum(seq: u64) -> u64 {
        0x5eed_0000 + seq
    }

    fn frame(seq: u64) -> Frame {
        Frame {
            epoch: 7,
            seq,
            checksum: sum(seq),
            snapshot: Bytes::from(format!("snapshot {seq}\n")),
            json_patch: (seq > 1).then(|| Bytes::from(format!("patch {seq}\n"))),
            merge_patch: None,
        }
    }

    fn text(b: &[Bytes]) -> Vec<String> {
        b.iter()
            .map(|b| String::from_utf8_lossy(b).trim().to_string())
            .collect()
    }

    async fn next(sub: &mut Subscription) -> String {
        match sub.next().await {
            Delivery::Send(b) | Delivery::Close(b) => {
                String::from_utf8_lossy(&b).trim().to_string()
            }
        }
    }

    #[tokio::test]
    async fn a_resume_inside_the_ring_replays_exactly_the_missed_events() {
        let t = topic(16);
        for seq in 1..=5 {
            t.publish(frame(seq));
        }
        let mut sub = t.join().attach(Some(DiffMode::JsonPatch), Some(t.id(3)));
        assert_eq!(text(&sub.take_start()), ["patch 4", "patch 5"]);
        let up_to_date = t
            .join()
            .attach(Some(DiffMode::JsonPatch), Some(t.id(5)))
            .take_start();
        assert!(up_to_date.is_empty());
        // Merge-patch was not in use: its clients get snapshots, always a valid next event.
        let merge = t
            .join()
            .attach(Some(DiffMode::MergePatch), Some(t.id(4)))
            .take_start();
        assert_eq!(text(&merge), ["snapshot 5"]);
        t.publish(frame(6));
        assert_eq!(next(&mut sub).await, "patch 6");
    }

    #[tokio::test]
    async fn any_other_id_gets_the_current_snapshot() {
        let t = topic(2);
        for seq in 1..=5 {
            t.publish(frame(seq));
        }
        let foreign = LastEventId {
            at: EventId {
                epoch: t.epoch() ^ 1,
                seq: 4,
            },
            ..t.id(4)
        };
        // The right place with another document: the client's copy is not ours to patch.
        let drifted = LastEventId {
            checksum: sum(4) ^ 1,
            ..t.id(4)
        };
        let before_trim = LastEventId {
            checksum: sum(3) ^ 1,
            ..t.id(3)
        };
        for resume in [
            None,
            Some(foreign),
            Some(drifted),
            Some(before_trim),
            Some(t.id(1)),
            Some(t.id(99)),
        ] {
            let start = t
                .join()
                .attach(Some(DiffMode::JsonPatch), resume)
                .take_start();
            assert_eq!(text(&start), ["snapshot 5"], "{resume:?}");
        }
        // Seq 3 is the oldest the ring of 2 can resume from (it holds 4 and 5, and the id of 3).
        let start = t
            .join()
            .attach(Some(DiffMode::JsonPatch), Some(t.id(3)))
            .take_start();
        assert_eq!(text(&start), ["patch 4", "patch 5"]);
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_gets_one_snapshot_instead_of_its_backlog() {
        let t = topic(16);
        t.publish(frame(1));
        let mut sub = t.join().attach(Some(DiffMode::JsonPatch), None);
        sub.take_start();
        // The channel holds 16; 40 more overflow it.
        for seq in 2..=41 {
            t.publish(frame(seq));
        }
        assert_eq!(next(&mut sub).await, "snapshot 41");
        t.publish(frame(42));
        assert_eq!(next(&mut sub).await, "patch 42");
    }

    #[tokio::test]
    async fn a_client_without_a_document_gets_the_first_one_whole() {
        use futures_util::FutureExt;
        // Patches that nothing could apply, even on the first frame: only a client that holds a
        // document may be sent one.
        let patched = |seq: u64| Frame {
            json_patch: Some(Bytes::from(format!("patch {seq}\n"))),
            ..frame(seq)
        };
        let t = topic(16);
        // Its channel overflows with heartbeats before there is any document.
        let mut lagged = t.join().attach(Some(DiffMode::JsonPatch), None);
        assert!(lagged.take_start().is_empty());
        for _ in 0..40 {
            t.heartbeat();
        }
        assert!(
            next(&mut lagged).now_or_never().is_none(),
            "nothing to resync to"
        );
        let mut early = t.join().attach(Some(DiffMode::JsonPatch), None);
        assert!(early.take_start().is_empty());
        t.publish(patched(1));
        assert_eq!(next(&mut early).await, "snapshot 1");
        assert_eq!(next(&mut lagged).await, "snapshot 1");
        t.publish(patched(2));
        assert_eq!(next(&mut early).await, "patch 2");
        assert_eq!(next(&mut lagged).await, "patch 2");
    }

    #[tokio::test]
    async fn without_replay_the_ring_still_holds_the_current_document() {
        let t = topic_with("replay: 0\n    replay_bytes: 1");
        for seq in 1..=3 {
            t.publish(frame(seq));
        }
        assert_eq!(t.read().ring.len(), 1);
        assert_eq!(t.current_id().map(|id| id.seq), Some(3));
        let resumed = t
            .join()
            .attach(Some(DiffMode::JsonPatch), Some(t.id(1)))
            .take_start();
        assert_eq!(text(&resumed), ["snapshot 3"]);
        let mut sub = t.join().attach(Some(DiffMode::JsonPatch), None);
        assert_eq!(text(&sub.take_start()), ["snapshot 3"]);
        t.publish(frame(4));
        assert_eq!(next(&mut sub).await, "patch 4");
    }

    #[tokio::test]
    async fn a_gap_or_another_epoch_reaches_clients_as_a_snapshot_never_a_patch() {
        let t = topic(16);
        for seq in 1..=3 {
            t.publish(frame(seq));
        }
        let mut sub = t.join().attach(Some(DiffMode::JsonPatch), None);
        assert_eq!(text(&sub.take_start()), ["snapshot 3"]);
        // A cluster feed that skipped 4: its patch 5 would apply to the wrong base.
        t.publish(frame(5));
        assert_eq!(next(&mut sub).await, "snapshot 5");
        t.publish(frame(6));
        assert_eq!(next(&mut sub).await, "patch 6");
        // Redis lost its data: a new epoch starts, at a seq this client already passed.
        let other = |seq| Frame {
            epoch: 8,
            ..frame(seq)
        };
        t.publish(other(2));
        assert_eq!(next(&mut sub).await, "snapshot 2");
        t.publish(other(3));
        assert_eq!(next(&mut sub).await, "patch 3");
        // The ring starts afresh at each: no replay spans a gap or two epochs.
        let old = LastEventId {
            at: EventId { epoch: 7, seq: 5 },
            checksum: sum(5),
        };
        let mut resumed = t.join().attach(Some(DiffMode::JsonPatch), Some(old));
        assert_eq!(text(&resumed.take_start()), ["snapshot 3"]);
        let mut inside = t.join().attach(Some(DiffMode::JsonPatch), Some(t.id(2)));
        assert_eq!(text(&inside.take_start()), ["patch 3"]);
    }

    #[tokio::test]
    async fn a_new_epoch_without_a_document_keeps_clients_on_theirs_until_its_first_frame() {
        let t = topic(16);
        t.publish(frame(1));
        t.publish(frame(2));
        let mut sub = t.join().attach(Some(DiffMode::JsonPatch), None);
        sub.take_start();
        t.begin_epoch(9);
        assert_eq!(t.next_id(), EventId { epoch: 9, seq: 1 });
        assert!(t.current_id().is_none());
        t.publish(Frame {
            epoch: 9,
            ..frame(1)
        });
        assert_eq!(next(&mut sub).await, "snapshot 1");
    }

    #[test]
    fn a_client_holds_its_topic_once() {
        let t = topic(4);
        let before = Arc::strong_count(&t);
        let sub = t.join().attach(None, None);
        assert_eq!(Arc::strong_count(&t), before + 1);
        drop(sub);
        assert_eq!(Arc::strong_count(&t), before);
    }

    #[tokio::test]
    async fn leaving_is_counted_and_signalled() {
        let t = topic(4);
        let a = t.join();
        let b = t.join().attach(Some(DiffMode::Snapshot), None);
        assert_eq!(t.clients(), 2);
        let mut clients = t.watch_clients();
        drop(a);
        drop(b);
        assert_eq!(t.clients(), 0);
        // The hub's idle countdown wakes on this.
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            clients.wait_for(|o| o.clients == 0),
        )
        .await
        .unwrap()
        .unwrap();
    }

    #[tokio::test]
    async fn a_lagging_client_pins_no_more_than_the_replay_bytes() {
        let t = topic_with("replay: 1000\n    replay_bytes: 8KiB");
        let big = |seq: u64| Frame {
            epoch: 7,
            seq,
            checksum: sum(seq),
            snapshot: Bytes::from(format!("snapshot {seq} {}\n", "x".repeat(1000))),
            json_patch: Some(Bytes::from(format!("patch {seq}\n"))),
            merge_patch: None,
        };
        t.publish(big(1));
        // Attached, then never reading while 200 changes go by: the channel holds them all.
        let mut slow = t.join().attach(Some(DiffMode::JsonPatch), None);
        slow.take_start();
        let mut published = Vec::new();
        for seq in 2..=201 {
            t.publish(big(seq));
            published.push(Arc::downgrade(t.read().ring.back().unwrap()));
        }
        let alive: Vec<_> = published.iter().filter_map(|w| w.upgrade()).collect();
        let pinned: usize = alive.iter().map(|f| f.size()).sum();
        assert!(alive.len() <= 8, "{} frames alive", alive.len());
        assert_eq!(pinned, t.read().ring_bytes);
        assert!(pinned <= 8 * 1024, "{pinned} bytes pinned");
        drop(alive);
        // Its next event is already out of the ring: one fresh snapshot, then patches again.
        assert!(next(&mut slow).await.starts_with("snapshot 201 "));
        t.publish(big(202));
        assert_eq!(next(&mut slow).await, "patch 202");
    }

    #[tokio::test]
    async fn a_closed_instance_ends_late_joiners_and_clients_that_missed_the_close() {
        let t = topic(16);
        let waiting = t.join();
        let mut ready = t.readiness();
        t.publish(frame(1));
        let mut lagging = t.join().attach(Some(DiffMode::JsonPatch), None);
        lagging.take_start();
        // The close goes by in a backlog that overflows this client's channel.
        for seq in 2..=10 {
            t.publish(frame(seq));
        }
        t.close(Bytes::from_static(b"the end\n"));
        for _ in 0..20 {
            t.heartbeat();
        }
        assert_eq!(next(&mut lagging).await, "the end");
        assert_eq!(next(&mut lagging).await, "the end", "and it stays ended");
        // A client that was waiting for the first poll attaches after the close.
        assert_eq!(*ready.borrow_and_update(), Readiness::Ready);
        let mut late = waiting.attach(None, None);
        assert!(late.take_start().is_empty());
        assert_eq!(next(&mut late).await, "the end");
        // The first reason wins.
        t.close(Bytes::from_static(b"another end\n"));
        let mut later = t.join().attach(None, Some(t.id(3)));
        assert_eq!(next(&mut later).await, "the end");
    }

    #[tokio::test]
    async fn closing_wakes_the_clients_waiting_for_the_first_poll() {
        let t = topic(4);
        let mut ready = t.readiness();
        assert_eq!(*ready.borrow(), Readiness::Pending);
        t.close(Bytes::from_static(b"gone\n"));
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            ready.wait_for(|r| *r == Readiness::Ready),
        )
        .await
        .unwrap()
        .unwrap();
        // A refusal already recorded is kept.
        let t = topic(4);
        t.set_ready(Readiness::Denied(401));
        t.close(Bytes::from_static(b"denied\n"));
        assert_eq!(*t.readiness().borrow(), Readiness::Denied(401));
    }

    #[test]
    fn refreshes_poll_once_per_quarter_interval_and_join_the_pending_one() {
        let t0 = tokio::time::Instant::now();
        let q = std::time::Duration::from_secs(900);
        let mut w = RefreshWindow {
            from: t0,
            pending: None,
        };
        assert!(w.request(t0, q), "the first one polls at once");
        assert!(
            w.request(t0, q),
            "and one before that poll started joins it"
        );
        w.pending = None; // the poll started
        let t1 = t0 + q / 10;
        assert!(!w.request(t1, q), "inside the window: deferred");
        assert_eq!(w.pending, Some(t0 + q));
        assert!(!w.request(t1 + q / 10, q), "joins the deferred one");
        w.pending = None;
        // The next window starts where the deferred poll was.
        assert!(!w.request(t0 + q + q / 10, q));
        assert_eq!(w.pending, Some(t0 + q * 2));
    }

    #[tokio::test]
    async fn a_refresh_never_cuts_a_backoff_short() {
        let t = topic(4);
        let retry_at = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
        // Asked for while the failing poll ran, then that poll asked for an hour.
        assert!(t.request_refresh());
        t.hold_refreshes_until(retry_at);
        assert_eq!(t.pending_refresh(), Some(retry_at));
        t.refresh_polling();
        assert!(!t.request_refresh());
        assert_eq!(t.pending_refresh(), Some(retry_at));
    }
}
