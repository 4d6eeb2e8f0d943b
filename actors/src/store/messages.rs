//! Messages: the group commit that makes accepted sends durable, and reading them back.

use std::collections::{BTreeMap, HashMap};

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use super::{Store, StoreError};
use crate::domain::ids::{id_time, parse_message_id};
use crate::domain::send::NewMessage;
use crate::domain::{DeliveryState, MessageStatus, Priority};

/// A validated message with the id the ingest gave it.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub id: i64,
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
    pub id: i64,
    pub message_id: Option<String>,
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
    id: i64,
    hash: Vec<u8>,
    status: MessageStatus,
}

#[derive(Debug, Clone)]
enum Decision {
    New,
    Replay(i64, MessageStatus),
    Conflict,
}

// The group is written with binary COPY, the cheapest way into PostgreSQL, inside one
// transaction: keys first, so that a key taken by a concurrent commit fails the COPY
// (unique violation) before anything else is sent.
const COPY_KEYS: &str = "COPY message_keys (app_id, message_id, id, body_hash, status, created_at)
     FROM STDIN (FORMAT binary)";
const COPY_MESSAGES: &str =
    "COPY messages (id, app_id, message_id, priority, status, send_at, expires_at,
                           channels, request, created_at) FROM STDIN (FORMAT binary)";
const COPY_QUEUE: &str =
    "COPY message_queue (id, priority, not_before, node_id, app_id) FROM STDIN (FORMAT binary)";
const KEYS_PKEY: &str = "message_keys_pkey";

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
                            created_at: id_time(a.id),
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
                        .filter_map(|r| Some((r.app_id, r.a.message.message_id.as_deref()?)))
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
    pub async fn message_exists(&self, app_id: i32, id: i64) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM messages WHERE app_id = $1 AND id = $2 AND created_at = $3",
                &[&app_id, &id, &id_time(id)],
            )
            .await?;
        Ok(row.is_some())
    }

    /// Looks a message up by umsd's id or by the caller's `message_id`, within one app.
    pub async fn find_message(
        &self,
        app_id: i32,
        ident: &str,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let client = self.client().await?;
        if let Some(id) = parse_message_id(ident) {
            if let Some(found) = read_message(&client, app_id, id).await? {
                return Ok(Some(found));
            }
        }
        let row = client
            .query_opt(
                "SELECT id FROM message_keys WHERE app_id = $1 AND message_id = $2",
                &[&app_id, &ident],
            )
            .await?;
        match row {
            Some(row) => read_message(&client, app_id, row.get(0)).await,
            None => Ok(None),
        }
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
        let mut leaders: HashMap<(i32, &str), (i64, &[u8; 32], MessageStatus)> = HashMap::new();
        let mut decisions = Vec::with_capacity(requests.len());
        let mut newly_failed = false;
        for (ri, req) in requests.iter().enumerate() {
            let mut ds = Vec::with_capacity(req.messages.len());
            for a in &req.messages {
                let d = match &a.message.message_id {
                    None => Decision::New,
                    Some(key) => {
                        if let Some(k) = known.get(&(req.app_id, key.clone())) {
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

/// JSON text for a `json` column in binary COPY: the text itself.
#[derive(Debug)]
struct JsonText<'a>(&'a str);

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

/// True for the unique violation a concurrent commit of the same key causes.
fn is_key_taken(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(KEYS_PKEY)
    })
}

/// One transaction: COPY keys, COPY messages, COPY queue rows, COMMIT.
async fn write_group(
    client: &mut deadpool_postgres::Object,
    rows: &[Row<'_>],
    node_id: i32,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    if rows.iter().any(|r| r.a.message.message_id.is_some()) {
        let stmt = tx.prepare_cached(COPY_KEYS).await?;
        let writer = BinaryCopyInWriter::new(
            tx.copy_in(&stmt).await?,
            &[
                Type::INT4,
                Type::TEXT,
                Type::INT8,
                Type::BYTEA,
                Type::INT2,
                Type::TIMESTAMPTZ,
            ],
        );
        pin_mut!(writer);
        for r in rows {
            let m = &r.a.message;
            if let Some(key) = &m.message_id {
                writer
                    .as_mut()
                    .write(&[
                        &r.app_id,
                        key,
                        &r.a.id,
                        &m.body_hash.as_slice(),
                        &m.status.as_i16(),
                        &r.created_at,
                    ])
                    .await?;
            }
        }
        writer.finish().await?;
    }

    let stmt = tx.prepare_cached(COPY_MESSAGES).await?;
    let writer = BinaryCopyInWriter::new(
        tx.copy_in(&stmt).await?,
        &[
            Type::INT8,
            Type::INT4,
            Type::TEXT,
            Type::INT2,
            Type::INT2,
            Type::TIMESTAMPTZ,
            Type::TIMESTAMPTZ,
            Type::TEXT_ARRAY,
            Type::JSON,
            Type::TIMESTAMPTZ,
        ],
    );
    pin_mut!(writer);
    for r in rows {
        let m = &r.a.message;
        writer
            .as_mut()
            .write(&[
                &r.a.id,
                &r.app_id,
                &m.message_id,
                &m.priority.as_i16(),
                &m.status.as_i16(),
                &m.send_at,
                &m.expires_at,
                &m.channels,
                &JsonText(&m.request_json),
                &r.created_at,
            ])
            .await?;
    }
    writer.finish().await?;

    let stmt = tx.prepare_cached(COPY_QUEUE).await?;
    let writer = BinaryCopyInWriter::new(
        tx.copy_in(&stmt).await?,
        &[
            Type::INT8,
            Type::INT2,
            Type::TIMESTAMPTZ,
            Type::INT4,
            Type::INT4,
        ],
    );
    pin_mut!(writer);
    for r in rows {
        let m = &r.a.message;
        let not_before = m.send_at.map_or(r.created_at, |t| t.max(r.created_at));
        writer
            .as_mut()
            .write(&[
                &r.a.id,
                &m.priority.as_i16(),
                &not_before,
                &node_id,
                &r.app_id,
            ])
            .await?;
    }
    writer.finish().await?;
    tx.commit().await
}

/// A stored message with its funnel.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub id: i64,
    pub message_id: Option<String>,
    pub status: MessageStatus,
    pub priority: Priority,
    pub channels: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub funnel_users: FunnelCounts,
    pub funnel_channels: BTreeMap<String, FunnelCounts>,
    pub losses: Vec<Loss>,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    pub stage: String,
    pub channel: String,
    pub reason: String,
    pub count: i64,
}

async fn read_message(
    client: &tokio_postgres::Client,
    app_id: i32,
    id: i64,
) -> Result<Option<MessageRecord>, StoreError> {
    let created_at = id_time(id);
    // created_at is derived from the id, so the lookup touches one partition.
    let Some(row) = client
        .query_opt(
            "SELECT message_id, status, priority, channels FROM messages
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
            "SELECT channel_code, state, coalesce(code, reason), count(*) FROM deliveries
             WHERE message_pk = $1 AND created_at >= $2
             GROUP BY 1, 2, 3",
            &[&id, &created_at],
        )
        .await?;
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
        let f = funnel_channels.entry(code.clone()).or_default();
        f.planned += n;
        if let Some(s) = state {
            let stage = match s {
                DeliveryState::Filtered => Some("planned_to_effective"),
                DeliveryState::Failed => Some("effective_to_sent"),
                DeliveryState::Undelivered => Some("sent_to_delivered"),
                _ => None,
            };
            if let Some(stage) = stage {
                let reason = reason.unwrap_or_else(|| "unknown".into());
                *losses.entry((stage, code.clone(), reason)).or_default() += n;
            }
            if s.is_effective() {
                f.effective += n;
            }
            if s.is_sent() {
                f.sent += n;
            }
            if s.is_delivered() {
                f.delivered += n;
            }
            if s == DeliveryState::Clicked {
                f.clicked += n;
            }
            if s.is_failed() {
                f.failed += n;
            }
            if matches!(
                s,
                DeliveryState::Planned | DeliveryState::Queued | DeliveryState::Submitted
            ) {
                pending += n;
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
    if status == MessageStatus::Dispatching && pending == 0 {
        // Every delivery is final; done once planning has finished too.
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
                    count(DISTINCT coalesce(user_id, address)) FILTER (WHERE state = ANY($4)),
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
            ],
        )
        .await?;
    Ok(Some(MessageRecord {
        id,
        message_id: row.get(0),
        status,
        priority: Priority::from_i16(priority)
            .ok_or_else(|| StoreError::Data(format!("message {id} has priority {priority}")))?,
        channels,
        created_at,
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
    }))
}
