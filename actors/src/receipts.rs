//! `Receipts`: the one writer of delivery status.
//!
//! Channel senders hand it their outcomes (submitted, delivered, failed, retried) and the
//! callback endpoints and pollers hand it provider receipts (delivered, undelivered, read,
//! clicked). It applies them in batches — one transaction per flush, a few milliseconds
//! apart — as conditional updates, so a receipt never moves a delivery backwards and a
//! race between two writers settles in the database.
//!
//! Writes go through `LANES` lanes with one transaction in flight each, so PostgreSQL
//! works on two batches at once. A delivery always goes through the same lane (by its
//! message), so its changes are applied in the order they came. Receipts named by a provider
//! id are matched and applied in lane 0: a receipt can only match once the change that
//! recorded its provider id is committed, and after that no sender change for the same
//! delivery follows.
//!
//! A receipt can overtake the write that records its provider id (a fast provider answers
//! before the outcome batch is flushed), so an unmatched receipt is tried again for a grace
//! period; after that it is counted and logged once — never an error loop. Memory is
//! bounded: when too much is pending, senders wait for the next flush.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::domain::DeliveryState;
use crate::metrics as m;
use crate::store::deliveries::{Matched, PartsTally, StatusChange};
use crate::store::Store;

/// Most changes written in one transaction.
const MAX_BATCH: usize = 5000;
/// Transactions in flight at once, each for its own share of the deliveries.
const LANES: usize = 2;
/// Above this many pending changes, senders wait for a flush before going on.
const HIGH_WATER: usize = 20_000;
/// How long an unmatched receipt is tried again before it is counted as unmatched, by
/// default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// How often the apps that want delivery callbacks are looked up.
const CALLBACK_APPS_REFRESH: Duration = Duration::from_secs(2);
/// Most receipts held (pending or in grace); beyond it new ones are refused.
const MAX_RECEIPTS: usize = 200_000;

/// What a receipt identifies its delivery by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReceiptKey {
    /// The provider's id as recorded at submission (per recipient: the provider's message
    /// id, or `task:recipient` for providers that answer one id for a whole batch).
    Provider(String),
    /// umsd's own delivery id and its message (inbox reads, click-tracking).
    Delivery { id: i64, message_pk: i64 },
}

#[derive(Debug, Clone)]
pub struct ReceiptEvent {
    pub channel: String,
    pub key: ReceiptKey,
    /// Delivered, Undelivered, Read or Clicked.
    pub state: DeliveryState,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// Outcomes from a channel sender. Answered once they are buffered (or, when too much is
/// pending, once the next flush is done).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Record {
    pub channel: Arc<str>,
    pub changes: Vec<StatusChange>,
}

/// Receipts from a provider callback or poller. Answers `false` when too many are held.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Incoming(pub Vec<ReceiptEvent>);

/// Removes a message's dispatch row for a channel once every outcome handed over before
/// it is written, if no page was planned since `pages`. Answers whether it was removed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Finish {
    pub channel: Arc<str>,
    pub message_pk: i64,
    pub pages: i32,
}

/// Writes everything pending; answered when done (used at shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushAll;

struct Held {
    event: ReceiptEvent,
    first_seen: Instant,
    next_try: Instant,
}

struct PendingFinish {
    finish: Finish,
    /// Changes each lane had received before it: it runs once that many are written.
    after: [u64; LANES],
    reply: oneshot::Sender<bool>,
}

/// One write lane: its pending changes and receipts, one transaction at a time.
#[derive(Default)]
struct Lane {
    changes: Vec<(Arc<str>, StatusChange)>,
    receipts: Vec<Held>,
    /// Changes received and written so far (FIFO, so a count orders them).
    received: u64,
    written: u64,
    flushing: bool,
}

/// A message's deliveries share a lane: their rows sit together, so two transactions
/// rarely touch the same pages.
fn lane_of(message_pk: i64) -> usize {
    // Fibonacci hashing: ids are time-ordered, their low bits say little.
    ((message_pk as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % LANES
}

pub struct Receipts {
    store: Store,
    grace: Duration,
    lanes: [Lane; LANES],
    finishes: Vec<PendingFinish>,
    waiters: Vec<oneshot::Sender<()>>,
    /// Apps with a callback endpoint asking for delivery events (refreshed every
    /// `CALLBACK_APPS_REFRESH`); their applied changes also queue callback events.
    callback_apps: Arc<HashSet<i32>>,
}

/// Receipt states that settle one part of a delivery sent in several.
fn is_part_outcome(state: DeliveryState) -> bool {
    matches!(state, DeliveryState::Delivered | DeliveryState::Undelivered)
}

/// The states a receipt may move a delivery from.
pub fn receipt_from(state: DeliveryState) -> &'static [DeliveryState] {
    use DeliveryState::*;
    match state {
        Delivered | Undelivered => &[Submitted],
        Read => &[Submitted, Delivered],
        Clicked => &[Submitted, Delivered, Read],
        _ => &[],
    }
}

impl Receipts {
    /// `grace`: how long a receipt naming no known delivery is tried again.
    pub fn new(store: Store, grace: Duration) -> Self {
        Self {
            store,
            grace,
            lanes: Default::default(),
            finishes: Vec::new(),
            waiters: Vec::new(),
            callback_apps: Arc::new(HashSet::new()),
        }
    }

    fn pending(&self) -> usize {
        self.lanes
            .iter()
            .map(|l| l.changes.len() + l.receipts.len())
            .sum()
    }

    fn pending_changes(&self) -> usize {
        self.lanes.iter().map(|l| l.changes.len()).sum()
    }

    fn idle(&self) -> bool {
        self.lanes
            .iter()
            .all(|l| l.changes.is_empty() && !l.flushing)
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        for lane in 0..LANES {
            self.flush_lane(lane, ctx);
        }
        if self.pending_changes() < HIGH_WATER {
            self.release_waiters();
        }
    }

    fn flush_lane(&mut self, li: usize, ctx: &mut Context<Self>) {
        let written: [u64; LANES] = std::array::from_fn(|i| self.lanes[i].written);
        let lane = &mut self.lanes[li];
        if lane.flushing {
            return;
        }
        let now = Instant::now();
        let n = lane.changes.len().min(MAX_BATCH);
        let changes: Vec<(Arc<str>, StatusChange)> = lane.changes.drain(..n).collect();
        let (due, later): (Vec<Held>, Vec<Held>) = std::mem::take(&mut lane.receipts)
            .into_iter()
            .partition(|h| h.next_try <= now);
        lane.receipts = later;
        // Dispatch rows are removed by lane 0, once every lane has written what came
        // before the request.
        let ready = if li == 0 {
            let mut written_after = written;
            written_after[0] += changes.len() as u64;
            let (ready, waiting): (Vec<PendingFinish>, Vec<PendingFinish>) =
                std::mem::take(&mut self.finishes)
                    .into_iter()
                    .partition(|f| f.after.iter().zip(written_after).all(|(a, w)| *a <= w));
            self.finishes = waiting;
            ready
        } else {
            Vec::new()
        };
        if changes.is_empty() && due.is_empty() && ready.is_empty() {
            return;
        }
        let lane = &mut self.lanes[li];
        lane.flushing = true;
        let store = self.store.clone();
        let grace = self.grace;
        let callback_apps = self.callback_apps.clone();
        let work = async move {
            let result = write(&store, &changes, due, grace, &callback_apps).await;
            let mut answers = Vec::with_capacity(ready.len());
            if result.is_ok() {
                for f in &ready {
                    let f = &f.finish;
                    match store
                        .finish_dispatch(&f.channel, f.message_pk, f.pages)
                        .await
                    {
                        Ok(done) => answers.push(done),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot finish a dispatch row; will retry");
                            answers.push(false);
                        }
                    }
                }
            }
            (changes, result, ready, answers)
        };
        ctx.spawn(work.into_actor(self).map(move |(changes, result, ready, answers), act, ctx| {
            let lane = &mut act.lanes[li];
            lane.flushing = false;
            match result {
                Ok(held) => {
                    lane.written += changes.len() as u64;
                    lane.receipts.extend(held);
                    for (f, done) in ready.into_iter().zip(answers) {
                        let _ = f.reply.send(done);
                    }
                }
                Err((e, held)) => {
                    // Finishes wait for the changes before them: put them back too.
                    act.finishes.extend(ready);
                    tracing::warn!(error = %e, n = changes.len(), "status write failed; will retry");
                    // Put the batch back in front; the next tick tries again.
                    let mut again = changes;
                    again.append(&mut lane.changes);
                    lane.changes = again;
                    lane.receipts.extend(held);
                    ctx.run_later(Duration::from_millis(500), move |act, ctx| {
                        act.flush_lane(li, ctx)
                    });
                    metrics::gauge!(m::STATUS_PENDING).set(act.pending() as f64);
                    return;
                }
            }
            metrics::gauge!(m::STATUS_PENDING).set(act.pending() as f64);
            if act.lanes[li].changes.len() >= MAX_BATCH {
                act.flush_lane(li, ctx);
            }
            if act.pending_changes() < HIGH_WATER {
                act.release_waiters();
            }
        }));
    }

    fn release_waiters(&mut self) {
        for w in self.waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

type HeldBack = Vec<Held>;
/// Per channel: (provider id, state) of each part report, and the deliveries they name.
type PartReports = (Vec<(String, DeliveryState)>, Vec<i64>);

/// One flush: receipts are matched to deliveries, then everything is applied in rounds
/// with at most one change per delivery each (an `UPDATE … FROM` applies only one).
/// Returns the receipts to try again later.
async fn write(
    store: &Store,
    changes: &[(Arc<str>, StatusChange)],
    due: Vec<Held>,
    grace: Duration,
    callback_apps: &HashSet<i32>,
) -> Result<HeldBack, (crate::store::StoreError, HeldBack)> {
    let mut channel_of: HashMap<i64, String> = HashMap::new();
    let mut all: Vec<StatusChange> = Vec::with_capacity(changes.len() + due.len());
    for (ch, c) in changes {
        // Only a provider id to remember needs the channel.
        if c.expect_receipt.is_some() {
            channel_of.insert(c.delivery_id, ch.to_string());
        }
        all.push(c.clone());
    }

    // Match receipts by provider id, per channel.
    let mut by_channel: HashMap<&str, Vec<String>> = HashMap::new();
    for h in &due {
        if let ReceiptKey::Provider(pid) = &h.event.key {
            by_channel
                .entry(h.event.channel.as_str())
                .or_default()
                .push(pid.clone());
        }
    }
    let mut matched: HashMap<(String, String), Matched> = HashMap::new();
    for (ch, pids) in by_channel {
        match store.match_provider_ids(ch, &pids).await {
            Ok(found) => {
                for (pid, m) in found {
                    matched.insert((ch.to_owned(), pid), m);
                }
            }
            Err(e) => return Err((e, due)),
        }
    }
    // Deliveries sent in several parts: record each part's outcome, then see how they stand.
    let mut part_reports: HashMap<&str, PartReports> = HashMap::new();
    for h in &due {
        if let ReceiptKey::Provider(pid) = &h.event.key {
            if let Some(m) = matched.get(&(h.event.channel.clone(), pid.clone())) {
                if m.parts > 1 && is_part_outcome(h.event.state) {
                    let e = part_reports.entry(h.event.channel.as_str()).or_default();
                    e.0.push((pid.clone(), h.event.state));
                    e.1.push(m.delivery_id);
                }
            }
        }
    }
    let mut tallies: HashMap<i64, PartsTally> = HashMap::new();
    for (ch, (reports, ids)) in part_reports {
        match store.record_parts(ch, &reports, &ids).await {
            Ok(t) => tallies.extend(t),
            Err(e) => return Err((e, due)),
        }
    }
    // One verdict per delivery sent in parts.
    let mut decided: HashSet<i64> = HashSet::new();
    let now = Instant::now();
    let mut held = Vec::new();
    let mut receipt_count: HashMap<(String, &'static str), u64> = HashMap::new();
    for mut h in due {
        let id = match &h.event.key {
            ReceiptKey::Delivery { id, message_pk } => Some((*id, *message_pk)),
            ReceiptKey::Provider(pid) => {
                match matched.get(&(h.event.channel.clone(), pid.clone())) {
                    Some(m) if m.parts > 1 && is_part_outcome(h.event.state) => {
                        *receipt_count
                            .entry((h.event.channel.clone(), "part"))
                            .or_default() += 1;
                        let Some(t) = tallies.get(&m.delivery_id) else {
                            continue;
                        };
                        let complete = match h.event.state {
                            // The first failed part fails the delivery.
                            DeliveryState::Undelivered => true,
                            _ => t.failed == 0 && t.delivered >= t.parts,
                        };
                        if !complete || !decided.insert(m.delivery_id) {
                            continue;
                        }
                        Some((m.delivery_id, m.message_pk))
                    }
                    Some(m) => Some((m.delivery_id, m.message_pk)),
                    None => None,
                }
            }
        };
        match id {
            Some((id, message_pk)) => {
                *receipt_count
                    .entry((h.event.channel.clone(), h.event.state.as_str()))
                    .or_default() += 1;
                all.push(StatusChange {
                    delivery_id: id,
                    message_pk,
                    state: h.event.state,
                    from: receipt_from(h.event.state),
                    provider_id: None,
                    code: h.event.code.clone(),
                    reason: h.event.reason.clone(),
                    attempts: 0,
                    expect_receipt: None,
                    segments: Vec::new(),
                    at: h.event.at,
                });
            }
            None if now.duration_since(h.first_seen) < grace => {
                h.next_try = now + Duration::from_secs(1);
                held.push(h);
            }
            None => {
                metrics::counter!(m::RECEIPTS_UNMATCHED_TOTAL, "channel" => h.event.channel.clone())
                    .increment(1);
                tracing::info!(channel = %h.event.channel, key = ?h.event.key,
                    state = h.event.state.as_str(), "receipt for an unknown delivery ignored");
            }
        }
    }

    // Rounds of unique delivery ids, in arrival order.
    let mut rest = all;
    while !rest.is_empty() {
        let mut seen = HashSet::new();
        let (round, later): (Vec<StatusChange>, Vec<StatusChange>) =
            rest.into_iter().partition(|c| seen.insert(c.delivery_id));
        rest = later;
        metrics::histogram!(m::STATUS_BATCH_SIZE).record(round.len() as f64);
        match store
            .apply_changes(&channel_of, &round, callback_apps)
            .await
        {
            Ok(applied) => {
                metrics::counter!(m::STATUS_WRITES_TOTAL, "outcome" => "applied")
                    .increment(applied.applied as u64);
                metrics::counter!(m::STATUS_WRITES_TOTAL, "outcome" => "stale")
                    .increment(applied.stale as u64);
            }
            Err(e) => return Err((e, held)),
        }
    }
    for ((channel, kind), n) in receipt_count {
        metrics::counter!(m::RECEIPTS_TOTAL, "channel" => channel, "kind" => kind).increment(n);
    }
    Ok(held)
}

impl Actor for Receipts {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        ctx.run_interval(Duration::from_millis(10), |act, ctx| act.flush(ctx));
        ctx.run_interval(CALLBACK_APPS_REFRESH, |act, ctx| {
            let store = act.store.clone();
            ctx.spawn(
                async move { store.delivery_callback_apps().await }
                    .into_actor(act)
                    .map(|res, act, _| match res {
                        Ok(apps) => act.callback_apps = Arc::new(apps),
                        Err(e) => tracing::debug!(error = %e, "cannot look up callback apps"),
                    }),
            );
        });
    }
}

impl Handler<Record> for Receipts {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Record, ctx: &mut Self::Context) -> Self::Result {
        for c in msg.changes {
            let lane = &mut self.lanes[lane_of(c.message_pk)];
            lane.received += 1;
            lane.changes.push((msg.channel.clone(), c));
        }
        metrics::gauge!(m::STATUS_PENDING).set(self.pending() as f64);
        for li in 0..LANES {
            if self.lanes[li].changes.len() >= MAX_BATCH {
                self.flush_lane(li, ctx);
            }
        }
        if self.pending_changes() < HIGH_WATER {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<Finish> for Receipts {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: Finish, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.finishes.push(PendingFinish {
            finish: msg,
            after: std::array::from_fn(|i| self.lanes[i].received),
            reply: tx,
        });
        Box::pin(async move { rx.await.unwrap_or(false) })
    }
}

impl Handler<Incoming> for Receipts {
    type Result = bool;

    fn handle(&mut self, msg: Incoming, _: &mut Self::Context) -> bool {
        let held: usize = self.lanes.iter().map(|l| l.receipts.len()).sum();
        if held + msg.0.len() > MAX_RECEIPTS {
            return false;
        }
        let now = Instant::now();
        for event in msg.0 {
            // A receipt naming the delivery goes through that delivery's lane.
            let li = match &event.key {
                ReceiptKey::Delivery { message_pk, .. } => lane_of(*message_pk),
                ReceiptKey::Provider(_) => 0,
            };
            self.lanes[li].receipts.push(Held {
                event,
                first_seen: now,
                next_try: now,
            });
        }
        true
    }
}

impl Handler<FlushAll> for Receipts {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: FlushAll, _: &mut Self::Context) -> Self::Result {
        // Poll until nothing but receipts in grace is left, for at most 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        Box::pin(
            async move {}
                .into_actor(self)
                .then(move |_, act, ctx| wait_empty(act, ctx, deadline)),
        )
    }
}

fn wait_empty(
    act: &mut Receipts,
    ctx: &mut Context<Receipts>,
    deadline: Instant,
) -> ResponseActFuture<Receipts, ()> {
    act.flush(ctx);
    if act.idle() || Instant::now() >= deadline {
        return Box::pin(actix::fut::ready(()));
    }
    Box::pin(
        tokio::time::sleep(Duration::from_millis(20))
            .into_actor(act)
            .then(move |_, act, ctx| wait_empty(act, ctx, deadline)),
    )
}

impl actix::Supervised for Receipts {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!("status writer restarting");
    }
}
