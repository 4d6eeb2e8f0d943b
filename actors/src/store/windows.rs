//! Receipt windows: the deliveries waiting for a receipt, by the time their channel's
//! window closes (`receipt_waits`: one row per channel per status write, written with the
//! changes that submitted them).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::domain::MessagePk;

/// Deliveries submitted on one channel in one status write, due together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub id: i64,
    pub channel: String,
    pub due_at: DateTime<Utc>,
    pub deliveries: Vec<(i64, MessagePk)>,
}

/// One channel's submissions in a status write: the latest due time, delivery ids and
/// their messages.
type ChannelWaits = (DateTime<Utc>, Vec<i64>, Vec<MessagePk>);

/// The waits a status write adds: per channel, the deliveries and the latest due time.
#[derive(Debug, Default)]
pub(super) struct NewWaits<'a> {
    by_channel: BTreeMap<&'a str, ChannelWaits>,
}

impl<'a> NewWaits<'a> {
    pub(super) fn add(&mut self, channel: &'a str, due: DateTime<Utc>, id: i64, msg: MessagePk) {
        let e = self
            .by_channel
            .entry(channel)
            .or_insert_with(|| (due, Vec::new(), Vec::new()));
        e.0 = e.0.max(due);
        e.1.push(id);
        e.2.push(msg);
    }

    pub(super) async fn write(
        self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), StoreError> {
        if self.by_channel.is_empty() {
            return Ok(());
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO receipt_waits (channel_code, due_at, delivery_ids, message_pks)
                 VALUES ($1, $2, $3, $4)",
            )
            .await?;
        for (channel, (due, ids, msgs)) in self.by_channel {
            tx.execute(&stmt, &[&channel, &due, &ids, &msgs]).await?;
        }
        Ok(())
    }
}

impl Store {
    /// Up to `limit` rows whose window closed by `now`, earliest first.
    pub async fn overdue_receipts(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Waiting>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, channel_code, due_at, delivery_ids, message_pks FROM receipt_waits
                 WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
            )
            .await?;
        let rows = client.query(&stmt, &[&now, &limit]).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let ids: Vec<i64> = r.get(3);
                let msgs: Vec<MessagePk> = r.get(4);
                Waiting {
                    id: r.get(0),
                    channel: r.get(1),
                    due_at: r.get(2),
                    deliveries: ids.into_iter().zip(msgs).collect(),
                }
            })
            .collect())
    }

    /// Forgets the waits that were dealt with.
    pub async fn forget_receipt_waits(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM receipt_waits WHERE id = ANY($1::int8[])")
            .await?;
        client.execute(&stmt, &[&ids]).await?;
        Ok(())
    }
}
