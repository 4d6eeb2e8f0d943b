//! A send request (`POST /v1/messages`) and the rules it must satisfy.
//!
//! The front door deserialises the body into [`SendRequest`] (serde rejects unknown fields
//! and wrong types, naming the path), then [`SendRequest::validate`] checks every rule that
//! needs no database and turns it into a [`NewMessage`], the only thing the ingest accepts.
//! References to per-app objects (templates, strategies, lists, segments, callback URLs)
//! are returned in [`NewMessage::refs`] for the caller to check against the store.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{ChannelType, MessageStatus, Priority};

pub const MAX_USER_IDS: usize = 1000;
pub const MAX_ADDRESSES: usize = 1000;
pub const MAX_TAGS: usize = 100;
pub const MAX_TTL_SECONDS: u32 = 30 * 24 * 3600;
pub const MAX_SCHEDULE_AHEAD_DAYS: i64 = 60;
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

/// A rule broken by a request: answered as 422 with `field` set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub code: &'static str,
    pub message: String,
    pub field: String,
}

impl FieldError {
    pub fn new(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: field.into(),
        }
    }

    /// The same error for a message inside a batch: `messages[3].channels[0]`.
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

/// Whether an app may send on a channel code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelAccess {
    /// No channel with that code, or not granted to this app.
    Unknown,
    /// Switched off by the operator or by the app.
    Disabled,
    Usable(ChannelType),
}

/// What validation needs to know about the calling app's channels.
pub trait ChannelLookup {
    fn access(&self, code: &str) -> ChannelAccess;
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
    pub message_id: Option<String>,
    pub priority: Priority,
    pub status: MessageStatus,
    pub send_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub channels: Vec<String>,
    /// Canonical JSON of the request, stored as-is.
    pub request_json: String,
    /// sha256 of `request_json`: a replay with the same key and hash is the same message.
    pub body_hash: [u8; 32],
    pub refs: Vec<Reference>,
}

impl SendRequest {
    /// Checks every rule that needs no database; `now` decides scheduled vs accepted.
    pub fn validate(
        self,
        channels: &dyn ChannelLookup,
        now: DateTime<Utc>,
    ) -> Result<NewMessage, FieldError> {
        let mut refs = Vec::new();
        if let Some(key) = &self.message_id {
            if !is_idempotency_key(key) {
                return Err(FieldError::new(
                    "invalid_value",
                    "message_id",
                    "must be 1-64 characters of [A-Za-z0-9_.:-]",
                ));
            }
        }

        // Channels: each known, granted, enabled, listed once.
        let mut resolved: Vec<(String, ChannelType)> = Vec::new();
        match (&self.channels, &self.strategy) {
            (None, None) => {
                return Err(FieldError::new(
                    "missing_field",
                    "channels",
                    "give `channels` or a `strategy`",
                ))
            }
            (Some(list), _) => {
                if list.is_empty() {
                    return Err(FieldError::new(
                        "invalid_value",
                        "channels",
                        "must name at least one channel",
                    ));
                }
                for (i, code) in list.iter().enumerate() {
                    let field = format!("channels[{i}]");
                    let ty = usable(channels, code, &field)?;
                    if resolved.iter().any(|(c, _)| c == code) {
                        return Err(FieldError::new(
                            "duplicate_value",
                            field,
                            format!("channel `{code}` is listed twice"),
                        ));
                    }
                    resolved.push((code.clone(), ty));
                }
            }
            (None, Some(_)) => {}
        }
        if let Some(strategy) = &self.strategy {
            check_id(strategy, "strategy")?;
            refs.push(Reference::Strategy(strategy.clone()));
        }

        self.audience.check(channels, &resolved, &mut refs)?;

        // Content: either a template or per-channel content for each channel.
        match (&self.content, &self.template) {
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "invalid_value",
                    "template",
                    "give either `content` or `template`, not both",
                ))
            }
            (None, None) => {
                return Err(FieldError::new(
                    "missing_field",
                    "content",
                    "give `content` or `template`",
                ))
            }
            (None, Some(t)) => {
                check_id(&t.id, "template.id")?;
                refs.push(Reference::Template(t.id.clone()));
            }
            (Some(content), None) => check_content(content, channels, &resolved, &self.strategy)?,
        }

        if let Some(filter) = &self.filter {
            let id = match (&filter.blacklist, &filter.whitelist) {
                (Some(b), None) => b,
                (None, Some(w)) => w,
                _ => {
                    return Err(FieldError::new(
                        "invalid_value",
                        "filter",
                        "give exactly one of `blacklist` or `whitelist`",
                    ))
                }
            };
            check_id(id, "filter")?;
            refs.push(Reference::List(id.clone()));
        }
        if let Some(url) = &self.callback_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2048 {
                return Err(FieldError::new(
                    "invalid_value",
                    "callback_url",
                    "must be an http(s) URL of at most 2048 characters",
                ));
            }
            refs.push(Reference::CallbackUrl(url.clone()));
        }

        let send_at = match &self.send_at {
            None => None,
            Some(s) => {
                let t = DateTime::parse_from_rfc3339(s)
                    .map_err(|_| {
                        FieldError::new("invalid_value", "send_at", "must be an RFC 3339 time")
                    })?
                    .with_timezone(&Utc);
                if t > now + Duration::days(MAX_SCHEDULE_AHEAD_DAYS) {
                    return Err(FieldError::new(
                        "invalid_value",
                        "send_at",
                        format!("at most {MAX_SCHEDULE_AHEAD_DAYS} days ahead"),
                    ));
                }
                Some(t)
            }
        };
        let status = match send_at {
            Some(t) if t > now => MessageStatus::Scheduled,
            _ => MessageStatus::Accepted,
        };
        let expires_at = match self.ttl_seconds {
            None => None,
            Some(0) => {
                return Err(FieldError::new(
                    "invalid_value",
                    "ttl_seconds",
                    "must be at least 1",
                ))
            }
            Some(s) if s > MAX_TTL_SECONDS => {
                return Err(FieldError::new(
                    "invalid_value",
                    "ttl_seconds",
                    format!("must be at most {MAX_TTL_SECONDS}"),
                ))
            }
            Some(s) => Some(send_at.unwrap_or(now).max(now) + Duration::seconds(i64::from(s))),
        };

        let request_json = serde_json::to_string(&self).map_err(|e| {
            FieldError::new("invalid_value", "", format!("cannot encode request: {e}"))
        })?;
        let body_hash: [u8; 32] = Sha256::digest(request_json.as_bytes()).into();
        Ok(NewMessage {
            message_id: self.message_id,
            priority: self.priority.unwrap_or_default(),
            status,
            send_at,
            expires_at,
            channels: resolved.into_iter().map(|(c, _)| c).collect(),
            request_json,
            body_hash,
            refs,
        })
    }
}

impl Audience {
    fn check(
        &self,
        channels: &dyn ChannelLookup,
        resolved: &[(String, ChannelType)],
        refs: &mut Vec<Reference>,
    ) -> Result<(), FieldError> {
        let given = [
            self.user_ids.is_some(),
            self.tags.is_some(),
            self.segment.is_some(),
            self.broadcast.is_some(),
            self.addresses.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if given != 1 {
            return Err(FieldError::new(
                "invalid_audience",
                "audience",
                "give exactly one of user_ids, tags, segment, broadcast, addresses",
            ));
        }
        if let Some(ids) = &self.user_ids {
            if ids.is_empty() || ids.len() > MAX_USER_IDS {
                return Err(FieldError::new(
                    "invalid_value",
                    "audience.user_ids",
                    format!("must hold 1-{MAX_USER_IDS} user ids"),
                ));
            }
            for (i, id) in ids.iter().enumerate() {
                if !is_user_id(id) {
                    return Err(FieldError::new(
                        "invalid_value",
                        format!("audience.user_ids[{i}]"),
                        "a user id is 1-128 characters without spaces or control characters",
                    ));
                }
            }
        }
        if let Some(tags) = &self.tags {
            let (list, name) = match (&tags.any, &tags.all) {
                (Some(l), None) => (l, "any"),
                (None, Some(l)) => (l, "all"),
                _ => {
                    return Err(FieldError::new(
                        "invalid_value",
                        "audience.tags",
                        "give exactly one of `any` or `all`",
                    ))
                }
            };
            if list.is_empty() || list.len() > MAX_TAGS {
                return Err(FieldError::new(
                    "invalid_value",
                    format!("audience.tags.{name}"),
                    format!("must hold 1-{MAX_TAGS} tags"),
                ));
            }
            for (i, t) in list.iter().enumerate() {
                check_id(t, &format!("audience.tags.{name}[{i}]"))?;
            }
        }
        if let Some(seg) = &self.segment {
            check_id(seg, "audience.segment")?;
            refs.push(Reference::Segment(seg.clone()));
        }
        if self.broadcast == Some(false) {
            return Err(FieldError::new(
                "invalid_value",
                "audience.broadcast",
                "must be true when given",
            ));
        }
        if let Some(addresses) = &self.addresses {
            let total: usize = addresses.values().map(Vec::len).sum();
            if total == 0 || total > MAX_ADDRESSES {
                return Err(FieldError::new(
                    "invalid_value",
                    "audience.addresses",
                    format!("must hold 1-{MAX_ADDRESSES} addresses in all"),
                ));
            }
            for (code, list) in addresses {
                let field = format!("audience.addresses.{code}");
                let ty = match resolved.iter().find(|(c, _)| c == code) {
                    Some((_, ty)) => *ty,
                    None if resolved.is_empty() => usable(channels, code, &field)?,
                    None => {
                        return Err(FieldError::new(
                            "unknown_channel",
                            field,
                            format!("`{code}` is not one of this message's channels"),
                        ))
                    }
                };
                for (i, addr) in list.iter().enumerate() {
                    if !is_address_for(ty, addr) {
                        return Err(FieldError::new(
                            "invalid_value",
                            format!("{field}[{i}]"),
                            format!("not a valid {} address", ty.as_str()),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn usable(
    channels: &dyn ChannelLookup,
    code: &str,
    field: &str,
) -> Result<ChannelType, FieldError> {
    match channels.access(code) {
        ChannelAccess::Usable(ty) => Ok(ty),
        ChannelAccess::Unknown => Err(FieldError::new(
            "unknown_channel",
            field,
            format!("no channel `{code}` is granted to this app"),
        )),
        ChannelAccess::Disabled => Err(FieldError::new(
            "channel_disabled",
            field,
            format!("channel `{code}` is switched off"),
        )),
    }
}

fn check_content(
    content: &BTreeMap<String, Value>,
    channels: &dyn ChannelLookup,
    resolved: &[(String, ChannelType)],
    strategy: &Option<String>,
) -> Result<(), FieldError> {
    // Each key is a channel code of this message or a channel type; code wins.
    for (key, value) in content {
        let ty = if let Some((_, ty)) = resolved.iter().find(|(c, _)| c == key) {
            *ty
        } else if let Some(ty) = ChannelType::parse(key) {
            ty
        } else if strategy.is_some() {
            usable(channels, key, &format!("content.{key}"))?
        } else {
            return Err(FieldError::new(
                "unknown_field",
                format!("content.{key}"),
                format!("`{key}` is neither a channel of this message nor a channel type"),
            ));
        };
        check_content_for(ty, value, &format!("content.{key}"))?;
    }
    for (code, ty) in resolved {
        if !content.contains_key(code) && !content.contains_key(ty.as_str()) {
            return Err(FieldError::new(
                "missing_content",
                format!("content.{code}"),
                format!(
                    "no content for channel `{code}` (key it by `{code}` or `{}`)",
                    ty.as_str()
                ),
            ));
        }
    }
    Ok(())
}

// Per-type content shapes; serde enforces field names and types.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SmsContent {
    text: String,
    #[serde(default)]
    signature: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsmsContent {
    template_id: Value,
    #[serde(default)]
    params: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailContent {
    subject: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    html: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImContent {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    card: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushContent {
    #[serde(default)]
    title: Option<String>,
    alert: String,
    #[serde(default)]
    extras: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateMessageContent {
    template_id: String,
    data: serde_json::Map<String, Value>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    page: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookContent {
    body: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InboxContent {
    title: String,
    body: String,
}

fn parse_as<T: serde::de::DeserializeOwned>(value: &Value, field: &str) -> Result<T, FieldError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        serde_field_error(field, &path, &inner)
    })
}

/// Turns a serde data error at `path` (serde_path_to_error's notation, "." for the root)
/// into a [`FieldError`] naming the offending field under `prefix`.
pub fn serde_field_error(prefix: &str, path: &str, message: &str) -> FieldError {
    let mut field = match (prefix.is_empty(), path == "." || path.is_empty()) {
        (_, true) => prefix.to_owned(),
        (true, false) => path.to_owned(),
        (false, false) => format!("{prefix}.{path}"),
    };
    let named = message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("missing field") || message.starts_with("unknown field"));
    if let Some(name) = named {
        if !field.ends_with(name) {
            field = if field.is_empty() {
                name.to_owned()
            } else {
                format!("{field}.{name}")
            };
        }
    }
    let code = if message.starts_with("missing field") {
        "missing_field"
    } else if message.starts_with("unknown field") {
        "unknown_field"
    } else {
        "invalid_value"
    };
    // serde's messages carry " at line L column C" for JSON input; the field says where.
    let message = match message.find(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    FieldError::new(code, field, message)
}

fn text_rule(s: &str, field: String, max: usize) -> Result<(), FieldError> {
    let n = s.chars().count();
    if n == 0 || n > max || s.trim().is_empty() {
        return Err(FieldError::new(
            "invalid_value",
            field,
            format!("must be 1-{max} characters and not blank"),
        ));
    }
    Ok(())
}

fn check_content_for(ty: ChannelType, value: &Value, field: &str) -> Result<(), FieldError> {
    if !value.is_object() {
        return Err(FieldError::new(
            "invalid_value",
            field,
            "content for a channel is a JSON object",
        ));
    }
    match ty {
        ChannelType::SmsCmpp => {
            let c: SmsContent = parse_as(value, field)?;
            text_rule(&c.text, format!("{field}.text"), MAX_TEXT_CHARS)?;
            if let Some(sig) = &c.signature {
                text_rule(sig, format!("{field}.signature"), 20)?;
            }
        }
        ChannelType::Jsms => {
            let c: JsmsContent = parse_as(value, field)?;
            let ok = match &c.template_id {
                Value::Number(n) => n.as_u64().is_some(),
                Value::String(s) => !s.is_empty() && s.len() <= 64,
                _ => false,
            };
            if !ok {
                return Err(FieldError::new(
                    "invalid_value",
                    format!("{field}.template_id"),
                    "a template id is a positive integer or a short string",
                ));
            }
            let _ = c.params;
        }
        ChannelType::Email => {
            let c: EmailContent = parse_as(value, field)?;
            text_rule(&c.subject, format!("{field}.subject"), 998)?;
            match (&c.text, &c.html) {
                (None, None) => {
                    return Err(FieldError::new(
                        "missing_field",
                        format!("{field}.text"),
                        "give `text`, `html` or both",
                    ))
                }
                (text, html) => {
                    if let Some(t) = text {
                        text_rule(t, format!("{field}.text"), 1 << 19)?;
                    }
                    if let Some(h) = html {
                        text_rule(h, format!("{field}.html"), 1 << 19)?;
                    }
                }
            }
        }
        ChannelType::Dingtalk | ChannelType::Wecom | ChannelType::Feishu => {
            let c: ImContent = parse_as(value, field)?;
            match (&c.text, &c.card) {
                (Some(t), None) => text_rule(t, format!("{field}.text"), MAX_TEXT_CHARS)?,
                (None, Some(_)) => {}
                _ => {
                    return Err(FieldError::new(
                        "invalid_value",
                        field,
                        "give exactly one of `text` or `card`",
                    ))
                }
            }
        }
        ChannelType::Jpush => {
            let c: PushContent = parse_as(value, field)?;
            text_rule(&c.alert, format!("{field}.alert"), MAX_TEXT_CHARS)?;
            if let Some(t) = &c.title {
                text_rule(t, format!("{field}.title"), 200)?;
            }
            let _ = c.extras;
        }
        ChannelType::WechatOa | ChannelType::WechatMp | ChannelType::Alipay => {
            let c: TemplateMessageContent = parse_as(value, field)?;
            text_rule(&c.template_id, format!("{field}.template_id"), 128)?;
            let _ = (c.data, c.url, c.page);
        }
        ChannelType::Webhook => {
            let c: WebhookContent = parse_as(value, field)?;
            let _ = c.body;
        }
        ChannelType::Inbox => {
            let c: InboxContent = parse_as(value, field)?;
            text_rule(&c.title, format!("{field}.title"), 200)?;
            text_rule(&c.body, format!("{field}.body"), 1 << 16)?;
        }
    }
    Ok(())
}

/// Ids of per-app objects (templates, tags, lists …): 1-64 of `[A-Za-z0-9_.:-]`.
fn check_id(s: &str, field: &str) -> Result<(), FieldError> {
    if is_idempotency_key(s) {
        Ok(())
    } else {
        Err(FieldError::new(
            "invalid_value",
            field,
            "must be 1-64 characters of [A-Za-z0-9_.:-]",
        ))
    }
}

pub fn is_idempotency_key(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

pub fn is_user_id(s: &str) -> bool {
    (1..=128).contains(&s.chars().count())
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub fn is_address_for(ty: ChannelType, addr: &str) -> bool {
    match ty {
        ChannelType::SmsCmpp | ChannelType::Jsms => {
            let digits = addr.strip_prefix('+').unwrap_or(addr);
            (5..=21).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
        }
        ChannelType::Email => match addr.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && addr.len() <= 254
                    && !addr.chars().any(|c| c.is_whitespace() || c.is_control())
            }
            None => false,
        },
        ChannelType::Webhook => {
            (addr.starts_with("http://") || addr.starts_with("https://")) && addr.len() <= 2048
        }
        _ => is_user_id(addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Two;
    impl ChannelLookup for Two {
        fn access(&self, code: &str) -> ChannelAccess {
            match code {
                "inbox" => ChannelAccess::Usable(ChannelType::Inbox),
                "sms" => ChannelAccess::Usable(ChannelType::SmsCmpp),
                "off" => ChannelAccess::Disabled,
                _ => ChannelAccess::Unknown,
            }
        }
    }

    fn req(v: Value) -> SendRequest {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("bad fixture: {e}"))
    }

    #[test]
    fn a_plain_send_validates_and_hashes_stably() {
        let body = serde_json::json!({"message_id": "k1", "audience": {"user_ids": ["u1"]},
            "channels": ["inbox"], "content": {"inbox": {"title": "t", "body": "b"}}});
        let a = req(body.clone()).validate(&Two, Utc::now());
        let b = req(body).validate(&Two, Utc::now());
        let (a, b) = (
            a.unwrap_or_else(|e| panic!("{e}")),
            b.unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(a.body_hash, b.body_hash);
        assert_eq!(a.status, MessageStatus::Accepted);
        assert_eq!(a.channels, vec!["inbox".to_owned()]);
    }

    #[test]
    fn rules_name_the_field() {
        let cases = [
            (
                serde_json::json!({"audience": {"user_ids": ["u1"]}, "channels": ["nope"],
                "content": {"inbox": {"title": "t", "body": "b"}}}),
                "channels[0]",
                "unknown_channel",
            ),
            (
                serde_json::json!({"audience": {"user_ids": ["u1"]}, "channels": ["off"],
                "content": {}}),
                "channels[0]",
                "channel_disabled",
            ),
            (
                serde_json::json!({"audience": {"user_ids": []}, "channels": ["inbox"],
                "content": {"inbox": {"title": "t", "body": "b"}}}),
                "audience.user_ids",
                "invalid_value",
            ),
            (
                serde_json::json!({"audience": {"user_ids": ["u"], "broadcast": true}, "channels": ["inbox"],
                "content": {"inbox": {"title": "t", "body": "b"}}}),
                "audience",
                "invalid_audience",
            ),
            (
                serde_json::json!({"audience": {"addresses": {"sms": ["12ab"]}}, "channels": ["sms"],
                "content": {"sms": {"text": "x"}}}),
                "audience.addresses.sms[0]",
                "invalid_value",
            ),
            (
                serde_json::json!({"audience": {"user_ids": ["u1"]}, "channels": ["inbox", "sms"],
                "content": {"inbox": {"title": "t", "body": "b"}}}),
                "content.sms",
                "missing_content",
            ),
            (
                serde_json::json!({"audience": {"user_ids": ["u1"]}, "channels": ["inbox"],
                "content": {"inbox": {"title": "t"}}}),
                "content.inbox.body",
                "missing_field",
            ),
            (
                serde_json::json!({"message_id": "a b", "audience": {"user_ids": ["u1"]}, "channels": ["inbox"],
                "content": {"inbox": {"title": "t", "body": "b"}}}),
                "message_id",
                "invalid_value",
            ),
            (
                serde_json::json!({"audience": {"user_ids": ["u1"]}, "channels": ["inbox"], "ttl_seconds": 0,
                "content": {"inbox": {"title": "t", "body": "b"}}}),
                "ttl_seconds",
                "invalid_value",
            ),
            (
                serde_json::json!({"audience": {"user_ids": ["u1"]}, "channels": ["inbox"], "send_at": "tomorrow",
                "content": {"inbox": {"title": "t", "body": "b"}}}),
                "send_at",
                "invalid_value",
            ),
        ];
        for (body, field, code) in cases {
            let err = req(body.clone())
                .validate(&Two, Utc::now())
                .err()
                .unwrap_or_else(|| panic!("accepted {body}"));
            assert_eq!((err.field.as_str(), err.code), (field, code), "{body}");
        }
    }

    #[test]
    fn future_send_at_is_scheduled() {
        let at = (Utc::now() + Duration::hours(1)).to_rfc3339();
        let m = req(
            serde_json::json!({"audience": {"broadcast": true}, "channels": ["inbox"],
            "send_at": at, "content": {"inbox": {"title": "t", "body": "b"}}}),
        )
        .validate(&Two, Utc::now())
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.status, MessageStatus::Scheduled);
    }
}
