//! Deliveries: what the planner writes, what the channel senders pull, and the batched
//! status writes of outcomes and receipts.
//!
//! Every state change is a conditional update (`WHERE state` is one the change may leave
//! from), so a late receipt and a retry, or two nodes, settle in the database instead of
//! overwriting each other. The change that takes a delivery out of `queued` is kept in the
//! row's `sent_*` columns; every other applied change is appended to `delivery_events`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use super::{Store, StoreError};
use crate::domain::ids::id_time;
use crate::domain::{DeliveryState, Priority};

/// A committed message waiting to be planned.
#[derive(Debug, Clone)]
pub struct PlanJob {
    pub id: i64,
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

/// A delivery as a channel sender holds it.
#[derive(Debug, Clone)]
pub struct QueuedDelivery {
    pub delivery_id: i64,
    pub priority: Priority,
    pub message_pk: i64,
    pub app_id: i32,
    pub user_id: Option<String>,
    pub address: String,
    pub attempts: i16,
}

/// A message with queued deliveries on a channel (a `dispatch_queue` row).
#[derive(Debug, Clone, Copy)]
pub struct DispatchRow {
    pub message_pk: i64,
    pub priority: Priority,
    pub app_id: i32,
    pub pages: i32,
}

/// A state change to record. `from` lists the states the delivery may be in for the change
/// to apply; a change from any other state is ignored (it lost a race).
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub delivery_id: i64,
    pub message_pk: i64,
    pub state: DeliveryState,
    pub from: &'static [DeliveryState],
    pub provider_id: Option<String>,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub attempts: i16,
    /// Remember (channel, provider id) → delivery, for receipts to come.
    pub expect_receipt: Option<String>,
    /// With `expect_receipt`: the provider ids of the parts, when the delivery went out in
    /// several (each is remembered instead of `expect_receipt`, with the count of parts).
    pub segments: Vec<String>,
    pub at: DateTime<Utc>,
}

/// The callback event a delivery state is reported as, if any.
fn callback_event(state: DeliveryState) -> Option<&'static str> {
    match state {
        DeliveryState::Submitted => Some("sent"),
        DeliveryState::Delivered => Some("delivered"),
        DeliveryState::Failed | DeliveryState::Undelivered => Some("failed"),
        DeliveryState::Clicked => Some("clicked"),
        _ => None,
    }
}

/// Delivery events to queue for callbacks, as columns.
#[derive(Default)]
struct Hooks {
    apps: Vec<i32>,
    msgs: Vec<i64>,
    events: Vec<&'static str>,
    ids: Vec<String>,
    bodies: Vec<String>,
}

impl Hooks {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        delivery_id: i64,
        message_pk: i64,
        app: i32,
        event: &'static str,
        c: &StatusChange,
        channel: &str,
        user: Option<String>,
        provider_id: Option<String>,
    ) {
        let at = c.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = serde_json::json!({
            "type": event,
            "timestamp": at,
            "data": {
                "message": crate::domain::ids::format_message_id(message_pk),
                "delivery_id": delivery_id.to_string(),
                "channel": channel,
                "user_id": user,
                "state": c.state.as_str(),
                "provider_id": provider_id,
                "code": c.code,
                "reason": c.reason,
                "at": at,
            },
        });
        self.apps.push(app);
        self.msgs.push(message_pk);
        self.events.push(event);
        self.ids
            .push(format!("dlv_{delivery_id}_{}", c.state.as_str()));
        self.bodies.push(body.to_string());
    }
}

/// The delivery a provider id names, and how many parts the delivery went out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched {
    pub delivery_id: i64,
    pub message_pk: i64,
    pub parts: i16,
}

/// How the parts of a delivery sent in several stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartsTally {
    pub parts: i64,
    pub delivered: i64,
    pub failed: i64,
}

/// What a batch of status writes did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Applied {
    pub applied: usize,
    pub stale: usize,
}

/// One row of `GET /v1/messages/{id}/deliveries`.
#[derive(Debug, Clone)]
pub struct DeliveryView {
    pub id: i64,
    pub channel_code: String,
    pub user_id: Option<String>,
    pub address: Option<String>,
    pub state: DeliveryState,
    pub attempts: i16,
    pub provider_id: Option<String>,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub events: Vec<EventView>,
}

#[derive(Debug, Clone)]
pub struct EventView {
    pub state: DeliveryState,
    pub provider_id: Option<String>,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// One item to store in a user's inbox.
#[derive(Debug, Clone)]
pub struct NewInboxItem {
    pub app_id: i32,
    pub user_id: String,
    pub delivery_id: i64,
    pub message_pk: i64,
    pub title: Option<String>,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct InboxItem {
    pub delivery_id: i64,
    pub message_pk: i64,
    pub title: Option<String>,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

fn state_of(v: i16) -> Result<DeliveryState, StoreError> {
    DeliveryState::from_i16(v).ok_or_else(|| StoreError::Data(format!("delivery state {v}")))
}

fn mask(states: &[DeliveryState]) -> i32 {
    states.iter().fold(0, |m, s| m | (1 << s.as_i16()))
}

const COPY_DELIVERIES: &str = "COPY deliveries (id, message_pk, app_id, channel_code, user_id, \
     address, state, reason, created_at, updated_at) FROM STDIN (FORMAT binary)";

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
        let ids: Vec<i64> = queued.iter().map(|r| r.get(0)).collect();
        let apps: Vec<i32> = queued.iter().map(|r| r.get(1)).collect();
        let times: Vec<DateTime<Utc>> = ids.iter().map(|id| id_time(*id)).collect();
        let rows = client
            .query(
                "SELECT m.id, m.channels, m.request::text FROM messages m
                 JOIN unnest($1::int4[], $2::int8[], $3::timestamptz[]) AS k(app_id, id, created_at)
                   ON m.app_id = k.app_id AND m.id = k.id AND m.created_at = k.created_at",
                &[&apps, &ids, &times],
            )
            .await?;
        let mut found: HashMap<i64, (Vec<String>, String)> = rows
            .into_iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let mut jobs = Vec::with_capacity(queued.len());
        for q in queued {
            let id: i64 = q.get(0);
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
                    tracing::warn!(id, "queued message not found; dropping it from the queue");
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
        let now = Utc::now();
        if !deliveries.is_empty() {
            let stmt = tx.prepare_cached(COPY_DELIVERIES).await?;
            let writer = BinaryCopyInWriter::new(
                tx.copy_in(&stmt).await?,
                &[
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
                ],
            );
            pin_mut!(writer);
            for d in deliveries {
                let created_at = id_time(d.id);
                writer
                    .as_mut()
                    .write(&[
                        &d.id,
                        &job.id,
                        &job.app_id,
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
        }
        // One work row per channel that got queued deliveries (a later page of the same
        // message counts a page up, so a sender that found it drained looks again).
        let mut codes: Vec<&str> = deliveries
            .iter()
            .filter(|d| d.state == DeliveryState::Queued)
            .map(|d| d.channel_code.as_str())
            .collect();
        codes.sort_unstable();
        codes.dedup();
        if !codes.is_empty() {
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
                &[&codes, &job.id, &job.priority.as_i16(), &job.app_id],
            )
            .await?;
        }
        let created_at = id_time(job.id);
        tx.execute(
            "UPDATE messages SET status = 2
             WHERE app_id = $1 AND id = $2 AND created_at = $3 AND status IN (0, 1)",
            &[&job.app_id, &job.id, &created_at],
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

    /// The messages with queued deliveries on a channel, high priority first.
    pub async fn dispatch_rows(
        &self,
        channel_code: &str,
        limit: i64,
    ) -> Result<Vec<DispatchRow>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT message_pk, priority, app_id, pages FROM dispatch_queue
                 WHERE channel_code = $1 ORDER BY priority, message_pk LIMIT $2",
            )
            .await?;
        let rows = client.query(&stmt, &[&channel_code, &limit]).await?;
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
        let pks: Vec<i64> = wants.iter().map(|w| w.0.message_pk).collect();
        let afters: Vec<i64> = wants.iter().map(|w| w.1).collect();
        let limits: Vec<i64> = wants.iter().map(|w| w.2).collect();
        let times: Vec<DateTime<Utc>> = pks.iter().map(|pk| id_time(*pk)).collect();
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
        let by_pk: HashMap<i64, &DispatchRow> =
            wants.iter().map(|w| (w.0.message_pk, &w.0)).collect();
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let pk: i64 = r.get(0);
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

    /// Removes a message's work row for a channel if no page was added since `pages`;
    /// answers whether it was removed.
    pub async fn finish_dispatch(
        &self,
        channel_code: &str,
        message_pk: i64,
        pages: i32,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM dispatch_queue
                 WHERE channel_code = $1 AND message_pk = $2 AND pages = $3",
                &[&channel_code, &message_pk, &pages],
            )
            .await?;
        Ok(n > 0)
    }

    /// The stored requests of messages, by (app id, message id).
    pub async fn message_requests(
        &self,
        keys: &[(i32, i64)],
    ) -> Result<HashMap<i64, String>, StoreError> {
        let client = self.client().await?;
        let apps: Vec<i32> = keys.iter().map(|k| k.0).collect();
        let ids: Vec<i64> = keys.iter().map(|k| k.1).collect();
        let times: Vec<DateTime<Utc>> = ids.iter().map(|id| id_time(*id)).collect();
        let rows = client
            .query(
                "SELECT m.id, m.request::text FROM messages m
                 JOIN unnest($1::int4[], $2::int8[], $3::timestamptz[]) AS k(app_id, id, created_at)
                   ON m.app_id = k.app_id AND m.id = k.id AND m.created_at = k.created_at",
                &[&apps, &ids, &times],
            )
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Applies a batch of state changes in one transaction; returns how many applied and
    /// how many lost a race (the delivery had already moved on).
    pub async fn apply_changes(
        &self,
        channel_of: &HashMap<i64, String>,
        changes: &[StatusChange],
        callback_apps: &std::collections::HashSet<i32>,
    ) -> Result<Applied, StoreError> {
        if changes.is_empty() {
            return Ok(Applied::default());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let ids: Vec<i64> = changes.iter().map(|c| c.delivery_id).collect();
        let msgs: Vec<i64> = changes.iter().map(|c| c.message_pk).collect();
        // A delivery's `created_at` is its id's time: with it the update touches one day
        // partition instead of probing every partition's index.
        let days: Vec<DateTime<Utc>> = ids.iter().map(|id| id_time(*id)).collect();
        let states: Vec<i16> = changes.iter().map(|c| c.state.as_i16()).collect();
        let masks: Vec<i32> = changes.iter().map(|c| mask(c.from)).collect();
        let pids: Vec<Option<&str>> = changes.iter().map(|c| c.provider_id.as_deref()).collect();
        let codes: Vec<Option<&str>> = changes.iter().map(|c| c.code.as_deref()).collect();
        let reasons: Vec<Option<&str>> = changes.iter().map(|c| c.reason.as_deref()).collect();
        let attempts: Vec<i16> = changes.iter().map(|c| c.attempts).collect();
        let ats: Vec<DateTime<Utc>> = changes.iter().map(|c| c.at).collect();
        let stmt = tx
            .prepare_cached(
                // The change that takes a delivery out of `queued` for the first time is
                // kept in its `sent_*` columns (no event row); `first` in RETURNING says so.
                "UPDATE deliveries d SET state = u.state,
                        provider_id = coalesce(u.pid, d.provider_id),
                        code = coalesce(u.code, d.code), reason = coalesce(u.reason, d.reason),
                        attempts = greatest(d.attempts, u.attempts), updated_at = u.at,
                        sent_state = CASE WHEN d.state = $11 AND u.state <> $11
                                           AND d.sent_at IS NULL
                                          THEN u.state ELSE d.sent_state END,
                        sent_at = CASE WHEN d.state = $11 AND u.state <> $11
                                        AND d.sent_at IS NULL
                                       THEN u.at ELSE d.sent_at END,
                        sent_code = CASE WHEN d.state = $11 AND u.state <> $11
                                          AND d.sent_at IS NULL
                                         THEN u.code ELSE d.sent_code END,
                        sent_reason = CASE WHEN d.state = $11 AND u.state <> $11
                                            AND d.sent_at IS NULL
                                           THEN u.reason ELSE d.sent_reason END
                 FROM unnest($1::int8[], $2::int2[], $3::int4[], $4::text[], $5::text[],
                             $6::text[], $7::int2[], $8::timestamptz[], $9::int8[],
                             $10::timestamptz[])
                      AS u(id, state, mask, pid, code, reason, attempts, at, msg, day)
                 WHERE d.message_pk = u.msg AND d.id = u.id AND d.created_at = u.day
                   AND (u.mask >> d.state) & 1 = 1
                 RETURNING d.id, d.message_pk, d.app_id, d.channel_code, d.user_id,
                           d.provider_id, d.sent_at = u.at AND d.sent_state = u.state",
            )
            .await?;
        let updated = tx
            .query(
                &stmt,
                &[
                    &ids,
                    &states,
                    &masks,
                    &pids,
                    &codes,
                    &reasons,
                    &attempts,
                    &ats,
                    &msgs,
                    &days,
                    &DeliveryState::Queued.as_i16(),
                ],
            )
            .await?;
        // Delivery events for apps with callback endpoints that may want them.
        let mut hooks = Hooks::default();
        if !callback_apps.is_empty() {
            let by_id: HashMap<i64, &StatusChange> =
                changes.iter().map(|c| (c.delivery_id, c)).collect();
            for r in &updated {
                let app: i32 = r.get(2);
                if !callback_apps.contains(&app) {
                    continue;
                }
                let id: i64 = r.get(0);
                let Some(c) = by_id.get(&id) else { continue };
                let Some(event) = callback_event(c.state) else {
                    continue;
                };
                let channel: String = r.get(3);
                let user: Option<String> = r.get(4);
                let pid: Option<String> = r.get(5);
                hooks.push(id, c.message_pk, app, event, c, &channel, user, pid);
            }
        }
        // delivery id → (message, whether the change was kept in the row)
        let applied: HashMap<i64, (i64, bool)> = updated
            .into_iter()
            .map(|r| {
                let first: Option<bool> = r.get(6);
                (r.get(0), (r.get(1), first.unwrap_or(false)))
            })
            .collect();

        // Event rows for the applied changes not kept in the row, and provider ids.
        let mut e_ids = Vec::new();
        let mut e_msgs = Vec::new();
        let mut e_states = Vec::new();
        let mut e_pids = Vec::new();
        let mut e_codes = Vec::new();
        let mut e_reasons = Vec::new();
        let mut e_ats = Vec::new();
        let mut r_channels = Vec::new();
        let mut r_pids = Vec::new();
        let mut r_ids = Vec::new();
        let mut r_msgs = Vec::new();
        let mut r_ats = Vec::new();
        let mut r_parts: Vec<i16> = Vec::new();
        for c in changes {
            let Some(&(msg, in_row)) = applied.get(&c.delivery_id) else {
                continue;
            };
            if !in_row {
                e_ids.push(c.delivery_id);
                e_msgs.push(msg);
                e_states.push(c.state.as_i16());
                e_pids.push(c.provider_id.as_deref());
                e_codes.push(c.code.as_deref());
                e_reasons.push(c.reason.as_deref());
                e_ats.push(c.at);
            }
            if let (Some(pid), Some(channel)) = (&c.expect_receipt, channel_of.get(&c.delivery_id))
            {
                if c.segments.len() > 1 {
                    let parts = i16::try_from(c.segments.len()).unwrap_or(i16::MAX);
                    for part in &c.segments {
                        r_channels.push(channel.as_str());
                        r_pids.push(part.as_str());
                        r_ids.push(c.delivery_id);
                        r_msgs.push(c.message_pk);
                        r_ats.push(c.at);
                        r_parts.push(parts);
                    }
                } else {
                    r_channels.push(channel.as_str());
                    r_pids.push(pid.as_str());
                    r_ids.push(c.delivery_id);
                    r_msgs.push(c.message_pk);
                    r_ats.push(c.at);
                    r_parts.push(1);
                }
            }
        }
        if !e_ids.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO delivery_events (delivery_id, message_pk, state, provider_id,
                                                  code, reason, at)
                     SELECT * FROM unnest($1::int8[], $2::int8[], $3::int2[], $4::text[],
                                          $5::text[], $6::text[], $7::timestamptz[])",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    &e_ids, &e_msgs, &e_states, &e_pids, &e_codes, &e_reasons, &e_ats,
                ],
            )
            .await?;
        }
        if !r_ids.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO provider_refs (channel_code, provider_id, delivery_id, created_at,
                                                message_pk, parts)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::timestamptz[],
                                          $5::int8[], $6::int2[])",
                )
                .await?;
            tx.execute(
                &stmt,
                &[&r_channels, &r_pids, &r_ids, &r_ats, &r_msgs, &r_parts],
            )
            .await?;
        }
        if !hooks.ids.is_empty() {
            let days: Vec<DateTime<Utc>> = hooks.msgs.iter().map(|m| id_time(*m)).collect();
            // Each event goes to the message's own callback URL if it named one, else to
            // the app's default endpoint — if that endpoint asked for the event.
            tx.execute(
                "INSERT INTO callback_outbox (app_id, url, event_id, body)
                 SELECT t.app, t.url, t.event_id, t.body FROM (
                     SELECT c.app, c.event, c.event_id, c.body, coalesce(
                         (SELECT m.request->>'callback_url' FROM messages m
                          WHERE m.app_id = c.app AND m.id = c.msg AND m.created_at = c.day),
                         (SELECT e.url FROM callback_endpoints e
                          WHERE e.app_id = c.app AND e.is_default)) AS url
                     FROM unnest($1::int4[], $2::int8[], $3::timestamptz[], $4::text[],
                                 $5::text[], $6::text[])
                          AS c(app, msg, day, event, event_id, body)) t
                 JOIN callback_endpoints e ON e.app_id = t.app AND e.url = t.url
                 WHERE t.event = ANY(e.events)",
                &[
                    &hooks.apps,
                    &hooks.msgs,
                    &days,
                    &hooks.events,
                    &hooks.ids,
                    &hooks.bodies,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Applied {
            applied: applied.len(),
            stale: changes.len() - applied.len(),
        })
    }

    /// (delivery id, message) for provider ids of one channel (receipt correlation).
    pub async fn match_provider_ids(
        &self,
        channel_code: &str,
        provider_ids: &[String],
    ) -> Result<HashMap<String, Matched>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT provider_id, delivery_id, message_pk, parts FROM provider_refs
                 WHERE channel_code = $1 AND provider_id = ANY($2)",
            )
            .await?;
        let rows = client.query(&stmt, &[&channel_code, &provider_ids]).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let parts: i16 = r.get(3);
                (
                    r.get(0),
                    Matched {
                        delivery_id: r.get(1),
                        message_pk: r.get(2),
                        parts,
                    },
                )
            })
            .collect())
    }

    /// Records the outcome of parts of deliveries sent in several (`parts > 1`), one
    /// report per (provider id, state), and answers how the parts of `deliveries` (those
    /// the reports name) stand. A part already reported keeps its first outcome; a report
    /// seen twice tallies the same.
    pub async fn record_parts(
        &self,
        channel_code: &str,
        reports: &[(String, DeliveryState)],
        deliveries: &[i64],
    ) -> Result<HashMap<i64, PartsTally>, StoreError> {
        if reports.is_empty() {
            return Ok(HashMap::new());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let pids: Vec<&str> = reports.iter().map(|r| r.0.as_str()).collect();
        let states: Vec<i16> = reports.iter().map(|r| r.1.as_i16()).collect();
        tx.execute(
            "UPDATE provider_refs r SET outcome = u.state
             FROM unnest($2::text[], $3::int2[]) AS u(pid, state)
             WHERE r.channel_code = $1 AND r.provider_id = u.pid AND r.parts > 1
               AND r.outcome IS NULL",
            &[&channel_code, &pids, &states],
        )
        .await?;
        let ids = deliveries;
        let rows = tx
            .query(
                "SELECT delivery_id, max(parts),
                        count(*) FILTER (WHERE outcome = $3),
                        count(*) FILTER (WHERE outcome IS NOT NULL AND outcome <> $3)
                 FROM provider_refs
                 WHERE delivery_id = ANY($2) AND channel_code = $1 AND parts > 1
                 GROUP BY delivery_id",
                &[&channel_code, &ids, &DeliveryState::Delivered.as_i16()],
            )
            .await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let parts: i16 = r.get(1);
                let delivered: i64 = r.get(2);
                let failed: i64 = r.get(3);
                (
                    r.get(0),
                    PartsTally {
                        parts: i64::from(parts),
                        delivered,
                        failed,
                    },
                )
            })
            .collect())
    }

    /// Provider ids of deliveries submitted on a channel that still wait for a receipt
    /// (pull-based providers resume polling them after a restart).
    pub async fn awaiting_receipts(
        &self,
        channel_code: &str,
        since: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT d.provider_id FROM deliveries d
                 WHERE d.channel_code = $1 AND d.created_at >= $2 AND d.state = $3
                   AND d.provider_id IS NOT NULL
                 LIMIT $4",
                &[
                    &channel_code,
                    &since,
                    &DeliveryState::Submitted.as_i16(),
                    &limit,
                ],
            )
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// The deliveries of a message (after `cursor`, at most `limit`) with their events.
    pub async fn list_deliveries(
        &self,
        message_pk: i64,
        user_id: Option<&str>,
        channel: Option<&str>,
        cursor: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let client = self.client().await?;
        let since = id_time(message_pk);
        let rows = client
            .query(
                "SELECT id, channel_code, user_id, address, state, attempts, provider_id, code,
                        reason, created_at, updated_at, sent_state, sent_at, sent_code,
                        sent_reason
                 FROM deliveries
                 WHERE message_pk = $1 AND created_at >= $2 AND id > $3
                   AND ($4::text IS NULL OR user_id = $4)
                   AND ($5::text IS NULL OR channel_code = $5)
                 ORDER BY id LIMIT $6",
                &[&message_pk, &since, &cursor, &user_id, &channel, &limit],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            // The first outcome, kept in the row (rows written before schema 6 have it as
            // an event row instead).
            let sent_state: Option<i16> = r.get(11);
            let sent_at: Option<DateTime<Utc>> = r.get(12);
            let mut events = Vec::new();
            if let (Some(state), Some(at)) = (sent_state, sent_at) {
                events.push(EventView {
                    state: state_of(state)?,
                    provider_id: r.get(6),
                    code: r.get(13),
                    reason: r.get(14),
                    at,
                });
            }
            out.push(DeliveryView {
                id: r.get(0),
                channel_code: r.get(1),
                user_id: r.get(2),
                address: r.get(3),
                state: state_of(r.get(4))?,
                attempts: r.get(5),
                provider_id: r.get(6),
                code: r.get(7),
                reason: r.get(8),
                created_at: r.get(9),
                updated_at: r.get(10),
                events,
            });
        }
        if out.is_empty() {
            return Ok(out);
        }
        let ids: Vec<i64> = out.iter().map(|d| d.id).collect();
        let events = client
            .query(
                "SELECT delivery_id, state, provider_id, code, reason, at FROM delivery_events
                 WHERE delivery_id = ANY($1) AND at >= $2 ORDER BY at, state",
                &[&ids, &since],
            )
            .await?;
        let index: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        for e in events {
            let id: i64 = e.get(0);
            if let Some(i) = index.get(&id) {
                out[*i].events.push(EventView {
                    state: state_of(e.get(1))?,
                    provider_id: e.get(2),
                    code: e.get(3),
                    reason: e.get(4),
                    at: e.get(5),
                });
            }
        }
        // Retries (event rows) come before the first outcome (in the row).
        for d in &mut out {
            d.events.sort_by_key(|e| (e.at, e.state.as_i16()));
        }
        Ok(out)
    }

    /// Stores inbox items; a delivery already stored (a re-send after a crash) is skipped.
    pub async fn put_inbox(&self, items: &[NewInboxItem]) -> Result<(), StoreError> {
        let client = self.client().await?;
        let apps: Vec<i32> = items.iter().map(|i| i.app_id).collect();
        let users: Vec<&str> = items.iter().map(|i| i.user_id.as_str()).collect();
        let ids: Vec<i64> = items.iter().map(|i| i.delivery_id).collect();
        let msgs: Vec<i64> = items.iter().map(|i| i.message_pk).collect();
        let titles: Vec<Option<&str>> = items.iter().map(|i| i.title.as_deref()).collect();
        let bodies: Vec<&str> = items.iter().map(|i| i.body.as_str()).collect();
        let stmt = client
            .prepare_cached(
                "INSERT INTO inbox (app_id, user_id, delivery_id, message_pk, title, body)
                 SELECT * FROM unnest($1::int4[], $2::text[], $3::int8[], $4::int8[],
                                      $5::text[], $6::text[])
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        client
            .execute(&stmt, &[&apps, &users, &ids, &msgs, &titles, &bodies])
            .await?;
        Ok(())
    }

    /// A user's inbox, newest first.
    pub async fn list_inbox(
        &self,
        app_id: i32,
        user_id: &str,
        unread_only: bool,
        limit: i64,
    ) -> Result<Vec<InboxItem>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT delivery_id, message_pk, title, body, created_at, read_at FROM inbox
                 WHERE app_id = $1 AND user_id = $2 AND (NOT $3 OR read_at IS NULL)
                 ORDER BY delivery_id DESC LIMIT $4",
                &[&app_id, &user_id, &unread_only, &limit],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| InboxItem {
                delivery_id: r.get(0),
                message_pk: r.get(1),
                title: r.get(2),
                body: r.get(3),
                created_at: r.get(4),
                read_at: r.get(5),
            })
            .collect())
    }

    /// Marks inbox items read; returns the (delivery id, message) of those that changed (for
    /// `read` receipts).
    pub async fn mark_inbox_read(
        &self,
        app_id: i32,
        user_id: &str,
        ids: &[i64],
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "UPDATE inbox SET read_at = now()
                 WHERE app_id = $1 AND user_id = $2 AND delivery_id = ANY($3) AND read_at IS NULL
                 RETURNING delivery_id, message_pk",
                &[&app_id, &user_id, &ids],
            )
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
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
