//! Editing scheduled messages: `PATCH /v1/messages/{id}` changes one's content and time
//! until it is due. (They are listed by `GET /v1/messages?status=scheduled`, in
//! `history.rs`, and cancelled by `DELETE /v1/messages/{id}`, in `recall.rs`.)
//!
//! Each change is one transaction that takes the message's schedule row first (see
//! `store/schedule.rs`): once the scheduler has handed a message to the planner, edits and
//! cancels answer 409 `not_scheduled` and change nothing.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;
use umsd_actors::domain::send::{FieldError, SendRequest};
use umsd_actors::domain::MessageStatus;
use umsd_actors::store::schedule::{ScheduleChange, ScheduleEdit};

use super::auth;
use super::error::ApiError;
use super::messages::{check_references, parse_json, read_body, validate};
use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/messages/{id}", web::patch().to(edit));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditRequest {
    send_at: Option<String>,
    content: Option<BTreeMap<String, Value>>,
}

fn not_scheduled(ident: &str, status: MessageStatus, what: &str) -> ApiError {
    let fate = match status {
        MessageStatus::Cancelled => "was cancelled",
        MessageStatus::Recalled => "was recalled",
        _ => "went out at its time",
    };
    ApiError::State {
        code: "not_scheduled",
        message: format!(
            "message `{ident}` is no longer scheduled (it {fate}): only a scheduled message \
             can be {what}"
        ),
    }
}

/// `PATCH /v1/messages/{id}`: new content and/or time for a message that waits for its
/// time. The edited request is validated as a send would be (a time already due sends it
/// now); the answer is the message as `GET` shows it.
async fn edit(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let app_id = app.entry()?.id;
    let ident = path.into_inner();
    let body = read_body(&req, payload).await?;
    let change: EditRequest = parse_json(&body)?;
    if change.send_at.is_none() && change.content.is_none() {
        return Err(
            FieldError::new("invalid_value", "", "give `send_at`, `content` or both").into(),
        );
    }
    let (id, stored) = state
        .store
        .find_request(app_id, &ident)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no message `{ident}`")))?;
    let mut request: SendRequest = serde_json::from_str(&stored)
        .map_err(|e| ApiError::Internal(format!("stored request of {id}: {e}").into()))?;
    if let Some(content) = change.content {
        request.content = Some(content);
        request.template = None;
    }
    if let Some(send_at) = change.send_at {
        request.send_at = Some(send_at);
    }
    let mut message = validate(&state, &app, request)?;
    check_references(&state, app_id, std::slice::from_mut(&mut message), |_| None).await?;
    let now = Utc::now();
    let due_at = match (message.status, message.send_at) {
        (MessageStatus::Scheduled, Some(t)) => t,
        _ => now,
    };
    let edit = ScheduleEdit {
        request_json: message.request_json,
        send_at: message.send_at,
        expires_at: message.expires_at,
        due_at,
    };
    match state.store.edit_scheduled(app_id, id, &edit).await? {
        ScheduleChange::Changed => state.schedule_changed.notify(),
        ScheduleChange::NotScheduled(s) => return Err(not_scheduled(&ident, s, "edited")),
        ScheduleChange::NotFound => {
            return Err(ApiError::NotFound(format!("no message `{ident}`")))
        }
    }
    super::recall::answer(&state, app_id, &ident).await
}
