//! What the API reads back: a message with its funnel and losses, and its deliveries
//! with their life cycles.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::domain::strategy::Step;
use crate::domain::{DeliveryState, IdempotencyKey, MessagePk, MessageStatus, Priority};

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
    /// The strategy step it belongs to, for a message sent with a strategy.
    pub step: Option<i16>,
    /// When a later strategy step went out because this delivery's condition held.
    pub fell_back_at: Option<DateTime<Utc>>,
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

/// A stored message with its funnel.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub id: MessagePk,
    pub message_id: Option<IdempotencyKey>,
    pub status: MessageStatus,
    pub priority: Priority,
    pub channels: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// The requested time, for a scheduled message.
    pub send_at: Option<DateTime<Utc>>,
    /// When a scheduled message was handed to the planner.
    pub fired_at: Option<DateTime<Utc>>,
    pub funnel_users: FunnelCounts,
    pub funnel_channels: BTreeMap<String, FunnelCounts>,
    pub losses: Vec<Loss>,
    /// For a message sent with a strategy: each step's funnel and what fell back.
    pub strategy: Option<StrategyReport>,
}

/// How a message's strategy went.
#[derive(Debug, Clone)]
pub struct StrategyReport {
    pub steps: Vec<StepReport>,
    /// Deadlines not decided yet (batches of targets, not targets).
    pub pending_deadlines: i64,
}

#[derive(Debug, Clone)]
pub struct StepReport {
    /// From 1.
    pub step: usize,
    pub spec: Step,
    pub funnel: FunnelCounts,
    /// Targets whose condition on this step held, so a later step went out for them.
    pub fell_back: i64,
    /// Of those, the ones whose receipt (delivered, read, clicked) came after all.
    pub late_receipts: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunnelCounts {
    pub planned: i64,
    pub effective: i64,
    pub sent: i64,
    pub delivered: i64,
    pub clicked: i64,
    pub failed: i64,
}

impl FunnelCounts {
    /// Counts `n` deliveries in `state`.
    fn add(&mut self, state: DeliveryState, n: i64) {
        self.planned += n;
        if state.is_effective() {
            self.effective += n;
        }
        if state.is_sent() {
            self.sent += n;
        }
        if state.is_delivered() {
            self.delivered += n;
        }
        if state == DeliveryState::Clicked {
            self.clicked += n;
        }
        if state.is_failed() {
            self.failed += n;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    pub stage: String,
    pub channel: String,
    pub reason: String,
    pub count: i64,
}

fn state_of(v: i16) -> Result<DeliveryState, StoreError> {
    DeliveryState::from_i16(v).ok_or_else(|| StoreError::Data(format!("delivery state {v}")))
}

impl Store {
    /// Looks a message up by umsd's id or by the caller's `message_id`, within one app.
    pub async fn find_message(
        &self,
        app_id: i32,
        ident: &str,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let mut client = self.client().await?;
        // One snapshot for every count, so a receipt applied meanwhile cannot make the
        // user funnel, the channel funnel and the losses disagree.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        if let Some(id) = MessagePk::parse(ident) {
            if let Some(found) = read_message(&tx, app_id, id).await? {
                return Ok(Some(found));
            }
        }
        let row = tx
            .query_opt(
                "SELECT id FROM message_keys WHERE app_id = $1 AND message_id = $2",
                &[&app_id, &ident],
            )
            .await?;
        match row {
            Some(row) => read_message(&tx, app_id, row.get(0)).await,
            None => Ok(None),
        }
    }

    /// The deliveries of a message (after `cursor`, at most `limit`) with their events.
    pub async fn list_deliveries(
        &self,
        message_pk: MessagePk,
        user_id: Option<&str>,
        channel: Option<&str>,
        cursor: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let client = self.client().await?;
        let since = message_pk.created_at();
        let rows = client
            .query(
                "SELECT id, channel_code, user_id, address, state, attempts, provider_id, code,
                        reason, created_at, updated_at, sent_state, sent_at, sent_code,
                        sent_reason, step, fell_back_at
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
                step: r.get(15),
                fell_back_at: r.get(16),
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
}

async fn read_message(
    client: &tokio_postgres::Transaction<'_>,
    app_id: i32,
    id: MessagePk,
) -> Result<Option<MessageRecord>, StoreError> {
    let created_at = id.created_at();
    // created_at is derived from the id, so the lookup touches one partition.
    let Some(row) = client
        .query_opt(
            "SELECT message_id, status, priority, channels, send_at, fired_at, strategy::text
             FROM messages
             WHERE id = $1 AND app_id = $2 AND created_at = $3",
            &[&id, &app_id, &created_at],
        )
        .await?
    else {
        return Ok(None);
    };
    let status: i16 = row.get(1);
    let priority: i16 = row.get(2);
    let channels: Vec<String> = row.get(3);

    // Funnel from the deliveries: one row per (user or address, channel).
    let counts = client
        .query(
            "SELECT channel_code, state, coalesce(code, reason), count(*), step,
                    count(*) FILTER (WHERE fell_back_at IS NOT NULL),
                    state = $3 AND coalesce(sent_state, $3) <> $3
             FROM deliveries
             WHERE message_pk = $1 AND created_at >= $2
             GROUP BY 1, 2, 3, 5, 7",
            &[&id, &created_at, &DeliveryState::Recalled.as_i16()],
        )
        .await?;
    let steps: Option<Vec<Step>> = row
        .get::<_, Option<String>>(6)
        .and_then(|s| serde_json::from_str(&s).ok());
    // A strategy's message goes out on its steps' channels, in their order.
    let channels: Vec<String> = match &steps {
        Some(steps) => steps.iter().map(|s| s.channel.clone()).collect(),
        None => channels,
    };
    let mut step_reports: Vec<StepReport> = steps
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, s)| StepReport {
            step: i + 1,
            spec: s.clone(),
            funnel: FunnelCounts::default(),
            fell_back: 0,
            late_receipts: 0,
        })
        .collect();
    let mut funnel_channels: BTreeMap<String, FunnelCounts> = channels
        .iter()
        .map(|c| (c.clone(), FunnelCounts::default()))
        .collect();
    let mut losses: BTreeMap<(&'static str, String, String), i64> = BTreeMap::new();
    let mut pending = 0i64;
    for row in counts {
        let code: String = row.get(0);
        let state = DeliveryState::from_i16(row.get(1));
        let reason: Option<String> = row.get(2);
        let n: i64 = row.get(3);
        let step: Option<i16> = row.get(4);
        let fell_back: i64 = row.get(5);
        // Recalled after it was sent: it counts as sent in the funnel.
        let withdrawn: bool = row.get(6);
        let counted = if withdrawn {
            Some(DeliveryState::Submitted)
        } else {
            state
        };
        let f = funnel_channels.entry(code.clone()).or_default();
        match counted {
            Some(s) => f.add(s, n),
            None => f.planned += n,
        }
        if let Some(r) = step
            .and_then(|s| usize::try_from(s - 1).ok())
            .and_then(|i| step_reports.get_mut(i))
        {
            r.fell_back += fell_back;
            if state.is_some_and(DeliveryState::is_delivered) {
                r.late_receipts += fell_back;
            }
            if let Some(s) = counted {
                r.funnel.add(s, n);
            }
        }
        if let Some(s) = state {
            let stage = match s {
                DeliveryState::Filtered => Some("planned_to_effective"),
                DeliveryState::Failed => Some("effective_to_sent"),
                DeliveryState::Undelivered | DeliveryState::Unknown => Some("sent_to_delivered"),
                _ => None,
            };
            if let Some(stage) = stage {
                let reason = reason.unwrap_or_else(|| "unknown".into());
                *losses.entry((stage, code.clone(), reason)).or_default() += n;
            }
            // A delivery whose fallback went out no longer holds its message open: its
            // receipt, if it comes, is recorded as late.
            if s.is_pending() {
                pending += n - fell_back;
            }
        }
    }
    let losses: Vec<Loss> = losses
        .into_iter()
        .map(|((stage, channel, reason), count)| Loss {
            stage: stage.into(),
            channel,
            reason,
            count,
        })
        .collect();
    let mut status = MessageStatus::from_i16(status)
        .ok_or_else(|| StoreError::Data(format!("message {id} has status {status}")))?;
    let pending_deadlines: i64 = if steps.is_some() {
        client
            .query_one(
                "SELECT count(*) FROM strategy_timers WHERE message_pk = $1",
                &[&id],
            )
            .await?
            .get(0)
    } else {
        0
    };
    if status == MessageStatus::Dispatching && pending == 0 && pending_deadlines == 0 {
        // Every delivery is final and no later step can follow; done once planning has
        // finished too.
        let planning = client
            .query_opt("SELECT 1 FROM message_queue WHERE id = $1", &[&id])
            .await?;
        if planning.is_none() {
            status = MessageStatus::Done;
        }
    }
    let users = client
        .query_one(
            "SELECT count(DISTINCT coalesce(user_id, address)),
                    count(DISTINCT coalesce(user_id, address)) FILTER (WHERE state = ANY($3)),
                    count(DISTINCT coalesce(user_id, address)) FILTER (WHERE state = ANY($4)
                        OR state = $8 AND coalesce(sent_state, $8) <> $8),
                    count(DISTINCT coalesce(user_id, address)) FILTER (WHERE state = ANY($5)),
                    count(DISTINCT coalesce(user_id, address)) FILTER (WHERE state = ANY($6)),
                    count(DISTINCT coalesce(user_id, address)) FILTER (WHERE state = ANY($7))
             FROM deliveries WHERE message_pk = $1 AND created_at >= $2",
            &[
                &id,
                &created_at,
                &DeliveryState::codes(DeliveryState::is_effective),
                &DeliveryState::codes(DeliveryState::is_sent),
                &DeliveryState::codes(DeliveryState::is_delivered),
                &DeliveryState::codes(|s| s == DeliveryState::Clicked),
                &DeliveryState::codes(DeliveryState::is_failed),
                &DeliveryState::Recalled.as_i16(),
            ],
        )
        .await?;
    Ok(Some(MessageRecord {
        id,
        message_id: row
            .get::<_, Option<String>>(0)
            .map(IdempotencyKey::from_stored),
        status,
        priority: Priority::from_i16(priority)
            .ok_or_else(|| StoreError::Data(format!("message {id} has priority {priority}")))?,
        channels,
        created_at,
        send_at: row.get(4),
        fired_at: row.get(5),
        funnel_users: FunnelCounts {
            planned: users.get(0),
            effective: users.get(1),
            sent: users.get(2),
            delivered: users.get(3),
            clicked: users.get(4),
            failed: users.get(5),
        },
        funnel_channels,
        losses,
        strategy: steps.map(|_| StrategyReport {
            steps: step_reports,
            pending_deadlines,
        }),
    }))
}
