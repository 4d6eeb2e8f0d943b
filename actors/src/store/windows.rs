//! Receipt windows: the deliveries waiting for a receipt, by the time their channel's
//! window closes (`receipt_waits`, written with the status change that submitted them).

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::domain::MessagePk;

/// A delivery whose receipt window has closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    pub delivery_id: i64,
    pub message_pk: MessagePk,
    pub channel: String,
    pub due_at: DateTime<Utc>,
}

impl Store {
    /// Up to `limit` deliveries whose window closed by `now`, earliest first.
    pub async fn overdue_receipts(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Overdue>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT delivery_id, message_pk, channel_code, due_at FROM receipt_waits
                 WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
            )
            .await?;
        let rows = client.query(&stmt, &[&now, &limit]).await?;
        Ok(rows
            .into_iter()
            .map(|r| Overdue {
                delivery_id: r.get(0),
                message_pk: r.get(1),
                channel: r.get(2),
                due_at: r.get(3),
            })
            .collect())
    }

    /// Forgets the waits of deliveries whose window was dealt with (found by their due
    /// time, which the index holds).
    pub async fn forget_receipt_waits(&self, done: &[Overdue]) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = done.iter().map(|o| o.delivery_id).collect();
        let due: Vec<DateTime<Utc>> = done.iter().map(|o| o.due_at).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        super::by_key(&tx).await?;
        let stmt = tx
            .prepare_cached(
                "DELETE FROM receipt_waits w
                 USING unnest($1::int8[], $2::timestamptz[]) AS k(id, due)
                 WHERE w.due_at = k.due AND w.delivery_id = k.id",
            )
            .await?;
        tx.execute(&stmt, &[&ids, &due]).await?;
        tx.commit().await?;
        Ok(())
    }
}
