//! DingTalk work notifications (oapi): `GET /gettoken`, `asyncsend_v2`, the pull
//! status APIs `getsendprogress` / `getsendresult`, and `recall` (by task, within 24 h).
//! Business errors are HTTP 200 with `errcode != 0`; DingTalk has no push receipts for
//! work notifications.

use std::sync::Arc;
use std::time::Instant;

use hyper::Method;
use serde_json::{json, Value};

use super::is_invalid;
use crate::http::{self, as_u64, Req, Resp};
use crate::recalls::Check;
use crate::state::{random_hex, Fault, Outcome, Record, Sim, TokenCheck};
use crate::Kind;

const SEND: &str = "/topapi/message/corpconversation/asyncsend_v2";
const PROGRESS: &str = "/topapi/message/corpconversation/getsendprogress";
const RESULT: &str = "/topapi/message/corpconversation/getsendresult";
const RECALL: &str = "/topapi/message/corpconversation/recall";
/// The answer to a recall of a task older than 24 h. DingTalk documents the limit but not
/// its code (providers-2.md §3): this one is the simulator's choice, and umsd's DingTalk
/// client reads it as `recall_window_passed`.
const RECALL_TOO_OLD: i64 = 853002;
const MAX_USERS: usize = 5000;

pub(super) fn is_send(req: &Req) -> bool {
    req.is(&Method::POST, SEND)
}

fn err(code: i64, msg: &str) -> Resp {
    http::ok(&json!({ "errcode": code, "errmsg": msg, "request_id": random_hex(8) }))
}

pub(super) fn fault(f: Fault) -> Resp {
    match f {
        Fault::Busy => err(-1, "系统繁忙"),
        // The code DingTalk uses for call-frequency limits on oapi is unverified; 90018
        // is the one seen in the wild for "API调用频率超过限制".
        Fault::RateLimit => err(90018, "API调用频率超过限制"),
        Fault::Permanent => http::ok(&json!({
            "errcode": 88,
            "errmsg": "没有调用该接口的权限",
            "sub_code": "60011",
            "sub_msg": "没有调用该接口的权限",
            "request_id": random_hex(8),
        })),
        Fault::Fail | Fault::Drop | Fault::Timeout => http::unavailable(),
    }
}

pub(super) fn handle(sim: &Sim, req: &Req) -> Resp {
    match (&req.method, req.path()) {
        (&Method::GET, "/gettoken") => token(sim, req),
        (&Method::POST, SEND) => authed(sim, req, send),
        (&Method::POST, PROGRESS) => authed(sim, req, progress),
        (&Method::POST, RESULT) => authed(sim, req, result),
        (&Method::POST, RECALL) => authed(sim, req, recall),
        _ => http::not_found(),
    }
}

fn token(sim: &Sim, req: &Req) -> Resp {
    let good = req.query("appkey").as_deref() == Some(sim.cfg.app_key.as_str())
        && req.query("appsecret").as_deref() == Some(sim.cfg.app_secret.as_str());
    if !good {
        sim.counters.token_rejected.inc();
        return err(40089, "不合法的appkey或appsecret");
    }
    let now = Instant::now();
    let mut store = sim.tokens();
    // Within its lifetime the same token comes back, renewed; after expiry a new one.
    let token = match store.current(now) {
        Some((t, _)) => t.to_owned(),
        None => {
            let t = random_hex(16);
            store.issue(t.clone(), now, sim.token_ttl, false);
            t
        }
    };
    store.extend_current(now, sim.token_ttl);
    drop(store);
    sim.counters.token_issued.inc();
    http::ok(&json!({
        "errcode": 0,
        "errmsg": "ok",
        "access_token": token,
        "expires_in": sim.token_ttl.as_secs(),
    }))
}

fn authed(sim: &Sim, req: &Req, f: fn(&Sim, &Req) -> Resp) -> Resp {
    match sim.check_token(req.query("access_token").as_deref()) {
        // DingTalk answers 40014 for missing, unknown and expired tokens alike.
        TokenCheck::Valid => f(sim, req),
        _ => err(40014, "不合法的access_token"),
    }
}

fn send(sim: &Sim, req: &Req) -> Resp {
    if let Some(r) = super::over_rate(Kind::Dingtalk, sim) {
        return r;
    }
    let Some(body) = req.json() else {
        return err(40035, "不合法的参数: 请求体不是合法的JSON");
    };
    if body.get("agent_id").and_then(as_u64).is_none() {
        return err(40035, "缺少参数 agent_id");
    }
    if body
        .get("msg")
        .and_then(|m| m.get("msgtype"))
        .and_then(Value::as_str)
        .is_none()
    {
        return err(40035, "缺少参数 msg");
    }
    let users: Vec<String> = body
        .get("userid_list")
        .and_then(Value::as_str)
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let has_other = body
        .get("dept_id_list")
        .and_then(Value::as_str)
        .is_some_and(|d| !d.trim().is_empty())
        || body.get("to_all_user").and_then(Value::as_bool) == Some(true);
    if users.is_empty() && !has_other {
        return err(40035, "缺少参数 userid_list");
    }
    if users.len() > MAX_USERS {
        return err(40035, "不合法的参数: userid_list 超过 5000");
    }

    let task_id = sim.next_id();
    let task = task_id.to_string();
    sim.recalls.sent(&task);
    let items: Vec<(String, Outcome)> = users
        .into_iter()
        .map(|u| {
            let o = if is_invalid(&u) {
                Outcome::Invalid
            } else {
                sim.draw_outcome()
            };
            (u, o)
        })
        .collect();
    sim.accept(
        items
            .iter()
            .filter(|(_, o)| *o != Outcome::Invalid)
            .map(|(u, _)| (u.clone(), task.clone())),
        &req.body,
    );
    sim.store_record(task_id, items);
    http::ok(&json!({
        "errcode": 0,
        "errmsg": "ok",
        "task_id": task_id,
        "request_id": random_hex(8),
    }))
}

/// The task named by a status request, or the message of the 40035 answer.
fn task_of(sim: &Sim, req: &Req) -> Result<Arc<Record>, &'static str> {
    let body = req.json().unwrap_or(Value::Null);
    if body.get("agent_id").and_then(as_u64).is_none() {
        return Err("缺少参数 agent_id");
    }
    let Some(task_id) = body.get("task_id").and_then(as_u64) else {
        return Err("缺少参数 task_id");
    };
    sim.record(task_id).ok_or("不合法的参数: task_id 不存在")
}

fn progress(sim: &Sim, req: &Req) -> Resp {
    let task = match task_of(sim, req) {
        Ok(t) => t,
        Err(msg) => return err(40035, msg),
    };
    let now = Instant::now();
    let (percent, status) = if now >= task.due {
        (100, 2)
    } else {
        let total = task.due.duration_since(task.accepted).as_millis().max(1);
        let done = now.duration_since(task.accepted).as_millis();
        ((done * 100 / total).min(99), 1)
    };
    http::ok(&json!({
        "errcode": 0,
        "errmsg": "ok",
        "progress": { "progress_in_percent": percent, "status": status },
        "request_id": random_hex(8),
    }))
}

fn result(sim: &Sim, req: &Req) -> Resp {
    let task = match task_of(sim, req) {
        Ok(t) => t,
        Err(msg) => return err(40035, msg),
    };
    let mut invalid = Vec::new();
    let mut failed = Vec::new();
    let mut read = Vec::new();
    let mut unread = Vec::new();
    if Instant::now() >= task.due {
        for (user, outcome) in &task.items {
            match outcome {
                Outcome::Invalid => invalid.push(user),
                Outcome::Undelivered => failed.push(user),
                Outcome::Clicked => read.push(user),
                Outcome::Delivered => unread.push(user),
            }
        }
    }
    http::ok(&json!({
        "errcode": 0,
        "errmsg": "ok",
        "send_result": {
            "invalid_user_id_list": invalid,
            "forbidden_user_id_list": [],
            "failed_user_id_list": failed,
            "read_user_id_list": read,
            "unread_user_id_list": unread,
            "invalid_dept_id_list": [],
            "forbidden_list": [],
        },
        "request_id": random_hex(8),
    }))
}

/// Recalls a work notice: every recipient of the task at once.
fn recall(sim: &Sim, req: &Req) -> Resp {
    let body = req.json().unwrap_or(Value::Null);
    if body.get("agent_id").and_then(as_u64).is_none() {
        return err(40035, "缺少参数 agent_id");
    }
    let Some(task) = body.get("msg_task_id").and_then(as_u64) else {
        return err(40035, "缺少参数 msg_task_id");
    };
    let refused = |c: Check| match c {
        Check::TooOld => RECALL_TOO_OLD,
        _ => 40035,
    };
    match sim
        .recalls
        .recall(&task.to_string(), sim.recall_window, refused)
    {
        Check::Withdrawn => http::ok(&json!({
            "errcode": 0,
            "errmsg": "ok",
            "request_id": random_hex(8),
        })),
        Check::Unknown => err(40035, "不合法的参数: msg_task_id 不存在"),
        Check::TooOld => err(RECALL_TOO_OLD, "只能撤回24小时内发送的工作通知"),
    }
}
