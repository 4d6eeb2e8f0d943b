//! Recalling a message (`DELETE /v1/messages/{id}`): in one transaction its status becomes
//! `recalled`, its planning, dispatch rows and strategy deadlines go, and every delivery
//! not sent yet is cancelled as `recalled`; the sent ones are answered so their providers
//! can be asked to withdraw them. What was done per channel is kept in `message_recalls`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::domain::{DeliveryState, MessagePk, MessageStatus};

/// A sent delivery a provider may be asked to withdraw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentDelivery {
    pub id: i64,
    pub user_id: Option<String>,
    pub address: Option<String>,
    pub provider_id: Option<String>,
}

/// What recalling found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recall {
    NotFound,
    /// The message cannot be recalled in this status (scheduled, recalled, cancelled).
    NotRecallable(MessageStatus),
    /// Recalled: per channel, how many unsent deliveries were cancelled, and the sent ones.
    Recalled(BTreeMap<String, (i64, Vec<SentDelivery>)>),
}

/// One channel's line of a recall report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecallLine {
    pub cancelled: i64,
    pub recalled: i64,
    pub not_recalled: i64,
    /// Why sent deliveries could not be withdrawn: reason → count.
    pub reasons: BTreeMap<String, i64>,
}

/// A recall report: when, and per channel what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecallReport {
    pub at: DateTime<Utc>,
    pub channels: BTreeMap<String, RecallLine>,
}

impl Store {
    /// Recalls a message: see the module doc. Answers the sent deliveries per channel.
    pub async fn recall_message(
        &self,
        app_id: i32,
        id: MessagePk,
        now: DateTime<Utc>,
    ) -> Result<Recall, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let created_at = id.created_at();
        let row = tx
            .query_opt(
                "SELECT status FROM messages WHERE app_id = $1 AND id = $2 AND created_at = $3
                 FOR UPDATE",
                &[&app_id, &id, &created_at],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Recall::NotFound);
        };
        let status: i16 = row.get(0);
        let status = MessageStatus::from_i16(status)
            .ok_or_else(|| StoreError::Data(format!("message status {status}")))?;
        if !matches!(
            status,
            MessageStatus::Accepted | MessageStatus::Dispatching | MessageStatus::Done
        ) {
            return Ok(Recall::NotRecallable(status));
        }
        tx.execute(
            "UPDATE messages SET status = $4 WHERE app_id = $1 AND id = $2 AND created_at = $3",
            &[&app_id, &id, &created_at, &MessageStatus::Recalled.as_i16()],
        )
        .await?;
        tx.execute("DELETE FROM message_queue WHERE id = $1", &[&id])
            .await?;
        tx.execute("DELETE FROM dispatch_queue WHERE message_pk = $1", &[&id])
            .await?;
        tx.execute("DELETE FROM strategy_timers WHERE message_pk = $1", &[&id])
            .await?;
        let recalled = DeliveryState::Recalled.as_i16();
        let unsent =
            DeliveryState::codes(|s| matches!(s, DeliveryState::Planned | DeliveryState::Queued));
        let cancelled = tx
            .query(
                "UPDATE deliveries SET state = $3, reason = 'recalled', updated_at = $4,
                        sent_state = coalesce(sent_state, $3), sent_at = coalesce(sent_at, $4),
                        sent_reason = coalesce(sent_reason, 'recalled')
                 WHERE message_pk = $1 AND created_at >= $2 AND state = ANY($5)
                 RETURNING channel_code",
                &[&id, &created_at, &recalled, &now, &unsent],
            )
            .await?;
        let mut out: BTreeMap<String, (i64, Vec<SentDelivery>)> = BTreeMap::new();
        for r in cancelled {
            out.entry(r.get(0)).or_default().0 += 1;
        }
        let sent = DeliveryState::codes(DeliveryState::is_sent);
        let rows = tx
            .query(
                "SELECT channel_code, id, user_id, address, provider_id FROM deliveries
                 WHERE message_pk = $1 AND created_at >= $2 AND state = ANY($3)
                 ORDER BY id",
                &[&id, &created_at, &sent],
            )
            .await?;
        for r in rows {
            out.entry(r.get(0)).or_default().1.push(SentDelivery {
                id: r.get(1),
                user_id: r.get(2),
                address: r.get(3),
                provider_id: r.get(4),
            });
        }
        tx.commit().await?;
        Ok(Recall::Recalled(out))
    }

    /// Records what recalling did on each channel, and moves the withdrawn deliveries to
    /// `recalled` (with an event row each: their first outcome stays as it was).
    pub async fn record_recall(
        &self,
        message_pk: MessagePk,
        report: &RecallReport,
        withdrawn: &[i64],
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if !withdrawn.is_empty() {
            let recalled = DeliveryState::Recalled.as_i16();
            tx.execute(
                "UPDATE deliveries SET state = $3, updated_at = $4
                 WHERE message_pk = $1 AND created_at >= $2 AND id = ANY($5)",
                &[
                    &message_pk,
                    &message_pk.created_at(),
                    &recalled,
                    &report.at,
                    &withdrawn,
                ],
            )
            .await?;
            tx.execute(
                "INSERT INTO delivery_events (delivery_id, message_pk, state, reason, at)
                 SELECT unnest($1::int8[]), $2, $3, 'recalled', $4",
                &[&withdrawn, &message_pk, &recalled, &report.at],
            )
            .await?;
        }
        for (channel, line) in &report.channels {
            let reasons = serde_json::to_value(&line.reasons)
                .map_err(|e| StoreError::Data(format!("recall reasons: {e}")))?;
            tx.execute(
                "INSERT INTO message_recalls (message_pk, channel_code, cancelled, recalled,
                                              not_recalled, reasons, recalled_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (message_pk, channel_code) DO UPDATE SET
                     cancelled = EXCLUDED.cancelled, recalled = EXCLUDED.recalled,
                     not_recalled = EXCLUDED.not_recalled, reasons = EXCLUDED.reasons,
                     recalled_at = EXCLUDED.recalled_at",
                &[
                    &message_pk,
                    channel,
                    &(line.cancelled as i32),
                    &(line.recalled as i32),
                    &(line.not_recalled as i32),
                    &reasons,
                    &report.at,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// What recalling a message did, if it was recalled.
    pub async fn recall_report(
        &self,
        message_pk: MessagePk,
    ) -> Result<Option<RecallReport>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT channel_code, cancelled, recalled, not_recalled, reasons, recalled_at
                 FROM message_recalls WHERE message_pk = $1 ORDER BY channel_code",
                &[&message_pk],
            )
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut report = RecallReport {
            at: first.get(5),
            channels: BTreeMap::new(),
        };
        for r in &rows {
            let reasons: serde_json::Value = r.get(4);
            let reasons: BTreeMap<String, i64> = serde_json::from_value(reasons)
                .map_err(|e| StoreError::Data(format!("recall reasons: {e}")))?;
            report.channels.insert(
                r.get(0),
                RecallLine {
                    cancelled: i64::from(r.get::<_, i32>(1)),
                    recalled: i64::from(r.get::<_, i32>(2)),
                    not_recalled: i64::from(r.get::<_, i32>(3)),
                    reasons,
                },
            );
        }
        Ok(Some(report))
    }
}
