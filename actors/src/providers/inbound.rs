//! Inbound provider requests: what providers send to `/callbacks/{channel_code}` —
//! delivery receipts, read receipts, URL verification — routed to the provider that owns
//! the channel. Each provider parses and verifies its own format (signatures included);
//! the HTTP front door only turns the request into an [`InboundRequest`], hands it here,
//! passes the receipts to the status writer and sends the [`Reply`].
//!
//! (Not to be confused with app callbacks, [`crate::app_callbacks`]: events umsd posts
//! to the apps.)

use chrono::{DateTime, Utc};

use super::contract::{Inbound, InboundError, InboundRequest, ProviderReceipt};
use super::settings::ChannelSettings;
use super::{feishu, jsms, wechat};
use crate::domain::channel::ChannelCode;
use crate::receipts::{ReceiptEvent, ReceiptKey};

/// A `POST` from the provider of a channel.
pub fn receive(
    settings: &ChannelSettings,
    req: &InboundRequest<'_>,
) -> Result<Inbound, InboundError> {
    match settings {
        ChannelSettings::Jsms(s) => jsms::inbound(s, req),
        ChannelSettings::WechatOa(s) => wechat::inbound(s, req),
        ChannelSettings::Feishu(_) => feishu::inbound(req),
        other => Err(InboundError::NotAccepted(other.type_name())),
    }
}

/// A `GET` URL verification: the `echostr` echoed, once the provider's signature (where
/// it signs) verifies.
pub fn verify(
    settings: &ChannelSettings,
    req: &InboundRequest<'_>,
) -> Result<String, InboundError> {
    let q = req.query_map();
    if let ChannelSettings::WechatOa(s) = settings {
        if !wechat::signature_ok(s, &q) {
            return Err(InboundError::BadSignature);
        }
    }
    Ok(q.get("echostr").cloned().unwrap_or_default())
}

/// The receipts as the status writer takes them.
pub fn events(
    channel: &ChannelCode,
    receipts: Vec<ProviderReceipt>,
    at: DateTime<Utc>,
) -> Vec<ReceiptEvent> {
    receipts
        .into_iter()
        .map(|r| ReceiptEvent {
            channel: channel.clone(),
            key: ReceiptKey::Provider(r.provider_id),
            state: r.state,
            code: r.code,
            reason: None,
            at,
        })
        .collect()
}
