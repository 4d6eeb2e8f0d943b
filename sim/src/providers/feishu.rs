//! Feishu / Lark: `tenant_access_token/internal`, `POST /open-apis/im/v1/messages` with
//! `uuid` idempotency, and `DELETE /open-apis/im/v1/messages/{message_id}` (recall, within
//! the tenant's limit: 24 h by default). Business errors are HTTP 400 with a body `code`,
//! gateway throttling HTTP 429. Read receipts are pushed as `im.message.message_read_v1`
//! events.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::is_invalid;
use crate::http::{self, Req, Resp};
use crate::recalls::Check;
use crate::receipts::Push;
use crate::state::{now_ms, random_hex, Fault, Outcome, Sim, TokenCheck};
use crate::Kind;

const TOKEN: &str = "/open-apis/auth/v3/tenant_access_token/internal";
const SEND: &str = "/open-apis/im/v1/messages";
/// Recall past the window: "Message can only be recalled within one days".
const RECALL_TOO_OLD: i64 = 230009;
/// Recall of an id this bot never sent: "invalid request parameter".
const RECALL_UNKNOWN: i64 = 230001;
/// A token with less than this left is replaced by a new one on the next fetch.
const RENEW_WITHIN: Duration = Duration::from_secs(30 * 60);
const ID_TYPES: [&str; 5] = ["open_id", "union_id", "user_id", "email", "chat_id"];

pub(super) fn is_send(req: &Req) -> bool {
    req.is(&Method::POST, SEND)
}

fn err(status: StatusCode, code: i64, msg: &str) -> Resp {
    http::json(status, &json!({ "code": code, "msg": msg }))
}

pub(super) fn fault(f: Fault, sim: &Sim) -> Resp {
    match f {
        // Feishu has no documented "busy" business code; a 5xx is the retryable signal.
        Fault::Busy => err(
            StatusCode::INTERNAL_SERVER_ERROR,
            1000,
            "system busy, please retry",
        ),
        Fault::RateLimit => {
            let (limit, _, reset) = sim.rate_window();
            let r = err(
                StatusCode::TOO_MANY_REQUESTS,
                99991400,
                "request trigger frequency limit",
            );
            let r = http::with_header(r, "x-ogw-ratelimit-limit", limit.min(50));
            http::with_header(r, "x-ogw-ratelimit-reset", reset.max(1))
        }
        Fault::Permanent => err(
            StatusCode::BAD_REQUEST,
            230001,
            "Your request contains an invalid request parameter, ext=invalid message content",
        ),
        Fault::Fail | Fault::Drop | Fault::Timeout => http::unavailable(),
    }
}

pub(super) fn handle(sim: &Sim, req: &Req) -> Resp {
    match (&req.method, req.path()) {
        (&Method::POST, TOKEN) => token(sim, req),
        (&Method::POST, SEND) => send(sim, req),
        (&Method::DELETE, path) => {
            match path.strip_prefix(SEND).and_then(|p| p.strip_prefix('/')) {
                Some(id) if !id.is_empty() && !id.contains('/') => recall(sim, req, id),
                _ => http::not_found(),
            }
        }
        _ => http::not_found(),
    }
}

fn token(sim: &Sim, req: &Req) -> Resp {
    let body = req.json().unwrap_or(Value::Null);
    let field = |k: &str| body.get(k).and_then(Value::as_str);
    if field("app_id") != Some(sim.cfg.app_key.as_str()) {
        sim.counters.token_rejected.inc();
        return err(StatusCode::BAD_REQUEST, 10003, "invalid param: app_id");
    }
    if field("app_secret") != Some(sim.cfg.app_secret.as_str()) {
        sim.counters.token_rejected.inc();
        return err(StatusCode::BAD_REQUEST, 10014, "app secret invalid");
    }
    let now = Instant::now();
    let mut store = sim.tokens();
    // The same token while more than 30 min remain; after that a new one, while the old
    // one stays valid until its own expiry.
    let (token, left) = match store.current(now).filter(|(_, left)| *left > RENEW_WITHIN) {
        Some((t, left)) => (t.to_owned(), left),
        None => {
            let t = format!("t-{}", random_hex(20));
            store.issue(t.clone(), now, sim.token_ttl, false);
            (t, sim.token_ttl)
        }
    };
    drop(store);
    sim.counters.token_issued.inc();
    http::ok(&json!({
        "code": 0,
        "msg": "ok",
        "tenant_access_token": token,
        "expire": left.as_secs(),
    }))
}

/// The answer to a request whose tenant token is not valid.
fn bad_token(sim: &Sim, req: &Req) -> Option<Resp> {
    let bearer = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match sim.check_token(bearer) {
        TokenCheck::Valid => None,
        TokenCheck::Missing => Some(err(
            StatusCode::BAD_REQUEST,
            99991661,
            "Missing access token for authorization. Please make a request with token attached.",
        )),
        _ => Some(err(
            StatusCode::BAD_REQUEST,
            99991663,
            "Invalid access token for authorization. Please make a request with token attached.",
        )),
    }
}

fn send(sim: &Sim, req: &Req) -> Resp {
    if let Some(r) = bad_token(sim, req) {
        return r;
    }
    if let Some(r) = super::over_rate(Kind::Feishu, sim) {
        return r;
    }
    let id_type = req.query("receive_id_type");
    let Some(id_type) = id_type.filter(|t| ID_TYPES.contains(&t.as_str())) else {
        return err(
            StatusCode::BAD_REQUEST,
            99992402,
            "field validation failed: receive_id_type",
        );
    };
    let Some(body) = req.json() else {
        return err(
            StatusCode::BAD_REQUEST,
            99992402,
            "field validation failed: body",
        );
    };
    let field = |k: &str| body.get(k).and_then(Value::as_str);
    let (Some(receive_id), Some(msg_type), Some(content)) =
        (field("receive_id"), field("msg_type"), field("content"))
    else {
        return err(
            StatusCode::BAD_REQUEST,
            99992402,
            "field validation failed: receive_id, msg_type and content are required",
        );
    };
    if serde_json::from_str::<Value>(content).is_err() {
        return err(
            StatusCode::BAD_REQUEST,
            230001,
            "Your request contains an invalid request parameter, ext=content is not a string in JSON format",
        );
    }
    let uuid = field("uuid").filter(|u| !u.is_empty());
    if let Some(saved) = uuid.and_then(|u| sim.idem_get(u)) {
        return http::json_bytes(StatusCode::OK, saved);
    }
    if is_invalid(receive_id) {
        return err(
            StatusCode::BAD_REQUEST,
            230034,
            "The receive_id is invalid.",
        );
    }

    let id = sim.next_id();
    let message_id = format!("om_{id:032x}");
    let now = now_ms().to_string();
    let reply = json!({
        "code": 0,
        "msg": "success",
        "data": {
            "message_id": message_id,
            "chat_id": format!("oc_{id:032x}"),
            "msg_type": msg_type,
            "create_time": now,
            "update_time": now,
            "deleted": false,
            "updated": false,
            "sender": {
                "id": sim.cfg.app_key,
                "id_type": "app_id",
                "sender_type": "app",
                "tenant_key": "sim-tenant",
            },
            "body": { "content": content },
        },
    });
    let reply = Bytes::from(reply.to_string());
    let reader_id = if id_type == "open_id" {
        json!({ "open_id": receive_id })
    } else {
        json!({ "open_id": format!("ou_{id:032x}"), id_type.as_str(): receive_id })
    };
    if let Some(u) = uuid {
        sim.idem_put(u.to_owned(), reply.clone());
    }
    let recipient = receive_id.to_owned();
    sim.recalls.sent(&message_id);
    sim.accept([(recipient, message_id.clone())], &req.body);
    // Delivery is synchronous at Feishu; only reads come back, as events.
    if sim.draw_outcome() == Outcome::Clicked {
        sim.push_receipt(Push::FeishuRead {
            reader_id,
            message_id,
        });
    }
    http::json_bytes(StatusCode::OK, reply)
}

/// Recalls a message the bot sent.
fn recall(sim: &Sim, req: &Req, message_id: &str) -> Resp {
    if let Some(r) = bad_token(sim, req) {
        return r;
    }
    let refused = |c: Check| match c {
        Check::TooOld => RECALL_TOO_OLD,
        _ => RECALL_UNKNOWN,
    };
    match sim.recalls.recall(message_id, sim.recall_window, refused) {
        Check::Withdrawn => http::ok(&json!({ "code": 0, "msg": "success", "data": {} })),
        Check::Unknown => err(
            StatusCode::BAD_REQUEST,
            RECALL_UNKNOWN,
            "Your request contains an invalid request parameter, ext=message_id not found",
        ),
        Check::TooOld => err(
            StatusCode::BAD_REQUEST,
            RECALL_TOO_OLD,
            "Message can only be recalled within one days.",
        ),
    }
}
