//! Provider clients, one module per provider, and what they share.
//!
//! * [`contract`]: what a channel sender asks of a provider client and what it answers;
//! * [`settings`]: each provider's settings, typed, parsed once;
//! * [`context`]: what a client is built with besides its settings;
//! * [`support`]: the HTTP client and answer shapes, TLS, access tokens, receipt polling;
//! * one module per provider: its settings, request building, error classes, and the
//!   receipts it is sent ([`inbound`] routes those to it) — `sms_cmpp` with its account and
//!   session actors.
//!
//! Every client is built on its channel's arbiter (its connection pool belongs to that
//! thread's runtime); queuing, pacing and retries are the sender's job.

pub mod context;
pub mod contract;
pub mod inbound;
pub mod settings;
pub mod support;

pub mod dingtalk;
pub mod dingtalk_robot;
pub mod email;
pub mod feishu;
pub mod inbox;
pub mod jpush;
pub mod jsms;
pub mod sms_cmpp;
pub mod webhook;
pub mod wechat;
pub mod wecom;

use std::rc::Rc;

use context::ProviderContext;
use contract::{BuildError, Provider};
use settings::ChannelSettings;

/// Builds the provider client for a channel (called on the channel's arbiter).
pub fn build(
    ctx: &ProviderContext,
    settings: &ChannelSettings,
) -> Result<Rc<dyn Provider>, BuildError> {
    Ok(match settings {
        ChannelSettings::Inbox(s) => Rc::new(inbox::Inbox::new(ctx, s)),
        ChannelSettings::Webhook(s) => Rc::new(webhook::Webhook::new(ctx, s)?),
        ChannelSettings::Email(s) => Rc::new(email::Email::new(ctx, s)?),
        ChannelSettings::Wecom(s) => Rc::new(wecom::Wecom::new(ctx, s)?),
        ChannelSettings::Dingtalk(s) => Rc::new(dingtalk::Dingtalk::new(ctx, s)?),
        ChannelSettings::DingtalkRobot(s) => Rc::new(dingtalk_robot::Robot::new(ctx, s)?),
        ChannelSettings::Feishu(s) => Rc::new(feishu::Feishu::new(ctx, s)?),
        ChannelSettings::Jpush(s) => Rc::new(jpush::Jpush::new(ctx, s)?),
        ChannelSettings::Jsms(s) => Rc::new(jsms::Jsms::new(ctx, s)?),
        ChannelSettings::WechatOa(s) => Rc::new(wechat::Wechat::new(ctx, s)?),
        ChannelSettings::SmsCmpp(c) => Rc::new(sms_cmpp::CmppAccount::new(ctx, c.clone())),
        ChannelSettings::Unsupported(ty) => return Err(BuildError::Unsupported(ty.as_str())),
    })
}
