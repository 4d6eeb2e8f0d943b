//! WeCom application messages: `GET /cgi-bin/gettoken`, `POST /cgi-bin/message/send`,
//! `POST /cgi-bin/message/recall` (by `msgid`, within 24 h). Business errors are HTTP 200
//! with `errcode`; partly invalid recipients still succeed and are listed in
//! `invaliduser`. WeCom has no delivery receipts.

use std::time::Instant;

use hyper::Method;
use serde_json::{json, Map, Value};

use super::is_invalid;
use crate::http::{self, Req, Resp};
use crate::recalls::Check;
use crate::state::{random_hex, Fault, Sim, TokenCheck};
use crate::Kind;

const SEND: &str = "/cgi-bin/message/send";
const RECALL: &str = "/cgi-bin/message/recall";
/// The answer to a recall of an unknown `msgid` (WeCom's "invalid parameter").
const RECALL_UNKNOWN: i64 = 40058;
/// The answer to a recall of a message older than 24 h. WeCom documents the limit but not
/// its code (providers-2.md §5): this one is the simulator's choice, and umsd's WeCom
/// client reads it as `recall_window_passed`.
const RECALL_TOO_OLD: i64 = 301099;
const MAX_USERS: usize = 1000;

pub(super) fn is_send(req: &Req) -> bool {
    req.is(&Method::POST, SEND)
}

fn err(code: i64, msg: &str) -> Resp {
    http::ok(&json!({ "errcode": code, "errmsg": msg }))
}

pub(super) fn fault(f: Fault) -> Resp {
    match f {
        Fault::Busy => err(-1, "system busy"),
        Fault::RateLimit => err(45009, "api freq out of limit"),
        Fault::Permanent => err(81013, "user & party & tag all invalid"),
        Fault::Fail | Fault::Drop | Fault::Timeout => http::unavailable(),
    }
}

pub(super) fn handle(sim: &Sim, req: &Req) -> Resp {
    match (&req.method, req.path()) {
        (&Method::GET, "/cgi-bin/gettoken") => token(sim, req),
        (&Method::POST, SEND) => send(sim, req),
        (&Method::POST, RECALL) => recall(sim, req),
        _ => http::not_found(),
    }
}

fn token(sim: &Sim, req: &Req) -> Resp {
    if req.query("corpid").as_deref() != Some(sim.cfg.app_key.as_str()) {
        sim.counters.token_rejected.inc();
        return err(40013, "invalid corpid");
    }
    if req.query("corpsecret").as_deref() != Some(sim.cfg.app_secret.as_str()) {
        sim.counters.token_rejected.inc();
        return err(40001, "invalid credential");
    }
    let now = Instant::now();
    let mut store = sim.tokens();
    // Within its lifetime the same token comes back with the time it has left.
    let (token, left) = match store.current(now) {
        Some((t, left)) => (t.to_owned(), left),
        None => {
            let t = random_hex(32);
            store.issue(t.clone(), now, sim.token_ttl, false);
            (t, sim.token_ttl)
        }
    };
    drop(store);
    sim.counters.token_issued.inc();
    http::ok(&json!({
        "errcode": 0,
        "errmsg": "ok",
        "access_token": token,
        "expires_in": left.as_secs(),
    }))
}

/// The answer to a request whose `access_token` is not valid.
fn bad_token(sim: &Sim, req: &Req) -> Option<Resp> {
    match sim.check_token(req.query("access_token").as_deref()) {
        TokenCheck::Valid => None,
        TokenCheck::Missing => Some(err(41001, "access_token missing")),
        TokenCheck::Expired => Some(err(42001, "access_token expired")),
        TokenCheck::Unknown | TokenCheck::Superseded => Some(err(40014, "invalid access_token")),
    }
}

fn send(sim: &Sim, req: &Req) -> Resp {
    if let Some(r) = bad_token(sim, req) {
        return r;
    }
    if let Some(r) = super::over_rate(Kind::Wecom, sim) {
        return r;
    }
    let Some(body) = req.json() else {
        return err(47001, "data format error");
    };
    if body.get("msgtype").and_then(Value::as_str).is_none() {
        return err(41008, "missing msgtype");
    }
    if body.get("agentid").is_none_or(Value::is_null) {
        return err(41011, "missing agentid");
    }
    let list = |key: &str| -> Vec<String> {
        body.get(key)
            .and_then(Value::as_str)
            .map(|s| {
                s.split('|')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let users = list("touser");
    let parties = list("toparty");
    let tags = list("totag");
    if users.is_empty() && parties.is_empty() && tags.is_empty() {
        return err(40003, "invalid userid");
    }
    if users.len() > MAX_USERS {
        return err(40058, "invalid parameter: touser exceeds 1000");
    }
    let all_users = users.iter().any(|u| u == "@all");
    // WeCom user ids are case-insensitive and come back lower-cased.
    let (invalid, valid): (Vec<String>, Vec<String>) = users
        .into_iter()
        .filter(|u| u != "@all")
        .map(|u| u.to_lowercase())
        .partition(|u| is_invalid(u));
    if valid.is_empty() && !all_users && parties.is_empty() && tags.is_empty() {
        return err(81013, "user & party & tag all invalid");
    }

    let msgid = format!("sim{:x}", sim.next_id());
    sim.recalls.sent(&msgid);
    sim.accept(valid.into_iter().map(|u| (u, msgid.clone())), &req.body);
    let mut out = Map::new();
    out.insert("errcode".into(), 0.into());
    out.insert("errmsg".into(), "ok".into());
    out.insert("invaliduser".into(), invalid.join("|").into());
    if !parties.is_empty() {
        out.insert("invalidparty".into(), "".into());
    }
    if !tags.is_empty() {
        out.insert("invalidtag".into(), "".into());
    }
    out.insert("msgid".into(), msgid.into());
    http::ok(&Value::Object(out))
}

/// Recalls an app message from every recipient's WeCom client.
fn recall(sim: &Sim, req: &Req) -> Resp {
    if let Some(r) = bad_token(sim, req) {
        return r;
    }
    let Some(body) = req.json() else {
        return err(47001, "data format error");
    };
    let Some(msgid) = body
        .get("msgid")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    else {
        return err(RECALL_UNKNOWN, "invalid parameter: msgid is required");
    };
    let refused = |c: Check| match c {
        Check::TooOld => RECALL_TOO_OLD,
        _ => RECALL_UNKNOWN,
    };
    match sim.recalls.recall(msgid, sim.recall_window, refused) {
        Check::Withdrawn => err(0, "ok"),
        Check::Unknown => err(RECALL_UNKNOWN, "invalid msgid"),
        Check::TooOld => err(
            RECALL_TOO_OLD,
            "message can only be recalled within 24 hours",
        ),
    }
}
