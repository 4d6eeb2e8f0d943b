//! `GET /v1/mo`: mobile-originated messages (handset replies) received on the SMS channels
//! the calling app is granted, oldest first, paged by id.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use umsd_actors::domain::send::FieldError;
use umsd_actors::domain::ChannelType;

use super::auth;
use super::error::ApiError;
use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/mo", web::get().to(list));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    channel: Option<String>,
    /// The last id seen; the next page starts after it.
    cursor: Option<String>,
    limit: Option<i64>,
}

async fn list(
    req: HttpRequest,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let entry = app.entry()?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(FieldError::new("invalid_value", "limit", "must be 1-1000").into());
    }
    let after = match &query.cursor {
        None => 0,
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| FieldError::new("invalid_value", "cursor", "not a cursor"))?,
    };
    // The SMS channels granted to the app (enabled or not: replies to what it sent).
    let mut channels: Vec<String> = entry
        .grants
        .keys()
        .filter(|code| {
            app.snapshot
                .channels
                .get(code.as_str())
                .is_some_and(|c| c.channel_type == ChannelType::SmsCmpp)
        })
        .cloned()
        .collect();
    if let Some(only) = &query.channel {
        if !channels.contains(only) {
            return Err(FieldError::new(
                "invalid_value",
                "channel",
                "not an SMS channel granted to this app",
            )
            .into());
        }
        channels = vec![only.clone()];
    }
    let items = state.store.list_mo(&channels, after, limit).await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|m| m.id.to_string()))
        .flatten();
    let list: Vec<_> = items
        .iter()
        .map(|m| {
            json!({
                "id": m.id.to_string(),
                "channel": m.channel,
                "from": m.source,
                "to": m.destination,
                "service_id": m.service_id,
                "text": m.content,
                "received_at": m.received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"items": list, "next_cursor": next})))
}
