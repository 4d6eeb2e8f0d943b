//! Channels: one [`ChannelSender`](sender::ChannelSender) actor per configured channel,
//! the contract between a sender and its provider client, and the classification of
//! provider errors.
//!
//! A provider client only turns a batch of targets into one provider call and classifies
//! the answer; queuing, rate limiting, concurrency, retries and status writes belong to the
//! sender, so every channel behaves the same way under load and failure.

pub mod queues;
pub mod sender;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde_json::Value;
use tokio::sync::Notify;

use crate::domain::send::SendRequest;
use crate::domain::{ChannelType, Priority};

/// Per-channel "work was queued" signals: the planner wakes a channel's sender after it
/// commits deliveries for it, so the sender need not poll the database.
#[derive(Debug, Default)]
pub struct WorkSignals {
    map: RwLock<HashMap<String, Arc<Notify>>>,
}

impl WorkSignals {
    pub fn get(&self, code: &str) -> Arc<Notify> {
        if let Ok(map) = self.map.read() {
            if let Some(n) = map.get(code) {
                return n.clone();
            }
        }
        match self.map.write() {
            Ok(mut map) => map.entry(code.to_owned()).or_default().clone(),
            Err(poisoned) => poisoned
                .into_inner()
                .entry(code.to_owned())
                .or_default()
                .clone(),
        }
    }

    pub fn wake(&self, code: &str) {
        self.get(code).notify_one();
    }
}

/// One recipient of a provider call.
#[derive(Debug, Clone)]
pub struct Target {
    pub delivery_id: i64,
    pub app_id: i32,
    pub user_id: Option<String>,
    pub address: String,
}

/// Targets of one message sent in one provider call (one target unless the provider takes
/// many recipients per call).
#[derive(Debug, Clone)]
pub struct Batch {
    pub message_pk: i64,
    pub priority: Priority,
    /// The message's content for this channel (by code, else by type).
    pub content: Arc<Value>,
    pub targets: Vec<Target>,
}

/// How a provider error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again later, with backoff and jitter, a bounded number of times.
    Retryable,
    /// The provider is throttling: slow the channel down and try again after its reset.
    RateLimited,
    /// The credential was refused even after a token refresh.
    Auth,
    /// Will never succeed as sent: the delivery fails with the provider's code.
    Permanent,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Auth => "auth",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// A classified provider error, with the provider's own code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    pub class: ErrorClass,
    pub code: String,
    pub reason: String,
    /// When the provider said how long to wait (`Retry-After`, a reset header).
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    pub fn new(class: ErrorClass, code: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            class,
            code: code.into(),
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn retryable(code: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(ErrorClass::Retryable, code, reason)
    }

    pub fn permanent(code: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(ErrorClass::Permanent, code, reason)
    }

    pub fn rate_limited(
        code: impl Into<String>,
        reason: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        Self {
            retry_after,
            ..Self::new(ErrorClass::RateLimited, code, reason)
        }
    }

    /// A transport failure (connect, timeout, reset): the request may not have arrived.
    pub fn transport(e: &reqwest::Error) -> Self {
        let code = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else {
            "transport"
        };
        Self::retryable(code, e.to_string())
    }
}

/// What became of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The provider took it. `delivered`: acceptance is the delivery (inbox, webhook 2xx,
    /// SMTP 250, WeCom, Feishu); otherwise a delivery receipt is to come. `receipts`:
    /// later receipts (delivered, read, clicked) will name `provider_id`, so it is
    /// recorded for matching them. `segments`: a message sent in several parts (a long
    /// SMS) has one provider id per part, each with its own receipt; the delivery is
    /// delivered once every part is (empty: one part, named by `provider_id`).
    Accepted {
        provider_id: Option<String>,
        delivered: bool,
        receipts: bool,
        segments: Vec<String>,
    },
    Failed(ProviderError),
}

/// A provider client. It lives on its channel's arbiter (single-threaded), so its futures
/// need not be `Send`.
pub trait Provider {
    /// Most targets of one message per call.
    fn max_batch(&self) -> usize {
        1
    }

    /// Sends one batch; answers one [`Attempt`] per target, by delivery id.
    fn send(&self, batch: Batch) -> LocalBoxFuture<'static, Vec<(i64, Attempt)>>;

    /// Rate-limit permits one target of this content takes: what the provider counts
    /// against the channel's rate (a long SMS is one submit per segment).
    fn cost(&self, _content: &Value) -> u32 {
        1
    }

    /// Live state beyond the sender's own (e.g. CMPP sessions), for `GET /admin/channels`.
    fn live(&self) -> Option<Value> {
        None
    }

    /// A configuration problem the provider found while running (e.g. a gateway refusing
    /// the credentials), reported on `/readyz` and `GET /admin/channels`.
    fn problem(&self) -> Option<String> {
        None
    }

    /// The sender is stopping and nothing is in flight: close connections politely. The
    /// sender reports itself stopped when this is done.
    fn close(&self) -> LocalBoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

impl Attempt {
    /// Accepted, and acceptance is the delivery; no receipt will follow.
    pub fn delivered(provider_id: Option<String>) -> Self {
        Attempt::Accepted {
            provider_id,
            delivered: true,
            receipts: false,
            segments: Vec::new(),
        }
    }

    /// Accepted; receipts naming `provider_id` will follow.
    pub fn submitted(provider_id: String) -> Self {
        Attempt::Accepted {
            provider_id: Some(provider_id),
            delivered: false,
            receipts: true,
            segments: Vec::new(),
        }
    }

    /// Accepted in several parts, each with its own provider id and receipt; the delivery
    /// shows them comma-separated as its provider id.
    pub fn submitted_in_parts(mut parts: Vec<String>) -> Self {
        if parts.len() <= 1 {
            return Self::submitted(parts.pop().unwrap_or_default());
        }
        Attempt::Accepted {
            provider_id: Some(parts.join(",")),
            delivered: false,
            receipts: true,
            segments: parts,
        }
    }
}

/// Every target of a batch with the same outcome.
pub fn all(batch: &Batch, attempt: Attempt) -> Vec<(i64, Attempt)> {
    batch
        .targets
        .iter()
        .map(|t| (t.delivery_id, attempt.clone()))
        .collect()
}

/// The content of a message for one channel: keyed by the channel's code, else its type.
pub fn content_for(request: &SendRequest, code: &str, ty: ChannelType) -> Option<Value> {
    let content = request.content.as_ref()?;
    content
        .get(code)
        .or_else(|| content.get(ty.as_str()))
        .cloned()
}

/// Retry timing: exponential backoff with ±20 % jitter, capped, for a bounded number of
/// attempts.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: i16,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`, after `attempt` failed attempts (≥ 1).
    pub fn delay(&self, attempt: i16) -> Duration {
        let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 20)).unwrap_or(0);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.max);
        let jitter = rand::random_range(0.8..1.2);
        raw.mul_f64(jitter)
    }
}

/// Settings keys every channel understands (the rest belong to its provider).
pub const SENDER_KEYS: &[&str] = &[
    "backlog",
    "max_attempts",
    "retry_base_ms",
    "retry_max_ms",
    "aging_seconds",
    "tls_ca_file",
];

/// A channel's sender settings from its directory entry; the provider's own settings are
/// what is left of `settings` after the sender's keys are taken out.
pub fn sender_config(
    entry: &crate::directory::ChannelEntry,
) -> Result<sender::SenderConfig, String> {
    let mut provider = entry.settings.clone();
    let mut knob = |key: &str, default: u64, min: u64, max: u64| -> Result<u64, String> {
        let v = match provider.as_object_mut().and_then(|o| o.remove(key)) {
            None | Some(Value::Null) => return Ok(default),
            Some(v) => v,
        };
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!(
                "settings.{key}: a whole number from {min} to {max}"
            )),
        }
    };
    let backlog = knob("backlog", 10_000, 1, 1_000_000)? as usize;
    let max_attempts = knob("max_attempts", 5, 1, 100)? as i16;
    let base = knob("retry_base_ms", 1000, 1, 3_600_000)?;
    let max = knob("retry_max_ms", 300_000, 1, 86_400_000)?;
    let aging = knob("aging_seconds", 30, 1, 86_400)?;
    let tls_ca_file = match provider
        .as_object_mut()
        .and_then(|o| o.remove("tls_ca_file"))
    {
        None | Some(Value::Null) => None,
        Some(Value::String(path)) if !path.is_empty() => Some(std::path::PathBuf::from(path)),
        Some(_) => return Err("settings.tls_ca_file: the path of a PEM file".into()),
    };
    let pool_size = match entry.pool_size {
        // A CMPP account keeps every session's window full.
        None if entry.channel_type == ChannelType::SmsCmpp => {
            // (bad settings are refused by the provider's own check)
            crate::cmpp::settings::parse(&provider)
                .map_or(8, |c| (c.max_connections * c.window).min(1024))
        }
        None => 8,
        Some(n) if (1..=1024).contains(&n) => n as usize,
        Some(_) => return Err("pool_size: from 1 to 1024".into()),
    };
    let burst = match entry.burst {
        None => None,
        Some(n) if n >= 1 => Some(n as u32),
        Some(_) => return Err("burst: at least 1".into()),
    };
    if let Some(r) = entry.rate_per_second {
        if !(r.is_finite() && r > 0.0) {
            return Err("rate_per_second: a positive number".into());
        }
    }
    Ok(sender::SenderConfig {
        code: entry.code.as_str().into(),
        channel_type: entry.channel_type,
        rate_per_second: entry.rate_per_second,
        burst,
        pool_size,
        backlog,
        aging: Duration::from_secs(aging),
        retry: RetryPolicy {
            max_attempts,
            base: Duration::from_millis(base),
            max: Duration::from_millis(max.max(base)),
        },
        tls_ca_file,
        settings: provider,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let d1 = p.delay(1);
        assert!(d1 >= Duration::from_millis(80) && d1 <= Duration::from_millis(120));
        let d3 = p.delay(3);
        assert!(d3 >= Duration::from_millis(320) && d3 <= Duration::from_millis(480));
        assert!(p.delay(12) <= Duration::from_millis(1200));
    }
}
