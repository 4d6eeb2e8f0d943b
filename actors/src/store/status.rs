//! The status writer's statements: batched, conditional state changes (`WHERE state` is
//! one the change may leave from, so a late receipt and a retry, or two nodes, settle in
//! the database instead of overwriting each other), the provider ids receipts will name,
//! the outcome of each part of a delivery sent in several, and the app callback events
//! the changes raise. The change that takes a delivery out of `queued` is kept in the
//! row's `sent_*` columns; every other applied change is appended to `delivery_events`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::domain::ids::id_time;
use crate::domain::{DeliveryState, MessagePk};

/// A state change to record. `from` lists the states the delivery may be in for the change
/// to apply; a change from any other state is ignored (it lost a race).
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub delivery_id: i64,
    pub message_pk: MessagePk,
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
    /// With `expect_receipt`: when the channel's receipt window closes (the delivery then
    /// becomes `unknown` unless a receipt came).
    pub receipt_by: Option<DateTime<Utc>>,
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
    msgs: Vec<MessagePk>,
    events: Vec<&'static str>,
    ids: Vec<String>,
    bodies: Vec<String>,
}

impl Hooks {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        delivery_id: i64,
        message_pk: MessagePk,
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
                "message": message_pk.to_string(),
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
    pub message_pk: MessagePk,
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
#[derive(Debug, Default, Clone)]
pub struct Applied {
    pub applied: usize,
    pub stale: usize,
    /// The changes that applied, when asked for.
    pub changes: Vec<AppliedChange>,
    /// Receipts (delivered, read, clicked) that applied to deliveries whose strategy
    /// fallback had gone out already, by channel.
    pub after_fallback: HashMap<String, u64>,
}

/// A state change that applied: the delivery moved to `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedChange {
    pub delivery_id: i64,
    pub message_pk: MessagePk,
    pub state: DeliveryState,
    pub at: DateTime<Utc>,
}

fn mask(states: &[DeliveryState]) -> i32 {
    states.iter().fold(0, |m, s| m | (1 << s.as_i16()))
}

impl Store {
    /// Applies a batch of state changes in one transaction; returns how many applied and
    /// how many lost a race (the delivery had already moved on).
    pub async fn apply_changes(
        &self,
        channel_of: &HashMap<i64, String>,
        changes: &[StatusChange],
        callback_apps: &std::collections::HashSet<i32>,
        report: bool,
    ) -> Result<Applied, StoreError> {
        if changes.is_empty() {
            return Ok(Applied::default());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        super::by_key(&tx).await?;
        let ids: Vec<i64> = changes.iter().map(|c| c.delivery_id).collect();
        let msgs: Vec<MessagePk> = changes.iter().map(|c| c.message_pk).collect();
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
                           d.provider_id, d.sent_at = u.at AND d.sent_state = u.state,
                           d.fell_back_at IS NOT NULL",
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
        // Receipts for deliveries whose strategy fallback went out already.
        let mut after_fallback: HashMap<String, u64> = HashMap::new();
        {
            let by_id: HashMap<i64, &StatusChange> =
                changes.iter().map(|c| (c.delivery_id, c)).collect();
            for r in &updated {
                let fell_back: Option<bool> = r.get(7);
                if fell_back != Some(true) {
                    continue;
                }
                let id: i64 = r.get(0);
                if by_id.get(&id).is_some_and(|c| c.state.is_delivered()) {
                    *after_fallback.entry(r.get(3)).or_default() += 1;
                }
            }
        }
        // delivery id → (message, whether the change was kept in the row)
        let applied: HashMap<i64, (MessagePk, bool)> = updated
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
        let mut waits = super::windows::NewWaits::default();
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
            if let (Some(due), Some(channel)) = (c.receipt_by, channel_of.get(&c.delivery_id)) {
                waits.add(channel, due, c.delivery_id, c.message_pk);
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
        waits.write(&tx).await?;
        if !hooks.ids.is_empty() {
            let days: Vec<DateTime<Utc>> = hooks.msgs.iter().map(|m| m.created_at()).collect();
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
        let reported = if report {
            changes
                .iter()
                .filter(|c| applied.contains_key(&c.delivery_id))
                .map(|c| AppliedChange {
                    delivery_id: c.delivery_id,
                    message_pk: c.message_pk,
                    state: c.state,
                    at: c.at,
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Applied {
            applied: applied.len(),
            stale: changes.len() - applied.len(),
            changes: reported,
            after_fallback,
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
}
