//! Signed webhooks: each delivery is an HTTP POST of a JSON event to the URL bound to the
//! user (or given as the address), signed per Standard Webhooks: headers `webhook-id`
//! (the delivery id, stable across retries, so the receiver can drop duplicates),
//! `webhook-timestamp` (Unix seconds) and `webhook-signature`
//! (`v1,` + base64 HMAC-SHA256 over `id.timestamp.body`, keyed by the secret's bytes).
//!
//! Any 2xx is the delivery. 429, 502 and 504 throttle the channel (honouring
//! `Retry-After`); 410 and other 4xx fail it; other 5xx and transport errors are retried.
//!
//! `http://` receivers are posted to through a plain hyper client (one connection pool,
//! URLs parsed once into `Uri`s, the signed headers as fixed names): a webhook channel
//! makes one request per delivery, and this path costs about a fifth less CPU per request
//! than going through reqwest (`docs/benchmarks.md`, fan-out). `https://` receivers go
//! through reqwest, which brings the TLS setup: the system's trust roots plus
//! `settings.tls_ca_file`.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use sha2::Sha256;

use super::context::ProviderContext;
use super::contract::{Attempt, Batch, BuildError, Provider, ProviderError, SettingsError};
use super::support::http::{default_timeout_ms, header_seconds, http_client, read_limited};
use crate::domain::MessagePk;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `whsec_` + base64 of 24–64 random bytes.
    pub secret: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

pub struct Webhook {
    /// For `https://` receivers.
    client: reqwest::Client,
    /// For `http://` receivers.
    plain: PlainClient,
    timeout: Duration,
    key: std::sync::Arc<[u8]>,
    /// The last few messages' serialized parts (message id, body): a message goes out to
    /// its recipients one call each, mostly one message after another.
    recent: RefCell<VecDeque<(MessagePk, Rc<Shared>)>>,
    /// Parsed receiver URLs: the same receivers are called again and again, and parsing
    /// (host normalization included) costs more than a copy.
    urls: RefCell<HashMap<String, Receiver>>,
}

type PlainClient = hyper_util::client::legacy::Client<HttpConnector, http_body_util::Full<Bytes>>;

/// A receiver's URL, parsed for the client that posts to it.
#[derive(Clone)]
enum Receiver {
    Plain(Uri),
    Tls(reqwest::Url),
}

const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

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
pub fn secret_key(secret: &str) -> Result<Vec<u8>, SettingsError> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| SettingsError::new("settings.secret", "not `whsec_` followed by base64"))?;
    if key.len() < 16 {
        return Err(SettingsError::new(
            "settings.secret",
            "at least 16 bytes of key",
        ));
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
    pub fn new(ctx: &ProviderContext, s: &Settings) -> Result<Self, BuildError> {
        let timeout = Duration::from_millis(s.timeout_ms);
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout.min(Duration::from_secs(5))));
        let plain =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(ctx.pool_size.max(1))
                .build(http);
        Ok(Self {
            client: http_client(ctx, timeout)?,
            plain,
            timeout,
            key: secret_key(&s.secret)?.into(),
            recent: RefCell::new(VecDeque::with_capacity(RECENT)),
            urls: RefCell::new(HashMap::new()),
        })
    }
}

fn classify_status(status: StatusCode, headers: &HeaderMap) -> Attempt {
    let code = status.as_u16().to_string();
    if status.is_success() {
        Attempt::delivered(None)
    } else if matches!(status.as_u16(), 429 | 502 | 504) {
        Attempt::Failed(ProviderError::rate_limited(
            code,
            format!("receiver answered {status}"),
            header_seconds(headers, "retry-after"),
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

/// One signed event, ready to post.
struct Event {
    id: String,
    timestamp: i64,
    signature: String,
    body: String,
}

/// Posts an event to an `http://` receiver.
async fn post_plain(client: &PlainClient, timeout: Duration, uri: Uri, event: Event) -> Attempt {
    let mut req = hyper::Request::new(http_body_util::Full::new(Bytes::from(event.body)));
    *req.method_mut() = hyper::Method::POST;
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    headers.insert(CONTENT_TYPE, JSON);
    for (name, value) in [
        (WEBHOOK_ID, event.id),
        (WEBHOOK_TIMESTAMP, event.timestamp.to_string()),
        (WEBHOOK_SIGNATURE, event.signature),
    ] {
        // Ids, digits and base64: always valid header values.
        if let Ok(v) = HeaderValue::try_from(value) {
            headers.insert(name, v);
        }
    }
    let call = async {
        let resp = client.request(req).await.map_err(|e| {
            let code = if e.is_connect() {
                "connect"
            } else {
                "transport"
            };
            ProviderError::retryable(code, e.to_string())
        })?;
        let attempt = classify_status(resp.status(), resp.headers());
        // Read what the receiver answered (it is not used) so that the connection is
        // kept; a long answer just closes it.
        let _ = http_body_util::Limited::new(resp.into_body(), ANSWER_READ)
            .collect()
            .await;
        Ok(attempt)
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(attempt)) => attempt,
        Ok(Err(e)) => Attempt::Failed(e),
        Err(_) => Attempt::Failed(ProviderError::retryable(
            "timeout",
            format!("no answer within {} ms", timeout.as_millis()),
        )),
    }
}

/// Posts an event to an `https://` receiver.
async fn post_tls(client: &reqwest::Client, url: reqwest::Url, event: Event) -> Attempt {
    let result = client
        .post(url)
        .header(CONTENT_TYPE, JSON)
        .header(WEBHOOK_ID, event.id)
        .header(WEBHOOK_TIMESTAMP, event.timestamp.to_string())
        .header(WEBHOOK_SIGNATURE, event.signature)
        .body(event.body)
        .send()
        .await;
    match result {
        Err(e) => Attempt::Failed(ProviderError::transport(&e)),
        Ok(resp) => {
            let attempt = classify_status(resp.status(), resp.headers());
            let _ = read_limited(resp, ANSWER_READ).await;
            attempt
        }
    }
}

/// A recipient's address that is not a URL umsd can post to.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the webhook URL {0}")]
struct InvalidUrl(String);

impl Webhook {
    /// The receiver's URL, parsed once.
    fn url(&self, address: &str) -> Result<Receiver, InvalidUrl> {
        let mut urls = self.urls.borrow_mut();
        if let Some(url) = urls.get(address) {
            return Ok(url.clone());
        }
        let invalid =
            |e: &dyn std::fmt::Display| InvalidUrl(format!("{address:?} is not valid: {e}"));
        let url = reqwest::Url::parse(address).map_err(|e| invalid(&e))?;
        let receiver = match url.scheme() {
            // The normalized form (lower-case host, default path) as the request target.
            "http" => Receiver::Plain(Uri::try_from(url.as_str()).map_err(|e| invalid(&e))?),
            "https" => Receiver::Tls(url),
            _ => return Err(InvalidUrl(format!("{address:?} is not http or https"))),
        };
        if urls.len() >= URLS {
            urls.clear();
        }
        urls.insert(address.to_owned(), receiver.clone());
        Ok(receiver)
    }

    /// The parts of a message's events shared by all its recipients, serialized once.
    fn shared(&self, batch: &Batch) -> Rc<Shared> {
        let mut recent = self.recent.borrow_mut();
        if let Some((_, s)) = recent.iter().find(|(pk, _)| *pk == batch.message_pk) {
            return s.clone();
        }
        let shared = Rc::new(Shared {
            message: batch.message_pk.to_string(),
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
        let plain = self.plain.clone();
        let timeout = self.timeout;
        let key = self.key.clone();
        let shared = self.shared(&batch);
        let targets: Vec<(i64, Option<String>, Result<Receiver, InvalidUrl>)> = batch
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
                        let err = ProviderError::permanent("invalid_url", reason.to_string());
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
                let timestamp = now.timestamp();
                let signature = sign(&key, &id, timestamp, event.as_bytes());
                let event = Event {
                    id,
                    timestamp,
                    signature,
                    body: event,
                };
                let attempt = match url {
                    Receiver::Plain(uri) => post_plain(&plain, timeout, uri, event).await,
                    Receiver::Tls(url) => post_tls(&client, url, event).await,
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
