//! WeChat Official Account template messages: `GET /cgi-bin/token` (each fetch
//! supersedes the previous token after a 5 s overlap), `POST /cgi-bin/stable_token`,
//! `POST /cgi-bin/message/template/send`. Business errors are HTTP 200 with `errcode`;
//! job results are pushed as `TEMPLATESENDJOBFINISH` XML events.

use std::time::Instant;

use hyper::Method;
use serde_json::{json, Value};

use super::is_invalid;
use crate::http::{self, Req, Resp};
use crate::receipts::Push;
use crate::state::{random_hex, Fault, Outcome, Sim, TokenCheck};
use crate::Kind;

const SEND: &str = "/cgi-bin/message/template/send";

pub(super) fn is_send(req: &Req) -> bool {
    req.is(&Method::POST, SEND)
}

fn err(code: i64, msg: &str) -> Resp {
    http::ok(&json!({ "errcode": code, "errmsg": msg }))
}

pub(super) fn fault(f: Fault) -> Resp {
    match f {
        Fault::Busy => err(-1, "system error"),
        Fault::RateLimit => err(45009, "reach max api daily quota limit"),
        Fault::Permanent => err(40037, "invalid template_id"),
        Fault::Fail | Fault::Drop | Fault::Timeout => http::unavailable(),
    }
}

pub(super) fn handle(sim: &Sim, req: &Req) -> Resp {
    match (&req.method, req.path()) {
        (&Method::GET, "/cgi-bin/token") => {
            let q = |k: &str| req.query(k);
            fetch(sim, q("grant_type"), q("appid"), q("secret"), true)
        }
        (&Method::POST, "/cgi-bin/stable_token") => {
            let body = req.json().unwrap_or(Value::Null);
            let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
            let force = body.get("force_refresh").and_then(Value::as_bool) == Some(true);
            fetch(sim, s("grant_type"), s("appid"), s("secret"), force)
        }
        (&Method::POST, SEND) => send(sim, req),
        _ => http::not_found(),
    }
}

/// Token fetch. With `renew` a new token is issued and the old ones are superseded;
/// without (stable_token) the current one comes back while it lives.
fn fetch(
    sim: &Sim,
    grant_type: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
    renew: bool,
) -> Resp {
    if grant_type.as_deref() != Some("client_credential") {
        return err(40002, "invalid grant_type");
    }
    if appid.as_deref() != Some(sim.cfg.app_key.as_str()) {
        sim.counters.token_rejected.inc();
        return err(40013, "invalid appid");
    }
    if secret.as_deref() != Some(sim.cfg.app_secret.as_str()) {
        sim.counters.token_rejected.inc();
        return err(
            40001,
            "invalid credential, access_token is invalid or not latest",
        );
    }
    let now = Instant::now();
    let mut store = sim.tokens();
    let current = store
        .current(now)
        .filter(|_| !renew)
        .map(|(t, left)| (t.to_owned(), left));
    let (token, left) = match current {
        Some(c) => c,
        None => {
            let t = random_hex(48);
            store.issue(t.clone(), now, sim.token_ttl, true);
            (t, sim.token_ttl)
        }
    };
    drop(store);
    sim.counters.token_issued.inc();
    http::ok(&json!({ "access_token": token, "expires_in": left.as_secs() }))
}

fn send(sim: &Sim, req: &Req) -> Resp {
    match sim.check_token(req.query("access_token").as_deref()) {
        TokenCheck::Valid => {}
        TokenCheck::Missing => return err(41001, "access_token missing"),
        TokenCheck::Expired => return err(42001, "access_token expired"),
        TokenCheck::Unknown | TokenCheck::Superseded => {
            return err(
                40001,
                "invalid credential, access_token is invalid or not latest",
            )
        }
    }
    if let Some(r) = super::over_rate(Kind::WechatOa, sim) {
        return r;
    }
    let Some(body) = req.json() else {
        return err(47001, "data format error");
    };
    let Some(openid) = body
        .get("touser")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return err(40003, "invalid openid");
    };
    if body
        .get("template_id")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return err(40037, "invalid template_id");
    }
    if is_invalid(&openid) {
        return err(40003, "invalid openid");
    }
    let msg_id = sim.next_id();
    sim.accept([(openid.clone(), msg_id.to_string())], &req.body);
    let status = match sim.draw_outcome() {
        Outcome::Undelivered => "failed:user block",
        _ => "success",
    };
    sim.push_receipt(Push::Wechat {
        openid,
        msg_id,
        status,
    });
    http::ok(&json!({ "errcode": 0, "errmsg": "ok", "msgid": msg_id }))
}
