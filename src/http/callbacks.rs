//! `/callbacks/{channel_code}`: receipts pushed by providers, each in its provider's own
//! format and verified by its signature where the provider signs:
//!
//! * `jsms`: form posts signed with sha1 over the app key, master secret, nonce and
//!   timestamp; `SMS_REPORT` 4001 is delivered, any other status undelivered. A `GET` with
//!   `echostr` (URL verification) is echoed.
//! * `wechat_oa`: `TEMPLATESENDJOBFINISH` XML events; with `callback_token` set, the
//!   `signature` query (sha1 of the sorted token, timestamp and nonce) is checked. `GET`
//!   verification echoes `echostr`.
//! * `feishu`: event subscription JSON (`url_verification` answered with its challenge,
//!   `im.message.message_read_v1` marks messages read).
//!
//! A receipt is handed to the status writer and answered at once; when the writer is
//! full, the answer is 503 so the provider sends it again later.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use umsd_actors::domain::{ChannelType, DeliveryState};
use umsd_actors::providers::wechat::xml_field;
use umsd_actors::receipts::{Incoming, ReceiptEvent, ReceiptKey};

use super::error::ApiError;
use super::messages::read_body;
use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/callbacks/{code}", web::post().to(receive))
        .route("/callbacks/{code}", web::get().to(verify));
}

fn sha1_hex(s: &str) -> String {
    Sha1::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn query_map(req: &HttpRequest) -> std::collections::HashMap<String, String> {
    serde_urlencoded::from_str(req.query_string()).unwrap_or_default()
}

fn setting<'a>(settings: &'a Value, key: &str) -> Option<&'a str> {
    settings.get(key).and_then(Value::as_str)
}

/// WeChat's server-URL signature: sha1 of the sorted (token, timestamp, nonce).
fn wechat_signature_ok(settings: &Value, q: &std::collections::HashMap<String, String>) -> bool {
    let Some(token) = setting(settings, "callback_token") else {
        return true;
    };
    let mut parts = [
        token,
        q.get("timestamp").map_or("", String::as_str),
        q.get("nonce").map_or("", String::as_str),
    ];
    parts.sort_unstable();
    q.get("signature")
        .is_some_and(|s| s.eq_ignore_ascii_case(&sha1_hex(&parts.concat())))
}

async fn verify(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let code = path.into_inner();
    let snapshot = state.directory.snapshot();
    let channel = snapshot
        .channels
        .get(&code)
        .ok_or_else(|| ApiError::NotFound(format!("no channel `{code}`")))?;
    let q = query_map(&req);
    let echo = q.get("echostr").cloned().unwrap_or_default();
    if channel.channel_type == ChannelType::WechatOa && !wechat_signature_ok(&channel.settings, &q)
    {
        return Err(ApiError::Unauthorized);
    }
    Ok(HttpResponse::Ok().content_type("text/plain").body(echo))
}

async fn receive(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let code = path.into_inner();
    let snapshot = state.directory.snapshot();
    let channel = snapshot
        .channels
        .get(&code)
        .ok_or_else(|| ApiError::NotFound(format!("no channel `{code}`")))?;
    let body = read_body(&req, payload).await?;
    let now = Utc::now();
    let event = |key: String, st: DeliveryState, c: Option<String>| ReceiptEvent {
        channel: code.clone(),
        key: ReceiptKey::Provider(key),
        state: st,
        code: c,
        reason: None,
        at: now,
    };
    let (events, reply) = match channel.channel_type {
        ChannelType::Jsms => {
            let form: std::collections::HashMap<String, String> =
                serde_urlencoded::from_bytes(&body)
                    .map_err(|e| ApiError::InvalidJson(format!("not a form: {e}")))?;
            let get = |k: &str| form.get(k).map_or("", String::as_str);
            let expected = sha1_hex(&format!(
                "appKey={}&appMasterSecret={}&nonce={}&timestamp={}",
                setting(&channel.settings, "app_key").unwrap_or(""),
                setting(&channel.settings, "master_secret").unwrap_or(""),
                get("nonce"),
                get("timestamp"),
            ));
            if !get("signature").eq_ignore_ascii_case(&expected) {
                return Err(ApiError::Unauthorized);
            }
            let mut events = Vec::new();
            if get("type") == "SMS_REPORT" {
                let data: Value = serde_json::from_str(get("data"))
                    .map_err(|e| ApiError::InvalidJson(format!("data: {e}")))?;
                let msg_id = match &data["msgId"] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(ApiError::InvalidJson("data.msgId missing".into())),
                };
                let status = data["status"].as_i64().unwrap_or(0);
                events.push(if status == 4001 {
                    event(msg_id, DeliveryState::Delivered, Some("4001".into()))
                } else {
                    event(msg_id, DeliveryState::Undelivered, Some(status.to_string()))
                });
            }
            (events, HttpResponse::Ok().finish())
        }
        ChannelType::WechatOa => {
            if !wechat_signature_ok(&channel.settings, &query_map(&req)) {
                return Err(ApiError::Unauthorized);
            }
            let xml = String::from_utf8_lossy(&body);
            let mut events = Vec::new();
            if xml_field(&xml, "Event") == Some("TEMPLATESENDJOBFINISH") {
                let id = xml_field(&xml, "MsgID").unwrap_or("").to_owned();
                let status = xml_field(&xml, "Status").unwrap_or("");
                events.push(match status {
                    "success" => event(id, DeliveryState::Delivered, None),
                    "failed:user block" => {
                        event(id, DeliveryState::Undelivered, Some("user_block".into()))
                    }
                    _ => event(id, DeliveryState::Undelivered, Some("system_failed".into())),
                });
            }
            (
                events,
                HttpResponse::Ok()
                    .content_type("text/plain")
                    .body("success"),
            )
        }
        ChannelType::Feishu => {
            let v: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::InvalidJson(format!("not JSON: {e}")))?;
            if v["type"] == "url_verification" {
                return Ok(HttpResponse::Ok().json(json!({"challenge": v["challenge"]})));
            }
            let mut events = Vec::new();
            if v.pointer("/header/event_type").and_then(Value::as_str)
                == Some("im.message.message_read_v1")
            {
                for id in v
                    .pointer("/event/message_id_list")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    events.push(event(id.to_owned(), DeliveryState::Read, None));
                }
            }
            (events, HttpResponse::Ok().json(json!({})))
        }
        other => {
            return Err(ApiError::NotFound(format!(
                "channels of type `{}` take no callbacks",
                other.as_str()
            )))
        }
    };
    if !events.is_empty() {
        // `send` (not `try_send`): the answer says whether the writer took them.
        match state.receipts.send(Incoming(events)).await {
            Ok(true) => {}
            _ => return Err(ApiError::QueueFull),
        }
    }
    Ok(reply)
}
