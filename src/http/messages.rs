//! `/v1/messages`: send one, send a batch (all or nothing), read one back; and the
//! benchmark-only null route that validates like a send and stores nothing.
//!
//! The handlers are thin: authenticate, parse, validate, hand to the ingest with
//! `try_send` (a full mailbox is a 503, never an unbounded queue), await the commit, answer.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use umsd_actors::directory::AppChannels;
use umsd_actors::domain::send::{
    serde_field_error, FieldError, NewMessage, Reference, SendClock, SendRequest,
};
use umsd_actors::domain::strategy::bind::bind;
use umsd_actors::ingest::{IngestError, Submit};
use umsd_actors::store::history::MessageRecord;
use umsd_actors::store::ingest::{Accepted, RequestResult};

use super::auth::{self, AuthedApp};
use super::error::ApiError;
use super::AppState;

/// Request bodies above this are refused with 413 (`API.md`).
pub const MAX_BODY_BYTES: usize = 1 << 20;
pub const MAX_BATCH: usize = 100;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/messages", web::post().to(send))
        .route("/v1/messages/batch", web::post().to(send_batch))
        .route("/v1/messages/{id}", web::get().to(get_message))
        .route(
            "/v1/messages/{id}/deliveries",
            web::get().to(get_deliveries),
        );
}

pub fn bench_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/bench/messages", web::post().to(bench_send));
}

/// Reads the body up to [`MAX_BODY_BYTES`]; more is a 413 without reading the rest.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(MAX_BODY_BYTES));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::InvalidJson(format!("cannot read the body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// JSON → `T`: syntax errors are 400 `invalid_json`; wrong types, unknown or missing fields
/// are 422 naming the field.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // A type error can be met before a syntax error further on: only a body that is
        // valid JSON gets a field error.
        let well_formed = serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
        match inner.classify() {
            serde_json::error::Category::Data if well_formed => {
                ApiError::Field(serde_field_error("", &path, &inner.to_string()))
            }
            _ => ApiError::InvalidJson(format!("the body is not valid JSON: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::InvalidJson(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// A batch body's list must hold 1..=`max` entries; `field` names the list.
pub fn check_batch_len(len: usize, max: usize, field: &str) -> Result<(), FieldError> {
    if (1..=max).contains(&len) {
        Ok(())
    } else {
        Err(FieldError::new(
            "invalid_value",
            field,
            format!("a batch holds 1-{max} {field}"),
        ))
    }
}

/// Validates a send for `app` against the clock (scheduling reaches as far as the history
/// kept).
pub fn validate(
    state: &AppState,
    app: &AuthedApp,
    request: SendRequest,
) -> Result<NewMessage, FieldError> {
    let entry = app
        .entry()
        .map_err(|_| FieldError::new("unauthorized", "", "the app disappeared while validating"))?;
    let lookup = AppChannels {
        snapshot: &app.snapshot,
        app: entry,
    };
    request.validate(
        &lookup,
        SendClock::with_retention(Utc::now(), state.retention_days),
    )
}

pub async fn check_references(
    state: &AppState,
    app_id: i32,
    messages: &mut [NewMessage],
    prefix: impl Fn(usize) -> Option<String>,
) -> Result<(), ApiError> {
    for (i, m) in messages.iter_mut().enumerate() {
        let err = match state.store.first_missing_reference(app_id, &m.refs).await? {
            Some(missing) => Some(missing.missing()),
            None => match m.refs.iter().find_map(|r| match r {
                Reference::Strategy(id) => Some(id.clone()),
                _ => None,
            }) {
                Some(id) => bind_strategy(state, app_id, &id, m).await?.err(),
                None => None,
            },
        };
        if let Some(err) = err {
            return Err(match prefix(i) {
                Some(p) => err.prefixed(&p),
                None => err,
            }
            .into());
        }
    }
    Ok(())
}

/// Binds a send to strategy `id`: the message keeps the strategy's steps as they are now
/// and is planned on the first step's channel. Refused while a channel of the strategy is
/// switched off or no longer granted (the strategy is unusable until it is on again).
async fn bind_strategy(
    state: &AppState,
    app_id: i32,
    id: &str,
    message: &mut NewMessage,
) -> Result<Result<(), FieldError>, ApiError> {
    let snapshot = state.directory.snapshot();
    let record = state.store.get_strategy(app_id, id).await?;
    let app = snapshot.apps.values().find(|a| a.id == app_id);
    let (Some(record), Some(app)) = (record, app) else {
        return Ok(Err(Reference::Strategy(id.to_owned()).missing()));
    };
    let lookup = AppChannels {
        snapshot: &snapshot,
        app,
    };
    let types = match record.spec.check(&lookup) {
        Ok(types) => types,
        Err(e) => {
            return Ok(Err(FieldError::new(
                "strategy_unusable",
                "strategy",
                format!(
                    "strategy `{id}` cannot be used now ({}: {})",
                    e.field, e.message
                ),
            )))
        }
    };
    let request: SendRequest = serde_json::from_str(&message.request_json).map_err(|e| {
        ApiError::Internal(format!("a validated request does not parse: {e}").into())
    })?;
    Ok(
        bind(&record.spec, &types, &request, &message.channels).map(|bound| {
            message.channels = bound.channels;
            message.strategy = Some(bound.steps_json);
        }),
    )
}

async fn submit(
    state: &AppState,
    app: &AuthedApp,
    messages: Vec<NewMessage>,
) -> Result<RequestResult, ApiError> {
    let entry = app.entry()?;
    let (tx, rx) = oneshot::channel();
    state
        .ingest
        .try_send(Submit {
            app_id: entry.id,
            app_key: Arc::from(entry.key.as_str()),
            messages,
            reply: tx,
        })
        .map_err(|e| match e {
            actix::prelude::SendError::Full(_) => ApiError::QueueFull,
            actix::prelude::SendError::Closed(_) => {
                ApiError::Unavailable("the ingest is not running".into())
            }
        })?;
    match rx.await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(IngestError::Overloaded)) => Err(ApiError::QueueFull),
        Ok(Err(IngestError::Behind {
            behind,
            retry_after,
        })) => Err(ApiError::Behind {
            code: "planning_behind",
            message: behind.to_string(),
            retry_after: retry_after.as_secs().max(1),
        }),
        Ok(Err(e @ IngestError::DispatchBehind { retry_after, .. })) => Err(ApiError::Behind {
            code: "dispatch_behind",
            message: e.to_string(),
            retry_after: retry_after.as_secs().max(1),
        }),
        Ok(Err(e @ (IngestError::Unavailable(_) | IngestError::Restarted))) => {
            Err(ApiError::Unavailable(Box::new(e)))
        }
        Err(_) => Err(ApiError::Unavailable(
            "the ingest stopped before answering".into(),
        )),
    }
}

fn accepted_json(a: &Accepted) -> Value {
    json!({
        "id": a.id.to_string(),
        "message_id": a.message_id,
        "status": a.status.as_str(),
    })
}

/// What the send route and the benchmark null route share: authenticate, read, parse,
/// validate.
async fn accept_one(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(AuthedApp, NewMessage), ApiError> {
    let app = auth::app(req, state)?;
    let body = read_body(req, payload).await?;
    let request: SendRequest = parse_json(&body)?;
    let message = validate(state, &app, request)?;
    Ok((app, message))
}

async fn send(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (app, mut message) = accept_one(&req, payload, &state).await?;
    let app_id = app.entry()?.id;
    check_references(&state, app_id, std::slice::from_mut(&mut message), |_| None).await?;
    let key = message.message_id.clone();
    match submit(&state, &app, vec![message]).await? {
        RequestResult::Conflict(_) => Err(ApiError::Conflict {
            key: key.map(|k| k.to_string()).unwrap_or_default(),
            field: "message_id".into(),
        }),
        RequestResult::Stored(list) => {
            let a = list
                .first()
                .ok_or_else(|| ApiError::Internal("the ingest answered nothing".into()))?;
            let status = if a.replay {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok(HttpResponse::build(status).json(accepted_json(a)))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    messages: Vec<SendRequest>,
}

async fn send_batch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let body = read_body(&req, payload).await?;
    let batch: BatchRequest = parse_json(&body)?;
    check_batch_len(batch.messages.len(), MAX_BATCH, "messages")?;
    let mut messages = Vec::with_capacity(batch.messages.len());
    for (i, m) in batch.messages.into_iter().enumerate() {
        messages
            .push(validate(&state, &app, m).map_err(|e| e.prefixed(&format!("messages[{i}]")))?);
    }
    // The same key twice in one batch with different bodies can never be stored whole.
    for (i, m) in messages.iter().enumerate() {
        if let Some(key) = &m.message_id {
            if let Some(j) = messages[..i]
                .iter()
                .position(|o| o.message_id.as_ref() == Some(key))
            {
                if messages[j].body_hash != m.body_hash {
                    return Err(ApiError::Conflict {
                        key: key.to_string(),
                        field: format!("messages[{i}].message_id"),
                    });
                }
            }
        }
    }
    let app_id = app.entry()?.id;
    check_references(&state, app_id, &mut messages, |i| {
        Some(format!("messages[{i}]"))
    })
    .await?;
    let keys: Vec<Option<String>> = messages
        .iter()
        .map(|m| m.message_id.as_ref().map(|k| k.to_string()))
        .collect();
    match submit(&state, &app, messages).await? {
        RequestResult::Conflict(i) => Err(ApiError::Conflict {
            key: keys.get(i).cloned().flatten().unwrap_or_default(),
            field: format!("messages[{i}].message_id"),
        }),
        RequestResult::Stored(list) => {
            let status = if list.iter().all(|a| a.replay) {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            let results: Vec<Value> = list.iter().map(accepted_json).collect();
            Ok(HttpResponse::build(status).json(json!({ "results": results })))
        }
    }
}

async fn get_message(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let app_id = app.entry()?.id;
    let ident = path.into_inner();
    super::recall::answer(&state, app_id, &ident).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryQuery {
    user_id: Option<String>,
    channel: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/messages/{id}/deliveries`: each delivery with every state change, in delivery
/// id order, a page at a time (`cursor` = the previous page's `next_cursor`).
async fn get_deliveries(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<DeliveryQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let app_id = app.entry()?.id;
    let ident = path.into_inner();
    let q = query.into_inner();
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(FieldError::new("invalid_value", "limit", "must be 1-1000").into());
    }
    let cursor = match &q.cursor {
        None => 0,
        Some(c) => c.parse::<i64>().map_err(|_| {
            FieldError::new("invalid_value", "cursor", "not a cursor from this API")
        })?,
    };
    let record = state
        .store
        .find_message(app_id, &ident)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no message `{ident}`")))?;
    let list = state
        .store
        .list_deliveries(
            record.id,
            q.user_id.as_deref(),
            q.channel.as_deref(),
            cursor,
            limit,
        )
        .await?;
    let ts = |t: &chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let next = (list.len() as i64 == limit)
        .then(|| list.last().map(|d| d.id.to_string()))
        .flatten();
    let items: Vec<Value> = list
        .iter()
        .map(|d| {
            let events: Vec<Value> = d
                .events
                .iter()
                .map(|e| {
                    json!({"state": e.state.as_str(), "at": ts(&e.at), "provider_id": e.provider_id,
                           "code": e.code, "reason": e.reason})
                })
                .collect();
            let mut v = json!({
                "id": d.id.to_string(), "channel": d.channel_code, "user_id": d.user_id,
                "address": d.address, "state": d.state.as_str(), "attempts": d.attempts,
                "provider_id": d.provider_id, "code": d.code, "reason": d.reason,
                "created_at": ts(&d.created_at), "updated_at": ts(&d.updated_at),
                "events": events,
            });
            if let (Some(step), Some(report)) = (d.step, &record.strategy) {
                let steps: Vec<_> = report.steps.iter().map(|s| s.spec.clone()).collect();
                let because = match steps
                    .get((step as usize).wrapping_sub(1))
                    .and_then(|s| s.when.as_ref())
                {
                    Some(when) => when.describe(&steps),
                    None => "the first step, sent at once".to_owned(),
                };
                v["step"] = json!(step);
                v["because"] = json!(because);
                v["fell_back_at"] = json!(d.fell_back_at.as_ref().map(ts));
            }
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "id": record.id.to_string(), "deliveries": items, "next_cursor": next,
    })))
}

pub fn message_json(r: &MessageRecord) -> Value {
    let funnel = |f: &umsd_actors::store::history::FunnelCounts, with_failed: bool| {
        let mut v = json!({
            "planned": f.planned, "effective": f.effective, "sent": f.sent,
            "delivered": f.delivered, "clicked": f.clicked,
        });
        if with_failed {
            v["failed"] = json!(f.failed);
        }
        v
    };
    let channels: serde_json::Map<String, Value> = r
        .funnel_channels
        .iter()
        .map(|(code, f)| (code.clone(), funnel(f, true)))
        .collect();
    let losses: Vec<Value> = r
        .losses
        .iter()
        .map(|l| json!({"stage": l.stage, "channel": l.channel, "reason": l.reason, "count": l.count}))
        .collect();
    let ts = |t: &chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({
        "id": r.id.to_string(),
        "message_id": r.message_id,
        "status": r.status.as_str(),
        "priority": r.priority.as_str(),
        "channels": r.channels,
        "created_at": ts(&r.created_at),
        "send_at": r.send_at.as_ref().map(ts),
        "fired_at": r.fired_at.as_ref().map(ts),
        "funnel": {"users": funnel(&r.funnel_users, false), "channels": channels},
        "losses": losses,
        "strategy": r.strategy.as_ref().map(|s| json!({
            "steps": s.steps.iter().map(|st| json!({
                "step": st.step,
                "channel": st.spec.channel,
                "when": st.spec.when.as_ref().map(|w| w.describe(&s.steps.iter().map(|x| x.spec.clone()).collect::<Vec<_>>())),
                "funnel": funnel(&st.funnel, true),
                "fell_back": st.fell_back,
                "late_receipts": st.late_receipts,
            })).collect::<Vec<_>>(),
            "pending_deadlines": s.pending_deadlines,
        })),
    })
}

/// `POST /bench/messages`: the send route's parsing and validation (including the
/// canonical encoding and hash), then an answer of the same shape — nothing is stored.
/// Only mounted when `bench.null_route` is on; it exists to measure the HTTP side alone.
async fn bench_send(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (_, message) = accept_one(&req, payload, &state).await?;
    let id = state.bench_ids.next_id();
    Ok(HttpResponse::Accepted().json(json!({
        "id": id.to_string(),
        "message_id": message.message_id,
        "status": message.status.as_str(),
    })))
}
