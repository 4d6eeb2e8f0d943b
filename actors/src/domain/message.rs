//! A message's priority and life cycle as a whole.

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

    /// The status named `s` (as [`MessageStatus::as_str`] writes it).
    pub fn parse(s: &str) -> Option<Self> {
        (0..=5).filter_map(Self::from_i16).find(|m| m.as_str() == s)
    }
}
