//! `DELETE /v1/messages/{id}`: a scheduled message not yet due is cancelled; one sent in
//! the recall window (24 h by default) is recalled — what is not sent yet is cancelled,
//! pending strategy steps and their deadlines go, and each channel's provider is asked to
//! withdraw what it took, where its API can. The answer is the message with its recall
//! report: per channel what was cancelled, withdrawn, and what could not be, and why.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde_json::{json, Value};
use umsd_actors::channel::sender::ChannelSender;
use umsd_actors::channel::withdraw::{Forget, Withdraw};
use umsd_actors::domain::MessageStatus;
use umsd_actors::providers::contract::{RecallOutcome, RecallTarget};
use umsd_actors::store::recall::{Recall, RecallLine, RecallReport, SentDelivery};
use umsd_actors::store::schedule::ScheduleChange;
use umsd_actors::supervisor::GetSender;

use super::auth;
use super::error::ApiError;
use super::messages::message_json;
use super::AppState;

/// How long the providers' withdrawals may take before the answer is given without them
/// (a provider call times out after 10 s by default, and is retried when told to).
const WITHDRAW_WAIT: Duration = Duration::from_secs(30);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/messages/{id}", web::delete().to(delete));
}

async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let app_id = app.entry()?.id;
    let ident = path.into_inner();
    let (id, _) = state
        .store
        .find_request(app_id, &ident)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no message `{ident}`")))?;
    match state.store.cancel_scheduled(app_id, id).await? {
        ScheduleChange::Changed => return answer(&state, app_id, &ident).await,
        ScheduleChange::NotFound => {
            return Err(ApiError::NotFound(format!("no message `{ident}`")))
        }
        ScheduleChange::NotScheduled(_) => {}
    }
    let now = Utc::now();
    if now - id.created_at() > state.recall_window {
        return Err(ApiError::State {
            code: "recall_window_passed",
            message: format!(
                "message `{ident}` was sent more than {} h ago: it can no longer be recalled",
                state.recall_window.num_hours()
            ),
        });
    }
    let found = match state.store.recall_message(app_id, id, now).await? {
        Recall::NotFound => return Err(ApiError::NotFound(format!("no message `{ident}`"))),
        Recall::NotRecallable(status) => {
            let fate = match status {
                MessageStatus::Recalled => "was recalled already",
                MessageStatus::Cancelled => "was cancelled",
                _ => "cannot be recalled in its status",
            };
            return Err(ApiError::State {
                code: "not_recallable",
                message: format!("message `{ident}` {fate}"),
            });
        }
        Recall::Recalled(found) => found,
    };

    let mut report = RecallReport {
        at: now,
        channels: BTreeMap::new(),
    };
    let mut withdrawn = Vec::new();
    for (channel, (cancelled, sent)) in found {
        let sender = state
            .supervisor
            .send(GetSender(channel.clone()))
            .await
            .ok()
            .flatten();
        if let Some(sender) = &sender {
            let _ = sender.send(Forget(id)).await;
        }
        let mut line = RecallLine {
            cancelled,
            ..RecallLine::default()
        };
        for (id, outcome) in withdraw(sender, app_id, sent).await {
            match outcome {
                RecallOutcome::Withdrawn => {
                    line.recalled += 1;
                    withdrawn.push(id);
                }
                RecallOutcome::Kept(reason) => {
                    line.not_recalled += 1;
                    *line.reasons.entry(reason).or_default() += 1;
                }
            }
        }
        report.channels.insert(channel, line);
    }
    state.store.record_recall(id, &report, &withdrawn).await?;
    answer(&state, app_id, &ident).await
}

/// Asks the channel's sender (none: the channel is not running) to withdraw `sent`;
/// answers each delivery's outcome.
async fn withdraw(
    sender: Option<Addr<ChannelSender>>,
    app_id: i32,
    sent: Vec<SentDelivery>,
) -> Vec<(i64, RecallOutcome)> {
    if sent.is_empty() {
        return Vec::new();
    }
    let ids: Vec<i64> = sent.iter().map(|s| s.id).collect();
    let kept = |why: &str| -> Vec<(i64, RecallOutcome)> {
        ids.iter()
            .map(|id| (*id, RecallOutcome::Kept(why.to_owned())))
            .collect()
    };
    let Some(sender) = sender else {
        return kept("channel_not_running");
    };
    let targets = sent
        .into_iter()
        .map(|s| RecallTarget {
            delivery_id: s.id,
            app_id,
            provider_id: s.provider_id,
            address: s.address,
        })
        .collect();
    match tokio::time::timeout(WITHDRAW_WAIT, sender.send(Withdraw(targets))).await {
        Ok(Ok(outcomes)) => outcomes,
        Ok(Err(_)) => kept("channel_not_running"),
        Err(_) => kept("provider_timeout"),
    }
}

pub async fn answer(state: &AppState, app_id: i32, ident: &str) -> Result<HttpResponse, ApiError> {
    let record = state
        .store
        .find_message(app_id, ident)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no message `{ident}`")))?;
    let mut body = message_json(&record);
    if record.status == MessageStatus::Recalled {
        body["recall"] = recall_json(state.store.recall_report(record.id).await?.as_ref());
    }
    Ok(HttpResponse::Ok().json(body))
}

/// A recall report as the API shows it.
pub fn recall_json(report: Option<&RecallReport>) -> Value {
    let Some(r) = report else {
        return Value::Null;
    };
    let channels: serde_json::Map<String, Value> = r
        .channels
        .iter()
        .map(|(code, l)| {
            (
                code.clone(),
                json!({"cancelled": l.cancelled, "recalled": l.recalled,
                       "not_recalled": l.not_recalled, "reasons": l.reasons}),
            )
        })
        .collect();
    json!({
        "at": r.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "channels": channels,
    })
}
