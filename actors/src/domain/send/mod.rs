//! A send request (`POST /v1/messages`) and the rules it must satisfy.
//!
//! The front door deserialises the body into [`SendRequest`] (serde rejects unknown fields
//! and wrong types, naming the path), then [`SendRequest::validate`] checks every rule that
//! needs no database and turns it into a [`NewMessage`], the only thing the ingest accepts.
//! References to per-app objects (templates, strategies, lists, segments, callback URLs)
//! are returned in [`NewMessage::refs`] for the caller to check against the store.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{IdempotencyKey, MessageStatus, Priority};

mod access;
mod address;
mod content;
mod error;
mod schedule;
mod validate;

pub use access::{usable, ChannelAccess, ChannelLookup};
pub use address::{check_id, is_address_for, is_idempotency_key, is_user_id};
pub use error::{serde_field_error, FieldError};
pub use schedule::{when, Refused, SendClock, When, SEND_AT_TOLERANCE_SECONDS};

pub const MAX_USER_IDS: usize = 1000;
pub const MAX_ADDRESSES: usize = 1000;
pub const MAX_TAGS: usize = 100;
pub const MAX_TTL_SECONDS: u32 = 30 * 24 * 3600;
pub const MAX_TEXT_CHARS: usize = 4000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub audience: Audience,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<TagSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateRef {
    pub id: String,
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blacklist: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whitelist: Option<String>,
}

/// A reference to a per-app object that must exist; checked against the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Template(String),
    Strategy(String),
    List(String),
    Segment(String),
    CallbackUrl(String),
}

impl Reference {
    /// The JSON path named when the reference does not resolve.
    pub fn field(&self) -> &'static str {
        match self {
            Reference::Template(_) => "template.id",
            Reference::Strategy(_) => "strategy",
            Reference::List(_) => "filter",
            Reference::Segment(_) => "audience.segment",
            Reference::CallbackUrl(_) => "callback_url",
        }
    }

    pub fn missing(&self) -> FieldError {
        let (code, what) = match self {
            Reference::Template(id) => ("unknown_template", format!("no template `{id}`")),
            Reference::Strategy(id) => ("unknown_strategy", format!("no strategy `{id}`")),
            Reference::List(id) => ("unknown_list", format!("no list `{id}`")),
            Reference::Segment(id) => ("unknown_segment", format!("no segment `{id}`")),
            Reference::CallbackUrl(url) => (
                "callback_not_configured",
                format!("`{url}` is not one of this app's callback endpoints"),
            ),
        };
        FieldError::new(code, self.field(), what)
    }
}

/// A validated message, ready for the ingest.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub message_id: Option<IdempotencyKey>,
    pub priority: Priority,
    pub status: MessageStatus,
    pub send_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub channels: Vec<String>,
    /// Canonical JSON of the request, stored as-is.
    pub request_json: String,
    /// The steps of the message's strategy (JSON), fixed when it is accepted; its
    /// `channels` then hold the first step's channel only.
    pub strategy: Option<String>,
    /// sha256 of `request_json`: a replay with the same key and hash is the same message.
    pub body_hash: [u8; 32],
    pub refs: Vec<Reference>,
}

impl SendRequest {
    /// The message's content for one channel: keyed by the channel's code, else its type.
    pub fn content_for(&self, code: &str, ty: super::ChannelType) -> Option<&Value> {
        let content = self.content.as_ref()?;
        content.get(code).or_else(|| content.get(ty.as_str()))
    }
}
