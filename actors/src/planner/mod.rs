//! `Planner`: turns committed messages into deliveries.
//!
//! For each message in `message_queue` (high priority first) it expands the audience —
//! user ids, tags, a segment, a broadcast, or direct addresses — resolves each user's
//! address on each channel through their bindings (the narrowest scope that matches wins:
//! `channel:<code>`, then `app`, then `all`), and writes one delivery per (target, channel)
//! with the queue rows the channel senders pull. Targets that cannot be sent are written
//! too, with the reason, so the funnel can show where they were lost: `unknown_user`,
//! `user_disabled`, `channel_disabled` (not effective) and `no_address` (effective, but
//! nothing to send to).
//!
//! It plans in passes, each one transaction for many messages (`batch.rs` decides which):
//! one read of the due messages, one query for all the users they name with their
//! bindings, one COPY of all their deliveries, and set-based updates of the dispatch
//! queue, the messages and `message_queue`. Large audiences are planned a page of users
//! per pass, with the progress saved in the queue row, so a restart resumes where it
//! stopped and a broadcast never holds more than one page in memory. A crash in a pass
//! loses nothing and doubles nothing: before COMMIT every message of the pass is still
//! queued, after it none is. It never sends anything itself.
//!
//! It also measures how far planning is behind (`backlog.rs`), which the ingest uses to
//! refuse work it could not deliver in reasonable time.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use tokio::sync::Notify;

use crate::channel::signals::WorkSignals;
use crate::directory::Directory;
use crate::domain::ids::IdGenerator;
use crate::domain::send::Audience;
use crate::domain::{DeliveryState, Priority};
use crate::metrics as m;

pub mod backlog;
mod batch;
pub(crate) mod expand;
pub(crate) mod targets;

use crate::domain::ids::id_time;
use crate::domain::strategy::decide::deadlines;
use crate::domain::strategy::Step;
use crate::store::plan::{
    NewDelivery, NewTimer, PlanJob, PlannedMessage, PlannedPage, ResolvedUser,
};
use crate::store::{Store, StoreError};
use backlog::PlanBacklog;
use batch::{Limits, Shape};
pub use targets::address_for;
use targets::{resolve_channels, with_unknown};

/// Users planned per page for paged audiences (tags, segments, broadcast).
pub const PAGE_USERS: usize = 1000;
/// Due messages read per pass.
const PASS_MESSAGES: i64 = 2000;
/// What one pass plans at most: deliveries of listed audiences, and pages.
const PASS_LIMITS: Limits = Limits {
    deliveries: 5000,
    pages: 4,
};
/// How often the backlog is counted in the database.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

/// Plans the messages that are due. The ingest's nudge and a once-a-second look (for
/// scheduled messages, which fall due without one) send it; a pass that planned something
/// sends it again at once.
#[derive(Message)]
#[rtype(result = "()")]
struct PlanDue;

pub struct Planner {
    work: Arc<Work>,
    wake: Arc<Notify>,
    /// A pass is running.
    busy: bool,
    /// Another pass was asked for while one ran.
    again: bool,
}

impl Planner {
    pub fn new(
        store: Store,
        directory: Arc<Directory>,
        ids: Arc<IdGenerator>,
        wake: Arc<Notify>,
        signals: Arc<WorkSignals>,
        backlog: Arc<PlanBacklog>,
    ) -> Self {
        Self {
            work: Arc::new(Work {
                store,
                directory,
                ids,
                signals,
                backlog,
            }),
            wake,
            busy: false,
            again: false,
        }
    }
}

impl Actor for Planner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let wake = self.wake.clone();
        let me = ctx.address();
        ctx.spawn(
            async move {
                loop {
                    let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
                    if me.try_send(PlanDue).is_err() && !me.connected() {
                        break;
                    }
                }
            }
            .into_actor(self),
        );
        ctx.notify(PlanDue);
        ctx.run_interval(BACKLOG_EVERY, |act, ctx| {
            let work = act.work.clone();
            ctx.spawn(
                async move {
                    match work.store.plan_backlog().await {
                        Ok((n, oldest)) => {
                            work.backlog.set(n, oldest);
                            metrics::gauge!(m::PLANNER_BACKLOG).set(n as f64);
                            metrics::gauge!(m::PLANNER_OLDEST_SECONDS)
                                .set(work.backlog.lag(Utc::now()).as_secs_f64());
                        }
                        Err(e) => tracing::debug!(error = %e, "cannot count the planner's backlog"),
                    }
                }
                .into_actor(act),
            );
        });
    }
}

impl Handler<PlanDue> for Planner {
    type Result = ();

    fn handle(&mut self, _: PlanDue, ctx: &mut Self::Context) {
        if self.busy {
            self.again = true;
            return;
        }
        self.busy = true;
        self.again = false;
        let work = self.work.clone();
        ctx.spawn(
            async move { work.pass().await }
                .into_actor(self)
                .map(|result, act, ctx| {
                    act.busy = false;
                    match result {
                        Ok(n) if n > 0 || act.again => ctx.notify(PlanDue),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %crate::error_chain(&e), "planning failed; retrying");
                            ctx.notify_later(PlanDue, Duration::from_secs(1));
                        }
                    }
                }),
        );
    }
}

impl actix::Supervised for Planner {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!("planner restarting");
    }
}

struct Work {
    store: Store,
    directory: Arc<Directory>,
    ids: Arc<IdGenerator>,
    signals: Arc<WorkSignals>,
    backlog: Arc<PlanBacklog>,
}

/// The steps of a message's strategy, if it was sent with one.
fn strategy_steps(job: &PlanJob) -> Option<Vec<Step>> {
    let text = job.strategy.as_deref()?;
    match serde_json::from_str(text) {
        Ok(steps) => Some(steps),
        Err(e) => {
            // Cannot happen for steps this build stored; the message goes out on its first
            // step's channel only.
            tracing::error!(id = %job.id, error = %e, "stored strategy does not parse");
            None
        }
    }
}

/// The strategy deadlines that `deliveries` of step `from` (from 1) set: one timer per
/// later step naming `from`, covering the deliveries to users, due when the youngest of
/// them reaches the deadline.
pub fn step_timers(steps: &[Step], from: usize, deliveries: &[NewDelivery]) -> Vec<NewTimer> {
    let mut ids = deliveries
        .iter()
        .filter(|d| d.user_id.is_some())
        .map(|d| d.id);
    let Some(first) = ids.next() else {
        return Vec::new();
    };
    let (first, last) = ids.fold((first, first), |(lo, hi), id| (lo.min(id), hi.max(id)));
    deadlines(steps, from, id_time(last))
        .into_iter()
        .map(|(step, due_at)| NewTimer {
            step: step as i16,
            from_step: from as i16,
            first_id: first,
            last_id: last,
            due_at,
        })
        .collect()
}

/// The part of a stored request the planner reads: its audience.
#[derive(serde::Deserialize)]
struct Stored {
    audience: Audience,
}

/// A due message with its audience read.
struct Due {
    job: PlanJob,
    audience: Option<Audience>,
}

impl Due {
    fn read(job: PlanJob) -> Self {
        let audience = match serde_json::from_str::<Stored>(&job.request) {
            Ok(s) => Some(s.audience),
            Err(e) => {
                // Cannot happen for a request this build validated; an older build's
                // request that no longer parses is dropped rather than retried forever.
                tracing::error!(id = %job.id, error = %e, "stored request does not parse");
                None
            }
        };
        Self { job, audience }
    }

    fn shape(&self) -> Shape {
        let channels = self.job.channels.len();
        match &self.audience {
            None => Shape::Unreadable,
            Some(a) => match (&a.addresses, &a.user_ids) {
                (Some(addresses), _) => Shape::Listed {
                    deliveries: addresses.values().map(Vec::len).sum(),
                },
                (None, Some(ids)) => Shape::Listed {
                    deliveries: ids.len() * channels,
                },
                (None, None) => Shape::Paged,
            },
        }
    }
}

impl Work {
    /// Plans the due messages one pass takes (see [`batch::pick`]) in one transaction;
    /// returns how many it planned (or cleared).
    async fn pass(&self) -> Result<usize, StoreError> {
        let started = std::time::Instant::now();
        let jobs = self.store.next_plan_jobs(PASS_MESSAGES).await?;
        if jobs.is_empty() {
            return Ok(0);
        }
        let mut due: Vec<Option<Due>> = jobs.into_iter().map(|j| Some(Due::read(j))).collect();
        let shapes: Vec<Shape> = due.iter().flatten().map(Due::shape).collect();
        let picked: Vec<Due> = batch::pick(&shapes, PASS_LIMITS)
            .into_iter()
            .filter_map(|i| due[i].take())
            .collect();

        // Every listed user of the pass, in one query.
        let keys: Vec<(i32, String)> = picked
            .iter()
            .filter_map(|d| {
                let a = d.audience.as_ref()?;
                if a.addresses.is_some() {
                    return None;
                }
                Some((d.job.app_id, a.user_ids.as_ref()?))
            })
            .flat_map(|(app, ids)| ids.iter().map(move |id| (app, id.clone())))
            .collect();
        let found = self.store.resolve_users(&keys).await?;

        let snapshot = self.directory.snapshot();
        let mut pages = Vec::with_capacity(picked.len());
        for d in picked {
            let Due { job, audience } = d;
            let message = PlannedMessage {
                id: job.id,
                app_id: job.app_id,
                priority: job.priority,
            };
            let mut page = PlannedPage {
                message,
                deliveries: Vec::new(),
                next: None,
                first: job.cursor.is_none(),
                timers: Vec::new(),
            };
            let Some(audience) = audience else {
                pages.push(page);
                continue;
            };
            let steps = strategy_steps(&job);
            let mut channels = resolve_channels(&snapshot, job.app_id, &job.channels);
            if steps.is_some() {
                for c in &mut channels {
                    c.step = Some(1);
                }
            }
            if let Some(addresses) = &audience.addresses {
                page.deliveries = expand::to_addresses(&self.ids, &channels, addresses);
            } else if let Some(ids) = &audience.user_ids {
                let users =
                    with_unknown(ids, |id| found.get(&(job.app_id, id.to_owned())).cloned());
                expand::to_users(&self.ids, &channels, &users, &mut page.deliveries);
            } else {
                let (users, next) = self.page(&job, &audience).await?;
                expand::to_users(&self.ids, &channels, &users, &mut page.deliveries);
                page.next = next;
            }
            if let Some(steps) = &steps {
                page.timers = step_timers(steps, 1, &page.deliveries);
            }
            pages.push(page);
        }
        self.store.write_plans(&pages).await?;

        let deliveries = self.counted(pages.iter().flat_map(|p| p.deliveries.iter()));
        self.wake(
            pages
                .iter()
                .flat_map(|p| p.deliveries.iter().map(|d| (d, p.message.priority))),
        );
        let now = Utc::now();
        let lag = metrics::histogram!(m::PLANNER_LAG_SECONDS);
        let mut by_priority = [0u64; 3];
        for p in pages.iter().filter(|p| p.first) {
            by_priority[p.message.priority.as_i16().clamp(0, 2) as usize] += 1;
            let waited = now - p.message.id.created_at();
            lag.record(waited.num_microseconds().unwrap_or(0) as f64 / 1e6);
        }
        for priority in [Priority::High, Priority::Normal, Priority::Low] {
            let n = by_priority[priority.as_i16().clamp(0, 2) as usize];
            if n > 0 {
                metrics::counter!(m::PLANNER_MESSAGES_TOTAL, "priority" => priority.as_str())
                    .increment(n);
            }
        }
        self.backlog
            .planned(pages.iter().filter(|p| p.next.is_none()).count());
        metrics::histogram!(m::PLANNER_PASS_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(m::PLANNER_PASS_MESSAGES).record(pages.len() as f64);
        tracing::trace!(
            messages = pages.len(),
            deliveries,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "planning pass"
        );
        Ok(pages.len())
    }

    /// The next page of a paged audience (tags, a segment, everyone) after the message's
    /// cursor, and the cursor to resume from when the page was full.
    async fn page(
        &self,
        job: &PlanJob,
        audience: &Audience,
    ) -> Result<(Vec<(String, Option<ResolvedUser>)>, Option<String>), StoreError> {
        let after = job.cursor.clone().unwrap_or_default();
        if let Some(segment) = &audience.segment {
            let members = self
                .store
                .segment_members(job.app_id, segment)
                .await?
                .unwrap_or_default();
            let page: Vec<String> = members
                .into_iter()
                .filter(|u| *u > after)
                .take(PAGE_USERS)
                .collect();
            let next = (page.len() == PAGE_USERS)
                .then(|| page.last().cloned())
                .flatten();
            let keys: Vec<(i32, String)> = page.iter().map(|u| (job.app_id, u.clone())).collect();
            let found = self.store.resolve_users(&keys).await?;
            let users = with_unknown(&page, |id| found.get(&(job.app_id, id.to_owned())).cloned());
            return Ok((users, next));
        }
        let (any, all) = match &audience.tags {
            Some(t) => (t.any.as_deref(), t.all.as_deref()),
            None => (None, None),
        };
        let page = self
            .store
            .page_users(job.app_id, any, all, &after, PAGE_USERS as i64)
            .await?;
        let next = (page.len() == PAGE_USERS)
            .then(|| page.last().map(|u| u.user_id.clone()))
            .flatten();
        Ok((
            page.into_iter()
                .map(|u| (u.user_id.clone(), Some(u)))
                .collect(),
            next,
        ))
    }

    /// Wakes the senders of the channels that got queued deliveries, telling each the
    /// most urgent priority it got.
    fn wake<'a>(&self, out: impl Iterator<Item = (&'a NewDelivery, Priority)>) {
        let mut best: std::collections::HashMap<&str, Priority> = std::collections::HashMap::new();
        for (d, priority) in out {
            if d.state == DeliveryState::Queued {
                let b = best.entry(d.channel_code.as_str()).or_insert(priority);
                if priority.as_i16() < b.as_i16() {
                    *b = priority;
                }
            }
        }
        for (channel, priority) in best {
            self.signals.wake(channel, priority);
        }
    }

    /// Counts the targets per (channel, outcome), not per delivery; answers how many
    /// there were.
    fn counted<'a>(&self, out: impl Iterator<Item = &'a NewDelivery>) -> usize {
        let mut counts: std::collections::HashMap<(&str, &'static str), u64> =
            std::collections::HashMap::new();
        let mut total = 0;
        for d in out {
            total += 1;
            let outcome = if d.state == DeliveryState::Queued {
                "queued"
            } else {
                d.reason.unwrap_or("other")
            };
            *counts
                .entry((d.channel_code.as_str(), outcome))
                .or_default() += 1;
        }
        for ((channel, outcome), n) in counts {
            metrics::counter!(m::PLANNER_TARGETS_TOTAL,
                "channel" => channel.to_owned(), "outcome" => outcome)
            .increment(n);
        }
        total
    }
}
