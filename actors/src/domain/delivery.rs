//! The life cycle of one delivery (one target on one channel).

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
    /// Sent, but no receipt came within the channel's receipt window: final (a receipt
    /// that comes later still moves it on).
    Unknown,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 11] = [
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
        DeliveryState::Unknown,
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
            DeliveryState::Unknown => "unknown",
        }
    }

    /// Something is still to happen before the delivery's outcome is known: it waits to
    /// be planned or sent, or for its receipt.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            DeliveryState::Planned | DeliveryState::Queued | DeliveryState::Submitted
        )
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
                | DeliveryState::Unknown
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
