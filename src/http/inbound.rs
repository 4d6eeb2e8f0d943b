//! `/callbacks/{channel_code}`: inbound provider requests — delivery and read receipts,
//! URL verification. Each request is routed to the provider that owns the channel
//! (`umsd_actors::providers::inbound`), which parses and verifies it in its own format;
//! this module only reads the request, hands the receipts to the status writer and
//! answers. (App callbacks, which umsd posts to the apps, are `app_callbacks.rs`.)
//!
//! A receipt is handed to the status writer and answered at once; when the writer is
//! full, the answer is 503 so the provider sends it again later.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use umsd_actors::directory::ChannelEntry;
use umsd_actors::providers::contract::{InboundError, InboundRequest, Reply};
use umsd_actors::providers::inbound;
use umsd_actors::receipts::Incoming;

use super::error::ApiError;
use super::messages::read_body;
use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/callbacks/{code}", web::post().to(receive))
        .route("/callbacks/{code}", web::get().to(verify));
}

/// The channel a request names, with its parsed settings.
fn channel(state: &AppState, code: &str) -> Result<ChannelEntry, ApiError> {
    let snapshot = state.directory.snapshot();
    snapshot
        .channels
        .get(code)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("no channel `{code}`")))
}

impl From<InboundError> for ApiError {
    fn from(e: InboundError) -> Self {
        match e {
            InboundError::BadSignature => ApiError::Unauthorized,
            InboundError::Malformed(m) => ApiError::InvalidJson(m),
            InboundError::NotAccepted(_) => ApiError::NotFound(e.to_string()),
        }
    }
}

async fn verify(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let channel = channel(&state, &path.into_inner())?;
    let request = InboundRequest {
        query: req.query_string(),
        body: &[],
    };
    // A channel whose settings do not parse has nothing to verify with: it echoes only
    // where its provider would not sign.
    let echo = match &channel.config {
        Ok(config) => inbound::verify(&config.provider, &request)?,
        Err(_) => return Err(ApiError::Unauthorized),
    };
    Ok(HttpResponse::Ok().content_type("text/plain").body(echo))
}

async fn receive(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let channel = channel(&state, &path.into_inner())?;
    let body = read_body(&req, payload).await?;
    let config = channel.config.as_ref().map_err(|_| {
        ApiError::NotFound(format!(
            "channel `{}` cannot take callbacks: its settings are invalid",
            channel.code
        ))
    })?;
    let request = InboundRequest {
        query: req.query_string(),
        body: &body,
    };
    let inbound = inbound::receive(&config.provider, &request)?;
    if !inbound.receipts.is_empty() {
        let events = inbound::events(&channel.code, inbound.receipts, Utc::now());
        // `send` (not `try_send`): the answer says whether the writer took them.
        match state.receipts.send(Incoming(events)).await {
            Ok(true) => {}
            _ => return Err(ApiError::QueueFull),
        }
    }
    Ok(match inbound.reply {
        Reply::Empty => HttpResponse::Ok().finish(),
        Reply::Text(t) => HttpResponse::Ok().content_type("text/plain").body(t),
        Reply::Json(v) => HttpResponse::Ok().json(v),
    })
}
