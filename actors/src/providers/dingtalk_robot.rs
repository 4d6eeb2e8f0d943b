//! DingTalk custom robots (group webhooks): `POST /robot/send?access_token=…` with, when
//! the robot has a signing secret, `timestamp` (ms) and
//! `sign = base64(HMAC-SHA256(secret, timestamp + "\n" + secret))`. The address of a
//! delivery is the robot's access token (a group, bound to a user or given directly).
//! A channel of type `dingtalk` with `mode = "robot"` uses this client.
//!
//! Security failures (`310000`: bad signature, stale timestamp, keyword, IP allow-list)
//! are configuration errors and fail the delivery; acceptance is the delivery.

use std::rc::Rc;
use std::time::Duration;

use base64::Engine;
use futures_util::future::LocalBoxFuture;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use super::context::ProviderContext;
use super::contract::{all, Attempt, Batch, BuildError, Provider, ProviderError, SettingsError};
use super::support::http::{call, content_text, default_timeout_ms, http_client, Answer};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `robot`.
    pub mode: String,
    #[serde(default = "default_base")]
    pub base_url: String,
    /// The robot's signing secret (`SEC…`), when it has one.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_base() -> String {
    "https://oapi.dingtalk.com".into()
}

/// The `sign` parameter for `timestamp_ms` (before URL encoding).
pub fn sign(secret: &str, timestamp_ms: i64) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Classifies a robot answer's nonzero `errcode`.
fn classify(a: &Answer) -> ProviderError {
    let code = a.errcode();
    let c = code.to_string();
    let msg = a.errmsg();
    match code {
        -1 => ProviderError::retryable(c, msg),
        // The per-robot limit (20 a minute); the exact code is not documented.
        410100 | 130101 => ProviderError::rate_limited(c, msg, Some(Duration::from_secs(3))),
        _ => ProviderError::permanent(c, msg),
    }
}

pub struct Robot {
    client: reqwest::Client,
    base: Rc<str>,
    secret: Option<Rc<str>>,
}

impl Robot {
    /// A client for settings [`check`]ed at parse.
    pub fn new(ctx: &ProviderContext, s: &Settings) -> Result<Self, BuildError> {
        Ok(Self {
            client: http_client(ctx, Duration::from_millis(s.timeout_ms))?,
            base: s.base_url.trim_end_matches('/').into(),
            secret: s.secret.as_deref().map(Into::into),
        })
    }
}

pub fn check(s: &Settings) -> Result<(), SettingsError> {
    if s.mode != "robot" {
        return Err(SettingsError::new(
            "settings.mode",
            "`robot` or absent (work notices)",
        ));
    }
    if s.secret.as_deref().is_some_and(|x| !x.starts_with("SEC")) {
        return Err(SettingsError::new(
            "settings.secret",
            "a robot signing secret starts with `SEC`",
        ));
    }
    Ok(())
}

/// The body: a provider-native `card` (any robot message), or `text`.
fn message(content: &Value) -> Option<Value> {
    if let Some(card) = content.get("card") {
        return Some(card.clone());
    }
    content_text(content).map(|t| json!({"msgtype": "text", "text": {"content": t}}))
}

impl Provider for Robot {
    fn send(&self, batch: Batch) -> LocalBoxFuture<'static, Vec<(i64, Attempt)>> {
        let client = self.client.clone();
        let base = self.base.clone();
        let secret = self.secret.clone();
        Box::pin(async move {
            let Some(body) = message(&batch.content) else {
                return all(
                    &batch,
                    Attempt::Failed(ProviderError::permanent(
                        "no_content",
                        "dingtalk content needs `text` or `card`",
                    )),
                );
            };
            let mut out = Vec::with_capacity(batch.targets.len());
            for t in &batch.targets {
                let mut query: Vec<(&str, String)> = vec![("access_token", t.address.clone())];
                if let Some(secret) = &secret {
                    let ts = chrono::Utc::now().timestamp_millis();
                    query.push(("timestamp", ts.to_string()));
                    query.push(("sign", sign(secret, ts)));
                }
                let req = client
                    .post(format!("{base}/robot/send"))
                    .query(&query)
                    .json(&body);
                let attempt = match call(req).await {
                    Err(e) => Attempt::Failed(e),
                    Ok(a) if a.status.is_server_error() => Attempt::Failed(
                        ProviderError::retryable(a.status.as_u16().to_string(), "server error"),
                    ),
                    Ok(a) if !a.status.is_success() => Attempt::Failed(ProviderError::permanent(
                        a.status.as_u16().to_string(),
                        "unexpected HTTP status",
                    )),
                    Ok(a) if a.errcode() != 0 => Attempt::Failed(classify(&a)),
                    Ok(_) => Attempt::delivered(None),
                };
                out.push((t.delivery_id, attempt));
            }
            out
        })
    }
}
