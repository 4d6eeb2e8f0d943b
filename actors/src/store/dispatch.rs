//! What the channel senders read: the messages with queued deliveries on their channel
//! (`dispatch_queue`), those deliveries in pages, the messages' stored requests (for
//! their content), and the removal of a drained message's dispatch row.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::domain::{DeliveryState, MessagePk, Priority};

/// A delivery as a channel sender holds it.
#[derive(Debug, Clone)]
pub struct QueuedDelivery {
    pub delivery_id: i64,
    pub priority: Priority,
    pub message_pk: MessagePk,
    pub app_id: i32,
    pub user_id: Option<String>,
    pub address: String,
    pub attempts: i16,
}

/// A message with queued deliveries on a channel (a `dispatch_queue` row).
#[derive(Debug, Clone, Copy)]
pub struct DispatchRow {
    pub message_pk: MessagePk,
    pub priority: Priority,
    pub app_id: i32,
    pub pages: i32,
}

impl Store {
    /// The messages with queued deliveries on a channel, high priority first, from after
    /// `after` (a row's (priority, message) key) on.
    pub async fn dispatch_rows(
        &self,
        channel_code: &str,
        after: Option<(Priority, MessagePk)>,
        limit: i64,
    ) -> Result<Vec<DispatchRow>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT message_pk, priority, app_id, pages FROM dispatch_queue
                 WHERE channel_code = $1 AND (priority, message_pk) > ($2, $3)
                 ORDER BY priority, message_pk LIMIT $4",
            )
            .await?;
        let (priority, pk) = after.map_or((-1i16, MessagePk(i64::MIN)), |(p, pk)| (p.as_i16(), pk));
        let rows = client
            .query(&stmt, &[&channel_code, &priority, &pk, &limit])
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| DispatchRow {
                message_pk: r.get(0),
                priority: Priority::from_i16(r.get(1)).unwrap_or_default(),
                app_id: r.get(2),
                pages: r.get(3),
            })
            .collect())
    }

    /// Queued deliveries of several messages on a channel in one query: for each
    /// (message, after, limit), at most `limit` with ids above `after`, in id order.
    pub async fn pull_deliveries(
        &self,
        channel_code: &str,
        wants: &[(DispatchRow, i64, i64)],
    ) -> Result<Vec<QueuedDelivery>, StoreError> {
        if wants.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let pks: Vec<MessagePk> = wants.iter().map(|w| w.0.message_pk).collect();
        let afters: Vec<i64> = wants.iter().map(|w| w.1).collect();
        let limits: Vec<i64> = wants.iter().map(|w| w.2).collect();
        let times: Vec<DateTime<Utc>> = pks.iter().map(|pk| pk.created_at()).collect();
        let stmt = client
            .prepare_cached(
                "SELECT w.pk, d.id, d.user_id, d.address, d.attempts
                 FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::timestamptz[])
                      AS w(pk, after, lim, since)
                 CROSS JOIN LATERAL (
                     SELECT id, user_id, address, attempts FROM deliveries
                     WHERE message_pk = w.pk AND id > w.after AND created_at >= w.since
                       AND channel_code = $5 AND state = $6
                     ORDER BY id LIMIT w.lim) d",
            )
            .await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &pks,
                    &afters,
                    &limits,
                    &times,
                    &channel_code,
                    &DeliveryState::Queued.as_i16(),
                ],
            )
            .await?;
        let by_pk: HashMap<MessagePk, &DispatchRow> =
            wants.iter().map(|w| (w.0.message_pk, &w.0)).collect();
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let pk: MessagePk = r.get(0);
            let Some(row) = by_pk.get(&pk) else { continue };
            let address: Option<String> = r.get(3);
            out.push(QueuedDelivery {
                delivery_id: r.get(1),
                priority: row.priority,
                message_pk: pk,
                app_id: row.app_id,
                user_id: r.get(2),
                address: address.unwrap_or_default(),
                attempts: r.get(4),
            });
        }
        Ok(out)
    }

    /// Removes messages' work rows, each (channel, message) only if no page was added
    /// since `pages`, in one statement; answers, in order, whether each was removed.
    pub async fn finish_dispatches(
        &self,
        rows: &[(&str, MessagePk, i32)],
    ) -> Result<Vec<bool>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let codes: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let pks: Vec<MessagePk> = rows.iter().map(|r| r.1).collect();
        let pages: Vec<i32> = rows.iter().map(|r| r.2).collect();
        let stmt = client
            .prepare_cached(
                "DELETE FROM dispatch_queue q
                 USING unnest($1::text[], $2::int8[], $3::int4[]) AS k(code, pk, pages)
                 WHERE q.channel_code = k.code AND q.message_pk = k.pk AND q.pages = k.pages
                 RETURNING q.channel_code, q.message_pk",
            )
            .await?;
        let removed: HashSet<(String, MessagePk)> = client
            .query(&stmt, &[&codes, &pks, &pages])
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(rows
            .iter()
            .map(|r| removed.contains(&(r.0.to_owned(), r.1)))
            .collect())
    }

    /// The stored requests of messages, by (app id, message id).
    pub async fn message_requests(
        &self,
        keys: &[(i32, MessagePk)],
    ) -> Result<HashMap<MessagePk, String>, StoreError> {
        let client = self.client().await?;
        let apps: Vec<i32> = keys.iter().map(|k| k.0).collect();
        let ids: Vec<MessagePk> = keys.iter().map(|k| k.1).collect();
        let times: Vec<DateTime<Utc>> = ids.iter().map(|id| id.created_at()).collect();
        let rows = client
            .query(
                // Each message looked up by key (LIMIT keeps the lookup a nested index
                // probe whatever the day partition's statistics say).
                "SELECT k.id, m.request::text
                 FROM unnest($1::int4[], $2::int8[], $3::timestamptz[]) AS k(app_id, id, created_at)
                 CROSS JOIN LATERAL (
                     SELECT request FROM messages m
                     WHERE m.app_id = k.app_id AND m.id = k.id AND m.created_at = k.created_at
                     LIMIT 1) m",
                &[&apps, &ids, &times],
            )
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

impl Store {
    /// The oldest message with deliveries queued on each channel, by priority (one index
    /// probe per channel and priority): how far each channel's dispatch is behind.
    pub async fn dispatch_oldest(
        &self,
    ) -> Result<HashMap<String, [Option<DateTime<Utc>>; 3]>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT c.code, p.priority,
                        (SELECT q.message_pk FROM dispatch_queue q
                         WHERE q.channel_code = c.code AND q.priority = p.priority
                         ORDER BY q.message_pk LIMIT 1)
                 FROM channels c CROSS JOIN (VALUES (0::int2), (1::int2), (2::int2)) AS p(priority)",
            )
            .await?;
        let mut out: HashMap<String, [Option<DateTime<Utc>>; 3]> = HashMap::new();
        for r in client.query(&stmt, &[]).await? {
            let code: String = r.get(0);
            let priority: i16 = r.get(1);
            let oldest: Option<MessagePk> = r.get(2);
            let slot = out.entry(code).or_default();
            if let Some(s) = slot.get_mut(priority.clamp(0, 2) as usize) {
                *s = oldest.map(MessagePk::created_at);
            }
        }
        Ok(out)
    }
}
