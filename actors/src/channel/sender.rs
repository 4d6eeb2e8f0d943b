//! `ChannelSender`: one actor per configured channel, on one of the channel arbiters.
//!
//! It pulls the channel's queued deliveries from PostgreSQL into three in-memory priority
//! queues (bounded: at most `backlog` deliveries held, the rest stay in the database and
//! are pulled as room frees up), and sends them through its provider client:
//!
//! * at most `pool_size` provider calls in flight;
//! * paced by a governor limiter (`rate_per_second`, `burst`), counted per recipient, so
//!   a batch call to 1000 recipients takes 1000 permits;
//! * batched per message where the provider takes many recipients per call.
//!
//! Each outcome is classified: a retryable failure waits with backoff and jitter (bounded
//! attempts), a rate-limited answer pauses the channel until the provider's reset and
//! halves its rate for a while, a permanent failure fails the delivery with the provider's
//! code. Outcomes go to the `Receipts` writer in batches; a delivery leaves the database
//! queue only when its outcome is written, so after a crash it is sent again (see the
//! duplicate window in `docs/operations.md`).

use std::collections::{BinaryHeap, HashMap};
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Notify};

use super::queues::{Entry, PriorityQueues};
use super::{Attempt, Batch, ErrorClass, Provider, RetryPolicy, Target};
use crate::domain::ids::id_time;
use crate::domain::send::SendRequest;
use crate::domain::{ChannelType, DeliveryState, Priority};
use crate::metrics as m;
use crate::receipts::{Finish, Receipts, Record};
use crate::store::deliveries::{DispatchRow, QueuedDelivery, StatusChange};
use crate::store::Store;

/// How long a throttled channel runs at half its rate.
const SLOW_FOR: Duration = Duration::from_secs(30);
/// Extra room for high-priority work beyond `backlog`, so it never waits behind a full
/// in-memory backlog of lower-priority deliveries.
const HIGH_HEADROOM: usize = 256;
/// Outcomes handed to the status writer and not yet acknowledged beyond which no new
/// call starts: the writer holds its answer while it is far behind.
const UNACKED_MAX: usize = 8192;
/// Outcomes gathered before they are handed over without waiting for `FLUSH_EVERY`.
const FLUSH_AT: usize = 512;
/// Longest an outcome waits in the sender before it is handed to the status writer.
const FLUSH_EVERY: Duration = Duration::from_millis(1);

/// A sender's settings (from the channel's row).
#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub code: Arc<str>,
    pub channel_type: ChannelType,
    /// `None`: no limit.
    pub rate_per_second: Option<f64>,
    pub burst: Option<u32>,
    /// Provider calls in flight at once.
    pub pool_size: usize,
    /// Most deliveries held in memory.
    pub backlog: usize,
    /// A lower-priority delivery waiting this long goes before higher-priority work.
    pub aging: Duration,
    pub retry: RetryPolicy,
    /// Extra trusted roots for the provider's HTTPS endpoints (PEM), beside the
    /// system's.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The provider settings (credentials, endpoints).
    pub settings: Value,
}

/// A message's content for this channel, with the message's expiry (`ttl_seconds`).
type Content = (Arc<Value>, Option<chrono::DateTime<Utc>>);

/// Messages listed per pull.
const DISPATCH_ROWS: i64 = 1000;
/// Most deliveries of one message per pull.
const PULL_PER_MESSAGE: usize = 1000;

/// A message with queued deliveries on this channel, as the sender tracks it.
struct MessageWork {
    row: DispatchRow,
    /// The highest delivery id pulled so far.
    after: i64,
    /// `pages` of the dispatch row when a pull found nothing more: drained until a page is
    /// added.
    drained_at: Option<i32>,
    /// Content for this channel and the message's expiry (`None` when it has none).
    content: Option<Content>,
    content_loaded: bool,
    /// Rate-limit permits per delivery (the provider's [`Provider::cost`] of the content).
    cost: Option<u32>,
    /// Its deliveries held in memory (queued, waiting to retry, in flight).
    held: usize,
    /// Its dispatch row is being removed.
    finishing: bool,
}

impl MessageWork {
    fn new(row: DispatchRow) -> Self {
        Self {
            row,
            after: 0,
            drained_at: None,
            content: None,
            content_loaded: false,
            cost: None,
            held: 0,
            finishing: false,
        }
    }
}

/// What is known of a message with work: (highest delivery id pulled, `pages` when it was
/// found drained, content loaded).
type Known = HashMap<i64, (i64, Option<i32>, bool)>;

/// Which listed messages to pull, and how many of each (`(row, after, limit)`), within
/// the room of the in-memory backlog (high priority has extra room). Also answers whether
/// a message with new work was left out for want of room, so the sender pulls again as
/// room frees up.
fn plan_pull(
    rows: &[DispatchRow],
    known: &Known,
    room: usize,
    high_room: usize,
) -> (Vec<(DispatchRow, i64, i64)>, bool) {
    let mut wants = Vec::new();
    let mut left_out = false;
    let (mut left, mut left_high) = (room, high_room);
    for row in rows {
        let (after, drained_at, _) = known
            .get(&row.message_pk)
            .copied()
            .unwrap_or((0, None, false));
        if drained_at == Some(row.pages) {
            continue; // nothing new since it was drained
        }
        let budget = if row.priority == Priority::High {
            left_high
        } else {
            left
        };
        let lim = budget.min(PULL_PER_MESSAGE);
        if lim == 0 {
            left_out = true;
            continue;
        }
        wants.push((*row, after, lim as i64));
        left = left.saturating_sub(lim);
        left_high = left_high.saturating_sub(lim);
    }
    (wants, left_out)
}

/// Builds the channel's provider client on the sender's own arbiter.
pub type ProviderFactory =
    Box<dyn FnOnce(&SenderConfig) -> Result<Rc<dyn Provider>, String> + Send>;

/// The sender's metric handles, registered once: the hot path records through them
/// without building labels or looking the series up.
struct Meters {
    queue_depth: [metrics::Gauge; 3],
    in_flight: metrics::Gauge,
    rate_wait: metrics::Histogram,
    request_duration: metrics::Histogram,
    accept_to_submit: metrics::Histogram,
    /// `delivered`, `submitted`, then one per error class (see `outcome_slot`).
    outcomes: [metrics::Counter; 6],
    /// Per error class that is retried (all but permanent, in `class_slot` order).
    retries: [metrics::Counter; 3],
}

const ERROR_CLASSES: [ErrorClass; 4] = [
    ErrorClass::Retryable,
    ErrorClass::RateLimited,
    ErrorClass::Auth,
    ErrorClass::Permanent,
];

fn class_slot(class: ErrorClass) -> usize {
    match class {
        ErrorClass::Retryable => 0,
        ErrorClass::RateLimited => 1,
        ErrorClass::Auth => 2,
        ErrorClass::Permanent => 3,
    }
}

impl Meters {
    fn new(code: &str, ty: ChannelType) -> Self {
        let outcome = |outcome: &'static str| {
            metrics::counter!(m::DELIVERY_OUTCOMES_TOTAL,
                "channel" => code.to_owned(), "type" => ty.as_str(), "outcome" => outcome)
        };
        let [retryable, rate_limited, auth, permanent] =
            ERROR_CLASSES.map(|class| outcome(class.as_str()));
        let depth = |p: Priority| metrics::gauge!(m::CHANNEL_QUEUE_DEPTH, "channel" => code.to_owned(), "priority" => p.as_str());
        Self {
            queue_depth: [
                depth(Priority::High),
                depth(Priority::Normal),
                depth(Priority::Low),
            ],
            in_flight: metrics::gauge!(m::CHANNEL_IN_FLIGHT, "channel" => code.to_owned()),
            rate_wait: metrics::histogram!(m::CHANNEL_RATE_WAIT_SECONDS, "channel" => code.to_owned()),
            request_duration: metrics::histogram!(m::PROVIDER_REQUEST_DURATION_SECONDS,
                "channel" => code.to_owned(), "type" => ty.as_str()),
            accept_to_submit: metrics::histogram!(m::ACCEPT_TO_SUBMIT_SECONDS, "channel" => code.to_owned()),
            outcomes: [
                outcome("delivered"),
                outcome("submitted"),
                retryable,
                rate_limited,
                auth,
                permanent,
            ],
            retries: [
                ErrorClass::Retryable,
                ErrorClass::RateLimited,
                ErrorClass::Auth,
            ]
            .map(|class| {
                metrics::counter!(m::DELIVERY_RETRIES_TOTAL,
                    "channel" => code.to_owned(), "class" => class.as_str())
            }),
        }
    }
}

struct Limiter {
    limiter: DefaultDirectRateLimiter,
    burst: u32,
}

fn limiter(rate: Option<f64>, burst: Option<u32>) -> Option<Limiter> {
    let rate = rate.filter(|r| r.is_finite() && *r > 0.0)?;
    let burst = burst.unwrap_or(rate.ceil() as u32).max(1);
    let period = Duration::from_secs_f64(1.0 / rate);
    let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst)?);
    Some(Limiter {
        limiter: RateLimiter::direct(quota),
        burst,
    })
}

/// Stops the sender once its in-flight calls have finished and their outcomes are handed
/// to the writer. Answered when it has stopped pulling and sending.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop(pub oneshot::Sender<()>);

/// A retry waiting for its backoff. Ordered so that the heap's top is the soonest due
/// (and, at the same instant, the earliest queued).
struct Delayed {
    due: Instant,
    seq: u64,
    entry: Entry,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// A provider call has finished.
struct CallDone {
    entries: Vec<Entry>,
    results: Vec<(i64, Attempt)>,
    elapsed: Duration,
}

/// New work may be queued in the database.
#[derive(Message)]
#[rtype(result = "()")]
struct Woken;

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
    config: SenderConfig,
    store: Store,
    receipts: Addr<Receipts>,
    signal: Arc<Notify>,
    factory: Option<ProviderFactory>,
    provider: Option<Rc<dyn Provider>>,
    provider_error: Option<String>,
    limiter: Option<Limiter>,
    /// When a throttle halved the rate (it is restored `SLOW_FOR` later).
    slowed_since: Option<Instant>,
    clock: DefaultClock,
    queues: PriorityQueues,
    /// Retries waiting for their backoff, soonest first.
    delayed: BinaryHeap<Delayed>,
    delayed_seq: u64,
    in_flight: usize,
    in_flight_targets: usize,
    pulling: bool,
    pull_again: bool,
    /// The database may hold queued deliveries not pulled yet: set by a wake-up (the
    /// planner's signal, or the once-a-second look) and by a pull that filled its room;
    /// cleared by a pull that did not. Completions pull only while it is set, so a
    /// draining channel does not query an empty queue after every call.
    more_in_db: bool,
    /// Messages with work on this channel, by message pk.
    works: HashMap<i64, MessageWork>,
    paused_until: Option<Instant>,
    pump_at: Option<(Instant, SpawnHandle)>,
    rate_wait_since: Option<Instant>,
    stopping: Option<Vec<oneshot::Sender<()>>>,
    meters: Meters,
    /// Finished calls report here; the receiving end is the actor's completion stream.
    done_tx: mpsc::UnboundedSender<CallDone>,
    done_rx: Option<mpsc::UnboundedReceiver<CallDone>>,
    /// Outcomes not yet handed to the status writer.
    pending: Vec<StatusChange>,
    flush_at: Option<SpawnHandle>,
    /// Outcomes handed to the status writer, not yet acknowledged.
    unacked: usize,
}

impl ChannelSender {
    pub fn new(
        config: SenderConfig,
        store: Store,
        receipts: Addr<Receipts>,
        signal: Arc<Notify>,
        factory: ProviderFactory,
    ) -> Self {
        let limiter = limiter(config.rate_per_second, config.burst);
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
            works: HashMap::new(),
            paused_until: None,
            pump_at: None,
            rate_wait_since: None,
            stopping: None,
        }
    }

    fn held(&self) -> usize {
        self.queues.len() + self.delayed.len() + self.in_flight_targets
    }

    fn gauges(&self) {
        for (i, p) in [Priority::High, Priority::Normal, Priority::Low]
            .into_iter()
            .enumerate()
        {
            self.meters.queue_depth[i].set(self.queues.len_of(p) as f64);
        }
        self.meters.in_flight.set(self.in_flight as f64);
    }

    /// Pulls queued deliveries from the database while there is room: first the list of
    /// messages with work on this channel (`dispatch_queue`), then, in one query, the next
    /// queued deliveries of each, high priority first.
    fn refill(&mut self, ctx: &mut Context<Self>) {
        if self.provider.is_none() || self.stopping.is_some() {
            return;
        }
        if self.pulling {
            self.pull_again = true;
            return;
        }
        let held = self.held();
        let backlog = self.config.backlog;
        let high_room = (backlog + HIGH_HEADROOM).saturating_sub(held);
        let room = backlog.saturating_sub(held);
        if high_room == 0 {
            return;
        }
        self.pulling = true;
        self.pull_again = false;
        let store = self.store.clone();
        let code = self.config.code.clone();
        let channel_type = self.config.channel_type;
        let known: Known = self
            .works
            .iter()
            .map(|(pk, w)| (*pk, (w.after, w.drained_at, w.content_loaded)))
            .collect();
        let work = async move {
            let rows = store.dispatch_rows(&code, DISPATCH_ROWS).await?;
            let (wants, left_out) = plan_pull(&rows, &known, room, high_room);
            let pulled = store.pull_deliveries(&code, &wants).await?;
            let need: Vec<(i32, i64)> = wants
                .iter()
                .filter(|w| !known.get(&w.0.message_pk).is_some_and(|k| k.2))
                .map(|w| (w.0.app_id, w.0.message_pk))
                .collect();
            let requests = if need.is_empty() {
                HashMap::new()
            } else {
                store.message_requests(&need).await?
            };
            let mut contents = HashMap::new();
            for (pk, text) in requests {
                let value = serde_json::from_str::<SendRequest>(&text)
                    .ok()
                    .and_then(|r| {
                        let expires = r
                            .ttl_seconds
                            .map(|t| id_time(pk) + chrono::Duration::seconds(i64::from(t)));
                        super::content_for(&r, &code, channel_type).map(|c| (Arc::new(c), expires))
                    });
                contents.insert(pk, value);
            }
            let listed_all = rows.len() < DISPATCH_ROWS as usize && !left_out;
            Ok::<_, crate::store::StoreError>((rows, wants, pulled, contents, listed_all))
        };
        ctx.spawn(work.into_actor(self).map(|result, act, ctx| {
            act.pulling = false;
            match result {
                Ok((rows, wants, pulled, contents, listed_all)) => {
                    act.take_pull(rows, wants, pulled, contents, listed_all, ctx)
                }
                Err(e) => {
                    tracing::warn!(channel = %act.config.code, error = %e, "cannot pull queued deliveries");
                    ctx.run_later(Duration::from_secs(1), |act, ctx| act.refill(ctx));
                }
            }
            act.gauges();
            act.pump(ctx);
        }));
    }

    /// Takes a pull's result into memory.
    fn take_pull(
        &mut self,
        rows: Vec<DispatchRow>,
        wants: Vec<(DispatchRow, i64, i64)>,
        pulled: Vec<QueuedDelivery>,
        mut contents: HashMap<i64, Option<Content>>,
        listed_all: bool,
        ctx: &mut Context<Self>,
    ) {
        let now = Instant::now();
        for row in rows {
            self.works
                .entry(row.message_pk)
                .or_insert_with(|| MessageWork::new(row));
        }
        let mut counts: HashMap<i64, (usize, i64)> = HashMap::new();
        for d in &pulled {
            let c = counts.entry(d.message_pk).or_insert((0, 0));
            c.0 += 1;
            c.1 = c.1.max(d.delivery_id);
        }
        let mut full = !listed_all;
        for (row, _, lim) in &wants {
            let Some(w) = self.works.get_mut(&row.message_pk) else {
                continue;
            };
            w.row = *row;
            if let Some(c) = contents.remove(&row.message_pk) {
                w.content = c;
                w.content_loaded = true;
            }
            let (n, max_id) = counts.get(&row.message_pk).copied().unwrap_or((0, 0));
            w.after = w.after.max(max_id);
            if (n as i64) < *lim {
                w.drained_at = Some(row.pages);
            } else {
                full = true;
            }
        }
        let mut unsendable = Vec::new();
        for d in pulled {
            match self.works.get_mut(&d.message_pk) {
                Some(w) if w.content.is_some() => {
                    w.held += 1;
                    self.queues.push(d, now);
                }
                _ => unsendable.push(d),
            }
        }
        if !unsendable.is_empty() {
            self.fail_unsendable(unsendable);
        }
        self.more_in_db = full || self.pull_again;
        // Pull again at once only while the backlog is less than half full; past that,
        // `pump` pulls when it falls below half, so pulls come in large pages instead of
        // a small one each time a few calls end.
        if self.more_in_db && self.held() < self.config.backlog / 2 {
            ctx.run_later(Duration::from_millis(1), |act, ctx| act.refill(ctx));
        }
        self.finish_drained(ctx);
    }

    /// Messages whose queued deliveries are all pulled and settled leave the dispatch
    /// queue. The status writer removes the row after every outcome recorded before it,
    /// and only if no page was planned since; otherwise the message is pulled again.
    fn finish_drained(&mut self, ctx: &mut Context<Self>) {
        let done: Vec<(i64, i32)> = self
            .works
            .iter()
            .filter(|(_, w)| w.held == 0 && !w.finishing && w.drained_at == Some(w.row.pages))
            .map(|(pk, w)| (*pk, w.row.pages))
            .collect();
        if !done.is_empty() && !self.pending.is_empty() {
            // The writer removes the row only after the outcomes it received before the
            // request: hand them over first.
            self.flush_changes(ctx);
        }
        for (pk, pages) in done {
            if let Some(w) = self.works.get_mut(&pk) {
                w.finishing = true;
            }
            let finish = self.receipts.send(Finish {
                channel: self.config.code.clone(),
                message_pk: pk,
                pages,
            });
            ctx.spawn(finish.into_actor(self).map(move |answer, act, ctx| {
                match answer {
                    Ok(true) => {
                        act.works.remove(&pk);
                    }
                    Ok(false) => {
                        // A page was planned meanwhile: pull again.
                        if let Some(w) = act.works.get_mut(&pk) {
                            w.finishing = false;
                            w.drained_at = None;
                        }
                        act.more_in_db = true;
                        act.refill(ctx);
                    }
                    Err(_) => {
                        if let Some(w) = act.works.get_mut(&pk) {
                            w.finishing = false;
                        }
                    }
                }
            }));
        }
    }

    /// Deliveries whose message has no content for this channel (or is gone): failed.
    fn fail_unsendable(&mut self, rows: Vec<QueuedDelivery>) {
        let at = Utc::now();
        let changes = rows
            .into_iter()
            .map(|r| StatusChange {
                delivery_id: r.delivery_id,
                message_pk: r.message_pk,
                state: DeliveryState::Failed,
                from: &[DeliveryState::Queued],
                provider_id: None,
                code: Some("no_content".into()),
                reason: Some("the message has no content for this channel".into()),
                attempts: r.attempts,
                expect_receipt: None,
                segments: Vec::new(),
                at,
            })
            .collect();
        self.receipts.do_send(Record {
            channel: self.config.code.clone(),
            changes,
        });
    }

    /// Sends what the limiter and the concurrency bound allow.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let Some(provider) = self.provider.clone() else {
            return;
        };
        let now = Instant::now();
        if let Some(until) = self.paused_until {
            if until > now {
                self.pump_later(ctx, until);
                return;
            }
            self.paused_until = None;
        }
        // Retries that are due go back to their queue (in front: they waited already).
        while self.delayed.peek().is_some_and(|d| d.due <= now) {
            if let Some(d) = self.delayed.pop() {
                self.queues.push_front(d.entry);
            }
        }
        if let Some(next) = self.delayed.peek().map(|d| d.due) {
            self.pump_later(ctx, next);
        }
        let max_batch = provider.max_batch().max(1);
        while self.in_flight < self.config.pool_size
            && self.stopping.is_none()
            && self.unacked < UNACKED_MAX
        {
            let cap = self
                .limiter
                .as_ref()
                .map_or(max_batch, |l| max_batch.min(l.burst as usize));
            let Some((n, message_pk)) = self.queues.peek_batch(now, cap) else {
                break;
            };
            if let Some(l) = &self.limiter {
                let cost = self.works.get_mut(&message_pk).map_or(1, |w| match w.cost {
                    Some(c) => c,
                    None => {
                        let c = w
                            .content
                            .as_ref()
                            .map_or(1, |(content, _)| provider.cost(content).max(1));
                        if w.content_loaded {
                            w.cost = Some(c);
                        }
                        c
                    }
                });
                // A batch never asks for more than the burst, or it would wait forever.
                let permits = (n as u32).saturating_mul(cost).min(l.burst);
                let permits = NonZeroU32::new(permits).unwrap_or(NonZeroU32::MIN);
                match l.limiter.check_n(permits) {
                    Ok(Ok(())) => {}
                    Ok(Err(not_until)) => {
                        let wait = not_until.wait_time_from(self.clock.now());
                        self.rate_wait_since.get_or_insert(now);
                        self.pump_later(ctx, now + wait);
                        break;
                    }
                    Err(_) => {
                        // More permits than the burst: cannot happen with `cap` above.
                        break;
                    }
                }
            }
            if let Some(since) = self.rate_wait_since.take() {
                self.meters
                    .rate_wait
                    .record(now.duration_since(since).as_secs_f64());
            }
            let entries = self.queues.take_batch(now, n);
            self.dispatch(&provider, entries);
        }
        self.gauges();
        if self.more_in_db && self.held() < self.config.backlog / 2 {
            self.refill(ctx);
        }
    }

    fn pump_later(&mut self, ctx: &mut Context<Self>, at: Instant) {
        if let Some((when, handle)) = self.pump_at {
            if when <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = at.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(wait, |act, ctx| {
            act.pump_at = None;
            act.pump(ctx);
        });
        self.pump_at = Some((at, handle));
    }

    fn dispatch(&mut self, provider: &Rc<dyn Provider>, entries: Vec<Entry>) {
        let Some(first) = entries.first() else {
            return;
        };
        let message_pk = first.delivery.message_pk;
        let priority = first.delivery.priority;
        let Some((content, expires)) = self.works.get(&message_pk).and_then(|w| w.content.clone())
        else {
            return;
        };
        let expired = expires.is_some_and(|t| t <= Utc::now());
        let batch = Batch {
            message_pk,
            priority,
            content: content.clone(),
            targets: entries
                .iter()
                .map(|e| Target {
                    delivery_id: e.delivery.delivery_id,
                    app_id: e.delivery.app_id,
                    user_id: e.delivery.user_id.clone(),
                    address: e.delivery.address.clone(),
                })
                .collect(),
        };
        self.in_flight += 1;
        self.in_flight_targets += entries.len();
        let started = Instant::now();
        let fut = if expired {
            // Past its `ttl_seconds`: failed without a provider call.
            let results = super::all(
                &batch,
                Attempt::Failed(super::ProviderError::permanent(
                    "expired",
                    "the message's ttl_seconds passed before it could be sent",
                )),
            );
            Box::pin(std::future::ready(results))
        } else {
            provider.send(batch)
        };
        // The call runs as its own task on this arbiter and reports through the sender's
        // completion stream, so a completion wakes the actor once instead of every call
        // in flight being polled again.
        let done = self.done_tx.clone();
        actix::spawn(async move {
            let results = fut.await;
            let _ = done.send(CallDone {
                entries,
                results,
                elapsed: started.elapsed(),
            });
        });
    }

    /// Hands the outcomes gathered since the last hand-over to the status writer, as one
    /// message. The writer answers at once unless it is far behind; until it answers,
    /// the changes count against `UNACKED_MAX` and hold further calls back.
    fn flush_changes(&mut self, ctx: &mut Context<Self>) {
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

    /// Turns a call's results into status changes, retries and pauses.
    fn settle(&mut self, entries: Vec<Entry>, results: Vec<(i64, Attempt)>) -> Vec<StatusChange> {
        let now = Instant::now();
        let at = Utc::now();
        self.in_flight_targets -= entries.len();
        // Providers answer in the order of the batch's targets; anything else is matched
        // by id.
        let in_order = results.len() == entries.len()
            && results
                .iter()
                .zip(&entries)
                .all(|(r, e)| r.0 == e.delivery.delivery_id);
        let mut ordered = Vec::with_capacity(entries.len());
        if in_order {
            ordered.extend(results.into_iter().map(|(_, a)| Some(a)));
        } else {
            let mut by_id: HashMap<i64, Attempt> = results.into_iter().collect();
            ordered.extend(
                entries
                    .iter()
                    .map(|e| by_id.remove(&e.delivery.delivery_id)),
            );
        }
        let mut changes = Vec::with_capacity(entries.len());
        let mut counts = [0u64; 6];
        let mut retried = [0u64; 3];
        let mut throttled: Option<Duration> = None;
        for (mut e, attempt) in entries.into_iter().zip(ordered) {
            let message_pk = e.delivery.message_pk;
            let d = &e.delivery;
            let attempt = attempt.unwrap_or_else(|| {
                Attempt::Failed(super::ProviderError::retryable(
                    "no_result",
                    "the provider client gave no result for this recipient",
                ))
            });
            let attempts = d.attempts.saturating_add(1);
            let mut release = true;
            match attempt {
                Attempt::Accepted {
                    provider_id,
                    delivered,
                    receipts,
                    segments,
                } => {
                    counts[if delivered { 0 } else { 1 }] += 1;
                    let lag = at - id_time(d.message_pk);
                    self.meters
                        .accept_to_submit
                        .record(lag.num_microseconds().unwrap_or(0) as f64 / 1e6);
                    changes.push(StatusChange {
                        delivery_id: d.delivery_id,
                        state: if delivered {
                            DeliveryState::Delivered
                        } else {
                            DeliveryState::Submitted
                        },
                        message_pk,
                        from: &[DeliveryState::Queued],
                        expect_receipt: if receipts { provider_id.clone() } else { None },
                        segments: if receipts { segments } else { Vec::new() },
                        provider_id,
                        code: None,
                        reason: None,
                        attempts,
                        at,
                    });
                }
                Attempt::Failed(err) => {
                    counts[2 + class_slot(err.class)] += 1;
                    let final_failure = match err.class {
                        ErrorClass::Permanent => true,
                        ErrorClass::RateLimited => {
                            let wait = err.retry_after.unwrap_or(Duration::from_secs(1));
                            throttled = Some(throttled.map_or(wait, |t| t.max(wait)));
                            retried[1] += 1;
                            // Throttling is not the delivery's fault: no attempt is used.
                            self.queues.push_front(e);
                            continue;
                        }
                        ErrorClass::Retryable | ErrorClass::Auth => {
                            attempts >= self.config.retry.max_attempts
                        }
                    };
                    let reason = Some(format!("{}: {}", err.class.as_str(), err.reason));
                    if final_failure {
                        changes.push(StatusChange {
                            delivery_id: d.delivery_id,
                            message_pk,
                            state: DeliveryState::Failed,
                            from: &[DeliveryState::Queued],
                            provider_id: None,
                            code: Some(err.code),
                            reason,
                            attempts,
                            expect_receipt: None,
                            segments: Vec::new(),
                            at,
                        });
                    } else {
                        if let Some(n) = retried.get_mut(class_slot(err.class)) {
                            *n += 1;
                        }
                        changes.push(StatusChange {
                            delivery_id: d.delivery_id,
                            message_pk,
                            state: DeliveryState::Queued,
                            from: &[DeliveryState::Queued],
                            provider_id: None,
                            code: Some(err.code),
                            reason,
                            attempts,
                            expect_receipt: None,
                            segments: Vec::new(),
                            at,
                        });
                        let wait = err
                            .retry_after
                            .unwrap_or_else(|| self.config.retry.delay(attempts));
                        e.delivery.attempts = attempts;
                        self.delayed_seq += 1;
                        self.delayed.push(Delayed {
                            due: now + wait,
                            seq: self.delayed_seq,
                            entry: e,
                        });
                        release = false;
                    }
                }
            }
            if release {
                self.release(message_pk);
            }
        }
        for (counter, n) in self.meters.outcomes.iter().zip(counts) {
            if n > 0 {
                counter.increment(n);
            }
        }
        for (counter, n) in self.meters.retries.iter().zip(retried) {
            if n > 0 {
                counter.increment(n);
            }
        }
        if let Some(wait) = throttled {
            self.throttle(wait);
        }
        changes
    }

    fn release(&mut self, message_pk: i64) {
        if let Some(w) = self.works.get_mut(&message_pk) {
            w.held = w.held.saturating_sub(1);
        }
    }

    /// The provider is throttling: pause until its reset, then run at half the rate for a
    /// while.
    fn throttle(&mut self, wait: Duration) {
        let until = Instant::now() + wait.min(Duration::from_secs(300));
        self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
        tracing::info!(channel = %self.config.code, wait_ms = wait.as_millis() as u64, "provider is throttling; pausing the channel");
        if let Some(rate) = self.config.rate_per_second {
            self.limiter = limiter(Some(rate / 2.0), self.config.burst.map(|b| (b / 2).max(1)));
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
                    let _ = tokio::time::timeout(Duration::from_secs(1), signal.notified()).await;
                    if me.try_send(Woken).is_err() && !me.connected() {
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
                act.limiter = limiter(act.config.rate_per_second, act.config.burst);
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
        let changes = self.settle(done.entries, done.results);
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

    fn handle(&mut self, _: Woken, ctx: &mut Self::Context) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(message_pk: i64, priority: Priority) -> DispatchRow {
        DispatchRow {
            message_pk,
            priority,
            app_id: 1,
            pages: 1,
        }
    }

    #[test]
    fn retries_come_due_soonest_first_then_in_queue_order() {
        let t0 = Instant::now();
        let entry = |id: i64| Entry {
            delivery: QueuedDelivery {
                delivery_id: id,
                priority: Priority::Normal,
                message_pk: 1,
                app_id: 1,
                user_id: None,
                address: String::new(),
                attempts: 1,
            },
            since: t0,
        };
        let mut heap = BinaryHeap::new();
        for (id, due_ms, seq) in [(1, 30, 1), (2, 10, 2), (3, 30, 3), (4, 20, 4)] {
            heap.push(Delayed {
                due: t0 + Duration::from_millis(due_ms),
                seq,
                entry: entry(id),
            });
        }
        let order: Vec<i64> = std::iter::from_fn(|| heap.pop())
            .map(|d| d.entry.delivery.delivery_id)
            .collect();
        assert_eq!(order, vec![2, 4, 1, 3]);
    }

    #[test]
    fn a_pull_that_runs_out_of_room_says_so() {
        // Three messages, room for two full pulls: the third is left out, and the sender
        // must know to pull again even if the first two turn out nearly empty.
        let rows: Vec<DispatchRow> = (1..=3).map(|pk| row(pk, Priority::Normal)).collect();
        let (wants, left_out) = plan_pull(&rows, &Known::new(), 2 * PULL_PER_MESSAGE, 0);
        assert_eq!(wants.len(), 2);
        assert!(left_out);
        let (wants, left_out) = plan_pull(&rows, &Known::new(), 3 * PULL_PER_MESSAGE, 0);
        assert_eq!(wants.len(), 3);
        assert!(!left_out);
    }

    #[test]
    fn drained_messages_take_no_room_and_high_priority_has_its_own() {
        let rows = vec![
            row(1, Priority::Normal),
            row(2, Priority::Normal),
            row(3, Priority::High),
        ];
        let mut known = Known::new();
        known.insert(1, (500, Some(1), true)); // drained at these pages
        let (wants, left_out) = plan_pull(&rows, &known, 10, 10 + HIGH_HEADROOM);
        let pks: Vec<(i64, i64)> = wants.iter().map(|w| (w.0.message_pk, w.2)).collect();
        assert_eq!(pks, vec![(2, 10), (3, HIGH_HEADROOM as i64)]);
        assert!(!left_out);
    }
}
