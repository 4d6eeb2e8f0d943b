//! Domain types: the vocabulary of `DESIGN.md` as Rust types. Values from the network are
//! parsed into these at the edge; inside the engine they carry their guarantees.

pub mod ids;
pub mod send;
pub mod user;

use serde::{Deserialize, Serialize};

/// Delivery priority; each channel sender keeps one queue per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    pub fn as_i16(self) -> i16 {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }

    pub fn from_i16(v: i16) -> Option<Self> {
        match v {
            0 => Some(Priority::High),
            1 => Some(Priority::Normal),
            2 => Some(Priority::Low),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// Life cycle of a message as a whole (`API.md`: `GET /v1/messages/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Scheduled,
    Accepted,
    Dispatching,
    Done,
    Recalled,
    Cancelled,
}

impl MessageStatus {
    pub fn as_i16(self) -> i16 {
        match self {
            MessageStatus::Scheduled => 0,
            MessageStatus::Accepted => 1,
            MessageStatus::Dispatching => 2,
            MessageStatus::Done => 3,
            MessageStatus::Recalled => 4,
            MessageStatus::Cancelled => 5,
        }
    }

    pub fn from_i16(v: i16) -> Option<Self> {
        Some(match v {
            0 => MessageStatus::Scheduled,
            1 => MessageStatus::Accepted,
            2 => MessageStatus::Dispatching,
            3 => MessageStatus::Done,
            4 => MessageStatus::Recalled,
            5 => MessageStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Scheduled => "scheduled",
            MessageStatus::Accepted => "accepted",
            MessageStatus::Dispatching => "dispatching",
            MessageStatus::Done => "done",
            MessageStatus::Recalled => "recalled",
            MessageStatus::Cancelled => "cancelled",
        }
    }
}

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

/// A channel code: 1–32 of `[A-Za-z0-9_-]`, immutable once created.
pub fn is_valid_channel_code(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An app key: 1–64 of `[A-Za-z0-9_-]`.
pub fn is_valid_app_key(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Life cycle of one delivery (one target on one channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    Planned,
    /// Not effective: skipped for a reason (no address, user disabled, filtered …).
    Filtered,
    Queued,
    Submitted,
    Failed,
    Delivered,
    Undelivered,
    Clicked,
    Recalled,
    /// Opened by the recipient (DingTalk, Feishu read receipts); counts as delivered.
    Read,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 10] = [
        DeliveryState::Planned,
        DeliveryState::Filtered,
        DeliveryState::Queued,
        DeliveryState::Submitted,
        DeliveryState::Failed,
        DeliveryState::Delivered,
        DeliveryState::Undelivered,
        DeliveryState::Clicked,
        DeliveryState::Recalled,
        DeliveryState::Read,
    ];

    pub fn as_i16(self) -> i16 {
        self as i16
    }

    pub fn from_i16(v: i16) -> Option<Self> {
        Self::ALL.get(usize::try_from(v).ok()?).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Planned => "planned",
            DeliveryState::Filtered => "filtered",
            DeliveryState::Queued => "queued",
            DeliveryState::Submitted => "submitted",
            DeliveryState::Failed => "failed",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Undelivered => "undelivered",
            DeliveryState::Clicked => "clicked",
            DeliveryState::Recalled => "recalled",
            DeliveryState::Read => "read",
        }
    }

    pub fn is_effective(self) -> bool {
        self != DeliveryState::Filtered
    }

    pub fn is_sent(self) -> bool {
        matches!(
            self,
            DeliveryState::Submitted
                | DeliveryState::Delivered
                | DeliveryState::Undelivered
                | DeliveryState::Clicked
                | DeliveryState::Read
        )
    }

    pub fn is_delivered(self) -> bool {
        matches!(
            self,
            DeliveryState::Delivered | DeliveryState::Clicked | DeliveryState::Read
        )
    }

    pub fn is_failed(self) -> bool {
        matches!(self, DeliveryState::Failed | DeliveryState::Undelivered)
    }

    /// The stored codes of every state for which `pred` holds.
    pub fn codes(pred: impl Fn(DeliveryState) -> bool) -> Vec<i16> {
        Self::ALL
            .into_iter()
            .filter(|s| pred(*s))
            .map(DeliveryState::as_i16)
            .collect()
    }
}
