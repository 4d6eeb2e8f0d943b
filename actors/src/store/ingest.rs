//! The ingest's group commit: many accepted requests stored in one transaction —
//! idempotency keys, messages and the planner's queue rows, each by binary COPY.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;

use super::layout::{copy_messages, CopyStatements, MessageRows, KEYS_PKEY};
use super::{Store, StoreError};
use crate::domain::send::NewMessage;
use crate::domain::{IdempotencyKey, MessagePk, MessageStatus};

/// A validated message with the id the ingest gave it.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub id: MessagePk,
    pub message: NewMessage,
}

/// One caller's request inside a group commit: a single send or a whole batch, which is
/// stored all or nothing.
#[derive(Debug)]
pub struct GroupRequest {
    pub app_id: i32,
    pub messages: Vec<Assigned>,
}

/// How one message of a stored request was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: MessagePk,
    pub message_id: Option<IdempotencyKey>,
    pub status: MessageStatus,
    /// True when the message was already stored under the same key with the same body.
    pub replay: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestResult {
    Stored(Vec<Accepted>),
    /// The message at this index reuses a `message_id` with a different body.
    Conflict(usize),
}

#[derive(Debug, Clone)]
struct KnownKey {
    id: MessagePk,
    hash: Vec<u8>,
    status: MessageStatus,
}

#[derive(Debug, Clone)]
enum Decision {
    New,
    Replay(MessagePk, MessageStatus),
    Conflict,
}

const SELECT_KEYS: &str =
    "SELECT k.app_id, k.message_id, k.id, k.body_hash, k.status FROM message_keys k
     JOIN UNNEST($1::int4[], $2::text[]) AS q(app_id, message_id)
       ON k.app_id = q.app_id AND k.message_id = q.message_id";

/// How often a group is retried when concurrent commits race on the same keys.
const MAX_ATTEMPTS: usize = 4;

impl Store {
    /// Stores a group of requests in one transaction: idempotency keys, messages and their
    /// work-queue rows, each table written with one binary COPY. A request whose
    /// message reuses a key with a different body is answered `Conflict` and nothing of it
    /// is stored; a replay (same key, same body) is answered with the first answer.
    pub async fn commit_group(
        &self,
        requests: &[GroupRequest],
        node_id: i32,
    ) -> Result<Vec<RequestResult>, StoreError> {
        let mut known: HashMap<(i32, String), KnownKey> = HashMap::new();
        let mut client = self.client().await?;
        for _ in 0..MAX_ATTEMPTS {
            let (decisions, failed) = plan(requests, &known);

            // Rows to write: the New messages of requests that did not fail.
            let mut rows = Vec::new();
            for (ri, req) in requests.iter().enumerate() {
                if failed[ri].is_some() {
                    continue;
                }
                for (a, d) in req.messages.iter().zip(&decisions[ri]) {
                    if matches!(d, Decision::New) {
                        rows.push(Row {
                            app_id: req.app_id,
                            a,
                            created_at: a.id.created_at(),
                        });
                    }
                }
            }
            let Some((first_app, first)) = rows.first().map(|r| (r.app_id, r.a.id)) else {
                // Only replays: nothing to write.
                return Ok(answers(requests, &decisions, &failed));
            };
            match write_group(&mut client, &rows, node_id).await {
                Ok(()) => return Ok(answers(requests, &decisions, &failed)),
                Err(e) if is_key_taken(&e) => {
                    metrics::counter!(crate::metrics::INGEST_KEY_RACES_TOTAL).increment(1);
                    // Someone committed one of these keys since we looked: learn what is
                    // stored and decide again.
                    let (apps, keys): (Vec<i32>, Vec<&str>) = rows
                        .iter()
                        .filter_map(|r| Some((r.app_id, r.a.message.message_id.as_ref()?.as_str())))
                        .unzip();
                    let stmt = client.prepare_cached(SELECT_KEYS).await?;
                    for row in client.query(&stmt, &[&apps, &keys]).await? {
                        let status: i16 = row.get(4);
                        known.insert(
                            (row.get(0), row.get(1)),
                            KnownKey {
                                id: row.get(2),
                                hash: row.get(3),
                                status: MessageStatus::from_i16(status)
                                    .unwrap_or(MessageStatus::Accepted),
                            },
                        );
                    }
                }
                Err(e) if e.code().is_some() => return Err(e.into()),
                Err(e) => {
                    // The connection broke: the transaction may or may not have committed.
                    // Ask on another connection before answering either way.
                    drop(client);
                    if !matches!(self.message_exists(first_app, first).await, Ok(true)) {
                        return Err(e.into());
                    }
                    tracing::warn!(error = %e, "the connection broke after the group was stored");
                    return Ok(answers(requests, &decisions, &failed));
                }
            }
        }
        Err(StoreError::Data(
            "idempotency keys kept changing under concurrent commits".into(),
        ))
    }

    /// True when a message with this id is stored.
    pub async fn message_exists(&self, app_id: i32, id: MessagePk) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM messages WHERE app_id = $1 AND id = $2 AND created_at = $3",
                &[&app_id, &id, &id.created_at()],
            )
            .await?;
        Ok(row.is_some())
    }
}

/// The answers for a stored group.
fn answers(
    requests: &[GroupRequest],
    decisions: &[Vec<Decision>],
    failed: &[Option<usize>],
) -> Vec<RequestResult> {
    requests
        .iter()
        .enumerate()
        .map(|(ri, req)| match failed[ri] {
            Some(mi) => RequestResult::Conflict(mi),
            None => RequestResult::Stored(
                req.messages
                    .iter()
                    .zip(&decisions[ri])
                    .map(|(a, d)| match d {
                        Decision::Replay(id, status) => Accepted {
                            id: *id,
                            message_id: a.message.message_id.clone(),
                            status: *status,
                            replay: true,
                        },
                        _ => Accepted {
                            id: a.id,
                            message_id: a.message.message_id.clone(),
                            status: a.message.status,
                            replay: false,
                        },
                    })
                    .collect(),
            ),
        })
        .collect()
}

/// Decides every message of the group: new, replay of a stored or earlier message, or
/// conflict; a request with any conflict fails as a whole. Returns the decisions and, per
/// request, the index of its first conflicting message.
fn plan(
    requests: &[GroupRequest],
    known: &HashMap<(i32, String), KnownKey>,
) -> (Vec<Vec<Decision>>, Vec<Option<usize>>) {
    let mut failed: Vec<Option<usize>> = vec![None; requests.len()];
    loop {
        // key → (id, hash, status) of the first new message using it in this group
        let mut leaders: HashMap<(i32, &str), (MessagePk, &[u8; 32], MessageStatus)> =
            HashMap::new();
        let mut decisions = Vec::with_capacity(requests.len());
        let mut newly_failed = false;
        for (ri, req) in requests.iter().enumerate() {
            let mut ds = Vec::with_capacity(req.messages.len());
            for a in &req.messages {
                let d = match &a.message.message_id {
                    None => Decision::New,
                    Some(key) => {
                        if let Some(k) = known.get(&(req.app_id, key.as_str().to_owned())) {
                            if k.hash.as_slice() == a.message.body_hash.as_slice() {
                                Decision::Replay(k.id, k.status)
                            } else {
                                Decision::Conflict
                            }
                        } else if let Some((id, hash, status)) =
                            leaders.get(&(req.app_id, key.as_str()))
                        {
                            if **hash == a.message.body_hash {
                                Decision::Replay(*id, *status)
                            } else {
                                Decision::Conflict
                            }
                        } else {
                            Decision::New
                        }
                    }
                };
                ds.push(d);
            }
            if failed[ri].is_none() {
                if let Some(mi) = ds.iter().position(|d| matches!(d, Decision::Conflict)) {
                    failed[ri] = Some(mi);
                    newly_failed = true;
                }
            }
            if failed[ri].is_none() {
                for (a, d) in req.messages.iter().zip(&ds) {
                    if let (Decision::New, Some(key)) = (d, &a.message.message_id) {
                        leaders.insert(
                            (req.app_id, key.as_str()),
                            (a.id, &a.message.body_hash, a.message.status),
                        );
                    }
                }
            }
            decisions.push(ds);
        }
        // A failed request may have led a key that a later request followed: decide again
        // without it. Ends because `failed` only grows.
        if !newly_failed {
            return (decisions, failed);
        }
    }
}

/// One message to write, with what the COPY rows need.
struct Row<'a> {
    app_id: i32,
    a: &'a Assigned,
    created_at: DateTime<Utc>,
}

/// True for the unique violation a concurrent commit of the same key causes.
fn is_key_taken(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(KEYS_PKEY)
    })
}

/// Writes a group's messages in one transaction.
async fn write_group(
    client: &mut deadpool_postgres::Object,
    rows: &[Row<'_>],
    node_id: i32,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let messages: Vec<MessageRows<'_>> = rows
        .iter()
        .map(|r| {
            let m = &r.a.message;
            MessageRows {
                id: r.a.id,
                app_id: r.app_id,
                message_id: m.message_id.as_ref().map(|k| k.as_str()),
                priority: m.priority,
                status: m.status,
                send_at: m.send_at,
                expires_at: m.expires_at,
                channels: &m.channels,
                request_json: &m.request_json,
                strategy: m.strategy.as_deref(),
                body_hash: &m.body_hash,
                not_before: m.send_at.map_or(r.created_at, |t| t.max(r.created_at)),
                node_id,
                created_at: r.created_at,
            }
        })
        .collect();
    let stmts = CopyStatements::prepare_cached(&tx).await?;
    copy_messages(&tx, &stmts, &messages).await?;
    tx.commit().await
}
