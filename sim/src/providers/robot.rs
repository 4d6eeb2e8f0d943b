//! DingTalk custom group robot: `POST /robot/send?access_token=T&timestamp=ms&sign=S`
//! with the HMAC-SHA256 signature checked. Errors are HTTP 200 with `errcode`; robots
//! have no receipts.

use hyper::Method;
use serde_json::{json, Value};

use crate::http::{self, Req, Resp};
use crate::state::{now_ms, Fault, Sim};
use crate::Kind;

const SEND: &str = "/robot/send";
/// How far the signed timestamp may be from the server clock.
const MAX_SKEW_MS: u64 = 3_600_000;

pub(super) fn is_send(req: &Req) -> bool {
    req.is(&Method::POST, SEND)
}

fn err(code: i64, msg: &str) -> Resp {
    http::ok(&json!({ "errcode": code, "errmsg": msg }))
}

pub(super) fn fault(f: Fault) -> Resp {
    match f {
        Fault::Busy => err(-1, "系统繁忙"),
        // The over-20-per-minute answer is unverified; 410100 "send too fast" is what
        // robot clients are seen handling.
        Fault::RateLimit => err(410100, "send too fast, exceed 20 times per minute"),
        Fault::Permanent => err(310000, "keywords not in content"),
        Fault::Fail | Fault::Drop | Fault::Timeout => http::unavailable(),
    }
}

pub(super) fn handle(sim: &Sim, req: &Req) -> Resp {
    if !is_send(req) {
        return http::not_found();
    }
    let token = req.query("access_token");
    if token.as_deref() != Some(sim.cfg.app_key.as_str()) {
        sim.counters.token_rejected.inc();
        // Seen in the wild for an unknown robot token; unverified.
        return err(300001, "token is not exist");
    }
    if let Err(msg) = verify(sim, req) {
        sim.counters.token_rejected.inc();
        return err(310000, msg);
    }
    if let Some(r) = super::over_rate(Kind::DingtalkRobot, sim) {
        return r;
    }
    let Some(body) = req.json() else {
        return err(40035, "缺少参数 json");
    };
    if body.get("msgtype").and_then(Value::as_str).is_none() {
        return err(40035, "缺少参数 msgtype");
    }
    let id = sim.next_id().to_string();
    sim.accept([(sim.cfg.app_key.clone(), id)], &req.body);
    err(0, "ok")
}

fn verify(sim: &Sim, req: &Req) -> Result<(), &'static str> {
    let (Some(ts), Some(sign)) = (req.query("timestamp"), req.query("sign")) else {
        return Err("sign not match");
    };
    let Ok(ts) = ts.parse::<u64>() else {
        return Err("invalid timestamp");
    };
    if ts.abs_diff(now_ms()) > MAX_SKEW_MS {
        return Err("invalid timestamp");
    }
    if sign != crate::sign::dingtalk_robot(&sim.cfg.app_secret, ts) {
        return Err("sign not match");
    }
    Ok(())
}
