//! What the planner reads and writes: due messages, their audiences (users with their
//! bindings, tag pages, segment members), and each planned page — deliveries by binary
//! COPY, the channels' dispatch rows, the message's progress — in one transaction.

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
}

/// A user of an app with every binding: what the planner resolves addresses from.
#[derive(Debug, Clone)]
pub struct ResolvedUser {
    pub user_id: String,
    pub enabled: bool,
    /// (binding type, value, scope)
    pub bindings: Vec<(String, String, String)>,
}

const COPY_DELIVERIES: &str = "COPY deliveries (id, message_pk, app_id, channel_code, user_id, \
     address, state, reason, created_at, updated_at) FROM STDIN (FORMAT binary)";
const DELIVERY_TYPES: &[Type] = &[
    Type::INT8,
    Type::INT8,
    Type::INT4,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT2,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
];

impl Store {
    /// The next messages due for planning, high priority first.
    pub async fn next_plan_jobs(&self, limit: i64) -> Result<Vec<PlanJob>, StoreError> {
        let client = self.client().await?;
        let queued = client
            .query(
                "SELECT id, app_id, priority, cursor FROM message_queue
                 WHERE not_before <= now() ORDER BY priority, id LIMIT $1",
                &[&limit],
            )
            .await?;
        if queued.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<MessagePk> = queued.iter().map(|r| r.get(0)).collect();
        let apps: Vec<i32> = queued.iter().map(|r| r.get(1)).collect();
        let times: Vec<DateTime<Utc>> = ids.iter().map(|id| id.created_at()).collect();
        let rows = client
            .query(
                "SELECT m.id, m.channels, m.request::text FROM messages m
                 JOIN unnest($1::int4[], $2::int8[], $3::timestamptz[]) AS k(app_id, id, created_at)
                   ON m.app_id = k.app_id AND m.id = k.id AND m.created_at = k.created_at",
                &[&apps, &ids, &times],
            )
            .await?;
        let mut found: HashMap<MessagePk, (Vec<String>, String)> = rows
            .into_iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let mut jobs = Vec::with_capacity(queued.len());
        for q in queued {
            let id: MessagePk = q.get(0);
            let priority: i16 = q.get(2);
            match found.remove(&id) {
                Some((channels, request)) => jobs.push(PlanJob {
                    id,
                    app_id: q.get(1),
                    priority: Priority::from_i16(priority).unwrap_or_default(),
                    channels,
                    request,
                    cursor: q.get(3),
                }),
                None => {
                    // The message's partition was dropped (retention) or the row is
                    // missing: nothing can be planned; forget the queue row.
                    tracing::warn!(%id, "queued message not found; dropping it from the queue");
                    client
                        .execute("DELETE FROM message_queue WHERE id = $1", &[&id])
                        .await?;
                }
            }
        }
        Ok(jobs)
    }

    /// Users by id with their bindings; ids that are not users of the app are absent.
    pub async fn resolve_users(
        &self,
        app_id: i32,
        user_ids: &[String],
    ) -> Result<Vec<ResolvedUser>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT u.user_id, u.enabled, b.type, b.value, b.scope
                 FROM users u LEFT JOIN bindings b
                   ON b.app_id = u.app_id AND b.user_id = u.user_id
                 WHERE u.app_id = $1 AND u.user_id = ANY($2)
                 ORDER BY u.user_id",
                &[&app_id, &user_ids],
            )
            .await?;
        Ok(group_users(rows))
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
                 SELECT p.user_id, p.enabled, b.type, b.value, b.scope
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
        Ok(group_users(rows))
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

    /// Writes one planned page of a message in one transaction: its deliveries, the queue
    /// rows of those that go out, the message's status, and the planning progress (`next`
    /// = the cursor to resume from, or `None` when the message is fully planned).
    pub async fn write_plan(
        &self,
        job: &PlanJob,
        deliveries: &[NewDelivery],
        next: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let message = PlannedMessage {
            id: job.id,
            app_id: job.app_id,
            priority: job.priority,
        };
        copy_deliveries(&tx, &message, deliveries).await?;
        queue_dispatch(&tx, &message, deliveries).await?;
        tx.execute(
            "UPDATE messages SET status = 2
             WHERE app_id = $1 AND id = $2 AND created_at = $3 AND status IN (0, 1)",
            &[&job.app_id, &job.id, &job.id.created_at()],
        )
        .await?;
        match next {
            Some(cursor) => {
                tx.execute(
                    "UPDATE message_queue SET cursor = $2 WHERE id = $1",
                    &[&job.id, &cursor],
                )
                .await?
            }
            None => {
                tx.execute("DELETE FROM message_queue WHERE id = $1", &[&job.id])
                    .await?
            }
        };
        tx.commit().await?;
        Ok(())
    }

    /// Writes more deliveries of a message already planned (targets of a later step), with
    /// the dispatch rows of those that go out, in one transaction.
    pub async fn write_targets(
        &self,
        message: &PlannedMessage,
        deliveries: &[NewDelivery],
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        copy_deliveries(&tx, message, deliveries).await?;
        queue_dispatch(&tx, message, deliveries).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A stored message's app-independent facts the planner needs for more targets.
    pub async fn planned_message(
        &self,
        app_id: i32,
        id: MessagePk,
    ) -> Result<Option<PlannedMessage>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT priority FROM messages WHERE app_id = $1 AND id = $2 AND created_at = $3",
                &[&app_id, &id, &id.created_at()],
            )
            .await?;
        Ok(row.map(|r| PlannedMessage {
            id,
            app_id,
            priority: Priority::from_i16(r.get(0)).unwrap_or_default(),
        }))
    }
}

/// The message a planned delivery belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedMessage {
    pub id: MessagePk,
    pub app_id: i32,
    pub priority: Priority,
}

/// The deliveries, by binary COPY.
async fn copy_deliveries(
    tx: &deadpool_postgres::Transaction<'_>,
    message: &PlannedMessage,
    deliveries: &[NewDelivery],
) -> Result<(), StoreError> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let stmt = tx.prepare_cached(COPY_DELIVERIES).await?;
    let writer = BinaryCopyInWriter::new(tx.copy_in(&stmt).await?, DELIVERY_TYPES);
    pin_mut!(writer);
    for d in deliveries {
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
                &created_at,
                &now,
            ])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

/// One work row per channel that got queued deliveries (a later page of the same message
/// counts a page up, so a sender that found it drained looks again).
async fn queue_dispatch(
    tx: &deadpool_postgres::Transaction<'_>,
    message: &PlannedMessage,
    deliveries: &[NewDelivery],
) -> Result<(), StoreError> {
    let mut codes: Vec<&str> = deliveries
        .iter()
        .filter(|d| d.state == DeliveryState::Queued)
        .map(|d| d.channel_code.as_str())
        .collect();
    codes.sort_unstable();
    codes.dedup();
    if codes.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO dispatch_queue (channel_code, message_pk, priority, app_id)
             SELECT code, $2, $3, $4 FROM unnest($1::text[]) AS code
             ON CONFLICT (channel_code, message_pk)
             DO UPDATE SET pages = dispatch_queue.pages + 1",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &codes,
            &message.id,
            &message.priority.as_i16(),
            &message.app_id,
        ],
    )
    .await?;
    Ok(())
}

fn group_users(rows: Vec<tokio_postgres::Row>) -> Vec<ResolvedUser> {
    let mut out: Vec<ResolvedUser> = Vec::new();
    for r in rows {
        let user_id: String = r.get(0);
        let binding = match (
            r.get::<_, Option<String>>(2),
            r.get::<_, Option<String>>(3),
            r.get::<_, Option<String>>(4),
        ) {
            (Some(t), Some(v), Some(s)) => Some((t, v, s)),
            _ => None,
        };
        match out.last_mut() {
            Some(last) if last.user_id == user_id => last.bindings.extend(binding),
            _ => out.push(ResolvedUser {
                user_id,
                enabled: r.get(1),
                bindings: binding.into_iter().collect(),
            }),
        }
    }
    out
}
