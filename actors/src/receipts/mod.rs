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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

mod events;
mod windows;
mod write;

pub use events::{
    Finish, FlushAll, Incoming, ReceiptEvent, ReceiptKey, Record, StatusApplied, SubscribeApplied,
};
pub use write::{late_from, receipt_from};
use write::{write, Held};

use crate::domain::{ChannelCode, MessagePk};
use crate::metrics as m;
use crate::store::status::{AppliedChange, StatusChange};
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
/// How often receipt windows that closed are looked for (`windows.rs`).
const WINDOWS_EVERY: Duration = Duration::from_secs(1);
/// The code a delivery made `unknown` by its receipt window is reported with.
pub const NO_RECEIPT: &str = "no_receipt";
/// Most receipts held (pending or in grace); beyond it new ones are refused.
const MAX_RECEIPTS: usize = 200_000;

struct PendingFinish {
    finish: Finish,
    /// Changes each lane had received before it: it runs once that many are written.
    after: [u64; LANES],
    reply: oneshot::Sender<bool>,
}

/// One write lane: its pending changes and receipts, one transaction at a time.
#[derive(Default)]
struct Lane {
    changes: Vec<(ChannelCode, StatusChange)>,
    receipts: Vec<Held>,
    /// Changes received and written so far (FIFO, so a count orders them).
    received: u64,
    written: u64,
    flushing: bool,
}

/// A message's deliveries share a lane: their rows sit together, so two transactions
/// rarely touch the same pages.
fn lane_of(message_pk: MessagePk) -> usize {
    // Fibonacci hashing: ids are time-ordered, their low bits say little.
    ((message_pk.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % LANES
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
    /// Told of every change applied.
    subscribers: Vec<Recipient<StatusApplied>>,
    /// A batch of receipt windows is being closed.
    closing: bool,
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
            subscribers: Vec::new(),
            closing: false,
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
        let changes: Vec<(ChannelCode, StatusChange)> = lane.changes.drain(..n).collect();
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
        let report = !self.subscribers.is_empty();
        let work = async move {
            let result = write(&store, &changes, due, grace, &callback_apps, report).await;
            let mut answers = Vec::new();
            if result.is_ok() && !ready.is_empty() {
                let rows: Vec<(&str, MessagePk, i32)> = ready
                    .iter()
                    .map(|f| {
                        (
                            f.finish.channel.as_str(),
                            f.finish.message_pk,
                            f.finish.pages,
                        )
                    })
                    .collect();
                answers = match store.finish_dispatches(&rows).await {
                    Ok(done) => done,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot finish dispatch rows; will retry");
                        vec![false; ready.len()]
                    }
                };
            }
            (changes, result, ready, answers)
        };
        ctx.spawn(work.into_actor(self).map(move |(changes, result, ready, answers), act, ctx| {
            let lane = &mut act.lanes[li];
            lane.flushing = false;
            match result {
                Ok((held, applied)) => {
                    lane.written += changes.len() as u64;
                    lane.receipts.extend(held);
                    for (f, done) in ready.into_iter().zip(answers) {
                        let _ = f.reply.send(done);
                    }
                    act.publish(applied);
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

    /// Tells the subscribers what applied.
    fn publish(&mut self, applied: Vec<AppliedChange>) {
        if applied.is_empty() {
            return;
        }
        self.subscribers.retain(|s| s.connected());
        let batch: Arc<[AppliedChange]> = applied.into();
        for s in &self.subscribers {
            if s.try_send(StatusApplied(batch.clone())).is_err() {
                tracing::warn!(
                    n = batch.len(),
                    "a status subscriber is full; it misses a batch"
                );
            }
        }
    }

    fn release_waiters(&mut self) {
        for w in self.waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

impl Actor for Receipts {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        ctx.run_interval(Duration::from_millis(10), |act, ctx| act.flush(ctx));
        ctx.run_interval(WINDOWS_EVERY, |act, ctx| act.close_windows(ctx));
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

impl Handler<SubscribeApplied> for Receipts {
    type Result = ();

    fn handle(&mut self, msg: SubscribeApplied, _: &mut Self::Context) {
        self.subscribers.push(msg.0);
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
