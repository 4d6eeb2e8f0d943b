//! `Scheduler`: hands scheduled messages to the planner at their time.
//!
//! The schedule is in PostgreSQL (`message_schedule`, see `store/schedule.rs`), nothing of
//! it in memory but the next due time: the scheduler fires what is due, then sleeps until
//! the earliest time still waiting (at most [`IDLE`], so messages scheduled by another
//! node are found too) or until it is told the schedule changed (a scheduled send was
//! committed, edited). A message whose time passed while umsd was down fires when the
//! scheduler starts, and its lateness says by how much.

mod wake;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use tokio::sync::Notify;

use crate::metrics as m;
use crate::planner::backlog::PlanBacklog;
use crate::store::Store;

pub use wake::{next_wake, IDLE};

/// Most messages fired per transaction.
const FIRE_BATCH: i64 = 1000;
/// How often the waiting count is refreshed for the gauge.
const COUNT_EVERY: Duration = Duration::from_secs(5);

/// Tells the scheduler the schedule changed (a message was scheduled, or its time
/// edited), so it looks again now instead of at the time it planned to wake.
#[derive(Debug, Clone, Default)]
pub struct ScheduleChanged(Arc<Notify>);

impl ScheduleChanged {
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

pub struct Scheduler {
    store: Store,
    changed: ScheduleChanged,
    planner: Arc<Notify>,
    backlog: Arc<PlanBacklog>,
}

impl Scheduler {
    pub fn new(
        store: Store,
        changed: ScheduleChanged,
        planner: Arc<Notify>,
        backlog: Arc<PlanBacklog>,
    ) -> Self {
        Self {
            store,
            changed,
            planner,
            backlog,
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let store = self.store.clone();
        let changed = self.changed.0.clone();
        let planner = self.planner.clone();
        let backlog = self.backlog.clone();
        ctx.spawn(
            async move {
                loop {
                    let now = Utc::now();
                    let wait = match store.fire_due(now, FIRE_BATCH).await {
                        Ok(fired) => {
                            if !fired.is_empty() {
                                report(&fired, now);
                                backlog.added(fired.len(), now);
                                planner.notify_one();
                            }
                            if fired.len() as i64 == FIRE_BATCH {
                                continue;
                            }
                            match store.next_due().await {
                                Ok(next) => next_wake(Utc::now(), next),
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot read the schedule");
                                    IDLE
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %crate::error_chain(&e), "cannot fire scheduled messages; retrying");
                            IDLE
                        }
                    };
                    if !wait.is_zero() {
                        let _ = tokio::time::timeout(wait, changed.notified()).await;
                    }
                }
            }
            .into_actor(self),
        );
        ctx.run_interval(COUNT_EVERY, |act, ctx| {
            let store = act.store.clone();
            ctx.spawn(
                async move {
                    if let Ok(n) = store.scheduled_count().await {
                        metrics::gauge!(m::SCHEDULER_PENDING).set(n as f64);
                    }
                }
                .into_actor(act),
            );
        });
    }
}

/// Counts what fired and how late.
fn report(fired: &[crate::store::schedule::Fired], now: chrono::DateTime<Utc>) {
    let lateness = metrics::histogram!(m::SCHEDULER_LATENESS_SECONDS);
    let mut worst = chrono::Duration::zero();
    for f in fired {
        let late = (now - f.due_at).max(chrono::Duration::zero());
        worst = worst.max(late);
        lateness.record(late.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6);
    }
    metrics::counter!(m::SCHEDULER_FIRED_TOTAL).increment(fired.len() as u64);
    if worst > chrono::Duration::seconds(5) {
        tracing::info!(
            messages = fired.len(),
            late_s = worst.num_seconds(),
            "scheduled messages fired late (umsd was not running at their time)"
        );
    }
}
