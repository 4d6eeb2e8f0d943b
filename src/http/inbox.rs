//! `/v1/inbox/{user_id}`: the internal inbox channel's read side. Listing shows what was
//! delivered to a user; marking items read records a `read` receipt on their deliveries.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use umsd_actors::domain::send::FieldError;
use umsd_actors::domain::user::check_user_id;
use umsd_actors::domain::{ChannelCode, DeliveryState};
use umsd_actors::receipts::{Incoming, ReceiptEvent, ReceiptKey};

use super::auth;
use super::error::ApiError;
use super::messages::{parse_json, read_body};
use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/inbox/{user_id}", web::get().to(list))
        .route("/v1/inbox/{user_id}/read", web::post().to(mark_read));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    unread: Option<bool>,
    limit: Option<i64>,
}

async fn list(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let app_id = app.entry()?.id;
    let user_id = path.into_inner();
    check_user_id(&user_id, "user_id")?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(FieldError::new("invalid_value", "limit", "must be 1-1000").into());
    }
    let items = state
        .store
        .list_inbox(app_id, &user_id, query.unread.unwrap_or(false), limit)
        .await?;
    let ts = |t: &chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let list: Vec<_> = items
        .iter()
        .map(|i| {
            json!({
                "id": i.delivery_id.to_string(),
                "message": i.message_pk.to_string(),
                "title": i.title, "body": i.body,
                "created_at": ts(&i.created_at),
                "read_at": i.read_at.as_ref().map(ts),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"user_id": user_id, "items": list})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadBody {
    ids: Vec<String>,
}

async fn mark_read(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let app_id = app.entry()?.id;
    let user_id = path.into_inner();
    check_user_id(&user_id, "user_id")?;
    let body = read_body(&req, payload).await?;
    let read: ReadBody = parse_json(&body)?;
    if read.ids.len() > 1000 {
        return Err(FieldError::new("too_many", "ids", "at most 1000 ids").into());
    }
    let mut ids = Vec::with_capacity(read.ids.len());
    for (i, id) in read.ids.iter().enumerate() {
        ids.push(id.parse::<i64>().map_err(|_| {
            FieldError::new("invalid_value", format!("ids[{i}]"), "not an inbox item id")
        })?);
    }
    let changed = state.store.mark_inbox_read(app_id, &user_id, &ids).await?;
    if !changed.is_empty() {
        // Which inbox channel each item came through is not needed: receipts by delivery
        // id apply to the delivery whatever its channel.
        let now = Utc::now();
        let events = changed
            .iter()
            .map(|(id, message_pk)| ReceiptEvent {
                channel: ChannelCode::from_stored("inbox"),
                key: ReceiptKey::Delivery {
                    id: *id,
                    message_pk: *message_pk,
                },
                state: DeliveryState::Read,
                code: None,
                reason: None,
                at: now,
            })
            .collect();
        let _ = state.receipts.try_send(Incoming(events));
    }
    Ok(HttpResponse::Ok().json(json!({"marked": changed.len()})))
}
