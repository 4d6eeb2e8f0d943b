//! Scheduled messages: the scheduler's firing, and the edits and cancels of the API.
//!
//! A scheduled message waits in `message_schedule`. Firing, editing and cancelling each
//! take its row in one transaction (firing deletes it, an edit locks it, a cancel deletes
//! it): whichever comes first wins, and the others find it gone.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::domain::{MessagePk, MessageStatus, Priority};

/// A scheduled message handed to the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    pub id: MessagePk,
    pub priority: Priority,
    pub due_at: DateTime<Utc>,
}

/// The outcome of an edit or a cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleChange {
    /// Done.
    Changed,
    /// The message is not waiting for its time (any more): its status now.
    NotScheduled(MessageStatus),
    /// No such message in this app.
    NotFound,
}

/// What an edit changes.
#[derive(Debug, Clone)]
pub struct ScheduleEdit {
    pub request_json: String,
    pub send_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// When it goes out (`now` for a time that is due already).
    pub due_at: DateTime<Utc>,
}

impl Store {
    /// Hands up to `limit` messages due at `now` to the planner: each leaves the schedule,
    /// enters the planner's queue and becomes `accepted` (with the time it fired), in one
    /// transaction. Several nodes may fire at once: a row one of them holds is skipped.
    pub async fn fire_due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Fired>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        super::by_key(&tx).await?;
        let take = tx
            .prepare_cached(
                "DELETE FROM message_schedule WHERE id IN (
                     SELECT id FROM message_schedule WHERE due_at <= $1
                     ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED)
                 RETURNING id, app_id, priority, due_at, node_id",
            )
            .await?;
        let rows = tx.query(&take, &[&now, &limit]).await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let ids: Vec<MessagePk> = rows.iter().map(|r| r.get(0)).collect();
        let apps: Vec<i32> = rows.iter().map(|r| r.get(1)).collect();
        let priorities: Vec<i16> = rows.iter().map(|r| r.get(2)).collect();
        let due: Vec<DateTime<Utc>> = rows.iter().map(|r| r.get(3)).collect();
        let nodes: Vec<i32> = rows.iter().map(|r| r.get(4)).collect();
        let days: Vec<DateTime<Utc>> = ids.iter().map(|id| id.created_at()).collect();
        let queue = tx
            .prepare_cached(
                "INSERT INTO message_queue (id, priority, not_before, node_id, app_id)
                 SELECT * FROM unnest($1::int8[], $2::int2[], $3::timestamptz[], $4::int4[],
                                      $5::int4[])",
            )
            .await?;
        tx.execute(&queue, &[&ids, &priorities, &due, &nodes, &apps])
            .await?;
        let status = tx
            .prepare_cached(
                "UPDATE messages m SET status = 1, fired_at = $4
                 FROM unnest($1::int4[], $2::int8[], $3::timestamptz[]) AS k(app_id, id, created_at)
                 WHERE m.app_id = k.app_id AND m.id = k.id AND m.created_at = k.created_at
                   AND m.status = 0",
            )
            .await?;
        tx.execute(&status, &[&apps, &ids, &days, &now]).await?;
        tx.commit().await?;
        Ok(ids
            .into_iter()
            .zip(priorities)
            .zip(due)
            .map(|((id, p), due_at)| Fired {
                id,
                priority: Priority::from_i16(p).unwrap_or_default(),
                due_at,
            })
            .collect())
    }

    /// The earliest due time waiting, if any.
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT min(due_at) FROM message_schedule", &[])
            .await?;
        Ok(row.get(0))
    }

    /// How many messages wait for their time.
    pub async fn scheduled_count(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT count(*) FROM message_schedule", &[])
            .await?;
        Ok(row.get(0))
    }

    /// Cancels a message that waits for its time: it leaves the schedule and becomes
    /// `cancelled`.
    pub async fn cancel_scheduled(
        &self,
        app_id: i32,
        id: MessagePk,
    ) -> Result<ScheduleChange, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let taken = tx
            .query_opt(
                "DELETE FROM message_schedule WHERE id = $1 AND app_id = $2 RETURNING id",
                &[&id, &app_id],
            )
            .await?;
        if taken.is_none() {
            let now = status_of(&tx, app_id, id).await?;
            tx.commit().await?;
            return Ok(match now {
                Some(s) => ScheduleChange::NotScheduled(s),
                None => ScheduleChange::NotFound,
            });
        }
        tx.execute(
            "UPDATE messages SET status = 5
             WHERE app_id = $1 AND id = $2 AND created_at = $3",
            &[&app_id, &id, &id.created_at()],
        )
        .await?;
        tx.commit().await?;
        Ok(ScheduleChange::Changed)
    }

    /// Edits a message that waits for its time: its request (content), `send_at` and
    /// expiry, and when it goes out.
    pub async fn edit_scheduled(
        &self,
        app_id: i32,
        id: MessagePk,
        edit: &ScheduleEdit,
    ) -> Result<ScheduleChange, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let held = tx
            .query_opt(
                "SELECT 1 FROM message_schedule WHERE id = $1 AND app_id = $2 FOR UPDATE",
                &[&id, &app_id],
            )
            .await?;
        if held.is_none() {
            let now = status_of(&tx, app_id, id).await?;
            tx.commit().await?;
            return Ok(match now {
                Some(s) => ScheduleChange::NotScheduled(s),
                None => ScheduleChange::NotFound,
            });
        }
        tx.execute(
            "UPDATE messages SET request = $4::text::json, send_at = $5, expires_at = $6
             WHERE app_id = $1 AND id = $2 AND created_at = $3",
            &[
                &app_id,
                &id,
                &id.created_at(),
                &edit.request_json,
                &edit.send_at,
                &edit.expires_at,
            ],
        )
        .await?;
        tx.execute(
            "UPDATE message_schedule SET due_at = $2 WHERE id = $1",
            &[&id, &edit.due_at],
        )
        .await?;
        tx.commit().await?;
        Ok(ScheduleChange::Changed)
    }

    /// A message named by umsd's id or the caller's `message_id`, with its stored request
    /// (canonical JSON), to edit it.
    pub async fn find_request(
        &self,
        app_id: i32,
        ident: &str,
    ) -> Result<Option<(MessagePk, String)>, StoreError> {
        let client = self.client().await?;
        let id = match MessagePk::parse(ident) {
            Some(id) => Some(id),
            None => client
                .query_opt(
                    "SELECT id FROM message_keys WHERE app_id = $1 AND message_id = $2",
                    &[&app_id, &ident],
                )
                .await?
                .map(|r| r.get(0)),
        };
        let Some(id) = id else {
            return Ok(None);
        };
        let row = client
            .query_opt(
                "SELECT request::text FROM messages
                 WHERE app_id = $1 AND id = $2 AND created_at = $3",
                &[&app_id, &id, &id.created_at()],
            )
            .await?;
        Ok(row.map(|r| (id, r.get(0))))
    }
}

async fn status_of(
    tx: &deadpool_postgres::Transaction<'_>,
    app_id: i32,
    id: MessagePk,
) -> Result<Option<MessageStatus>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT status FROM messages WHERE app_id = $1 AND id = $2 AND created_at = $3",
            &[&app_id, &id, &id.created_at()],
        )
        .await?;
    row.map(|r| {
        let s: i16 = r.get(0);
        MessageStatus::from_i16(s).ok_or_else(|| StoreError::Data(format!("message status {s}")))
    })
    .transpose()
}
