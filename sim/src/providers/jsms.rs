//! JSMS template SMS: `POST /v1/messages` and `POST /v1/messages/batch` (Basic auth).
//! Errors are non-200 with `{"error":{"code","message"}}`. Delivery reports are pushed
//! to the callback URL as signed `SMS_REPORT` form posts.

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::is_invalid;
use crate::http::{self, as_string, as_u64, Req, Resp};
use crate::receipts::Push;
use crate::state::{Fault, Outcome, Sim};
use crate::Kind;

const SEND: &str = "/v1/messages";
const BATCH: &str = "/v1/messages/batch";
const MAX_BATCH: usize = 1000;

pub(super) fn is_send(req: &Req) -> bool {
    req.is(&Method::POST, SEND) || req.is(&Method::POST, BATCH)
}

fn err(status: StatusCode, code: i64, msg: &str) -> Resp {
    http::json(
        status,
        &json!({ "error": { "code": code, "message": msg } }),
    )
}

pub(super) fn fault(f: Fault) -> Resp {
    match f {
        // JSMS documents no separate "busy" code: its server error is the retry signal.
        Fault::Fail | Fault::Busy | Fault::Drop | Fault::Timeout => {
            err(StatusCode::INTERNAL_SERVER_ERROR, 50019, "server error")
        }
        Fault::RateLimit => err(StatusCode::FORBIDDEN, 50009, "out of frequency"),
        Fault::Permanent => err(StatusCode::FORBIDDEN, 50013, "template invalid"),
    }
}

pub(super) fn handle(sim: &Sim, req: &Req) -> Resp {
    if !req.basic_auth_is(&sim.cfg.app_key, &sim.cfg.app_secret) {
        sim.counters.token_rejected.inc();
        return err(StatusCode::UNAUTHORIZED, 50002, "auth failed");
    }
    if is_send(req) {
        if let Some(r) = super::over_rate(Kind::Jsms, sim) {
            return r;
        }
    }
    match (&req.method, req.path()) {
        (&Method::POST, SEND) => single(sim, req),
        (&Method::POST, BATCH) => batch(sim, req),
        _ => http::not_found(),
    }
}

/// A mainland mobile number: 11 digits, optionally after `+86`.
fn valid_mobile(m: &str) -> bool {
    let digits = m.strip_prefix("+86").unwrap_or(m);
    !is_invalid(m) && digits.len() == 11 && digits.bytes().all(|b| b.is_ascii_digit())
}

fn deliver(sim: &Sim, msg_id: u64, mobile: String) {
    let status = match sim.draw_outcome() {
        Outcome::Undelivered => 4004,
        _ => 4001,
    };
    sim.push_receipt(Push::Jsms {
        msg_id,
        phone: mobile,
        status,
    });
}

fn single(sim: &Sim, req: &Req) -> Resp {
    let Some(body) = req.json() else {
        return err(
            StatusCode::BAD_REQUEST,
            50001,
            "request body is not valid JSON",
        );
    };
    if body.get("temp_id").and_then(as_u64).is_none() {
        return err(StatusCode::FORBIDDEN, 50013, "template invalid");
    }
    let Some(mobile) = body.get("mobile").and_then(as_string) else {
        return err(StatusCode::FORBIDDEN, 50006, "invalid mobile");
    };
    if !valid_mobile(&mobile) {
        return err(StatusCode::FORBIDDEN, 50006, "invalid mobile");
    }
    let msg_id = sim.next_id();
    sim.accept([(mobile.clone(), msg_id.to_string())], &req.body);
    deliver(sim, msg_id, mobile);
    http::ok(&json!({ "msg_id": msg_id }))
}

fn batch(sim: &Sim, req: &Req) -> Resp {
    let Some(body) = req.json() else {
        return err(
            StatusCode::BAD_REQUEST,
            50001,
            "request body is not valid JSON",
        );
    };
    if body.get("temp_id").and_then(as_u64).is_none() {
        return err(StatusCode::FORBIDDEN, 50013, "template invalid");
    }
    let Some(recipients) = body.get("recipients").and_then(Value::as_array) else {
        return err(StatusCode::BAD_REQUEST, 50001, "missing recipients");
    };
    if recipients.is_empty() || recipients.len() > MAX_BATCH {
        // The exact code for an oversized batch is undocumented.
        return err(
            StatusCode::BAD_REQUEST,
            50001,
            "recipients must hold 1 to 1000 entries",
        );
    }
    let mut results = Vec::with_capacity(recipients.len());
    let mut accepted = Vec::new();
    for r in recipients {
        let mobile = r.get("mobile").and_then(as_string).unwrap_or_default();
        if valid_mobile(&mobile) {
            let msg_id = sim.next_id();
            results.push(json!({ "msg_id": msg_id, "mobile": mobile }));
            accepted.push((mobile, msg_id));
        } else {
            results.push(json!({
                "error_code": 50006,
                "error_message": "invalid mobile",
                "mobile": mobile,
            }));
        }
    }
    let success = accepted.len();
    let failure = results.len() - success;
    sim.accept(
        accepted.iter().map(|(m, id)| (m.clone(), id.to_string())),
        &req.body,
    );
    for (mobile, msg_id) in accepted {
        deliver(sim, msg_id, mobile);
    }
    http::ok(&json!({
        "success_count": success,
        "failure_count": failure,
        "recipients": results,
    }))
}
