//! Per-channel-type content: the shape each type takes (serde enforces field names and
//! types) and the length rules of its texts.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::access::{usable, ChannelLookup};
use super::error::{serde_field_error, FieldError};
use super::MAX_TEXT_CHARS;
use crate::domain::ChannelType;

pub(super) fn check_content(
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
