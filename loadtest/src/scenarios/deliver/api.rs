//! The daemon's HTTP API as the load-test app: creating users with their bindings, and
//! submitting messages with bounded concurrency, retrying what the daemon pushes back.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The daemon's HTTP API as the load-test app.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base_url: String,
    pub app_key: String,
    pub app_secret: String,
}

/// Longest wait for one API answer.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of a send answered 429/503 or lost in transport (the same `message_id`, so a
/// retry never sends a message twice).
const SEND_RETRIES: u32 = 50;

impl Api {
    pub fn new(base_url: &str, app_key: &str, app_secret: &str) -> Result<Api> {
        Ok(Api {
            client: crate::http_builder()
                .timeout(API_TIMEOUT)
                .pool_max_idle_per_host(64)
                .build()?,
            base_url: base_url.to_owned(),
            app_key: app_key.to_owned(),
            app_secret: app_secret.to_owned(),
        })
    }

    /// Creates (or replaces) users through `POST /v1/users/batch`, 1000 per request;
    /// every row must be stored.
    pub async fn put_users(&self, rows: Vec<Value>) -> Result<usize> {
        let mut stored = 0usize;
        for chunk in rows.chunks(umsd_actors::domain::user::MAX_BATCH) {
            let resp = self
                .client
                .post(format!("{}/v1/users/batch", self.base_url))
                .basic_auth(&self.app_key, Some(&self.app_secret))
                .json(&json!({ "users": chunk }))
                .send()
                .await
                .context("POST /v1/users/batch")?;
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("POST /v1/users/batch answered {status}: {body}");
            }
            let failed = body["failed"].as_u64().unwrap_or(0);
            if failed > 0 {
                let first = body["results"]
                    .as_array()
                    .and_then(|r| r.iter().find(|x| x["status"] == "error"))
                    .cloned()
                    .unwrap_or(Value::Null);
                bail!("POST /v1/users/batch: {failed} rows refused, e.g. {first}");
            }
            stored += usize::try_from(body["stored"].as_u64().unwrap_or(0))?;
        }
        Ok(stored)
    }

    /// Sends one message body, retrying on 429/503 and transport errors.
    async fn send_one(&self, body: String) -> Result<u32> {
        let mut retries = 0u32;
        loop {
            let result = self
                .client
                .post(format!("{}/v1/messages", self.base_url))
                .basic_auth(&self.app_key, Some(&self.app_secret))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let why = match result {
                Ok(resp) if resp.status().is_success() => return Ok(retries),
                Ok(resp) if matches!(resp.status().as_u16(), 429 | 503) => {
                    format!("answered {}", resp.status())
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    bail!(
                        "POST /v1/messages answered {status}: {}",
                        text.chars().take(300).collect::<String>()
                    );
                }
                Err(e) => format!("{e}"),
            };
            retries += 1;
            if retries > SEND_RETRIES {
                bail!("POST /v1/messages: gave up after {SEND_RETRIES} retries ({why})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// How the messages were submitted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SendSummary {
    pub messages: u64,
    pub concurrency: usize,
    /// Retried requests (429/503 or transport errors).
    pub retries: u64,
    /// From the first request to the last answer.
    pub elapsed_s: f64,
    pub messages_per_second: f64,
}

/// Builds message `i`'s body.
pub type MakeBody = Arc<dyn Fn(usize) -> String + Send + Sync>;

/// Submits `count` messages with `concurrency` requests in flight; `accepted` counts the
/// answered ones as they come (for progress sampling).
pub async fn send_messages(
    api: Api,
    count: usize,
    concurrency: usize,
    make: MakeBody,
    accepted: Arc<AtomicU64>,
) -> Result<SendSummary> {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (api, make, next, accepted) =
            (api.clone(), make.clone(), next.clone(), accepted.clone());
        set.spawn(async move {
            let mut retries = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<u64, anyhow::Error>(retries);
                }
                retries += u64::from(api.send_one(make(i)).await?);
                accepted.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut retries = 0;
    while let Some(r) = set.join_next().await {
        retries += r.context("send worker")??;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    Ok(SendSummary {
        messages: count as u64,
        concurrency: concurrency.max(1),
        retries,
        elapsed_s: elapsed,
        messages_per_second: if elapsed > 0.0 {
            count as f64 / elapsed
        } else {
            0.0
        },
    })
}

/// A send request to `users` on `channels` with `content` (keyed by channel code).
pub fn message_body(
    message_id: &str,
    users: &[String],
    channels: &[&str],
    content: &Value,
) -> String {
    json!({
        "message_id": message_id,
        "audience": { "user_ids": users },
        "channels": channels,
        "content": content,
    })
    .to_string()
}
