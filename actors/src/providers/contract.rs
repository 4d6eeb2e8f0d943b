//! The contract between a channel sender and its provider client.
//!
//! A provider client only turns a [`Batch`] of one message's targets into one provider call
//! and classifies the answer ([`Attempt`], [`ErrorClass`]); queuing, rate limiting,
//! concurrency, retries and status writes belong to the sender, so every channel behaves
//! the same way under load and failure. A client lives on its channel's arbiter (one
//! thread), so its futures need not be `Send`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde_json::Value;

use crate::domain::ids::MessagePk;
use crate::domain::{DeliveryState, Priority};

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
    pub message_pk: MessagePk,
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

/// A sent delivery to withdraw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecallTarget {
    pub delivery_id: i64,
    pub app_id: i32,
    /// What the provider answered when it took the message (its message or task id).
    pub provider_id: Option<String>,
    pub address: Option<String>,
}

/// What a provider did with a recall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecallOutcome {
    /// Withdrawn from the recipient.
    Withdrawn,
    /// Not withdrawn, and why (`no_recall_api`, `recall_window_passed`, a provider code).
    Kept(String),
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

    /// Asks the provider to withdraw messages it took (recall); answers each target's
    /// outcome by delivery id. Types without a recall API keep the default.
    fn recall(
        &self,
        targets: Vec<RecallTarget>,
    ) -> LocalBoxFuture<'static, Vec<(i64, RecallOutcome)>> {
        Box::pin(async move {
            targets
                .into_iter()
                .map(|t| (t.delivery_id, RecallOutcome::Kept("no_recall_api".into())))
                .collect()
        })
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

/// A channel's settings that do not hold: the field (`settings.port`, `pool_size`) and
/// what is wrong with it. The admin API answers it as 422 naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SettingsError {
    pub field: String,
    pub message: String,
}

impl SettingsError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why a provider client could not be built on its arbiter.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error("cannot build the SMTP transport")]
    Smtp(#[source] lettre::transport::smtp::Error),
    #[error("channels of type `{0}` cannot send from this build")]
    Unsupported(&'static str),
}

// Inbound requests: what a provider sends to `/callbacks/{channel_code}` (see
// `crate::providers::inbound`).

/// A provider's request, as plain values.
#[derive(Debug, Clone, Copy)]
pub struct InboundRequest<'a> {
    /// The raw query string (without `?`).
    pub query: &'a str,
    pub body: &'a [u8],
}

impl InboundRequest<'_> {
    /// The query's parameters (a malformed query is no parameters).
    pub fn query_map(&self) -> std::collections::HashMap<String, String> {
        serde_urlencoded::from_str(self.query).unwrap_or_default()
    }
}

/// A receipt a provider reported: its id for the delivery, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderReceipt {
    pub provider_id: String,
    pub state: DeliveryState,
    pub code: Option<String>,
}

impl ProviderReceipt {
    pub fn new(provider_id: impl Into<String>, state: DeliveryState, code: Option<&str>) -> Self {
        Self {
            provider_id: provider_id.into(),
            state,
            code: code.map(str::to_owned),
        }
    }
}

/// The answer a provider expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// 200 with no body.
    Empty,
    /// 200 `text/plain`.
    Text(String),
    /// 200 JSON.
    Json(Value),
}

/// What a provider's request amounts to.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub receipts: Vec<ProviderReceipt>,
    pub reply: Reply,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    /// The signature does not verify: answered 401.
    #[error("the request's signature does not verify")]
    BadSignature,
    /// The body is not what the provider sends: answered 400.
    #[error("{0}")]
    Malformed(String),
    /// Channels of this type are sent no requests: answered 404.
    #[error("channels of type `{0}` take no callbacks")]
    NotAccepted(&'static str),
}
