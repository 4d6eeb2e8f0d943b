//! One module per simulated provider. Each knows which of its endpoints are send
//! requests (the ones faults and the rate bucket apply to), how it answers each injected
//! fault, and serves its own endpoints.

mod dingtalk;
mod feishu;
mod jpush;
mod jsms;
mod robot;
mod webhook;
mod wechat;
mod wecom;

use crate::http::{Req, Resp};
use crate::state::{Fault, Sim};
use crate::Kind;

pub(crate) fn is_send(kind: Kind, req: &Req) -> bool {
    match kind {
        Kind::Dingtalk => dingtalk::is_send(req),
        Kind::DingtalkRobot => robot::is_send(req),
        Kind::Wecom => wecom::is_send(req),
        Kind::Feishu => feishu::is_send(req),
        Kind::Jpush => jpush::is_send(req),
        Kind::Jsms => jsms::is_send(req),
        Kind::WechatOa => wechat::is_send(req),
        Kind::Webhook => webhook::is_send(req),
    }
}

/// The provider's answer to an injected fault (`Drop` and `Timeout` never get here).
pub(crate) fn fault_reply(kind: Kind, fault: Fault, sim: &Sim) -> Resp {
    match kind {
        Kind::Dingtalk => dingtalk::fault(fault),
        Kind::DingtalkRobot => robot::fault(fault),
        Kind::Wecom => wecom::fault(fault),
        Kind::Feishu => feishu::fault(fault, sim),
        Kind::Jpush => jpush::fault(fault, sim),
        Kind::Jsms => jsms::fault(fault),
        Kind::WechatOa => wechat::fault(fault),
        Kind::Webhook => webhook::fault(fault),
    }
}

pub(crate) fn handle(kind: Kind, sim: &Sim, req: &Req) -> Resp {
    match kind {
        Kind::Dingtalk => dingtalk::handle(sim, req),
        Kind::DingtalkRobot => robot::handle(sim, req),
        Kind::Wecom => wecom::handle(sim, req),
        Kind::Feishu => feishu::handle(sim, req),
        Kind::Jpush => jpush::handle(sim, req),
        Kind::Jsms => jsms::handle(sim, req),
        Kind::WechatOa => wechat::handle(sim, req),
        Kind::Webhook => webhook::handle(sim, req),
    }
}

/// The provider's rate-limit answer when the send is over the configured rate. Called
/// after authentication: providers throttle per app, so they must know the app first.
pub(crate) fn over_rate(kind: Kind, sim: &Sim) -> Option<Resp> {
    if sim.take_rate() {
        return None;
    }
    sim.counters.rate_limited.inc();
    Some(fault_reply(kind, Fault::RateLimit, sim))
}

/// Whether the provider treats this id as unknown.
pub(crate) fn is_invalid(id: &str) -> bool {
    id.starts_with("invalid")
}
