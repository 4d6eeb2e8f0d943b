//! Mobile-originated messages (replies from handsets) received on SMS channels.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Store, StoreError};

/// One stored MO message.
#[derive(Debug, Clone, Serialize)]
pub struct MoMessage {
    pub id: i64,
    pub channel: String,
    /// The handset that sent it.
    pub source: String,
    /// The number it was sent to (the access number plus any extension).
    pub destination: String,
    pub service_id: String,
    pub content: String,
    pub received_at: DateTime<Utc>,
}

impl Store {
    /// Stores an MO message once per (channel, gateway id) — a DELIVER the gateway sends
    /// again is not stored twice — and, in the same transaction, queues an `mo` event for
    /// the callback endpoints subscribed to it of every app granted the channel.
    pub async fn insert_mo(
        &self,
        channel: &str,
        source: &str,
        destination: &str,
        service_id: &str,
        content: &str,
        gateway_id: &str,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "INSERT INTO mo_messages (channel_code, source, destination, service_id,
                                          content, gateway_id)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (channel_code, gateway_id) DO NOTHING
                 RETURNING id, received_at",
                &[
                    &channel,
                    &source,
                    &destination,
                    &service_id,
                    &content,
                    &gateway_id,
                ],
            )
            .await?;
        if let Some(row) = row {
            let id: i64 = row.get(0);
            let at: DateTime<Utc> = row.get(1);
            let ts = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let body = serde_json::json!({
                "type": "mo",
                "timestamp": ts,
                "data": {
                    "id": id.to_string(), "channel": channel, "from": source,
                    "to": destination, "service_id": service_id, "text": content,
                    "received_at": ts,
                },
            })
            .to_string();
            tx.execute(
                "INSERT INTO callback_outbox (app_id, url, event_id, body)
                 SELECT e.app_id, e.url, $2, $3 FROM callback_endpoints e
                 JOIN grants g ON g.app_id = e.app_id AND g.channel_code = $1
                 WHERE 'mo' = ANY(e.events)",
                &[&channel, &format!("mo_{id}"), &body],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// MO messages on `channels` with ids above `after`, oldest first.
    pub async fn list_mo(
        &self,
        channels: &[String],
        after: i64,
        limit: i64,
    ) -> Result<Vec<MoMessage>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, channel_code, source, destination, service_id, content, received_at
                 FROM mo_messages WHERE channel_code = ANY($1) AND id > $2
                 ORDER BY id LIMIT $3",
                &[&channels, &after, &limit],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| MoMessage {
                id: r.get(0),
                channel: r.get(1),
                source: r.get(2),
                destination: r.get(3),
                service_id: r.get(4),
                content: r.get(5),
                received_at: r.get(6),
            })
            .collect())
    }
}
