//! JPush v3: `POST /v3/push` (Basic auth, `cid` idempotency, `/v3/push/validate`,
//! `GET /v3/push/cid`), `DELETE /v3/push/{msg_id}` (withdraw) and the report pull APIs on
//! the same listener: `POST /v3/status/message` and `GET /v3/received`. Errors are
//! non-200 with `{"error":{"code","message"}}`; every push answer carries the
//! `X-Rate-Limit-*` headers.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::is_invalid;
use crate::http::{self, as_string, as_u64, Req, Resp};
use crate::recalls::Check;
use crate::state::{random_hex, Fault, Outcome, Sim};
use crate::Kind;

const PUSH: &str = "/v3/push";
const VALIDATE: &str = "/v3/push/validate";
/// The answer to a withdraw of a msg_id JPush does not (or no longer) know. JPush's limit
/// is unconfirmed (providers-2.md §6); an old msg_id was seen answered "msgid don't
/// exist", so an unknown one and one past the window get the same error.
const WITHDRAW_UNKNOWN: i64 = 1003;
const MAX_RIDS: usize = 1000;
const MAX_MSG_IDS: usize = 100;

pub(super) fn is_send(req: &Req) -> bool {
    req.is(&Method::POST, PUSH)
}

fn err(status: StatusCode, code: i64, msg: &str) -> Resp {
    http::json(
        status,
        &json!({ "error": { "code": code, "message": msg } }),
    )
}

fn rate_headers(r: Resp, sim: &Sim) -> Resp {
    let (quota, remaining, reset) = sim.rate_window();
    // Unlimited simulators advertise the free tier's 600 calls per minute.
    let (quota, remaining, reset) = if quota == u32::MAX {
        (600, 600, 60)
    } else {
        (quota, remaining, reset)
    };
    let r = http::with_header(r, "x-rate-limit-quota", quota);
    let r = http::with_header(r, "x-rate-limit-remaining", remaining);
    http::with_header(r, "x-rate-limit-reset", reset)
}

pub(super) fn fault(f: Fault, sim: &Sim) -> Resp {
    match f {
        Fault::Fail | Fault::Drop | Fault::Timeout => err(
            StatusCode::INTERNAL_SERVER_ERROR,
            1000,
            "Server internal error.",
        ),
        Fault::Busy => err(
            StatusCode::SERVICE_UNAVAILABLE,
            1030,
            "Internal service timeout.",
        ),
        Fault::RateLimit => rate_headers(
            err(
                StatusCode::TOO_MANY_REQUESTS,
                2002,
                "Request times of this app exceed the limit",
            ),
            sim,
        ),
        Fault::Permanent => err(StatusCode::BAD_REQUEST, 1003, "Parameter value is invalid"),
    }
}

pub(super) fn handle(sim: &Sim, req: &Req) -> Resp {
    if !req.basic_auth_is(&sim.cfg.app_key, &sim.cfg.app_secret) {
        sim.counters.token_rejected.inc();
        return err(StatusCode::UNAUTHORIZED, 1004, "Authen failed");
    }
    match (&req.method, req.path()) {
        (&Method::POST, PUSH) => match super::over_rate(Kind::Jpush, sim) {
            Some(r) => r,
            None => rate_headers(push(sim, req, false), sim),
        },
        (&Method::POST, VALIDATE) => rate_headers(push(sim, req, true), sim),
        (&Method::GET, "/v3/push/cid") => cids(sim, req),
        (&Method::DELETE, path) => match path.strip_prefix("/v3/push/") {
            Some(id) if !id.is_empty() && !id.contains('/') => withdraw(sim, id),
            _ => http::not_found(),
        },
        (&Method::POST, "/v3/status/message") => status(sim, req),
        (&Method::GET, "/v3/received") | (&Method::GET, "/v3/received/detail") => {
            received(sim, req)
        }
        _ => http::not_found(),
    }
}

fn push(sim: &Sim, req: &Req, validate_only: bool) -> Resp {
    let Some(body) = req.json() else {
        return err(
            StatusCode::BAD_REQUEST,
            1003,
            "Request body is not valid JSON.",
        );
    };
    if body.get("platform").is_none() {
        return err(StatusCode::BAD_REQUEST, 1002, "Missing parameter: platform");
    }
    let Some(audience) = body.get("audience") else {
        return err(StatusCode::BAD_REQUEST, 1002, "Missing parameter: audience");
    };
    if body.get("notification").is_none() && body.get("message").is_none() {
        return err(
            StatusCode::BAD_REQUEST,
            1002,
            "Missing parameter: notification or message",
        );
    }
    let cid = body
        .get("cid")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    if let Some(saved) = cid.as_deref().and_then(|c| sim.idem_get(c)) {
        return http::json_bytes(StatusCode::OK, saved);
    }
    let rids: Option<Vec<String>> = match audience {
        Value::String(s) if s == "all" => None,
        Value::Object(o) => match o.get("registration_id") {
            Some(Value::Array(a)) => Some(a.iter().filter_map(as_string).collect()),
            Some(_) => {
                return err(
                    StatusCode::BAD_REQUEST,
                    1003,
                    "registration_id must be an array",
                )
            }
            // Alias and tag audiences cannot be resolved here; accepted without per-device
            // receipts.
            None => None,
        },
        _ => return err(StatusCode::BAD_REQUEST, 1003, "audience value is invalid"),
    };
    if let Some(r) = &rids {
        if r.is_empty() || r.len() > MAX_RIDS {
            return err(
                StatusCode::BAD_REQUEST,
                1003,
                "registration_id must hold 1 to 1000 entries",
            );
        }
    }
    let sendno = body
        .get("options")
        .and_then(|o| o.get("sendno"))
        .and_then(as_u64)
        .unwrap_or(0)
        .to_string();
    let id = sim.next_id();
    let msg_id = id.to_string();
    if let Some(r) = &rids {
        if r.iter().all(|rid| is_invalid(rid)) {
            return http::json(
                StatusCode::BAD_REQUEST,
                &json!({
                    "msg_id": msg_id,
                    "error": { "code": 1011, "message": "cannot find user by this audience" },
                }),
            );
        }
    }
    if validate_only {
        return http::ok(&json!({ "sendno": sendno, "msg_id": "0" }));
    }
    let reply = Bytes::from(json!({ "sendno": sendno, "msg_id": msg_id }).to_string());
    sim.recalls.sent(&msg_id);
    if let Some(c) = cid {
        sim.idem_put(c, reply.clone());
    }
    if let Some(rids) = rids {
        let items: Vec<(String, Outcome)> = rids
            .into_iter()
            .map(|r| {
                let o = if is_invalid(&r) {
                    Outcome::Invalid
                } else {
                    sim.draw_outcome()
                };
                (r, o)
            })
            .collect();
        sim.accept(
            items
                .iter()
                .filter(|(_, o)| *o != Outcome::Invalid)
                .map(|(r, _)| (r.clone(), msg_id.clone())),
            &req.body,
        );
        sim.store_record(id, items);
    }
    http::json_bytes(StatusCode::OK, reply)
}

fn cids(sim: &Sim, req: &Req) -> Resp {
    let count = req
        .query("count")
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, 1000);
    let list: Vec<String> = (0..count)
        .map(|_| format!("{}-{}", sim.cfg.app_key, random_hex(16)))
        .collect();
    http::ok(&json!({ "cidlist": list }))
}

fn status(sim: &Sim, req: &Req) -> Resp {
    let Some(body) = req.json() else {
        return err(
            StatusCode::BAD_REQUEST,
            1003,
            "Request body is not valid JSON.",
        );
    };
    let Some(msg_id) = body.get("msg_id").and_then(as_u64) else {
        return err(StatusCode::BAD_REQUEST, 1002, "Missing parameter: msg_id");
    };
    let Some(rids) = body.get("registration_ids").and_then(Value::as_array) else {
        return err(
            StatusCode::BAD_REQUEST,
            1002,
            "Missing parameter: registration_ids",
        );
    };
    if rids.len() > MAX_RIDS {
        return err(
            StatusCode::BAD_REQUEST,
            1003,
            "registration_ids holds more than 1000 entries",
        );
    }
    let mut out = Map::new();
    if let Some(rec) = sim.record(msg_id).filter(|r| Instant::now() >= r.due) {
        let outcomes: HashMap<&str, Outcome> =
            rec.items.iter().map(|(r, o)| (r.as_str(), *o)).collect();
        for rid in rids.iter().filter_map(as_string) {
            // 0 delivered, 1 not delivered, 2 not in this app, 3 not a target of it.
            // JPush has no public click data: a click counts as delivered.
            let code = match outcomes.get(rid.as_str()) {
                Some(Outcome::Delivered | Outcome::Clicked) => 0,
                Some(Outcome::Undelivered) => 1,
                Some(Outcome::Invalid) => 2,
                None => 3,
            };
            out.insert(rid, json!({ "status": code }));
        }
    }
    http::ok(&Value::Object(out))
}

fn received(sim: &Sim, req: &Req) -> Resp {
    let ids: Vec<String> = req
        .query("msg_ids")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.is_empty() || ids.len() > MAX_MSG_IDS {
        return err(
            StatusCode::BAD_REQUEST,
            1003,
            "msg_ids must hold 1 to 100 ids",
        );
    }
    let now = Instant::now();
    let rows: Vec<Value> = ids
        .into_iter()
        .map(|id| {
            let rec = id
                .parse::<u64>()
                .ok()
                .and_then(|n| sim.record(n))
                .filter(|r| now >= r.due);
            let delivered = rec.map(|r| {
                r.items
                    .iter()
                    .filter(|(_, o)| matches!(o, Outcome::Delivered | Outcome::Clicked))
                    .count()
            });
            json!({
                "msg_id": id,
                "android_received": delivered,
                "jpush_received": delivered,
                "ios_apns_sent": null,
                "ios_apns_received": null,
                "ios_msg_received": null,
                "wp_mpns_sent": null,
            })
        })
        .collect();
    http::ok(&Value::Array(rows))
}

/// Withdraws a push: stops what is not delivered yet and removes shown, unclicked
/// notifications.
fn withdraw(sim: &Sim, msg_id: &str) -> Resp {
    match sim
        .recalls
        .recall(msg_id, sim.recall_window, |_| WITHDRAW_UNKNOWN)
    {
        Check::Withdrawn => http::ok(&json!({})),
        Check::Unknown | Check::TooOld => err(
            StatusCode::BAD_REQUEST,
            WITHDRAW_UNKNOWN,
            "msgid don't exist",
        ),
    }
}
