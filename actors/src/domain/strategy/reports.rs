//! What each channel type can report back, following the product's table of which
//! channels detect delivery and clicks.

use crate::domain::ChannelType;

/// What "delivered" means on a channel type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The provider confirms delivery to the person's device or mailbox (a receipt).
    Confirmed,
    /// Only that the provider accepted the message (its API or server answered success).
    Accepted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reports {
    pub delivery: Delivery,
    /// Clicks can be detected (tracked links, card buttons, notification taps).
    pub clicks: bool,
}

/// What a channel type reports.
pub fn reports(t: ChannelType) -> Reports {
    use ChannelType::*;
    let (delivery, clicks) = match t {
        // Status reports from the gateway / JSMS callbacks; links in the text are tracked.
        SmsCmpp | Jsms => (Delivery::Confirmed, true),
        // JPush delivery and notification-click reports.
        Jpush => (Delivery::Confirmed, true),
        // Template-message job-finish events; jump links are tracked.
        WechatOa => (Delivery::Confirmed, true),
        // Work-notice send results; clicks on card messages.
        Dingtalk => (Delivery::Confirmed, true),
        // Stored in the user's inbox is delivered; the inbox reports reads, not clicks.
        Inbox => (Delivery::Confirmed, false),
        // SMTP: the receiving server took it; tracked links.
        Email => (Delivery::Accepted, true),
        // The WeCom / Feishu / Alipay servers took it; links and cards are tracked.
        Wecom | Feishu | Alipay => (Delivery::Accepted, true),
        // The Mini Program API answered success; clicks cannot be detected.
        WechatMp => (Delivery::Accepted, false),
        // The receiver answered 2xx; nothing comes back from a person.
        Webhook => (Delivery::Accepted, false),
    };
    Reports { delivery, clicks }
}
