//! What the strategy actors read and write: pending deadlines (`strategy_timers`), the
//! deliveries of a message's targets across its steps, the conditional update that
//! settles a deadline against a racing receipt, and the deliveries of a later step.
//!
//! A deadline is decided in one transaction that holds the message's advisory lock (one
//! decision per message at a time, also across nodes): read the timer rows again, read
//! the targets, mark the deliveries whose condition held (`fell_back_at`, only where the
//! delivery is still not delivered / not clicked), write the later step's deliveries with
//! their dispatch rows and deadlines, and delete (or move) the timer rows. A crash before
//! COMMIT leaves the timers pending, to be decided again; after it, each is gone.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use super::plan::{
    copy_deliveries, group_users, insert_timers, queue_dispatch, NewDelivery, NewTimer,
    PlannedMessage, ResolvedUser, RESOLVE_USERS,
};
use super::{Store, StoreError};
use crate::domain::ids::id_time;
use crate::domain::strategy::MAX_STEPS;
use crate::domain::{DeliveryState, MessagePk, Priority};

/// One pending deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerRow {
    pub id: i64,
    pub message_pk: MessagePk,
    pub app_id: i32,
    /// The step it may start (from 1).
    pub step: i16,
    /// The step of the deliveries it covers, and their id range.
    pub from_step: i16,
    pub first_id: i64,
    pub last_id: i64,
    pub due_at: DateTime<Utc>,
}

/// A message with deadlines due soon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueMessage {
    pub message_pk: MessagePk,
    pub app_id: i32,
    pub due_at: DateTime<Utc>,
}

/// A message's strategy as it was accepted.
#[derive(Debug, Clone)]
pub struct MessageSteps {
    pub priority: Priority,
    /// The steps (JSON); `None` when the message has no strategy.
    pub steps: Option<String>,
}

/// A target's delivery on one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepDelivery {
    pub user_id: String,
    pub step: i16,
    pub id: i64,
    pub state: DeliveryState,
    pub reason: Option<String>,
}

const TIMER_COLUMNS: &str = "id, message_pk, app_id, step, from_step, first_id, last_id, due_at";

fn timer(r: &tokio_postgres::Row) -> TimerRow {
    TimerRow {
        id: r.get(0),
        message_pk: r.get(1),
        app_id: r.get(2),
        step: r.get(3),
        from_step: r.get(4),
        first_id: r.get(5),
        last_id: r.get(6),
        due_at: r.get(7),
    }
}

impl Store {
    /// Messages with deadlines due by `before`, earliest first, at most `limit`.
    pub async fn messages_due(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueMessage>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT message_pk, app_id, min(due_at) FROM strategy_timers
                 WHERE due_at <= $1 GROUP BY 1, 2 ORDER BY 3 LIMIT $2",
            )
            .await?;
        let rows = client.query(&stmt, &[&before, &limit]).await?;
        Ok(rows
            .iter()
            .map(|r| DueMessage {
                message_pk: r.get(0),
                app_id: r.get(1),
                due_at: r.get(2),
            })
            .collect())
    }

    /// The earliest pending deadline of a message.
    pub async fn next_message_deadline(
        &self,
        message_pk: MessagePk,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT min(due_at) FROM strategy_timers WHERE message_pk = $1")
            .await?;
        Ok(client.query_one(&stmt, &[&message_pk]).await?.get(0))
    }

    /// Pending deadlines in all.
    pub async fn timers_pending(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_one("SELECT count(*) FROM strategy_timers", &[])
            .await?
            .get(0))
    }

    /// A message's priority and strategy.
    pub async fn message_steps(
        &self,
        app_id: i32,
        id: MessagePk,
    ) -> Result<Option<MessageSteps>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT priority, strategy::text FROM messages
                 WHERE app_id = $1 AND id = $2 AND created_at = $3",
                &[&app_id, &id, &id.created_at()],
            )
            .await?;
        Ok(row.map(|r| MessageSteps {
            priority: Priority::from_i16(r.get(0)).unwrap_or_default(),
            steps: r.get(1),
        }))
    }

    /// Forgets the deadlines of a message that no longer exists or has no strategy.
    pub async fn drop_timers(&self, message_pk: MessagePk) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "DELETE FROM strategy_timers WHERE message_pk = $1",
                &[&message_pk],
            )
            .await?)
    }
}

/// Takes the message's lock for this transaction: one decision per message at a time.
pub async fn lock_message(tx: &Transaction<'_>, message_pk: MessagePk) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&message_pk])
        .await?;
    Ok(())
}

/// At most `limit` of the message's deadlines due by `now`, locked, earliest step first.
pub async fn due_timers(
    tx: &Transaction<'_>,
    message_pk: MessagePk,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<TimerRow>, StoreError> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {TIMER_COLUMNS} FROM strategy_timers
             WHERE message_pk = $1 AND due_at <= $2 ORDER BY step, id LIMIT $3 FOR UPDATE"
        ))
        .await?;
    Ok(tx
        .query(&stmt, &[&message_pk, &now, &limit])
        .await?
        .iter()
        .map(timer)
        .collect())
}

/// The earliest pending deadline of each step of the message (the steps that may still
/// run for some target).
pub async fn pending_steps(
    tx: &Transaction<'_>,
    message_pk: MessagePk,
) -> Result<HashMap<i16, DateTime<Utc>>, StoreError> {
    let stmt = tx
        .prepare_cached(
            "SELECT step, min(due_at) FROM strategy_timers WHERE message_pk = $1 GROUP BY 1",
        )
        .await?;
    Ok(tx
        .query(&stmt, &[&message_pk])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The deliveries to users a timer covers: `from_step` deliveries of the message in its
/// id range.
pub async fn covered(tx: &Transaction<'_>, t: &TimerRow) -> Result<Vec<StepDelivery>, StoreError> {
    let stmt = tx
        .prepare_cached(
            "SELECT user_id, step, id, state, reason FROM deliveries
             WHERE message_pk = $1 AND id BETWEEN $2 AND $3
               AND created_at BETWEEN $4 AND $5 AND step = $6 AND user_id IS NOT NULL",
        )
        .await?;
    let rows = tx
        .query(
            &stmt,
            &[
                &t.message_pk,
                &t.first_id,
                &t.last_id,
                &id_time(t.first_id),
                &id_time(t.last_id),
                &t.from_step,
            ],
        )
        .await?;
    rows.iter().map(step_delivery).collect()
}

/// The deliveries of `users` on `steps` of the message.
pub async fn deliveries_of(
    tx: &Transaction<'_>,
    message_pk: MessagePk,
    users: &[&str],
    steps: &[i16],
) -> Result<Vec<StepDelivery>, StoreError> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let stmt = tx
        .prepare_cached(
            // Per user, a lookup in the strategy index. As a plain join, a partition
            // without statistics yet (a new day) made it a scan of all the message's
            // deliveries for every user; the LIMIT (a user has one delivery per step)
            // keeps the lookup per user whatever the statistics say.
            &format!(
                "SELECT x.user_id, x.step, x.id, x.state, x.reason
                 FROM unnest($2::text[]) AS u(user_id)
                 CROSS JOIN LATERAL (
                     SELECT d.user_id, d.step, d.id, d.state, d.reason FROM deliveries d
                     WHERE d.message_pk = $1 AND d.user_id = u.user_id
                       AND d.step = ANY($3) AND d.created_at >= $4
                     LIMIT {MAX_STEPS}) x"
            ),
        )
        .await?;
    let rows = tx
        .query(
            &stmt,
            &[&message_pk, &users, &steps, &message_pk.created_at()],
        )
        .await?;
    rows.iter().map(step_delivery).collect()
}

fn step_delivery(r: &tokio_postgres::Row) -> Result<StepDelivery, StoreError> {
    let state: i16 = r.get(3);
    Ok(StepDelivery {
        user_id: r.get(0),
        step: r.get(1),
        id: r.get(2),
        state: DeliveryState::from_i16(state)
            .ok_or_else(|| StoreError::Data(format!("delivery state {state}")))?,
        reason: r.get(4),
    })
}

/// Marks the deliveries whose condition held as fallen back, each only while it is not in
/// one of `settled` (a receipt that committed first wins); answers the ids marked.
pub async fn mark_fell_back(
    tx: &Transaction<'_>,
    message_pk: MessagePk,
    ids: &[i64],
    settled: &[i16],
    now: DateTime<Utc>,
) -> Result<HashSet<i64>, StoreError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let days: Vec<DateTime<Utc>> = ids.iter().map(|id| id_time(*id)).collect();
    // The message comes with each key, not as a parameter of its own: planned for a known
    // message while the day's partition has no statistics yet, the update read all the
    // message's deliveries for every key.
    let messages = vec![message_pk; ids.len()];
    let stmt = tx
        .prepare_cached(
            "UPDATE deliveries d SET fell_back_at = coalesce(d.fell_back_at, $4)
             FROM unnest($1::int8[], $2::int8[], $3::timestamptz[]) AS u(msg, id, day)
             WHERE d.message_pk = u.msg AND d.id = u.id AND d.created_at = u.day
               AND NOT (d.state = ANY($5))
             RETURNING d.id",
        )
        .await?;
    Ok(tx
        .query(&stmt, &[&messages, &ids, &days, &now, &settled])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Users of an app with their bindings, read in the transaction.
pub async fn resolve_users(
    tx: &Transaction<'_>,
    app_id: i32,
    users: &[&str],
) -> Result<HashMap<String, ResolvedUser>, StoreError> {
    if users.is_empty() {
        return Ok(HashMap::new());
    }
    let apps: Vec<i32> = vec![app_id; users.len()];
    let stmt = tx.prepare_cached(RESOLVE_USERS).await?;
    let rows = tx.query(&stmt, &[&apps, &users]).await?;
    Ok(group_users(rows)
        .into_iter()
        .map(|(_, u)| (u.user_id.clone(), u))
        .collect())
}

/// Writes a later step's deliveries with their dispatch rows and the deadlines they set.
pub async fn write_step(
    tx: &Transaction<'_>,
    message: &PlannedMessage,
    deliveries: &[NewDelivery],
    timers: &[NewTimer],
) -> Result<(), StoreError> {
    let groups = [(message, deliveries)];
    copy_deliveries(tx, &groups).await?;
    queue_dispatch(tx, &groups).await?;
    insert_timers(tx, &[(message, timers)]).await
}

/// Deletes the timers decided for all their targets and moves the others to `due_at`.
pub async fn settle_timers(
    tx: &Transaction<'_>,
    done: &[i64],
    later: &[(i64, DateTime<Utc>)],
) -> Result<(), StoreError> {
    if !done.is_empty() {
        tx.execute(
            "DELETE FROM strategy_timers WHERE id = ANY($1::int8[])",
            &[&done],
        )
        .await?;
    }
    if !later.is_empty() {
        let ids: Vec<i64> = later.iter().map(|l| l.0).collect();
        let dues: Vec<DateTime<Utc>> = later.iter().map(|l| l.1).collect();
        tx.execute(
            "UPDATE strategy_timers t SET due_at = u.due_at
             FROM unnest($1::int8[], $2::timestamptz[]) AS u(id, due_at) WHERE t.id = u.id",
            &[&ids, &dues],
        )
        .await?;
    }
    Ok(())
}
