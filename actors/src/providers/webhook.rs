//! Signed webhooks: each delivery is an HTTP POST of a JSON event to the URL bound to the
//! user (or given as the address), signed per Standard Webhooks: headers `webhook-id`
//! (the delivery id, stable across retries, so the receiver can drop duplicates),
//! `webhook-timestamp` (Unix seconds) and `webhook-signature`
//! (`v1,` + base64 HMAC-SHA256 over `id.timestamp.body`, keyed by the secret's bytes).
//!
//! Any 2xx is the delivery. 429, 502 and 504 throttle the channel (honouring
//! `Retry-After`); 410 and other 4xx fail it; other 5xx and transport errors are retried.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use base64::Engine;
use futures_util::future::LocalBoxFuture;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{default_timeout_ms, http_client, parse_settings};
use crate::channel::sender::SenderConfig;
use crate::channel::{Attempt, Batch, Provider, ProviderError};
use crate::domain::ids::format_message_id;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `whsec_` + base64 of 24–64 random bytes.
    pub secret: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

pub struct Webhook {
    client: reqwest::Client,
    key: std::sync::Arc<[u8]>,
    /// The last few messages' serialized parts (message id, body): a message goes out to
    /// its recipients one call each, mostly one message after another.
    recent: RefCell<VecDeque<(i64, Rc<Shared>)>>,
    /// Parsed receiver URLs: the same receivers are called again and again, and parsing
    /// (host normalization included) costs more than a copy.
    urls: RefCell<HashMap<String, reqwest::Url>>,
}

/// Most of a receiver's answer read before the connection is given up instead.
const ANSWER_READ: usize = 64 * 1024;

/// Most parsed URLs kept; past it the cache starts over.
const URLS: usize = 4096;

/// What every recipient's event of one message has in common, serialized.
struct Shared {
    message: String,
    body: String,
}

/// Messages whose serialized parts are kept.
const RECENT: usize = 16;

/// The HMAC key of a `whsec_…` secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "settings.secret: not `whsec_` followed by base64".to_owned())?;
    if key.len() < 16 {
        return Err("settings.secret: at least 16 bytes of key".into());
    }
    Ok(key)
}

/// `v1,<base64 signature>` of one event.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

impl Webhook {
    pub fn new(config: &SenderConfig) -> Result<Self, String> {
        let s: Settings = parse_settings(&config.settings)?;
        Ok(Self {
            client: http_client(config, Duration::from_millis(s.timeout_ms))?,
            key: secret_key(&s.secret)?.into(),
            recent: RefCell::new(VecDeque::with_capacity(RECENT)),
            urls: RefCell::new(HashMap::new()),
        })
    }
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn classify_status(resp: &reqwest::Response) -> Attempt {
    let status = resp.status();
    let code = status.as_u16().to_string();
    if status.is_success() {
        Attempt::delivered(None)
    } else if matches!(status.as_u16(), 429 | 502 | 504) {
        Attempt::Failed(ProviderError::rate_limited(
            code,
            format!("receiver answered {status}"),
            retry_after(resp),
        ))
    } else if status.is_server_error() {
        Attempt::Failed(ProviderError::retryable(
            code,
            format!("receiver answered {status}"),
        ))
    } else {
        Attempt::Failed(ProviderError::permanent(
            code,
            format!("receiver answered {status}"),
        ))
    }
}

impl Webhook {
    /// The receiver's URL, parsed once.
    fn url(&self, address: &str) -> Result<reqwest::Url, String> {
        let mut urls = self.urls.borrow_mut();
        if let Some(url) = urls.get(address) {
            return Ok(url.clone());
        }
        let url = reqwest::Url::parse(address)
            .map_err(|e| format!("the webhook URL {address:?} is not valid: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("the webhook URL {address:?} is not http or https"));
        }
        if urls.len() >= URLS {
            urls.clear();
        }
        urls.insert(address.to_owned(), url.clone());
        Ok(url)
    }

    /// The parts of a message's events shared by all its recipients, serialized once.
    fn shared(&self, batch: &Batch) -> Rc<Shared> {
        let mut recent = self.recent.borrow_mut();
        if let Some((_, s)) = recent.iter().find(|(pk, _)| *pk == batch.message_pk) {
            return s.clone();
        }
        let shared = Rc::new(Shared {
            message: format_message_id(batch.message_pk),
            body: batch
                .content
                .get("body")
                .map_or_else(|| "null".to_owned(), |b| b.to_string()),
        });
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back((batch.message_pk, shared.clone()));
        shared
    }
}

impl Provider for Webhook {
    fn send(&self, batch: Batch) -> LocalBoxFuture<'static, Vec<(i64, Attempt)>> {
        let client = self.client.clone();
        let key = self.key.clone();
        let shared = self.shared(&batch);
        let targets: Vec<(i64, Option<String>, Result<reqwest::Url, String>)> = batch
            .targets
            .into_iter()
            .map(|t| {
                let url = self.url(&t.address);
                (t.delivery_id, t.user_id, url)
            })
            .collect();
        let work = async move {
            let Shared { message, body } = &*shared;
            let mut out = Vec::with_capacity(targets.len());
            for (delivery_id, user_id, url) in targets {
                let url = match url {
                    Ok(url) => url,
                    Err(reason) => {
                        let err = ProviderError::permanent("invalid_url", reason);
                        out.push((delivery_id, Attempt::Failed(err)));
                        continue;
                    }
                };
                let now = chrono::Utc::now();
                let user = serde_json::to_string(&user_id).unwrap_or_else(|_| "null".into());
                let event = format!(
                    r#"{{"type":"message","timestamp":"{}","data":{{"id":"{message}","delivery_id":"{delivery_id}","user_id":{user},"body":{body}}}}}"#,
                    now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                );
                let id = format!("dlv_{delivery_id}");
                let ts = now.timestamp();
                let signature = sign(&key, &id, ts, event.as_bytes());
                let result = client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", signature)
                    .body(event)
                    .send()
                    .await;
                let attempt = match result {
                    Err(e) => Attempt::Failed(ProviderError::transport(&e)),
                    Ok(resp) => {
                        let attempt = classify_status(&resp);
                        // Read what the receiver answered (it is not used) so that the
                        // connection is kept; a long answer just closes it.
                        let _ = super::read_limited(resp, ANSWER_READ).await;
                        attempt
                    }
                };
                out.push((delivery_id, attempt));
            }
            out
        };
        Box::pin(work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_test_vector() {
        let key = secret_key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap_or_default();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            sign(&key, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }
}
