//! Channel types and channel codes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The kinds of delivery channel umsd knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelType {
    SmsCmpp,
    Jsms,
    Email,
    Dingtalk,
    Wecom,
    Feishu,
    Jpush,
    WechatOa,
    WechatMp,
    Alipay,
    Webhook,
    Inbox,
}

impl ChannelType {
    pub const ALL: [ChannelType; 12] = [
        ChannelType::SmsCmpp,
        ChannelType::Jsms,
        ChannelType::Email,
        ChannelType::Dingtalk,
        ChannelType::Wecom,
        ChannelType::Feishu,
        ChannelType::Jpush,
        ChannelType::WechatOa,
        ChannelType::WechatMp,
        ChannelType::Alipay,
        ChannelType::Webhook,
        ChannelType::Inbox,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelType::SmsCmpp => "sms_cmpp",
            ChannelType::Jsms => "jsms",
            ChannelType::Email => "email",
            ChannelType::Dingtalk => "dingtalk",
            ChannelType::Wecom => "wecom",
            ChannelType::Feishu => "feishu",
            ChannelType::Jpush => "jpush",
            ChannelType::WechatOa => "wechat_oa",
            ChannelType::WechatMp => "wechat_mp",
            ChannelType::Alipay => "alipay",
            ChannelType::Webhook => "webhook",
            ChannelType::Inbox => "inbox",
        }
    }

    /// The binding type that holds a user's address on channels of this type; `None` for
    /// the inbox, which is addressed by the user id itself.
    pub fn binding_type(self) -> Option<&'static str> {
        match self {
            ChannelType::SmsCmpp | ChannelType::Jsms => Some("phone"),
            ChannelType::Email => Some("email"),
            ChannelType::Dingtalk => Some("dingtalk"),
            ChannelType::Wecom => Some("wecom"),
            ChannelType::Feishu => Some("feishu"),
            ChannelType::Jpush => Some("jpush"),
            ChannelType::WechatOa | ChannelType::WechatMp => Some("wechat_openid"),
            ChannelType::Alipay => Some("alipay"),
            ChannelType::Webhook => Some("webhook"),
            ChannelType::Inbox => None,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A channel code: 1–32 of `[A-Za-z0-9_-]`, immutable once created. Cheap to clone
/// (it is handed to every outcome and receipt of the channel).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelCode(Arc<str>);

/// A string that is not a channel code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a channel code is 1-32 characters of [A-Za-z0-9_-]")]
pub struct InvalidChannelCode;

impl ChannelCode {
    pub fn parse(s: &str) -> Result<Self, InvalidChannelCode> {
        if is_valid_channel_code(s) {
            Ok(Self(s.into()))
        } else {
            Err(InvalidChannelCode)
        }
    }

    /// A code read back from the database, where only valid codes are written.
    pub fn from_stored(s: &str) -> Self {
        Self(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A channel code: 1–32 of `[A-Za-z0-9_-]`.
pub fn is_valid_channel_code(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl std::ops::Deref for ChannelCode {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ChannelCode {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ChannelCode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ChannelCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for ChannelCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for ChannelCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChannelCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl PartialEq<str> for ChannelCode {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for ChannelCode {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for ChannelCode {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}
