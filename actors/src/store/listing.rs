//! An app's message history (`GET /v1/messages`), newest first, each message with the
//! user funnel of its list line: effective, sent, delivered and clicked users.
//!
//! The funnel of a page is counted from the deliveries of its messages in one grouped
//! query, so a page costs what its messages' deliveries cost to read: a page holding a
//! million-user broadcast reads its million rows.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::domain::strategy::Step;
use crate::domain::{DeliveryState, IdempotencyKey, MessagePk, MessageStatus, Priority};

/// Which messages a page lists.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Stored statuses to keep (none: all).
    pub statuses: Vec<MessageStatus>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub to: Option<DateTime<Utc>>,
    /// Older than this message (the cursor).
    pub before: Option<MessagePk>,
    pub limit: i64,
}

/// One line of the history.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: MessagePk,
    pub message_id: Option<IdempotencyKey>,
    /// As stored; `Dispatching` with nothing left to do is reported as `Done`.
    pub status: MessageStatus,
    pub priority: Priority,
    pub channels: Vec<String>,
    pub send_at: Option<DateTime<Utc>>,
    pub effective: i64,
    pub sent: i64,
    pub delivered: i64,
    pub clicked: i64,
}

impl Store {
    /// A page of the app's messages, newest first.
    pub async fn list_messages(
        &self,
        app_id: i32,
        f: &ListFilter,
    ) -> Result<Vec<Listed>, StoreError> {
        let client = self.client().await?;
        let statuses: Option<Vec<i16>> =
            (!f.statuses.is_empty()).then(|| f.statuses.iter().map(|s| s.as_i16()).collect());
        let rows = client
            .query(
                "SELECT id, message_id, status, priority, channels, send_at, strategy::text
                 FROM messages
                 WHERE app_id = $1 AND ($2::int2[] IS NULL OR status = ANY($2))
                   AND ($3::timestamptz IS NULL OR created_at >= $3)
                   AND ($4::timestamptz IS NULL OR created_at < $4)
                   AND ($5::int8 IS NULL OR id < $5)
                 ORDER BY id DESC LIMIT $6",
                &[&app_id, &statuses, &f.from, &f.to, &f.before, &f.limit],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let status: i16 = r.get(2);
            let priority: i16 = r.get(3);
            out.push(Listed {
                id: r.get(0),
                message_id: r
                    .get::<_, Option<String>>(1)
                    .map(IdempotencyKey::from_stored),
                status: MessageStatus::from_i16(status)
                    .ok_or_else(|| StoreError::Data(format!("message status {status}")))?,
                priority: Priority::from_i16(priority).unwrap_or_default(),
                channels: match r.get::<_, Option<String>>(6) {
                    // A strategy's message goes out on its steps' channels.
                    Some(steps) => serde_json::from_str::<Vec<Step>>(&steps)
                        .map(|s| s.into_iter().map(|s| s.channel).collect())
                        .unwrap_or_else(|_| r.get(4)),
                    None => r.get(4),
                },
                send_at: r.get(5),
                effective: 0,
                sent: 0,
                delivered: 0,
                clicked: 0,
            });
        }
        let Some(oldest) = out.last().map(|m| m.id.created_at()) else {
            return Ok(out);
        };
        let ids: Vec<MessagePk> = out.iter().map(|m| m.id).collect();
        let counts = client
            .query(
                "SELECT message_pk,
                        count(DISTINCT coalesce(user_id, address)) FILTER (WHERE state = ANY($3)),
                        count(DISTINCT coalesce(user_id, address)) FILTER (WHERE state = ANY($4)),
                        count(DISTINCT coalesce(user_id, address)) FILTER (WHERE state = ANY($5)),
                        count(DISTINCT coalesce(user_id, address)) FILTER (WHERE state = ANY($6)),
                        count(*) FILTER (WHERE state = ANY($7) AND fell_back_at IS NULL)
                 FROM deliveries WHERE message_pk = ANY($1) AND created_at >= $2
                 GROUP BY message_pk",
                &[
                    &ids,
                    &oldest,
                    &DeliveryState::codes(DeliveryState::is_effective),
                    &DeliveryState::codes(DeliveryState::is_sent),
                    &DeliveryState::codes(DeliveryState::is_delivered),
                    &DeliveryState::codes(|s| s == DeliveryState::Clicked),
                    &DeliveryState::codes(DeliveryState::is_pending),
                ],
            )
            .await?;
        let mut pending: HashMap<MessagePk, i64> = HashMap::new();
        let by_id: HashMap<MessagePk, usize> =
            out.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
        for c in counts {
            let id: MessagePk = c.get(0);
            if let Some(m) = by_id.get(&id).and_then(|i| out.get_mut(*i)) {
                m.effective = c.get(1);
                m.sent = c.get(2);
                m.delivered = c.get(3);
                m.clicked = c.get(4);
                pending.insert(id, c.get(5));
            }
        }
        let busy: HashSet<MessagePk> = client
            .query(
                "SELECT id FROM message_queue WHERE id = ANY($1)
                 UNION SELECT message_pk FROM strategy_timers WHERE message_pk = ANY($1)",
                &[&ids],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for m in &mut out {
            if m.status == MessageStatus::Dispatching
                && pending.get(&m.id).copied().unwrap_or(0) == 0
                && !busy.contains(&m.id)
            {
                m.status = MessageStatus::Done;
            }
        }
        Ok(out)
    }
}
