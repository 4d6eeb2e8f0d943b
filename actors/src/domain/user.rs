//! Users and their bindings (`PUT /v1/users/{user_id}`): an app's end user, keyed by the
//! app's own id, with one address per channel type and scope.

use serde::{Deserialize, Serialize};

use super::channel::{is_valid_channel_code, ChannelType};
use super::send::{is_user_id, FieldError};

pub const MAX_TAGS: usize = 100;
pub const MAX_BINDINGS: usize = 50;
pub const MAX_BATCH: usize = 1000;

/// The kinds of address a user can be bound to.
pub const BINDING_TYPES: &[&str] = &[
    "phone",
    "email",
    "dingtalk",
    "wecom",
    "feishu",
    "jpush",
    "wechat_openid",
    "alipay",
    "webhook",
];

/// The body of `PUT /v1/users/{user_id}` (and one row of the batch, with `user_id`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub bindings: Vec<Binding>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    #[serde(rename = "type")]
    pub binding_type: String,
    pub value: String,
    #[serde(default = "scope_all")]
    pub scope: String,
}

fn scope_all() -> String {
    "all".into()
}

/// A validated user, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub user_id: String,
    pub enabled: bool,
    pub locale: Option<String>,
    pub tags: Vec<String>,
    pub bindings: Vec<Binding>,
}

/// Checks a user id taken from a path or a batch row.
pub fn check_user_id(user_id: &str, field: &str) -> Result<(), FieldError> {
    if is_user_id(user_id) {
        Ok(())
    } else {
        Err(FieldError::new(
            "invalid_value",
            field,
            "a user id is 1-128 characters without spaces or control characters",
        ))
    }
}

impl UserRequest {
    /// Validates the request; `channel_exists` tells whether a `channel:<code>` scope names
    /// a configured channel.
    pub fn validate(
        self,
        user_id: &str,
        channel_exists: &dyn Fn(&str) -> bool,
    ) -> Result<UserSpec, FieldError> {
        check_user_id(user_id, "user_id")?;
        if let Some(locale) = &self.locale {
            let ok = (2..=16).contains(&locale.len())
                && locale
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(FieldError::new(
                    "invalid_value",
                    "locale",
                    "a locale looks like `zh_CN` or `en-US`",
                ));
            }
        }
        if self.tags.len() > MAX_TAGS {
            return Err(FieldError::new(
                "invalid_value",
                "tags",
                format!("at most {MAX_TAGS} tags"),
            ));
        }
        let mut tags = Vec::with_capacity(self.tags.len());
        for (i, t) in self.tags.iter().enumerate() {
            if !super::send::is_idempotency_key(t) {
                return Err(FieldError::new(
                    "invalid_value",
                    format!("tags[{i}]"),
                    "a tag is 1-64 characters of [A-Za-z0-9_.:-]",
                ));
            }
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        if self.bindings.len() > MAX_BINDINGS {
            return Err(FieldError::new(
                "invalid_value",
                "bindings",
                format!("at most {MAX_BINDINGS} bindings"),
            ));
        }
        for (i, b) in self.bindings.iter().enumerate() {
            let field = format!("bindings[{i}]");
            if !BINDING_TYPES.contains(&b.binding_type.as_str()) {
                return Err(FieldError::new(
                    "invalid_value",
                    format!("{field}.type"),
                    format!("one of {}", BINDING_TYPES.join(", ")),
                ));
            }
            if !is_binding_value(&b.binding_type, &b.value) {
                return Err(FieldError::new(
                    "invalid_value",
                    format!("{field}.value"),
                    format!("not a valid {} address", b.binding_type),
                ));
            }
            match b.scope.as_str() {
                "all" | "app" => {}
                other => match other.strip_prefix("channel:") {
                    Some(code) if is_valid_channel_code(code) => {
                        if !channel_exists(code) {
                            return Err(FieldError::new(
                                "unknown_channel",
                                format!("{field}.scope"),
                                format!("no channel `{code}`"),
                            ));
                        }
                    }
                    _ => {
                        return Err(FieldError::new(
                            "invalid_value",
                            format!("{field}.scope"),
                            "`all`, `app` or `channel:<code>`",
                        ))
                    }
                },
            }
            if self.bindings[..i]
                .iter()
                .any(|o| o.binding_type == b.binding_type && o.scope == b.scope)
            {
                return Err(FieldError::new(
                    "duplicate_value",
                    field,
                    format!(
                        "a `{}` binding with scope `{}` is given twice",
                        b.binding_type, b.scope
                    ),
                ));
            }
        }
        Ok(UserSpec {
            user_id: user_id.to_owned(),
            enabled: self.enabled.unwrap_or(true),
            locale: self.locale,
            tags,
            bindings: self.bindings,
        })
    }
}

fn is_binding_value(binding_type: &str, value: &str) -> bool {
    let as_type = match binding_type {
        "phone" => Some(ChannelType::SmsCmpp),
        "email" => Some(ChannelType::Email),
        "webhook" => Some(ChannelType::Webhook),
        _ => None,
    };
    match as_type {
        Some(ty) => super::send::is_address_for(ty, value),
        None => {
            (1..=256).contains(&value.chars().count())
                && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        }
    }
}
