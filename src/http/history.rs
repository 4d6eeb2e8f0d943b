//! `GET /v1/messages?status=&from=&to=&cursor=&limit=`: the app's message history, newest
//! first, each line with the user funnel of the product's message list — effective, sent,
//! delivered and clicked users, the delivery rate (delivered / sent users) and the click
//! rate (clicked / delivered users).
//!
//! `done` and `dispatching` are told apart per message (a message is done when nothing is
//! left to do), so a page filtered by either may hold fewer than `limit` lines: follow
//! `next_cursor` until it is null.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use umsd_actors::domain::send::FieldError;
use umsd_actors::domain::{MessagePk, MessageStatus};
use umsd_actors::store::listing::ListFilter;

use super::auth;
use super::error::ApiError;
use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/messages", web::get().to(list));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

fn time(v: &Option<String>, field: &str) -> Result<Option<DateTime<Utc>>, FieldError> {
    v.as_deref()
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| FieldError::new("invalid_value", field, "must be an RFC 3339 time"))
        })
        .transpose()
}

fn rate(part: i64, whole: i64) -> Value {
    if whole == 0 {
        Value::Null
    } else {
        json!(((part as f64 / whole as f64) * 10_000.0).round() / 10_000.0)
    }
}

async fn list(
    req: HttpRequest,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let app_id = app.entry()?.id;
    let q = query.into_inner();
    let wanted = match q.status.as_deref() {
        None => None,
        Some(s) => Some(MessageStatus::parse(s).ok_or_else(|| {
            FieldError::new(
                "invalid_value",
                "status",
                "one of scheduled, accepted, dispatching, done, recalled, cancelled",
            )
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(FieldError::new("invalid_value", "limit", "must be 1-1000").into());
    }
    let before = match &q.cursor {
        None => None,
        Some(c) => Some(MessagePk::parse(c).ok_or_else(|| {
            FieldError::new("invalid_value", "cursor", "not a cursor from this API")
        })?),
    };
    let filter = ListFilter {
        // Done is not stored: it is a dispatching message with nothing left to do.
        statuses: match wanted {
            None => Vec::new(),
            Some(MessageStatus::Done) => vec![MessageStatus::Dispatching],
            Some(s) => vec![s],
        },
        from: time(&q.from, "from")?,
        to: time(&q.to, "to")?,
        before,
        limit,
    };
    let page = state.store.list_messages(app_id, &filter).await?;
    let next = (page.len() as i64 == limit)
        .then(|| page.last().map(|m| m.id.to_string()))
        .flatten();
    let ts = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let items: Vec<Value> = page
        .iter()
        .filter(|m| wanted.is_none_or(|w| w == m.status))
        .map(|m| {
            json!({
                "id": m.id.to_string(), "message_id": m.message_id, "status": m.status.as_str(),
                "priority": m.priority.as_str(), "channels": m.channels,
                "created_at": ts(&m.id.created_at()), "send_at": m.send_at.as_ref().map(ts),
                "users": {"effective": m.effective, "sent": m.sent, "delivered": m.delivered,
                          "clicked": m.clicked},
                "delivery_rate": rate(m.delivered, m.sent),
                "click_rate": rate(m.clicked, m.delivered),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "messages": items, "next_cursor": next })))
}
