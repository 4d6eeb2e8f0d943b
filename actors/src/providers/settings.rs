//! [`ChannelSettings`]: a channel's provider settings, parsed once into the provider's own
//! typed struct. A key that is unknown, missing or of the wrong type is a
//! [`SettingsError`] naming it (`settings.smtp.port`), and so is a value its provider
//! refuses (an SMTP port out of range, a webhook secret that is not base64).

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::contract::SettingsError;
use super::{
    dingtalk, dingtalk_robot, email, feishu, inbox, jpush, jsms, sms_cmpp, webhook, wechat, wecom,
};
use crate::domain::channel::ChannelType;

/// One variant per provider client.
#[derive(Debug, Clone)]
pub enum ChannelSettings {
    Inbox(inbox::Settings),
    Webhook(webhook::Settings),
    Email(email::Settings),
    Wecom(wecom::Settings),
    /// DingTalk work notices.
    Dingtalk(dingtalk::Settings),
    /// A `dingtalk` channel with `mode = "robot"`: custom robots (group webhooks).
    DingtalkRobot(dingtalk_robot::Settings),
    Feishu(feishu::Settings),
    Jpush(jpush::Settings),
    Jsms(jsms::Settings),
    WechatOa(wechat::Settings),
    SmsCmpp(sms_cmpp::settings::CmppConfig),
    /// Types whose clients come later accept any settings; their senders report that
    /// they cannot start and their deliveries stay queued.
    Unsupported(ChannelType),
}

impl ChannelSettings {
    /// The channel type's name, as configured.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Inbox(_) => ChannelType::Inbox.as_str(),
            Self::Webhook(_) => ChannelType::Webhook.as_str(),
            Self::Email(_) => ChannelType::Email.as_str(),
            Self::Wecom(_) => ChannelType::Wecom.as_str(),
            Self::Dingtalk(_) | Self::DingtalkRobot(_) => ChannelType::Dingtalk.as_str(),
            Self::Feishu(_) => ChannelType::Feishu.as_str(),
            Self::Jpush(_) => ChannelType::Jpush.as_str(),
            Self::Jsms(_) => ChannelType::Jsms.as_str(),
            Self::WechatOa(_) => ChannelType::WechatOa.as_str(),
            Self::SmsCmpp(_) => ChannelType::SmsCmpp.as_str(),
            Self::Unsupported(ty) => ty.as_str(),
        }
    }

    /// Parses the provider's part of a channel's settings (the sender's own keys taken
    /// out).
    pub fn parse(ty: ChannelType, settings: &Value) -> Result<Self, SettingsError> {
        Ok(match ty {
            ChannelType::Inbox => Self::Inbox(parse(settings)?),
            ChannelType::Webhook => {
                let s: webhook::Settings = parse(settings)?;
                webhook::secret_key(&s.secret)?;
                Self::Webhook(s)
            }
            ChannelType::Email => {
                let s: email::Settings = parse(settings)?;
                email::check(&s)?;
                Self::Email(s)
            }
            ChannelType::Wecom => Self::Wecom(parse(settings)?),
            ChannelType::Dingtalk if is_robot(settings) => {
                let s: dingtalk_robot::Settings = parse(settings)?;
                dingtalk_robot::check(&s)?;
                Self::DingtalkRobot(s)
            }
            ChannelType::Dingtalk => Self::Dingtalk(parse(settings)?),
            ChannelType::Feishu => Self::Feishu(parse(settings)?),
            ChannelType::Jpush => Self::Jpush(parse(settings)?),
            ChannelType::Jsms => Self::Jsms(parse(settings)?),
            ChannelType::WechatOa => Self::WechatOa(parse(settings)?),
            ChannelType::SmsCmpp => {
                Self::SmsCmpp(parse::<sms_cmpp::settings::Settings>(settings)?.check()?)
            }
            ChannelType::WechatMp | ChannelType::Alipay => Self::Unsupported(ty),
        })
    }
}

/// A `dingtalk` channel with `mode = "robot"` sends through custom robots (group
/// webhooks) instead of work notices.
fn is_robot(settings: &Value) -> bool {
    settings.get("mode").and_then(Value::as_str) == Some("robot")
}

/// Deserialises a provider's settings struct, naming the bad field.
fn parse<T: DeserializeOwned>(settings: &Value) -> Result<T, SettingsError> {
    let value = if settings.is_null() {
        Value::Object(Default::default())
    } else {
        settings.clone()
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "settings".to_owned()
        } else {
            format!("settings.{path}")
        };
        SettingsError::new(field, e.into_inner().to_string())
    })
}

/// Settings keys whose values are credentials: never shown by the API.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "private_key"]
        .iter()
        .any(|s| k.contains(s))
}

/// A channel's settings with every credential removed.
pub fn redacted(settings: &Value) -> Value {
    match settings {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !is_secret_key(k))
                .map(|(k, v)| (k.clone(), redacted(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}
