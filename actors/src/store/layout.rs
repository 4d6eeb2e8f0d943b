//! The rows an accepted message is stored as, written by binary `COPY`: the one place
//! that knows their columns and types. The ingest's group commit writes through it, and
//! so does the load-test harness when it measures what PostgreSQL alone absorbs, so the
//! two cannot drift apart.

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::Statement;

use crate::domain::{MessagePk, MessageStatus, Priority};

/// Idempotency keys: written first, so that a key a concurrent commit took fails the
/// transaction (unique violation on `message_keys_pkey`) before anything else is sent.
pub const COPY_KEYS: &str = "COPY message_keys (app_id, message_id, id, body_hash, status, \
     created_at) FROM STDIN (FORMAT binary)";
const KEY_TYPES: &[Type] = &[
    Type::INT4,
    Type::TEXT,
    Type::INT8,
    Type::BYTEA,
    Type::INT2,
    Type::TIMESTAMPTZ,
];

pub const COPY_MESSAGES: &str = "COPY messages (id, app_id, message_id, priority, status, \
     send_at, expires_at, channels, request, strategy, created_at) FROM STDIN (FORMAT binary)";
const MESSAGE_TYPES: &[Type] = &[
    Type::INT8,
    Type::INT4,
    Type::TEXT,
    Type::INT2,
    Type::INT2,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::TEXT_ARRAY,
    Type::JSON,
    Type::JSON,
    Type::TIMESTAMPTZ,
];

/// The planner's work queue.
pub const COPY_QUEUE: &str = "COPY message_queue (id, priority, not_before, node_id, app_id) \
     FROM STDIN (FORMAT binary)";
const QUEUE_TYPES: &[Type] = &[
    Type::INT8,
    Type::INT2,
    Type::TIMESTAMPTZ,
    Type::INT4,
    Type::INT4,
];

/// Scheduled messages, until their time (the scheduler moves them to the queue).
pub const COPY_SCHEDULE: &str = "COPY message_schedule (id, app_id, priority, due_at, node_id) \
     FROM STDIN (FORMAT binary)";
const SCHEDULE_TYPES: &[Type] = &[
    Type::INT8,
    Type::INT4,
    Type::INT2,
    Type::TIMESTAMPTZ,
    Type::INT4,
];

/// The name of the idempotency keys' primary key, as a unique violation names it.
pub const KEYS_PKEY: &str = "message_keys_pkey";

/// One accepted message, as its rows hold it.
#[derive(Debug, Clone, Copy)]
pub struct MessageRows<'a> {
    pub id: MessagePk,
    pub app_id: i32,
    /// The caller's `message_id`: with one, a `message_keys` row is written too.
    pub message_id: Option<&'a str>,
    pub priority: Priority,
    pub status: MessageStatus,
    pub send_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub channels: &'a [String],
    /// The canonical request JSON.
    pub request_json: &'a str,
    /// The steps of its strategy as accepted (JSON), for a message sent with one.
    pub strategy: Option<&'a str>,
    pub body_hash: &'a [u8],
    /// When the planner may take it (its `send_at`, or at once). A `Scheduled` message
    /// waits in `message_schedule` until then instead of in the planner's queue.
    pub not_before: DateTime<Utc>,
    /// The node that accepted it.
    pub node_id: i32,
    /// Its day partition: the time its id encodes.
    pub created_at: DateTime<Utc>,
}

/// The `COPY` statements, prepared on the connection that runs them.
pub struct CopyStatements {
    pub keys: Statement,
    pub messages: Statement,
    pub queue: Statement,
    pub schedule: Statement,
}

impl CopyStatements {
    /// Prepares them on a plain connection.
    pub async fn prepare(client: &tokio_postgres::Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            keys: client.prepare(COPY_KEYS).await?,
            messages: client.prepare(COPY_MESSAGES).await?,
            queue: client.prepare(COPY_QUEUE).await?,
            schedule: client.prepare(COPY_SCHEDULE).await?,
        })
    }

    /// Prepares them on a pooled connection, once per connection.
    pub async fn prepare_cached(
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            keys: tx.prepare_cached(COPY_KEYS).await?,
            messages: tx.prepare_cached(COPY_MESSAGES).await?,
            queue: tx.prepare_cached(COPY_QUEUE).await?,
            schedule: tx.prepare_cached(COPY_SCHEDULE).await?,
        })
    }
}

/// Writes the rows of `messages` in `tx`: keys, messages, then the planner's queue (or
/// the schedule, for scheduled messages), one `COPY` each.
pub async fn copy_messages(
    tx: &tokio_postgres::Transaction<'_>,
    stmts: &CopyStatements,
    messages: &[MessageRows<'_>],
) -> Result<(), tokio_postgres::Error> {
    if messages.iter().any(|m| m.message_id.is_some()) {
        let writer = BinaryCopyInWriter::new(tx.copy_in(&stmts.keys).await?, KEY_TYPES);
        pin_mut!(writer);
        for m in messages {
            if let Some(key) = m.message_id {
                writer
                    .as_mut()
                    .write(&[
                        &m.app_id,
                        &key,
                        &m.id,
                        &m.body_hash,
                        &m.status.as_i16(),
                        &m.created_at,
                    ])
                    .await?;
            }
        }
        writer.finish().await?;
    }

    let writer = BinaryCopyInWriter::new(tx.copy_in(&stmts.messages).await?, MESSAGE_TYPES);
    pin_mut!(writer);
    for m in messages {
        writer
            .as_mut()
            .write(&[
                &m.id,
                &m.app_id,
                &m.message_id,
                &m.priority.as_i16(),
                &m.status.as_i16(),
                &m.send_at,
                &m.expires_at,
                &m.channels,
                &JsonText(m.request_json),
                &m.strategy.map(JsonText),
                &m.created_at,
            ])
            .await?;
    }
    writer.finish().await?;

    let scheduled = |m: &&MessageRows<'_>| m.status == MessageStatus::Scheduled;
    if messages.iter().any(|m| !scheduled(&m)) {
        let writer = BinaryCopyInWriter::new(tx.copy_in(&stmts.queue).await?, QUEUE_TYPES);
        pin_mut!(writer);
        for m in messages.iter().filter(|m| !scheduled(m)) {
            writer
                .as_mut()
                .write(&[
                    &m.id,
                    &m.priority.as_i16(),
                    &m.not_before,
                    &m.node_id,
                    &m.app_id,
                ])
                .await?;
        }
        writer.finish().await?;
    }
    if messages.iter().any(|m| scheduled(&m)) {
        let writer = BinaryCopyInWriter::new(tx.copy_in(&stmts.schedule).await?, SCHEDULE_TYPES);
        pin_mut!(writer);
        for m in messages.iter().filter(scheduled) {
            writer
                .as_mut()
                .write(&[
                    &m.id,
                    &m.app_id,
                    &m.priority.as_i16(),
                    &m.not_before,
                    &m.node_id,
                ])
                .await?;
        }
        writer.finish().await?;
    }
    Ok(())
}

/// JSON text for a `json` column in binary COPY: the text itself.
#[derive(Debug)]
pub struct JsonText<'a>(pub &'a str);

impl ToSql for JsonText<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_is_written_as_is() {
        let mut buf = BytesMut::new();
        assert!(JsonText::accepts(&Type::JSON));
        assert!(!JsonText::accepts(&Type::JSONB));
        assert!(JsonText(r#"{"a":1}"#).to_sql(&Type::JSON, &mut buf).is_ok());
        assert_eq!(&buf[..], b"{\"a\":1}");
    }
}
