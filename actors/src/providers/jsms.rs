//! JSMS (Jiguang SMS) template messages: `POST /v1/messages` for one recipient,
//! `POST /v1/messages/batch` for up to 1000 (one outcome per recipient), HTTP Basic auth.
//! Delivery reports arrive as signed form posts at `/callbacks/{code}` (see the front
//! door's `callbacks.rs`), matched by `msg_id`.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};

use super::context::ProviderContext;
use super::contract::{
    all, Attempt, Batch, BuildError, Inbound, InboundError, InboundRequest, Provider,
    ProviderError, ProviderReceipt, Reply,
};
use super::support::http::{call, default_timeout_ms, http_client, Answer};
use super::support::sha1_hex;
use crate::domain::DeliveryState;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "default_base")]
    pub base_url: String,
    pub app_key: String,
    pub master_secret: String,
    #[serde(default)]
    pub sign_id: Option<i64>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_base() -> String {
    "https://api.sms.jpush.cn".into()
}

/// Classifies a JSMS error code.
pub fn classify_code(code: i64, status: u16, msg: &str) -> ProviderError {
    let c = if code == 0 {
        status.to_string()
    } else {
        code.to_string()
    };
    match code {
        50009 => ProviderError::rate_limited(c, msg, None),
        50019 => ProviderError::retryable(c, msg),
        0 if status >= 500 || status == 429 => ProviderError::retryable(c, msg),
        _ => ProviderError::permanent(c, msg),
    }
}

fn classify(a: &Answer) -> ProviderError {
    let code = a
        .body
        .pointer("/error/code")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    classify_code(code, a.status.as_u16(), &a.errmsg())
}

fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

pub struct Jsms {
    client: reqwest::Client,
    base: Rc<str>,
    key: Rc<str>,
    secret: Rc<str>,
    sign_id: Option<i64>,
}

impl Jsms {
    pub fn new(ctx: &ProviderContext, s: &Settings) -> Result<Self, BuildError> {
        Ok(Self {
            client: http_client(ctx, Duration::from_millis(s.timeout_ms))?,
            base: s.base_url.trim_end_matches('/').into(),
            key: s.app_key.as_str().into(),
            secret: s.master_secret.as_str().into(),
            sign_id: s.sign_id,
        })
    }
}

impl Provider for Jsms {
    fn max_batch(&self) -> usize {
        1000
    }

    fn send(&self, batch: Batch) -> LocalBoxFuture<'static, Vec<(i64, Attempt)>> {
        let c = &batch.content;
        // Template ids are numbers at JSMS; a numeric string is sent as a number.
        let temp_id = match c.get("template_id") {
            Some(Value::String(s)) => s.parse::<i64>().map_or_else(|_| json!(s), |n| json!(n)),
            Some(v) => v.clone(),
            None => Value::Null,
        };
        let params = c.get("params").cloned().unwrap_or_else(|| json!({}));
        let single = batch.targets.len() == 1;
        let mut body = if single {
            json!({"mobile": batch.targets[0].address, "temp_id": temp_id, "temp_para": params})
        } else {
            let recipients: Vec<Value> = batch
                .targets
                .iter()
                .map(|t| json!({"mobile": t.address, "temp_para": params}))
                .collect();
            json!({"temp_id": temp_id, "recipients": recipients})
        };
        if let Some(sign) = self.sign_id {
            body["sign_id"] = json!(sign);
        }
        let path = if single {
            "/v1/messages"
        } else {
            "/v1/messages/batch"
        };
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .basic_auth(&*self.key, Some(&*self.secret))
            .json(&body);
        Box::pin(async move {
            if temp_id.is_null() {
                return all(
                    &batch,
                    Attempt::Failed(ProviderError::permanent(
                        "no_content",
                        "jsms content needs `template_id`",
                    )),
                );
            }
            let a = match call(req).await {
                Ok(a) => a,
                Err(e) => return all(&batch, Attempt::Failed(e)),
            };
            if !a.status.is_success() {
                return all(&batch, Attempt::Failed(classify(&a)));
            }
            if single {
                return match id_of(&a.body["msg_id"]) {
                    Some(id) => all(&batch, Attempt::submitted(id)),
                    None => all(
                        &batch,
                        Attempt::Failed(ProviderError::retryable("no_msg_id", "no msg_id")),
                    ),
                };
            }
            let rows = a.body["recipients"].as_array().cloned().unwrap_or_default();
            batch
                .targets
                .iter()
                .map(|t| {
                    let row = rows
                        .iter()
                        .find(|r| r["mobile"].as_str() == Some(t.address.as_str()));
                    let attempt = match row {
                        Some(r) => match id_of(&r["msg_id"]) {
                            Some(id) => Attempt::submitted(id),
                            None => {
                                let code = r["error_code"].as_i64().unwrap_or(0);
                                let msg = r["error_message"].as_str().unwrap_or("");
                                Attempt::Failed(classify_code(code, 403, msg))
                            }
                        },
                        None => Attempt::Failed(ProviderError::retryable(
                            "no_result",
                            "recipient missing from the batch answer",
                        )),
                    };
                    (t.delivery_id, attempt)
                })
                .collect()
        })
    }
}

/// A JSMS callback: a form post signed with sha1 over the app key, master secret, nonce
/// and timestamp. `SMS_REPORT` status 4001 is delivered, any other status undelivered;
/// other types are acknowledged and ignored.
pub fn inbound(s: &Settings, req: &InboundRequest<'_>) -> Result<Inbound, InboundError> {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(req.body)
        .map_err(|e| InboundError::Malformed(format!("not a form: {e}")))?;
    let get = |k: &str| form.get(k).map_or("", String::as_str);
    let expected = sha1_hex(&format!(
        "appKey={}&appMasterSecret={}&nonce={}&timestamp={}",
        s.app_key,
        s.master_secret,
        get("nonce"),
        get("timestamp"),
    ));
    if !get("signature").eq_ignore_ascii_case(&expected) {
        return Err(InboundError::BadSignature);
    }
    let mut receipts = Vec::new();
    if get("type") == "SMS_REPORT" {
        let data: Value = serde_json::from_str(get("data"))
            .map_err(|e| InboundError::Malformed(format!("data: {e}")))?;
        let msg_id = match &data["msgId"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(InboundError::Malformed("data.msgId missing".into())),
        };
        let status = data["status"].as_i64().unwrap_or(0);
        receipts.push(if status == 4001 {
            ProviderReceipt::new(msg_id, DeliveryState::Delivered, Some("4001"))
        } else {
            ProviderReceipt::new(
                msg_id,
                DeliveryState::Undelivered,
                Some(&status.to_string()),
            )
        });
    }
    Ok(Inbound {
        receipts,
        reply: Reply::Empty,
    })
}
