//! `Ingest`: group commit. Accepted requests are collected for at most `max_wait` or
//! `max_batch` messages, written in one transaction with batched statements, and only then
//! answered — so a 2xx always means "committed".
//!
//! Bounded: the mailbox has a fixed capacity (the front door uses `try_send` and answers
//! 503 when it is full), and the messages buffered or committing are capped by
//! `max_pending`. It never answers before COMMIT returns, and never drops a request
//! without answering it. While planning is behind its configured bounds (see
//! `planner/backlog.rs`), new sends are refused with the reason, not accepted to wait.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::channel::lag::DispatchLag;
use crate::domain::ids::IdGenerator;
use crate::domain::send::NewMessage;
use crate::domain::{MessagePk, MessageStatus};
use crate::metrics as m;
use crate::planner::backlog::{admit, Admission, Behind, Bounds, PlanBacklog};
use crate::scheduler::ScheduleChanged;
use crate::store::ingest::{Assigned, GroupRequest, RequestResult};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Most messages in one transaction.
    pub max_batch: usize,
    /// Longest a message waits for companions before its transaction starts.
    pub max_wait: Duration,
    /// Most messages buffered or committing at once; more are refused (503).
    pub max_pending: usize,
    /// Transactions in flight at once; while all are busy the next batch grows.
    pub commit_concurrency: usize,
    /// Mailbox capacity (requests waiting to be taken into a batch).
    pub mailbox: usize,
    pub node_id: u8,
    /// How far planning may fall behind before sends are refused (503).
    pub planning: Bounds,
    /// A send naming a channel whose queued work ahead of it is older than this is
    /// refused (high priority: twice); zero means no bound.
    pub max_dispatch_lag: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_batch: 1000,
            max_wait: Duration::from_millis(5),
            max_pending: 20_000,
            commit_concurrency: 2,
            mailbox: 4096,
            node_id: 0,
            planning: Bounds::default(),
            max_dispatch_lag: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    #[error("the ingest queue is full")]
    Overloaded,
    /// Planning is behind its bound: the message would not go out in reasonable time.
    #[error("planning is behind: {behind}")]
    Behind {
        behind: Behind,
        retry_after: Duration,
    },
    /// A channel of the message has queued work older than the bound ahead of it.
    #[error(
        "channel `{channel}` is behind: work queued {:.0} s ago is still waiting to be sent",
        age.as_secs_f64()
    )]
    DispatchBehind {
        channel: String,
        age: Duration,
        retry_after: Duration,
    },
    /// The group commit failed; every request of the group is told the same cause.
    #[error("the database is unavailable")]
    Unavailable(#[source] Arc<StoreError>),
    /// The ingest restarted with the request still buffered: it was not stored.
    #[error("the ingest restarted before the request was stored")]
    Restarted,
}

/// Reply to one [`Submit`].
pub type SubmitReply = Result<RequestResult, IngestError>;

/// One caller's request: a single send or a whole batch (stored all or nothing).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Submit {
    pub app_id: i32,
    pub app_key: Arc<str>,
    pub messages: Vec<NewMessage>,
    pub reply: oneshot::Sender<SubmitReply>,
}

/// Resolves once nothing is buffered or committing (used at shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain(pub oneshot::Sender<()>);

struct Waiting {
    request: GroupRequest,
    app_key: Arc<str>,
    reply: oneshot::Sender<SubmitReply>,
    since: Instant,
}

struct Replier {
    app_key: Arc<str>,
    reply: oneshot::Sender<SubmitReply>,
    since: Instant,
}

pub struct Ingest {
    store: Store,
    ids: Arc<IdGenerator>,
    config: IngestConfig,
    buffer: Vec<Waiting>,
    buffered_messages: usize,
    /// Messages buffered or committing.
    pending: usize,
    in_flight: usize,
    last_commit_end: Instant,
    timer: Option<SpawnHandle>,
    drain_waiters: Vec<oneshot::Sender<()>>,
    /// Woken after each commit so the planner picks the new messages up at once.
    wake_planner: Option<Arc<tokio::sync::Notify>>,
    /// How far planning is behind: read to admit sends, added to on each commit.
    backlog: Arc<PlanBacklog>,
    /// Told after a commit that stored scheduled messages.
    schedule_changed: Option<ScheduleChanged>,
    /// How far each channel's dispatch is behind: read to admit sends.
    dispatch_lag: Arc<DispatchLag>,
}

impl Ingest {
    /// Wakes `planner` after every successful commit, and admits sends by the planner's
    /// `backlog` (told of every commit).
    pub fn with_planner(
        mut self,
        planner: Arc<tokio::sync::Notify>,
        backlog: Arc<PlanBacklog>,
    ) -> Self {
        self.wake_planner = Some(planner);
        self.backlog = backlog;
        self
    }

    /// Admits sends by how far their channels' dispatch is behind.
    pub fn with_dispatch_lag(mut self, lag: Arc<DispatchLag>) -> Self {
        self.dispatch_lag = lag;
        self
    }

    /// Tells the scheduler of every commit that stored scheduled messages.
    pub fn with_scheduler(mut self, changed: ScheduleChanged) -> Self {
        self.schedule_changed = Some(changed);
        self
    }

    pub fn new(store: Store, ids: Arc<IdGenerator>, config: IngestConfig) -> Self {
        Self {
            store,
            ids,
            config,
            buffer: Vec::new(),
            buffered_messages: 0,
            pending: 0,
            in_flight: 0,
            last_commit_end: Instant::now(),
            timer: None,
            drain_waiters: Vec::new(),
            wake_planner: None,
            backlog: Arc::default(),
            schedule_changed: None,
            dispatch_lag: Arc::default(),
        }
    }

    /// Starts a transaction with what is buffered, if a commit slot is free.
    ///
    /// With no commit in flight, whatever is buffered goes at once (low latency when load is
    /// light). While one is in flight, a further one starts only for a full batch: under
    /// load the next batch grows during the running commit instead of being cut small,
    /// which is where group commit saves its work.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.buffer.is_empty() || self.in_flight >= self.config.commit_concurrency {
            return;
        }
        let full = self.buffered_messages >= self.config.max_batch;
        if self.in_flight > 0 && !full {
            return;
        }
        // While commits run back to back (the last one ended less than max_wait ago), a
        // batch that is not full waits until its oldest message has waited max_wait: under
        // load that is what makes batches large and commits cheap per message. A message
        // arriving at an idle ingest goes at once.
        let idle = self.in_flight == 0 && self.last_commit_end.elapsed() >= self.config.max_wait;
        if !full && !idle {
            let waited = self.buffer.first().map(|w| w.since.elapsed());
            if let Some(rest) = waited.and_then(|w| self.config.max_wait.checked_sub(w)) {
                if !rest.is_zero() {
                    if self.timer.is_none() {
                        self.timer = Some(ctx.run_later(rest, |act, ctx| {
                            act.timer = None;
                            act.flush(ctx);
                        }));
                    }
                    return;
                }
            }
        }
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        // Take whole requests up to max_batch messages (a batch request is never split).
        let mut taken = 0;
        let mut count = 0;
        for w in &self.buffer {
            if count > 0 && taken + w.request.messages.len() > self.config.max_batch {
                break;
            }
            taken += w.request.messages.len();
            count += 1;
        }
        let (requests, group): (Vec<GroupRequest>, Vec<Replier>) = self
            .buffer
            .drain(..count)
            .map(|w| {
                (
                    w.request,
                    Replier {
                        app_key: w.app_key,
                        reply: w.reply,
                        since: w.since,
                    },
                )
            })
            .unzip();
        self.buffered_messages -= taken;
        self.in_flight += 1;
        metrics::gauge!(m::INGEST_COMMITS_IN_FLIGHT).set(self.in_flight as f64);

        let now = Instant::now();
        for w in &group {
            metrics::histogram!(m::INGEST_WAIT_SECONDS)
                .record(now.duration_since(w.since).as_secs_f64());
        }
        let store = self.store.clone();
        let node_id = i32::from(self.config.node_id);
        let work = async move {
            let started = Instant::now();
            let result = store.commit_group(&requests, node_id).await;
            (requests, group, result, started.elapsed(), taken)
        };
        ctx.spawn(work.into_actor(self).map(
            |(requests, group, result, elapsed, taken), act, ctx| {
                act.finish(&requests, group, result, elapsed, taken);
                act.in_flight -= 1;
                act.last_commit_end = Instant::now();
                metrics::gauge!(m::INGEST_COMMITS_IN_FLIGHT).set(act.in_flight as f64);
                // What piled up while every slot was busy has waited long enough.
                act.flush(ctx);
            },
        ));
    }

    fn finish(
        &mut self,
        requests: &[GroupRequest],
        group: Vec<Replier>,
        result: Result<Vec<RequestResult>, StoreError>,
        elapsed: Duration,
        taken: usize,
    ) {
        self.pending -= taken;
        metrics::gauge!(m::INGEST_QUEUE_DEPTH).set(self.pending as f64);
        match result {
            Ok(results) => {
                if let Some(wake) = &self.wake_planner {
                    wake.notify_one();
                }
                metrics::counter!(m::INGEST_COMMITS_TOTAL, "outcome" => "ok").increment(1);
                metrics::histogram!(m::INGEST_COMMIT_DURATION_SECONDS)
                    .record(elapsed.as_secs_f64());
                metrics::histogram!(m::INGEST_BATCH_SIZE).record(taken as f64);
                // Counted per batch, not per message: one registry lookup per label set.
                let mut accepted: HashMap<(&str, &'static str), u64> = HashMap::new();
                let mut replayed: HashMap<&str, u64> = HashMap::new();
                let now = chrono::Utc::now();
                let (mut due, mut scheduled) = (0, 0);
                for ((w, r), req) in group.iter().zip(&results).zip(requests) {
                    if let RequestResult::Stored(list) = r {
                        for (a, msg) in list.iter().zip(&req.messages) {
                            if a.replay {
                                *replayed.entry(&w.app_key).or_default() += 1;
                            } else {
                                if msg.message.status == MessageStatus::Scheduled {
                                    scheduled += 1;
                                } else {
                                    due += 1;
                                }
                                *accepted
                                    .entry((&w.app_key, msg.message.priority.as_str()))
                                    .or_default() += 1;
                            }
                        }
                    }
                }
                self.backlog.added(due, now);
                if scheduled > 0 {
                    if let Some(changed) = &self.schedule_changed {
                        changed.notify();
                    }
                }
                for ((app, priority), n) in accepted {
                    metrics::counter!(m::MESSAGES_ACCEPTED_TOTAL,
                        "app" => app.to_owned(), "priority" => priority)
                    .increment(n);
                }
                for (app, n) in replayed {
                    metrics::counter!(m::MESSAGES_REPLAYED_TOTAL, "app" => app.to_owned())
                        .increment(n);
                }
                for (w, r) in group.into_iter().zip(results) {
                    // The caller may have gone away; the message is stored either way.
                    let _ = w.reply.send(Ok(r));
                }
            }
            Err(e) => {
                metrics::counter!(m::INGEST_COMMITS_TOTAL, "outcome" => "error").increment(1);
                tracing::error!(error = %crate::error_chain(&e), messages = taken, "group commit failed");
                let cause = Arc::new(e);
                for w in group {
                    let _ = w.reply.send(Err(IngestError::Unavailable(cause.clone())));
                }
            }
        }
        if self.pending == 0 {
            for w in self.drain_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }
}

impl Actor for Ingest {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.config.mailbox);
    }
}

impl Supervised for Ingest {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        // Whatever was buffered belongs to callers that must hear something.
        for w in self.buffer.drain(..) {
            let _ = w.reply.send(Err(IngestError::Restarted));
        }
        self.buffered_messages = 0;
        self.pending = 0;
        self.in_flight = 0;
        self.timer = None;
    }
}

impl Handler<Submit> for Ingest {
    type Result = ();

    fn handle(&mut self, msg: Submit, ctx: &mut Self::Context) {
        let n = msg.messages.len();
        if n == 0 {
            let _ = msg.reply.send(Ok(RequestResult::Stored(Vec::new())));
            return;
        }
        if self.pending + n > self.config.max_pending {
            let _ = msg.reply.send(Err(IngestError::Overloaded));
            return;
        }
        // A batch is held to the bound of its lowest priority.
        let priority = msg
            .messages
            .iter()
            .map(|m| m.priority)
            .max_by_key(|p| p.as_i16())
            .unwrap_or_default();
        let lag = self.backlog.lag(chrono::Utc::now());
        if let Admission::Refuse {
            behind,
            retry_after,
        } = admit(
            self.backlog.unplanned(),
            lag,
            self.config.planning,
            priority,
        ) {
            let _ = msg.reply.send(Err(IngestError::Behind {
                behind,
                retry_after,
            }));
            return;
        }
        let now = chrono::Utc::now();
        if let Some((channel, age)) = msg.messages.iter().find_map(|m| {
            self.dispatch_lag
                .behind(&m.channels, m.priority, now, self.config.max_dispatch_lag)
        }) {
            let excess = age.saturating_sub(self.config.max_dispatch_lag);
            let _ = msg.reply.send(Err(IngestError::DispatchBehind {
                channel,
                age,
                retry_after: Duration::from_secs(excess.as_secs().clamp(1, 30)),
            }));
            return;
        }
        let messages = msg
            .messages
            .into_iter()
            .map(|message| Assigned {
                id: MessagePk(self.ids.next_id()),
                message,
            })
            .collect();
        self.buffer.push(Waiting {
            request: GroupRequest {
                app_id: msg.app_id,
                messages,
            },
            app_key: msg.app_key,
            reply: msg.reply,
            since: Instant::now(),
        });
        self.pending += n;
        self.buffered_messages += n;
        metrics::gauge!(m::INGEST_QUEUE_DEPTH).set(self.pending as f64);
        self.flush(ctx);
    }
}

impl Handler<Drain> for Ingest {
    type Result = ();

    fn handle(&mut self, msg: Drain, ctx: &mut Self::Context) {
        if self.pending == 0 {
            let _ = msg.0.send(());
        } else {
            self.drain_waiters.push(msg.0);
            self.flush(ctx);
        }
    }
}
