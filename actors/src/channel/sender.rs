//! `ChannelSender`: one actor per configured channel, on one of the channel arbiters.
//!
//! It pulls the channel's queued deliveries from PostgreSQL into three in-memory priority
//! queues ([`pull`](super::pull), [`queues`](super::queues)), starts provider calls as the
//! limiter and the concurrency bound allow ([`pace`](super::pace)), and settles each
//! answer ([`settle`](super::settle)): a retryable failure waits with backoff and jitter
//! (bounded attempts), a rate-limited answer pauses the channel until the provider's reset
//! and halves its rate for a while, a permanent failure fails the delivery with the
//! provider's code. Outcomes go to the `Receipts` writer in batches; a delivery leaves the
//! database queue only when its outcome is written, so after a crash it is sent again
//! (see the duplicate window in `docs/operations.md`).

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use governor::clock::DefaultClock;
use tokio::sync::{mpsc, oneshot};

use super::config::ChannelConfig;
use super::limiter::{self, Limiter, SLOW_FOR};
use super::meters::{Meters, Tally};
use super::queues::{Entry, PriorityQueues};
use super::retry::Delayed;
use super::settle::{in_target_order, settle, Settlement};
use super::signals::Signal;
use super::work::MessageWork;
use crate::domain::{DeliveryState, MessagePk, Priority};
use crate::providers::contract::{Attempt, BuildError, Provider};
use crate::receipts::{Receipts, Record};
use crate::store::status::StatusChange;
use crate::store::Store;

/// Outcomes handed to the status writer and not yet acknowledged beyond which no new
/// call starts: the writer holds its answer while it is far behind.
pub const UNACKED_MAX: usize = 8192;
/// Outcomes gathered before they are handed over without waiting for `FLUSH_EVERY`.
const FLUSH_AT: usize = 512;
/// Longest an outcome waits in the sender before it is handed to the status writer.
const FLUSH_EVERY: Duration = Duration::from_millis(1);

/// Builds the channel's provider client on the sender's own arbiter.
pub type ProviderFactory =
    Box<dyn FnOnce(&ChannelConfig) -> Result<Rc<dyn Provider>, BuildError> + Send>;

/// Stops the sender once its in-flight calls have finished and their outcomes are handed
/// to the writer. Answered when it has stopped pulling and sending.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop(pub oneshot::Sender<()>);

/// A provider call has finished.
pub struct CallDone {
    pub entries: Vec<Entry>,
    pub results: Vec<(i64, Attempt)>,
    pub elapsed: Duration,
}

/// New work may be queued in the database: the planner said so (`signalled`), or a
/// second passed without a word.
#[derive(Message)]
#[rtype(result = "()")]
struct Woken {
    signalled: bool,
}

/// A sender's live state, for `GET /admin/channels`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SenderState {
    pub queued_high: usize,
    pub queued_normal: usize,
    pub queued_low: usize,
    pub delayed: usize,
    pub in_flight: usize,
    pub paused_for_ms: u64,
    pub error: Option<String>,
    /// A configuration problem found while running (e.g. credentials refused).
    pub problem: Option<String>,
    /// The provider's own live state (e.g. CMPP sessions).
    pub provider: Option<serde_json::Value>,
}

#[derive(Message)]
#[rtype(result = "SenderState")]
pub struct GetState;

pub struct ChannelSender {
    pub(super) config: Arc<ChannelConfig>,
    pub(super) store: Store,
    pub(super) receipts: Addr<Receipts>,
    signal: Arc<Signal>,
    factory: Option<ProviderFactory>,
    pub(super) provider: Option<Rc<dyn Provider>>,
    provider_error: Option<String>,
    pub(super) limiter: Option<Limiter>,
    /// When a throttle halved the rate (it is restored `SLOW_FOR` later).
    slowed_since: Option<Instant>,
    pub(super) clock: DefaultClock,
    pub(super) queues: PriorityQueues,
    /// Retries waiting for their backoff, soonest first.
    pub(super) delayed: BinaryHeap<Delayed>,
    delayed_seq: u64,
    pub(super) in_flight: usize,
    pub(super) in_flight_targets: usize,
    pub(super) pulling: bool,
    pub(super) pull_again: bool,
    /// The database may hold queued deliveries not pulled yet: set by a wake-up (the
    /// planner's signal, or the once-a-second look) and by a pull that filled its room;
    /// cleared by a pull that did not. Completions pull only while it is set, so a
    /// draining channel does not query an empty queue after every call.
    pub(super) more_in_db: bool,
    /// Where the next listing of messages with work goes on from (`None`: the start).
    pub(super) list_after: Option<(Priority, MessagePk)>,
    /// Messages with work on this channel that were pulled from.
    pub(super) works: HashMap<MessagePk, MessageWork>,
    /// Messages that may have just finished (nothing held, or found drained): the only
    /// ones `finish_drained` looks at, so its cost follows what changed, not `works`.
    pub(super) maybe_done: HashSet<MessagePk>,
    pub(super) paused_until: Option<Instant>,
    pub(super) pump_at: Option<(Instant, SpawnHandle)>,
    pub(super) rate_wait_since: Option<Instant>,
    pub(super) stopping: Option<Vec<oneshot::Sender<()>>>,
    pub(super) meters: Meters,
    /// Finished calls report here; the receiving end is the actor's completion stream.
    pub(super) done_tx: mpsc::UnboundedSender<CallDone>,
    done_rx: Option<mpsc::UnboundedReceiver<CallDone>>,
    /// Outcomes not yet handed to the status writer.
    pub(super) pending: Vec<StatusChange>,
    flush_at: Option<SpawnHandle>,
    /// Outcomes handed to the status writer, not yet acknowledged.
    pub(super) unacked: usize,
}

impl ChannelSender {
    pub fn new(
        config: Arc<ChannelConfig>,
        store: Store,
        receipts: Addr<Receipts>,
        signal: Arc<Signal>,
        factory: ProviderFactory,
    ) -> Self {
        let limiter = limiter::limiter(config.rate_per_second, config.burst);
        let aging = config.aging;
        let meters = Meters::new(&config.code, config.channel_type);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            done_tx,
            done_rx: Some(done_rx),
            pending: Vec::new(),
            flush_at: None,
            unacked: 0,
            meters,
            config,
            store,
            receipts,
            signal,
            factory: Some(factory),
            provider: None,
            provider_error: None,
            limiter,
            slowed_since: None,
            clock: DefaultClock::default(),
            queues: PriorityQueues::new(aging),
            delayed: BinaryHeap::new(),
            delayed_seq: 0,
            in_flight: 0,
            in_flight_targets: 0,
            pulling: false,
            pull_again: false,
            more_in_db: true,
            list_after: None,
            works: HashMap::new(),
            maybe_done: HashSet::new(),
            paused_until: None,
            pump_at: None,
            rate_wait_since: None,
            stopping: None,
        }
    }

    /// Deliveries held in memory: queued, waiting to retry, in flight.
    pub(super) fn held(&self) -> usize {
        self.queues.len() + self.delayed.len() + self.in_flight_targets
    }

    pub(super) fn gauges(&self) {
        for p in [Priority::High, Priority::Normal, Priority::Low] {
            self.meters.queue_depth(p).set(self.queues.len_of(p) as f64);
        }
        self.meters.in_flight.set(self.in_flight as f64);
    }

    /// Hands the outcomes gathered since the last hand-over to the status writer, as one
    /// message. The writer answers at once unless it is far behind; until it answers,
    /// the changes count against `UNACKED_MAX` and hold further calls back.
    pub(super) fn flush_changes(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.flush_at.take() {
            ctx.cancel_future(handle);
        }
        if self.pending.is_empty() {
            return;
        }
        let changes = std::mem::take(&mut self.pending);
        let n = changes.len();
        self.unacked += n;
        let record = self.receipts.send(Record {
            channel: self.config.code.clone(),
            changes,
        });
        ctx.spawn(record.into_actor(self).map(move |_, act, ctx| {
            act.unacked -= n;
            act.after_flight(ctx);
        }));
    }

    fn after_flight(&mut self, ctx: &mut Context<Self>) {
        self.finish_drained(ctx);
        if self.in_flight == 0 && self.stopping.is_some() {
            if !self.pending.is_empty() {
                self.flush_changes(ctx);
            }
            if self.unacked == 0 {
                let waiters = self.stopping.take().unwrap_or_default();
                // Connections are closed politely (e.g. CMPP TERMINATE) before the
                // sender says it has stopped.
                let close = match &self.provider {
                    Some(p) => p.close(),
                    None => Box::pin(async {}),
                };
                ctx.wait(
                    actix::fut::wrap_future(close).map(move |_, _: &mut Self, ctx| {
                        for w in waiters {
                            let _ = w.send(());
                        }
                        ctx.stop();
                    }),
                );
                return;
            }
        }
        self.pump(ctx);
    }

    /// Turns a call's results into status changes, retries and pauses (see
    /// [`settle`](super::settle) for the decision).
    fn apply(&mut self, entries: Vec<Entry>, results: Vec<(i64, Attempt)>) -> Vec<StatusChange> {
        let now = Instant::now();
        let at = Utc::now();
        self.in_flight_targets -= entries.len();
        let attempts_in_order = in_target_order(&entries, |e| e.delivery.delivery_id, results);
        let mut changes = Vec::with_capacity(entries.len());
        let mut tally = Tally::default();
        let mut throttled: Option<Duration> = None;
        for (mut e, attempt) in entries.into_iter().zip(attempts_in_order) {
            let d = &e.delivery;
            let message_pk = d.message_pk;
            let attempts = d.attempts.saturating_add(1);
            let change = |state, from: &'static [DeliveryState]| StatusChange {
                delivery_id: d.delivery_id,
                message_pk,
                state,
                from,
                provider_id: None,
                code: None,
                reason: None,
                attempts,
                expect_receipt: None,
                segments: Vec::new(),
                receipt_by: None,
                at,
            };
            match settle(attempt, attempts, self.config.retry.max_attempts) {
                Settlement::Sent {
                    state,
                    provider_id,
                    expect_receipt,
                    segments,
                } => {
                    if state == DeliveryState::Delivered {
                        tally.delivered += 1;
                    } else {
                        tally.submitted += 1;
                    }
                    let lag = at - message_pk.created_at();
                    self.meters
                        .accept_to_submit
                        .record(lag.num_microseconds().unwrap_or(0) as f64 / 1e6);
                    let receipt_by = (state == DeliveryState::Submitted
                        && expect_receipt.is_some())
                    .then(|| at + self.config.receipt_window);
                    changes.push(StatusChange {
                        provider_id,
                        expect_receipt,
                        segments,
                        receipt_by,
                        ..change(state, &[DeliveryState::Queued])
                    });
                    self.release(message_pk);
                }
                Settlement::Fail { error } => {
                    *tally.errors.get_mut(error.class) += 1;
                    changes.push(StatusChange {
                        code: Some(error.code),
                        reason: Some(format!("{}: {}", error.class.as_str(), error.reason)),
                        ..change(DeliveryState::Failed, &[DeliveryState::Queued])
                    });
                    self.release(message_pk);
                }
                Settlement::Throttled { error, pause } => {
                    *tally.errors.get_mut(error.class) += 1;
                    *tally.retries.get_mut(error.class) += 1;
                    throttled = Some(throttled.map_or(pause, |t| t.max(pause)));
                    // No attempt is used and nothing is written: back in front.
                    self.queues.push_front(e);
                }
                Settlement::Retry { error, after } => {
                    *tally.errors.get_mut(error.class) += 1;
                    *tally.retries.get_mut(error.class) += 1;
                    // The attempt is recorded; the delivery stays queued.
                    changes.push(StatusChange {
                        code: Some(error.code),
                        reason: Some(format!("{}: {}", error.class.as_str(), error.reason)),
                        ..change(DeliveryState::Queued, &[DeliveryState::Queued])
                    });
                    let wait = after.unwrap_or_else(|| self.config.retry.delay(attempts));
                    e.delivery.attempts = attempts;
                    self.delayed_seq += 1;
                    self.delayed.push(Delayed {
                        due: now + wait,
                        seq: self.delayed_seq,
                        entry: e,
                    });
                }
            }
        }
        self.meters.record(&tally);
        if let Some(wait) = throttled {
            self.throttle(wait);
        }
        changes
    }

    fn release(&mut self, message_pk: MessagePk) {
        if let Some(w) = self.works.get_mut(&message_pk) {
            w.held = w.held.saturating_sub(1);
            if w.held == 0 {
                self.maybe_done.insert(message_pk);
            }
        }
    }

    /// The provider is throttling: pause until its reset, then run at half the rate for a
    /// while.
    fn throttle(&mut self, wait: Duration) {
        let until = Instant::now() + wait.min(Duration::from_secs(300));
        self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
        tracing::info!(channel = %self.config.code, wait_ms = wait.as_millis() as u64, "provider is throttling; pausing the channel");
        if self.config.rate_per_second.is_some() {
            self.limiter = limiter::slowed(self.config.rate_per_second, self.config.burst);
            self.slowed_since = Some(Instant::now());
        }
    }
}

impl Actor for ChannelSender {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(64);
        if let Some(mut rx) = self.done_rx.take() {
            ctx.add_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        }
        if let Some(factory) = self.factory.take() {
            match factory(&self.config) {
                Ok(p) => self.provider = Some(p),
                Err(e) => {
                    let e = crate::error_chain(&e);
                    tracing::error!(channel = %self.config.code, error = %e, "channel cannot start; its deliveries stay queued");
                    self.provider_error = Some(e);
                    return;
                }
            }
        }
        // Wake on the planner's signal; look at the database every second regardless.
        let signal = self.signal.clone();
        let me = ctx.address();
        ctx.spawn(
            async move {
                loop {
                    let signalled = tokio::time::timeout(Duration::from_secs(1), signal.notified())
                        .await
                        .is_ok();
                    if me.try_send(Woken { signalled }).is_err() && !me.connected() {
                        break;
                    }
                }
            }
            .into_actor(self),
        );
        // Restore the configured rate some time after a throttle (only then: a fresh
        // limiter starts with a full burst).
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            let due = act
                .slowed_since
                .is_some_and(|since| since.elapsed() >= SLOW_FOR);
            if due && act.paused_until.is_none() {
                act.limiter = limiter::limiter(act.config.rate_per_second, act.config.burst);
                act.slowed_since = None;
            }
        });
        self.refill(ctx);
    }

    /// Drops the provider client while the arbiter's runtime still runs: connection pools
    /// spawn their clean-up when dropped.
    fn stopped(&mut self, _: &mut Self::Context) {
        self.provider = None;
    }
}

impl StreamHandler<CallDone> for ChannelSender {
    fn handle(&mut self, done: CallDone, ctx: &mut Self::Context) {
        self.in_flight -= 1;
        self.meters
            .request_duration
            .record(done.elapsed.as_secs_f64());
        let changes = self.apply(done.entries, done.results);
        self.pending.extend(changes);
        if self.pending.len() >= FLUSH_AT || self.stopping.is_some() {
            self.flush_changes(ctx);
        } else if self.flush_at.is_none() && !self.pending.is_empty() {
            self.flush_at = Some(ctx.run_later(FLUSH_EVERY, |act, ctx| {
                act.flush_at = None;
                act.flush_changes(ctx);
            }));
        }
        self.after_flight(ctx);
    }

    /// The stream ends only with the actor (it keeps a sending end itself).
    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Handler<Woken> for ChannelSender {
    type Result = ();

    fn handle(&mut self, woken: Woken, ctx: &mut Self::Context) {
        // New work of the priority the listing stands at, or a lower one, sorts after it
        // (its message ids are newer); more urgent work, or a page added to an older
        // message, would be missed: the listing starts over for the first, and at the
        // once-a-second look for anything else.
        let best = self.signal.take_best();
        let behind = match (self.list_after, best) {
            (Some((at, _)), Some(p)) => p.as_i16() < at.as_i16(),
            _ => false,
        };
        if behind || !woken.signalled {
            self.list_after = None;
        }
        self.more_in_db = true;
        self.refill(ctx);
        self.pump(ctx);
    }
}

impl Handler<Stop> for ChannelSender {
    type Result = ();

    fn handle(&mut self, msg: Stop, ctx: &mut Self::Context) {
        self.stopping.get_or_insert_with(Vec::new).push(msg.0);
        self.after_flight(ctx);
    }
}

impl Handler<GetState> for ChannelSender {
    type Result = MessageResult<GetState>;

    fn handle(&mut self, _: GetState, _: &mut Self::Context) -> Self::Result {
        MessageResult(SenderState {
            queued_high: self.queues.len_of(Priority::High),
            queued_normal: self.queues.len_of(Priority::Normal),
            queued_low: self.queues.len_of(Priority::Low),
            delayed: self.delayed.len(),
            in_flight: self.in_flight,
            paused_for_ms: self.paused_until.map_or(0, |u| {
                u.saturating_duration_since(Instant::now()).as_millis() as u64
            }),
            error: self.provider_error.clone(),
            problem: self.provider.as_ref().and_then(|p| p.problem()),
            provider: self.provider.as_ref().and_then(|p| p.live()),
        })
    }
}
