//! Deciding a message's due deadlines: one transaction per look (see `store/fallback.rs`
//! for what it holds), steps in order, so a step decided now is known to the later
//! steps decided in the same look.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::judge::{judge, settling_states, Verdict};
use crate::channel::signals::WorkSignals;
use crate::directory::Directory;
use crate::domain::ids::IdGenerator;
use crate::domain::strategy::{Event, Step};
use crate::domain::{DeliveryState, MessagePk, Priority};
use crate::metrics as m;
use crate::planner::expand::to_users;
use crate::planner::step_timers;
use crate::planner::targets::resolve_channels;
use crate::store::fallback::{self, StepDelivery, TimerRow};
use crate::store::plan::PlannedMessage;
use crate::store::{Store, StoreError};

/// A target waiting on something not yet known is looked at again this much later at the
/// earliest, so a look never spins on a deadline being decided at the same moment.
const MIN_WAIT: Duration = Duration::milliseconds(50);

/// What every strategy actor shares.
pub struct Work {
    pub store: Store,
    pub directory: Arc<Directory>,
    pub ids: Arc<IdGenerator>,
    pub signals: Arc<WorkSignals>,
}

/// A message with a strategy, as its actor holds it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub message: PlannedMessage,
    pub steps: Vec<Step>,
}

/// Deadlines decided per look (transaction): each covers up to a planning page of
/// targets, so a look reads and writes a few thousand rows at most.
const LOOK_TIMERS: i64 = 8;

/// What one look decided.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Looked {
    /// More deadlines were due than one look takes: look again at once.
    pub more: bool,
    /// Deadlines decided for every target of theirs.
    pub timers_done: usize,
    /// Targets a later step went out for.
    pub fired: usize,
    /// Targets settled in time.
    pub settled: usize,
    /// Targets left to a later look.
    pub waiting: usize,
}

/// Why a look did not finish.
#[derive(Debug, thiserror::Error)]
pub enum LookError {
    /// A receipt settled a condition between reading it and deciding: look again.
    #[error("a receipt raced the decision")]
    Raced,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counts for the metrics, applied after COMMIT.
#[derive(Default)]
struct Tally {
    fallbacks: HashMap<(String, String), u64>,
    settled: HashMap<String, u64>,
    /// Due times of the deadlines looked at.
    due: Vec<DateTime<Utc>>,
    woken: Option<(String, Priority)>,
}

/// Decides every deadline of the message that is due at `now`.
pub async fn look(work: &Work, loaded: &Loaded, now: DateTime<Utc>) -> Result<Looked, LookError> {
    let pk = loaded.message.id;
    let mut client = work.store.client().await.map_err(LookError::Store)?;
    let tx = client.transaction().await.map_err(StoreError::from)?;
    crate::store::by_key(&tx).await?;
    fallback::lock_message(&tx, pk).await?;
    let timers = fallback::due_timers(&tx, pk, now, LOOK_TIMERS).await?;
    let mut looked = Looked {
        more: timers.len() as i64 == LOOK_TIMERS,
        ..Looked::default()
    };
    let mut tally = Tally::default();
    let mut steps: Vec<i16> = timers.iter().map(|t| t.step).collect();
    steps.dedup();
    for step in steps {
        let group: Vec<&TimerRow> = timers.iter().filter(|t| t.step == step).collect();
        tally.due.extend(group.iter().map(|t| t.due_at));
        let done = decide_step(work, &tx, loaded, step, &group, now, &mut tally).await?;
        looked.timers_done += done.timers_done;
        looked.fired += done.fired;
        looked.settled += done.settled;
        looked.waiting += done.waiting;
    }
    tx.commit().await.map_err(StoreError::from)?;

    // Lateness is counted to the commit: when the step's deliveries exist.
    let done = Utc::now();
    metrics::counter!(m::STRATEGY_TIMERS_FIRED_TOTAL).increment(looked.timers_done as u64);
    let lateness = metrics::histogram!(m::STRATEGY_TIMER_LATENESS_SECONDS);
    for due in tally.due {
        let late = (done - due).num_microseconds().unwrap_or(0) as f64 / 1e6;
        lateness.record(late.max(0.0));
    }
    for ((from, to), n) in tally.fallbacks {
        metrics::counter!(m::STRATEGY_FALLBACKS_TOTAL, "from" => from, "to" => to).increment(n);
    }
    for (channel, n) in tally.settled {
        metrics::counter!(m::STRATEGY_SETTLED_TOTAL, "channel" => channel).increment(n);
    }
    if let Some((channel, priority)) = tally.woken {
        work.signals.wake(&channel, priority);
    }
    Ok(looked)
}

/// Decides the due deadlines of one later step.
async fn decide_step(
    work: &Work,
    tx: &deadpool_postgres::Transaction<'_>,
    loaded: &Loaded,
    step: i16,
    timers: &[&TimerRow],
    now: DateTime<Utc>,
    tally: &mut Tally,
) -> Result<Looked, LookError> {
    let pk: MessagePk = loaded.message.id;
    let ids: Vec<i64> = timers.iter().map(|t| t.id).collect();
    let Some(when) = usize::try_from(step - 1)
        .ok()
        .and_then(|i| loaded.steps.get(i))
        .and_then(|s| s.when.as_ref())
    else {
        // A deadline for a step the strategy does not have (cannot come from this build).
        fallback::settle_timers(tx, &ids, &[]).await?;
        return Ok(Looked {
            timers_done: ids.len(),
            ..Looked::default()
        });
    };
    let channel = loaded.steps[step as usize - 1].channel.clone();

    // The targets each timer covers, and every delivery of theirs the step's conditions
    // look at.
    let mut covered: Vec<Vec<StepDelivery>> = Vec::with_capacity(timers.len());
    for t in timers {
        covered.push(fallback::covered(tx, t).await?);
    }
    let users: Vec<&str> = {
        let mut seen = HashSet::new();
        covered
            .iter()
            .flatten()
            .map(|d| d.user_id.as_str())
            .filter(|u| seen.insert(*u))
            .collect()
    };
    let mut on: Vec<i16> = when.conditions.iter().map(|c| c.step as i16).collect();
    on.push(step);
    on.sort_unstable();
    on.dedup();
    let found = fallback::deliveries_of(tx, pk, &users, &on).await?;
    let mut by_user: HashMap<&str, HashMap<i16, &StepDelivery>> = HashMap::new();
    for d in &found {
        by_user
            .entry(d.user_id.as_str())
            .or_default()
            .insert(d.step, d);
    }
    let pending = fallback::pending_steps(tx, pk).await?;

    // Judge each target once (a target is covered by one delivery per timer).
    let empty = HashMap::new();
    let mut verdicts: HashMap<&str, Verdict> = HashMap::new();
    for d in covered.iter().flatten() {
        let u = d.user_id.as_str();
        if verdicts.contains_key(u) {
            continue;
        }
        let seen = by_user.get(u).unwrap_or(&empty);
        verdicts.insert(u, judge(when, step, d, seen, &pending, now));
    }

    // Mark what held, only where no receipt settled it meanwhile.
    let mut marked: HashSet<i64> = HashSet::new();
    for event in [Event::NotDelivered, Event::NotClicked] {
        let ids: Vec<i64> = verdicts
            .values()
            .filter_map(|v| match v {
                Verdict::Fire { holds } => Some(holds),
                _ => None,
            })
            .flatten()
            .filter(|(_, e)| *e == event)
            .map(|(id, _)| *id)
            .collect();
        marked.extend(fallback::mark_fell_back(tx, pk, &ids, &settling_states(event), now).await?);
    }
    let op_all = when.op == crate::domain::strategy::Op::And;
    for v in verdicts.values() {
        if let Verdict::Fire { holds } = v {
            let ok = if op_all {
                holds.iter().all(|(id, _)| marked.contains(id))
            } else {
                holds.iter().any(|(id, _)| marked.contains(id))
            };
            if !ok {
                return Err(LookError::Raced);
            }
        }
    }

    // The step's deliveries for the targets it fires for, planned as at first planning.
    let mut fire: Vec<&str> = verdicts
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::Fire { .. }))
        .map(|(u, _)| *u)
        .collect();
    fire.sort_unstable();
    let mut looked = Looked::default();
    if !fire.is_empty() {
        let found = fallback::resolve_users(tx, loaded.message.app_id, &fire).await?;
        let users: Vec<(String, Option<crate::store::plan::ResolvedUser>)> = fire
            .iter()
            .map(|u| (u.to_string(), found.get(*u).cloned()))
            .collect();
        let snapshot = work.directory.snapshot();
        let mut channels = resolve_channels(
            &snapshot,
            loaded.message.app_id,
            std::slice::from_ref(&channel),
        );
        for c in &mut channels {
            c.step = Some(step);
        }
        let mut out = Vec::with_capacity(users.len());
        to_users(&work.ids, &channels, &users, &mut out);
        let timers = step_timers(&loaded.steps, step as usize, &out);
        fallback::write_step(tx, &loaded.message, &out, &timers).await?;
        if out.iter().any(|d| d.state == DeliveryState::Queued) {
            tally.woken = Some((channel.clone(), loaded.message.priority));
        }
        looked.fired = fire.len();
        let step_of = found_steps(&by_user);
        for v in verdicts.values() {
            if let Verdict::Fire { holds } = v {
                let from = holds
                    .first()
                    .and_then(|(id, _)| step_of.get(id).copied())
                    .and_then(|s| loaded.steps.get(s as usize - 1))
                    .map(|s| s.channel.clone())
                    .unwrap_or_default();
                *tally.fallbacks.entry((from, channel.clone())).or_default() += 1;
            }
        }
    }

    // Timers whose targets are all decided go; the others wait for their earliest target.
    let mut done = Vec::new();
    let mut later = Vec::new();
    for (t, targets) in timers.iter().zip(&covered) {
        let until = targets
            .iter()
            .filter_map(|d| match verdicts.get(d.user_id.as_str()) {
                Some(Verdict::Wait { until }) => Some(*until),
                _ => None,
            })
            .min();
        match until {
            Some(until) => later.push((t.id, until.max(now + MIN_WAIT))),
            None => done.push(t.id),
        }
    }
    fallback::settle_timers(tx, &done, &later).await?;
    looked.timers_done = done.len();
    for v in verdicts.values() {
        match v {
            Verdict::Settled => {
                looked.settled += 1;
                *tally.settled.entry(channel.clone()).or_default() += 1;
            }
            Verdict::Wait { .. } => looked.waiting += 1,
            _ => {}
        }
    }
    Ok(looked)
}

/// Delivery id → its step, over the deliveries read for a step's decision.
fn found_steps(by_user: &HashMap<&str, HashMap<i16, &StepDelivery>>) -> HashMap<i64, i16> {
    by_user
        .values()
        .flat_map(|m| m.values().map(|d| (d.id, d.step)))
        .collect()
}
