//! What the planner reads and writes: due messages, their audiences (users with their
//! bindings, tag pages, segment members), and each planning pass — the deliveries of all
//! its messages by one binary COPY, the channels' dispatch rows, the messages' status and
//! the queue's progress set-based — in one transaction.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use super::{Store, StoreError};
use crate::domain::ids::id_time;
use crate::domain::{DeliveryState, MessagePk, Priority};

/// A committed message waiting to be planned.
#[derive(Debug, Clone)]
pub struct PlanJob {
    pub id: MessagePk,
    pub app_id: i32,
    pub priority: Priority,
    pub channels: Vec<String>,
    /// The canonical request JSON as accepted.
    pub request: String,
    /// Last user id planned by an earlier page (paged audiences).
    pub cursor: Option<String>,
    /// The steps of its strategy (JSON), for a message sent with one.
    pub strategy: Option<String>,
}

/// One (target, channel) row the planner writes.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: i64,
    pub channel_code: String,
    pub user_id: Option<String>,
    pub address: Option<String>,
    /// `Queued`, or `Filtered` / `Failed` with a reason when the target is lost at planning.
    pub state: DeliveryState,
    pub reason: Option<&'static str>,
    /// The strategy step it belongs to (from 1), for a message sent with a strategy.
    pub step: Option<i16>,
}

/// A strategy deadline a planned batch of deliveries sets (see `strategy_timers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewTimer {
    /// The step it may start, from 1.
    pub step: i16,
    /// The step of the deliveries it covers, and their id range.
    pub from_step: i16,
    pub first_id: i64,
    pub last_id: i64,
    pub due_at: DateTime<Utc>,
}

/// A user of an app with every binding: what the planner resolves addresses from.
#[derive(Debug, Clone)]
pub struct ResolvedUser {
    pub user_id: String,
    pub enabled: bool,
    /// (binding type, value, scope)
    pub bindings: Vec<(String, String, String)>,
}

/// Users by (app, user id) with their bindings: `$1` app ids, `$2` user ids.
pub(super) const RESOLVE_USERS: &str =
    "SELECT u.app_id, u.user_id, u.enabled, b.type, b.value, b.scope
     FROM (SELECT DISTINCT app_id, user_id
           FROM unnest($1::int4[], $2::text[]) AS k(app_id, user_id)) k
     JOIN users u ON u.app_id = k.app_id AND u.user_id = k.user_id
     LEFT JOIN bindings b ON b.app_id = u.app_id AND b.user_id = u.user_id
     ORDER BY u.app_id, u.user_id";

const COPY_DELIVERIES: &str = "COPY deliveries (id, message_pk, app_id, channel_code, user_id, \
     address, state, reason, step, created_at, updated_at) FROM STDIN (FORMAT binary)";
const DELIVERY_TYPES: &[Type] = &[
    Type::INT8,
    Type::INT8,
    Type::INT4,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT2,
    Type::TEXT,
    Type::INT2,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
];

impl Store {
    /// The next messages due for planning, high priority first.
    pub async fn next_plan_jobs(&self, limit: i64) -> Result<Vec<PlanJob>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, app_id, priority, cursor FROM message_queue
                 WHERE not_before <= now() ORDER BY priority, id LIMIT $1",
            )
            .await?;
        let queued = client.query(&stmt, &[&limit]).await?;
        if queued.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<MessagePk> = queued.iter().map(|r| r.get(0)).collect();
        let apps: Vec<i32> = queued.iter().map(|r| r.get(1)).collect();
        let times: Vec<DateTime<Utc>> = ids.iter().map(|id| id.created_at()).collect();
        let rows = client
            .query(
                // Each message looked up by key (see `Store::message_requests`).
                "SELECT k.id, m.channels, m.request::text, m.strategy::text
                 FROM unnest($1::int4[], $2::int8[], $3::timestamptz[]) AS k(app_id, id, created_at)
                 CROSS JOIN LATERAL (
                     SELECT channels, request, strategy FROM messages m
                     WHERE m.app_id = k.app_id AND m.id = k.id AND m.created_at = k.created_at
                     LIMIT 1) m",
                &[&apps, &ids, &times],
            )
            .await?;
        let mut found: HashMap<MessagePk, (Vec<String>, String, Option<String>)> = rows
            .into_iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
            .collect();
        let mut jobs = Vec::with_capacity(queued.len());
        let mut missing = Vec::new();
        for q in queued {
            let id: MessagePk = q.get(0);
            let priority: i16 = q.get(2);
            match found.remove(&id) {
                Some((channels, request, strategy)) => jobs.push(PlanJob {
                    id,
                    app_id: q.get(1),
                    priority: Priority::from_i16(priority).unwrap_or_default(),
                    channels,
                    request,
                    cursor: q.get(3),
                    strategy,
                }),
                None => missing.push(id),
            }
        }
        if !missing.is_empty() {
            // The messages' partition was dropped (retention) or the rows are missing:
            // nothing can be planned; forget their queue rows.
            tracing::warn!(
                n = missing.len(),
                first = %missing[0],
                "queued messages not found; dropping them from the queue"
            );
            client
                .execute(
                    "DELETE FROM message_queue WHERE id = ANY($1::int8[])",
                    &[&missing],
                )
                .await?;
        }
        Ok(jobs)
    }

    /// Users by (app, user id) with their bindings, for many messages at once; keys that
    /// are not users are absent.
    pub async fn resolve_users(
        &self,
        keys: &[(i32, String)],
    ) -> Result<HashMap<(i32, String), ResolvedUser>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let client = self.client().await?;
        let apps: Vec<i32> = keys.iter().map(|k| k.0).collect();
        let ids: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        let stmt = client.prepare_cached(RESOLVE_USERS).await?;
        let rows = client.query(&stmt, &[&apps, &ids]).await?;
        Ok(group_users(rows)
            .into_iter()
            .map(|(app, u)| ((app, u.user_id.clone()), u))
            .collect())
    }

    /// One page of an app's users selected by tags (or all of them), in user id order
    /// after `after`.
    pub async fn page_users(
        &self,
        app_id: i32,
        any_tags: Option<&[String]>,
        all_tags: Option<&[String]>,
        after: &str,
        limit: i64,
    ) -> Result<Vec<ResolvedUser>, StoreError> {
        let client = self.client().await?;
        let empty: Vec<String> = Vec::new();
        let rows = client
            .query(
                "WITH page AS (
                     SELECT user_id, enabled FROM users
                     WHERE app_id = $1 AND user_id > $2
                       AND ($3::bool OR tags && $4) AND ($5::bool OR tags @> $6)
                     ORDER BY user_id LIMIT $7)
                 SELECT $1::int4, p.user_id, p.enabled, b.type, b.value, b.scope
                 FROM page p LEFT JOIN bindings b ON b.app_id = $1 AND b.user_id = p.user_id
                 ORDER BY p.user_id",
                &[
                    &app_id,
                    &after,
                    &any_tags.is_none(),
                    &any_tags.unwrap_or(&empty),
                    &all_tags.is_none(),
                    &all_tags.unwrap_or(&empty),
                    &limit,
                ],
            )
            .await?;
        Ok(group_users(rows).into_iter().map(|(_, u)| u).collect())
    }

    /// The members of a segment, sorted (None if there is no such segment).
    pub async fn segment_members(
        &self,
        app_id: i32,
        segment: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT ARRAY(SELECT DISTINCT unnest(user_ids) ORDER BY 1) FROM segments
                 WHERE app_id = $1 AND segment_id = $2",
                &[&app_id, &segment],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Writes the pages of one planning pass in one transaction: every delivery by one
    /// COPY, the channels' dispatch rows by one statement, the first-planned messages'
    /// status and the queue's progress (cursors of paged messages, removal of the fully
    /// planned) set-based. A crash before COMMIT leaves every message of the pass queued,
    /// to be planned again; after it, none is.
    pub async fn write_plans(&self, pages: &[PlannedPage]) -> Result<(), StoreError> {
        if pages.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        super::by_key(&tx).await?;
        let groups: Vec<(&PlannedMessage, &[NewDelivery])> = pages
            .iter()
            .map(|p| (&p.message, p.deliveries.as_slice()))
            .collect();
        copy_deliveries(&tx, &groups).await?;
        queue_dispatch(&tx, &groups).await?;
        let timers: Vec<(&PlannedMessage, &[NewTimer])> = pages
            .iter()
            .map(|p| (&p.message, p.timers.as_slice()))
            .collect();
        insert_timers(&tx, &timers).await?;
        let first: Vec<&PlannedMessage> = pages
            .iter()
            .filter(|p| p.first)
            .map(|p| &p.message)
            .collect();
        if !first.is_empty() {
            let apps: Vec<i32> = first.iter().map(|m| m.app_id).collect();
            let ids: Vec<MessagePk> = first.iter().map(|m| m.id).collect();
            let times: Vec<DateTime<Utc>> = ids.iter().map(|id| id.created_at()).collect();
            let stmt = tx
                .prepare_cached(
                    "UPDATE messages m SET status = 2
                     FROM unnest($1::int4[], $2::int8[], $3::timestamptz[])
                          AS k(app_id, id, created_at)
                     WHERE m.app_id = k.app_id AND m.id = k.id
                       AND m.created_at = k.created_at AND m.status IN (0, 1)",
                )
                .await?;
            tx.execute(&stmt, &[&apps, &ids, &times]).await?;
        }
        let (paged, done): (Vec<&PlannedPage>, Vec<&PlannedPage>) =
            pages.iter().partition(|p| p.next.is_some());
        if !paged.is_empty() {
            let ids: Vec<MessagePk> = paged.iter().map(|p| p.message.id).collect();
            let cursors: Vec<&str> = paged.iter().filter_map(|p| p.next.as_deref()).collect();
            let stmt = tx
                .prepare_cached(
                    "UPDATE message_queue q SET cursor = k.cursor
                     FROM unnest($1::int8[], $2::text[]) AS k(id, cursor) WHERE q.id = k.id",
                )
                .await?;
            tx.execute(&stmt, &[&ids, &cursors]).await?;
        }
        if !done.is_empty() {
            let ids: Vec<MessagePk> = done.iter().map(|p| p.message.id).collect();
            let stmt = tx
                .prepare_cached("DELETE FROM message_queue WHERE id = ANY($1::int8[])")
                .await?;
            tx.execute(&stmt, &[&ids]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// How far planning is behind: due messages not yet planned, and when the oldest of
    /// them fell due.
    pub async fn plan_backlog(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*), min(not_before) FROM message_queue WHERE not_before <= now()",
                &[],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }
}

/// The message a planned delivery belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedMessage {
    pub id: MessagePk,
    pub app_id: i32,
    pub priority: Priority,
}

/// One planned page of a message: what a planning pass writes for it.
#[derive(Debug, Clone)]
pub struct PlannedPage {
    pub message: PlannedMessage,
    pub deliveries: Vec<NewDelivery>,
    /// The cursor to resume from, or `None` when the message is fully planned.
    pub next: Option<String>,
    /// Its first page: the message's status moves to planned.
    pub first: bool,
    /// The strategy deadlines its deliveries set.
    pub timers: Vec<NewTimer>,
}

/// Strategy deadlines of several messages, in one statement.
pub(super) async fn insert_timers(
    tx: &deadpool_postgres::Transaction<'_>,
    groups: &[(&PlannedMessage, &[NewTimer])],
) -> Result<(), StoreError> {
    let rows: Vec<(&PlannedMessage, &NewTimer)> = groups
        .iter()
        .flat_map(|(m, ts)| ts.iter().map(move |t| (*m, t)))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let pks: Vec<MessagePk> = rows.iter().map(|(m, _)| m.id).collect();
    let apps: Vec<i32> = rows.iter().map(|(m, _)| m.app_id).collect();
    let steps: Vec<i16> = rows.iter().map(|(_, t)| t.step).collect();
    let froms: Vec<i16> = rows.iter().map(|(_, t)| t.from_step).collect();
    let firsts: Vec<i64> = rows.iter().map(|(_, t)| t.first_id).collect();
    let lasts: Vec<i64> = rows.iter().map(|(_, t)| t.last_id).collect();
    let dues: Vec<DateTime<Utc>> = rows.iter().map(|(_, t)| t.due_at).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO strategy_timers (message_pk, app_id, step, from_step, first_id,
                                          last_id, due_at)
             SELECT * FROM unnest($1::int8[], $2::int4[], $3::int2[], $4::int2[], $5::int8[],
                                  $6::int8[], $7::timestamptz[])",
        )
        .await?;
    tx.execute(
        &stmt,
        &[&pks, &apps, &steps, &froms, &firsts, &lasts, &dues],
    )
    .await?;
    Ok(())
}

/// The deliveries of several messages, by one binary COPY.
pub(super) async fn copy_deliveries(
    tx: &deadpool_postgres::Transaction<'_>,
    groups: &[(&PlannedMessage, &[NewDelivery])],
) -> Result<(), StoreError> {
    if groups.iter().all(|(_, d)| d.is_empty()) {
        return Ok(());
    }
    let now = Utc::now();
    let stmt = tx.prepare_cached(COPY_DELIVERIES).await?;
    let writer = BinaryCopyInWriter::new(tx.copy_in(&stmt).await?, DELIVERY_TYPES);
    pin_mut!(writer);
    for (message, deliveries) in groups {
        for d in deliveries.iter() {
            let created_at = id_time(d.id);
            writer
                .as_mut()
                .write(&[
                    &d.id,
                    &message.id,
                    &message.app_id,
                    &d.channel_code,
                    &d.user_id,
                    &d.address,
                    &d.state.as_i16(),
                    &d.reason,
                    &d.step,
                    &created_at,
                    &now,
                ])
                .await?;
        }
    }
    writer.finish().await?;
    Ok(())
}

/// One work row per (channel, message) that got queued deliveries, in one statement (a
/// later page of the same message counts a page up, so a sender that found it drained
/// looks again).
pub(super) async fn queue_dispatch(
    tx: &deadpool_postgres::Transaction<'_>,
    groups: &[(&PlannedMessage, &[NewDelivery])],
) -> Result<(), StoreError> {
    let mut rows: Vec<(&str, MessagePk, i16, i32)> = Vec::new();
    for (message, deliveries) in groups {
        let start = rows.len();
        for d in deliveries.iter() {
            if d.state == DeliveryState::Queued {
                rows.push((
                    d.channel_code.as_str(),
                    message.id,
                    message.priority.as_i16(),
                    message.app_id,
                ));
            }
        }
        // One row per channel of a message: a statement may not update a row twice.
        rows[start..].sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut kept = start;
        for i in start..rows.len() {
            if kept == start || rows[kept - 1].0 != rows[i].0 {
                rows[kept] = rows[i];
                kept += 1;
            }
        }
        rows.truncate(kept);
    }
    if rows.is_empty() {
        return Ok(());
    }
    let codes: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let pks: Vec<MessagePk> = rows.iter().map(|r| r.1).collect();
    let priorities: Vec<i16> = rows.iter().map(|r| r.2).collect();
    let apps: Vec<i32> = rows.iter().map(|r| r.3).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO dispatch_queue (channel_code, message_pk, priority, app_id)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int2[], $4::int4[])
             ON CONFLICT (channel_code, message_pk)
             DO UPDATE SET pages = dispatch_queue.pages + 1",
        )
        .await?;
    tx.execute(&stmt, &[&codes, &pks, &priorities, &apps])
        .await?;
    Ok(())
}

/// Rows of (app id, user id, enabled, binding type, value, scope), ordered by app and user,
/// as one user per (app, user id) with all their bindings.
pub(super) fn group_users(rows: Vec<tokio_postgres::Row>) -> Vec<(i32, ResolvedUser)> {
    let mut out: Vec<(i32, ResolvedUser)> = Vec::new();
    for r in rows {
        let app_id: i32 = r.get(0);
        let user_id: String = r.get(1);
        let binding = match (
            r.get::<_, Option<String>>(3),
            r.get::<_, Option<String>>(4),
            r.get::<_, Option<String>>(5),
        ) {
            (Some(t), Some(v), Some(s)) => Some((t, v, s)),
            _ => None,
        };
        match out.last_mut() {
            Some((app, last)) if *app == app_id && last.user_id == user_id => {
                last.bindings.extend(binding)
            }
            _ => out.push((
                app_id,
                ResolvedUser {
                    user_id,
                    enabled: r.get(2),
                    bindings: binding.into_iter().collect(),
                },
            )),
        }
    }
    out
}
