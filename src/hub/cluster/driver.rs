//! One clustered instance on this gateway: follows the holder through the feed, takes the
//! lease when it is free, polls while it holds it, and polls alone (or serves the last
//! document as stale) while Redis does not answer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rand::Rng;
use serde_json::json;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::feed::{Event, Listening};
use super::holder::Holder;
use super::keys::Keys;
use super::wire::{epoch_text, Joined, Message, Renewed};
use super::Cluster;
use crate::codec::sse;
use crate::config::{DiffMode, OnRedisDown};
use crate::hub::poller::{status_event as poll_status, Exit, Poller, Seed};
use crate::hub::source::Source;
use crate::hub::topic::{random_epoch, Readiness, Topic};
use crate::hub::{ClusterInfo, EventId};
use crate::upstream::Validators;

pub struct Driver {
    pub cluster: Arc<Cluster>,
    pub topic: Arc<Topic>,
    pub source: Arc<dyn Source>,
    /// Before this gateway's first poll, should it take the lease of an instance nobody polled.
    pub first_delay: Duration,
}

/// What the instance does next on this gateway.
enum Next {
    Follow,
    /// It took the lease: what `JOIN` found, and when it asked.
    Hold(Joined, Instant),
    /// Redis does not answer.
    Alone,
    Exit(Exit),
}

/// The instance's own state here, beside the topic.
struct Ctx {
    keys: Keys,
    feed: Listening,
    /// This gateway's lease value while it holds or asks for the lease.
    lease: String,
    /// Shutting down: hold nothing, take nothing.
    passive: bool,
    /// Back from polling alone: where the cluster stood then, older than what clients hold.
    older_than: Option<EventId>,
}

impl Driver {
    pub async fn run(self, cancel: CancellationToken) -> Exit {
        let c = &self.cluster;
        let keys = Keys::new(
            &c.spec.prefix,
            c.spec.key_secret.as_deref(),
            &self.topic.key,
        );
        let feed = c.feed.listen(&keys.channel);
        let token: u64 = rand::random();
        let mut ctx = Ctx {
            lease: format!("{}:{token:016x}", c.spec.node_id),
            keys,
            feed,
            passive: false,
            older_than: None,
        };
        self.show(&ctx, "follower", None);
        // Listening before the first read of the state, so nothing published after it is missed.
        let subscribed = tokio::time::timeout(c.spec.timeout.saturating_mul(2), async {
            while let Some(ev) = ctx.feed.rx.recv().await {
                if matches!(ev, Event::Subscribed) {
                    return;
                }
            }
        });
        let _ = subscribed.await;
        let mut next = Next::Follow;
        loop {
            next = match next {
                Next::Follow => self.follow(&mut ctx, &cancel).await,
                Next::Hold(joined, asked) => self.hold(&mut ctx, &cancel, joined, asked).await,
                Next::Alone => self.alone(&mut ctx, &cancel).await,
                Next::Exit(exit) => return exit,
            }
        }
    }

    fn ttl(&self) -> Duration {
        self.cluster.spec.lease_ttl(self.topic.spec.load().interval)
    }

    /// A third of the lease ttl, a little spread so replicas don't ask in step.
    fn tick(&self) -> Duration {
        let third = self.ttl() / 3;
        third.mul_f64(rand::rng().random_range(0.9..1.1))
    }

    fn show(&self, ctx: &Ctx, role: &'static str, holder: Option<String>) {
        *self.topic.cluster.lock() = Some(ClusterInfo {
            node: self.cluster.spec.node_id.clone(),
            role,
            holder,
            key: ctx.keys.hash.clone(),
        });
    }

    /// `JOIN`: the state in Redis, and the lease if `acquire` and it is free.
    async fn join(&self, ctx: &Ctx, acquire: bool) -> Option<Joined> {
        let c = &self.cluster;
        let spec = self.topic.spec.load();
        let mut wants = String::new();
        if self.topic.format_in_use(DiffMode::JsonPatch) {
            wants.push('j');
        }
        if self.topic.format_in_use(DiffMode::MergePatch) {
            wants.push('m');
        }
        let held = self.topic.position();
        let mut call = c.scripts.join.prepare_invoke();
        call.key(&ctx.keys.meta)
            .key(&ctx.keys.log)
            .key(&ctx.keys.lease)
            .key(&ctx.keys.want_json_patch)
            .key(&ctx.keys.want_merge_patch)
            .arg(if acquire { ctx.lease.as_str() } else { "" })
            .arg(self.ttl().as_millis() as u64)
            .arg(epoch_text(random_epoch()))
            .arg(c.spec.history_ttl.as_secs().max(1))
            .arg(spec.replay.max(1))
            .arg(wants)
            .arg(epoch_text(held.epoch))
            .arg(held.seq);
        let answer = c.conn.script(&call).await.ok()?;
        let joined = Joined::parse(&answer);
        if joined.is_none() {
            warn!(?answer, "redis answered JOIN in an unknown shape");
        }
        joined
    }

    /// Brings the topic to what Redis holds: the missing frames as patches when they follow
    /// what it has, else the whole log afresh (clients get a snapshot).
    ///
    /// A document fetched with forwarded credentials reaches clients from Redis only while
    /// another gateway polls with them: one nobody polls may be a day old and the credentials
    /// revoked since, so clients wait for this gateway's own first poll, as in one process.
    ///
    /// Back from polling alone, the cluster's document is older than the one clients hold: it
    /// waits until the cluster moves past where it stood (`Ctx::older_than`).
    fn catch_up(&self, ctx: &mut Ctx, joined: &Joined) {
        let topic = &self.topic;
        let vouched = topic.key.forwarded.is_empty() || (!joined.held && !joined.holder.is_empty());
        if !vouched && *topic.readiness().borrow() == Readiness::Pending {
            topic.load(joined.frames.clone());
            return;
        }
        if let Some(old) = ctx.older_than {
            if joined.epoch == old.epoch && joined.seq <= old.seq {
                return;
            }
            ctx.older_than = None;
        }
        self.publish_missing(joined);
        // After the frames, so a client let in by the status finds the document too.
        match &joined.status {
            Some(status) if !topic.failing() => {
                topic.set_status(Some(status.clone()), status.clone());
            }
            // The holder's "healthy" was lost on the way (or this gateway failed alone).
            None if topic.failing() => {
                topic.set_status(None, poll_status("healthy", None, None));
            }
            _ => {}
        }
    }

    fn publish_missing(&self, joined: &Joined) {
        let topic = &self.topic;
        let Some(newest) = joined.frames.last() else {
            return;
        };
        let EventId { epoch, seq } = topic.position();
        if epoch == joined.epoch && newest.seq <= seq {
            return;
        }
        let follows = epoch == joined.epoch && joined.frames[0].seq <= seq + 1;
        if seq > 0 && !follows {
            self.cluster.counts.feed_repairs.inc();
            debug!(from = seq, to = joined.seq, "caught up from redis afresh");
        }
        let frames = joined.frames.iter().filter(|f| !follows || f.seq > seq);
        topic.publish_all(frames.cloned().collect());
    }

    /// Applies one feed message; `Some` ends following.
    async fn on_message(&self, ctx: &mut Ctx, payload: &[u8]) -> Option<Next> {
        let topic = &self.topic;
        match Message::parse(payload)? {
            Message::Frame(f) => {
                let EventId { epoch, seq } = topic.position();
                if f.epoch == epoch && f.seq <= seq {
                    return None;
                }
                if f.epoch == epoch && f.seq == seq + 1 {
                    topic.publish(f);
                    return None;
                }
                // A gap, or another epoch: read the log rather than lose the history.
                match self.join(ctx, false).await {
                    Some(j) => self.catch_up(ctx, &j),
                    None => topic.publish(f),
                }
            }
            Message::Status { failing, event } => {
                topic.set_status(failing.then(|| event.clone()), event);
            }
            Message::Denied { status, last } => {
                topic.set_ready(Readiness::Denied(status));
                topic.close(last);
                return Some(Next::Exit(Exit::Denied(status)));
            }
            Message::Tick { epoch, seq } => {
                let behind = topic
                    .current_id()
                    .is_none_or(|id| id.epoch != epoch || id.seq < seq);
                if behind {
                    if let Some(j) = self.join(ctx, false).await {
                        self.catch_up(ctx, &j);
                    }
                }
            }
            Message::Released if !ctx.passive => return self.contend(ctx).await,
            Message::Released | Message::Refresh => {}
        }
        None
    }

    /// Asks for the lease; `Some` when this gateway holds it now.
    async fn contend(&self, ctx: &mut Ctx) -> Option<Next> {
        let asked = Instant::now();
        let joined = self.join(ctx, !ctx.passive).await?;
        self.catch_up(ctx, &joined);
        if joined.held {
            return Some(Next::Hold(joined, asked));
        }
        self.show(ctx, "follower", holder_node(&joined.holder));
        None
    }

    async fn follow(&self, ctx: &mut Ctx, cancel: &CancellationToken) -> Next {
        let mut down_since: Option<Instant> = None;
        let mut next_try = Instant::now() + self.first_delay;
        let mut beat = Instant::now() + self.topic.spec.load().heartbeat;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Next::Exit(Exit::Cancelled),
                () = self.cluster.closing.cancelled(), if !ctx.passive => ctx.passive = true,
                ev = ctx.feed.rx.recv() => match ev {
                    Some(Event::Message(m)) => {
                        if let Some(next) = self.on_message(ctx, &m).await {
                            return next;
                        }
                        // Messages were dropped behind this one: read the log now.
                        if ctx.feed.overflowed.swap(false, Ordering::AcqRel) {
                            next_try = Instant::now();
                        }
                    }
                    // Resubscribed: what was published meanwhile comes from the log.
                    Some(Event::Subscribed) => next_try = Instant::now(),
                    None => return Next::Exit(Exit::Cancelled),
                },
                () = sleep_until(next_try) => {
                    next_try = Instant::now() + self.tick();
                    let asked = Instant::now();
                    match self.join(ctx, !ctx.passive).await {
                        Some(j) => {
                            down_since = None;
                            self.catch_up(ctx, &j);
                            if j.held {
                                return Next::Hold(j, asked);
                            }
                            self.show(ctx, "follower", holder_node(&j.holder));
                        }
                        None => {
                            let since = *down_since.get_or_insert(asked);
                            if since.elapsed() >= self.ttl() {
                                return Next::Alone;
                            }
                        }
                    }
                }
                () = sleep_until(beat) => {
                    self.topic.heartbeat();
                    beat = Instant::now() + self.topic.spec.load().heartbeat;
                }
                // POST /streams/refresh here: the holder polls.
                () = self.topic.refresh.notified() => {
                    self.topic.refresh_polling();
                    let mut cmd = redis::cmd("PUBLISH");
                    cmd.arg(&ctx.keys.channel).arg("q");
                    let _ = self.cluster.conn.cmd(&cmd).await;
                }
            }
        }
    }
}

/// The node part of a lease value `<node_id>:<token>`.
fn holder_node(lease: &str) -> Option<String> {
    lease.rsplit_once(':').map(|(node, _)| node.to_string())
}

impl Driver {
    /// Polls for the cluster while the lease is renewed. A renewal that fails leaves the lease
    /// to expire; past its local validity (measured from when the last renewal was sent, minus
    /// a tenth) no poll starts, and Redis's own fence refuses any late publish.
    async fn hold(
        &self,
        ctx: &mut Ctx,
        cancel: &CancellationToken,
        joined: Joined,
        asked: Instant,
    ) -> Next {
        let c = &self.cluster;
        let ttl = self.ttl();
        c.counts.lease_acquired.inc();
        let _held = Held::new(c);
        info!(generation = %ctx.lease, "lease taken: polling for the cluster");
        self.show(ctx, "holder", Some(c.spec.node_id.clone()));
        ctx.older_than = None;
        if !self.in_step(ctx, &joined).await {
            return Next::Follow;
        }
        let (holder, poller) = self.poller_for(ctx, &joined);
        let stop = CancellationToken::new();
        let poll = poller.run(&holder, stop.clone());
        tokio::pin!(poll);
        let mut valid_until = asked + ttl - ttl / 10;
        let mut renew_at = Instant::now() + self.tick();
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    self.release(ctx).await;
                    return Next::Exit(Exit::Cancelled);
                }
                () = c.closing.cancelled(), if !ctx.passive => {
                    ctx.passive = true;
                    self.release(ctx).await;
                    return Next::Follow;
                }
                // Checked before the poller runs: one woken from a pause past its lease must
                // not start a poll.
                // Following tells whether Redis is down or this gateway was paused.
                () = sleep_until(valid_until) => {
                    warn!("lease not renewed in time; following");
                    c.counts.lease_lost.inc();
                    self.release(ctx).await;
                    return Next::Follow;
                }
                () = sleep_until(renew_at) => {
                    renew_at = Instant::now() + self.tick();
                    if !self.renewed(ctx, &holder, &mut valid_until).await {
                        return Next::Follow;
                    }
                }
                exit = &mut poll => {
                    if exit != Exit::Lost {
                        return Next::Exit(exit);
                    }
                    c.counts.lease_lost.inc();
                    // A publish that timed out may have landed: nobody should wait out the
                    // lease for a holder that stopped.
                    self.release(ctx).await;
                    return Next::Follow;
                }
                ev = ctx.feed.rx.recv() => match ev {
                    Some(Event::Message(m)) => {
                        if self.overtaken(&holder, &m) {
                            c.counts.lease_lost.inc();
                            return Next::Follow;
                        }
                    }
                    Some(Event::Subscribed) => {}
                    None => return Next::Exit(Exit::Cancelled),
                },
            }
        }
    }

    /// Whether the topic stands where Redis does, as a holder's must before it polls: else the
    /// lease goes back (Redis moved on while it answered; `JOIN` again, as a follower).
    async fn in_step(&self, ctx: &Ctx, joined: &Joined) -> bool {
        let at = self.topic.current_id();
        let redis = EventId {
            epoch: joined.epoch,
            seq: joined.seq,
        };
        if at == Some(redis) {
            return true;
        }
        if joined.seq == 0 {
            // Nothing published in this epoch yet: the first frame is its seq 1.
            self.topic.begin_epoch(joined.epoch);
            return true;
        }
        if joined.frames.last().map(|f| f.seq) == Some(joined.seq) {
            // Held back by `catch_up` (older than what clients hold, or not vouched for): the
            // base of the next patch, which clients get as a snapshot.
            self.topic.load(joined.frames.clone());
            return true;
        }
        self.release(ctx).await;
        false
    }

    /// The poller that continues from what Redis holds, and what it publishes through.
    fn poller_for(&self, ctx: &Ctx, joined: &Joined) -> (Holder, Poller) {
        let c = &self.cluster;
        // `catch_up` brought the topic to what Redis holds.
        let seed = Seed {
            doc: self.topic.current_snapshot().map(|s| sse::data_of(&s)),
            validators: Validators::new(joined.etag.as_deref(), joined.last_modified.as_deref()),
            failing: joined.status.is_some(),
        };
        // The cadence goes on from the last poll, whoever made it.
        let interval = self.topic.spec.load().interval;
        let first_delay = match joined.since_poll_ms {
            Some(ms) => interval.saturating_sub(Duration::from_millis(ms)),
            None => Duration::ZERO,
        };
        let holder = Holder::new(
            c.clone(),
            self.topic.clone(),
            ctx.keys.clone(),
            ctx.lease.clone(),
        );
        let poller = Poller {
            topic: self.topic.clone(),
            source: self.source.clone(),
            first_delay,
            seed: Some(seed),
        };
        (holder, poller)
    }

    /// A feed message while holding: a refresh asked for on another gateway, or a frame this
    /// gateway did not publish, which means it lost the lease without noticing yet.
    fn overtaken(&self, holder: &Holder, message: &[u8]) -> bool {
        match Message::parse(message) {
            Some(Message::Refresh) => {
                self.topic.request_refresh();
                false
            }
            Some(Message::Frame(f)) => {
                let sent = holder.sent.load(Ordering::Acquire);
                self.topic
                    .current_id()
                    .is_some_and(|id| id.epoch != f.epoch || f.seq > id.seq.max(sent))
            }
            _ => false,
        }
    }

    /// Renews the lease, moving its local validity on; false once it is gone.
    async fn renewed(&self, ctx: &Ctx, holder: &Holder, valid_until: &mut Instant) -> bool {
        let ttl = self.ttl();
        let sent = Instant::now();
        match self.renew(ctx).await {
            Some(r) if r.held => {
                *valid_until = sent + ttl - ttl / 10;
                holder.renewed(&r);
                true
            }
            Some(_) => {
                warn!("lease lost: another gateway polls now");
                self.cluster.counts.lease_lost.inc();
                false
            }
            // A deadline missed: the validity runs out unless the next renewal lands.
            None => true,
        }
    }

    async fn renew(&self, ctx: &Ctx) -> Option<Renewed> {
        let c = &self.cluster;
        let mut call = c.scripts.renew.prepare_invoke();
        call.key(&ctx.keys.lease)
            .key(&ctx.keys.want_json_patch)
            .key(&ctx.keys.want_merge_patch)
            .key(&ctx.keys.meta)
            .key(&ctx.keys.log)
            .arg(&ctx.lease)
            .arg(self.ttl().as_millis() as u64)
            .arg(epoch_text(self.topic.epoch()))
            .arg(c.spec.history_ttl.as_secs().max(1));
        let answer = c.conn.script(&call).await.ok()?;
        Renewed::parse(&answer)
    }

    /// Gives the lease up and tells the others, so one takes over within a round trip.
    async fn release(&self, ctx: &Ctx) {
        let c = &self.cluster;
        let mut call = c.scripts.release.prepare_invoke();
        call.key(&ctx.keys.lease)
            .arg(&ctx.lease)
            .arg(&ctx.keys.channel);
        match c.conn.script(&call).await {
            Ok(_) => info!("lease released"),
            Err(e) => debug!(error = %e, "lease not released; it expires"),
        }
    }

    /// Redis does not answer: poll for this gateway's own clients under an epoch of its own
    /// (`local`), or poll nobody and say the document is stale (`stale`); back to the cluster
    /// as soon as Redis answers.
    async fn alone(&self, ctx: &mut Ctx, cancel: &CancellationToken) -> Next {
        let c = &self.cluster;
        c.counts.alone.inc();
        let _alone = Alone(c);
        let mode = c.spec.on_redis_down;
        let stop = CancellationToken::new();
        let role = match mode {
            OnRedisDown::Local => "local",
            OnRedisDown::Stale => "stale",
        };
        self.show(ctx, role, None);
        let local = async {
            match mode {
                OnRedisDown::Local => {
                    self.topic.begin_epoch(random_epoch());
                    let poller = Poller {
                        topic: self.topic.clone(),
                        source: self.source.clone(),
                        first_delay: Duration::ZERO,
                        seed: None,
                    };
                    poller.run(&*self.topic, stop.clone()).await
                }
                OnRedisDown::Stale => {
                    let ev = status_event("stale", "cluster store unavailable");
                    self.topic.set_status(Some(ev.clone()), ev);
                    self.beat_forever().await
                }
            }
        };
        tokio::pin!(local);
        let mut probe = Instant::now() + self.tick();
        let mut answered = 0;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Next::Exit(Exit::Cancelled),
                exit = &mut local => return Next::Exit(exit),
                () = sleep_until(probe) => {
                    probe = Instant::now() + self.tick();
                    let Some(j) = self.join(ctx, false).await else {
                        answered = 0;
                        continue;
                    };
                    // Twice in a row, so a flapping Redis doesn't flap every client.
                    answered += 1;
                    if answered < 2 {
                        continue;
                    }
                    info!("redis answers: back to the cluster");
                    stop.cancel();
                    if mode == OnRedisDown::Stale {
                        if j.status.is_none() {
                            let ev = status_event("healthy", "cluster store available");
                            self.topic.set_status(None, ev);
                        }
                        self.catch_up(ctx, &j);
                    } else {
                        // Clients hold a newer document than the cluster's: they keep it
                        // until the cluster's next change.
                        ctx.older_than = Some(EventId { epoch: j.epoch, seq: j.seq });
                    }
                    return Next::Follow;
                }
                // Drained, so the queue never fills; the log has it all when Redis is back.
                ev = ctx.feed.rx.recv() => if ev.is_none() {
                    return Next::Exit(Exit::Cancelled);
                },
            }
        }
    }

    /// Heartbeats for this gateway's clients while nobody polls.
    async fn beat_forever(&self) -> Exit {
        loop {
            tokio::time::sleep(self.topic.spec.load().heartbeat).await;
            self.topic.heartbeat();
        }
    }
}

fn status_event(state: &str, reason: &str) -> Bytes {
    let since = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let data = json!({ "state": state, "reason": reason, "since": since });
    sse::event(Some("upstream-status"), None, &data.to_string())
}

/// Counts a held lease for as long as it lives, however `hold` ends.
struct Held<'a>(&'a Cluster);

impl<'a> Held<'a> {
    fn new(c: &'a Cluster) -> Held<'a> {
        c.counts.leases_held.inc();
        Held(c)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.counts.leases_held.dec();
    }
}

struct Alone<'a>(&'a Cluster);

impl Drop for Alone<'_> {
    fn drop(&mut self) {
        self.0.counts.alone.dec();
    }
}
