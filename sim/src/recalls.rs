//! Recall (withdraw) support shared by the simulators whose provider can take a message
//! back (DingTalk work notices, WeCom app messages, Feishu bot messages, JPush pushes):
//! when each id they handed out was sent, so a recall can be checked against it, and the
//! log of every recall answered, for tests to read. Both are bounded; nothing here does
//! I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::state::now_ms;
use crate::Recall;

/// Sent ids remembered for recall (older ones are forgotten first: "unknown").
const SENT_CAP: usize = 100_000;
/// Recalls kept in the log.
const LOG_CAP: usize = 10_000;

/// What a recall of an id meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// Sent by this simulator within the recall window: withdrawn.
    Withdrawn,
    /// Never sent by this simulator (or forgotten).
    Unknown,
    /// Sent longer ago than the recall window.
    TooOld,
}

#[derive(Default)]
struct Inner {
    /// Sent id → acceptance time, Unix milliseconds.
    sent: HashMap<String, u64>,
    order: VecDeque<String>,
    log: VecDeque<Recall>,
}

#[derive(Default)]
pub(crate) struct Recalls {
    inner: Mutex<Inner>,
}

impl Recalls {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers that `id` was sent now.
    pub(crate) fn sent(&self, id: &str) {
        self.sent_at(id, now_ms());
    }

    fn sent_at(&self, id: &str, at_ms: u64) {
        let mut s = self.lock();
        if s.sent.insert(id.to_owned(), at_ms).is_none() {
            s.order.push_back(id.to_owned());
        }
        while s.order.len() > SENT_CAP {
            if let Some(old) = s.order.pop_front() {
                s.sent.remove(&old);
            }
        }
    }

    /// Checks a recall of `id` against its send time and logs it: `refused` maps a refusal
    /// to the provider's error code, recorded with it.
    pub(crate) fn recall(
        &self,
        id: &str,
        window: Duration,
        refused: impl Fn(Check) -> i64,
    ) -> Check {
        let now = now_ms();
        let mut s = self.lock();
        let check = match s.sent.get(id) {
            None => Check::Unknown,
            Some(at) if u128::from(now.saturating_sub(*at)) > window.as_millis() => Check::TooOld,
            Some(_) => Check::Withdrawn,
        };
        let error = (check != Check::Withdrawn).then(|| refused(check));
        if s.log.len() >= LOG_CAP {
            s.log.pop_front();
        }
        s.log.push_back(Recall {
            provider_id: id.to_owned(),
            withdrawn: check == Check::Withdrawn,
            error,
            at_ms: now,
        });
        check
    }

    /// The recalls answered, oldest first.
    pub(crate) fn log(&self) -> Vec<Recall> {
        self.lock().log.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(c: Check) -> i64 {
        match c {
            Check::Unknown => 1,
            Check::TooOld => 2,
            Check::Withdrawn => 0,
        }
    }

    #[test]
    fn recalls_are_checked_against_the_send_time_and_logged() {
        let r = Recalls::default();
        let day = Duration::from_secs(24 * 3600);
        r.sent("fresh");
        r.sent_at("old", now_ms() - 25 * 3600 * 1000);
        assert_eq!(r.recall("fresh", day, code), Check::Withdrawn);
        assert_eq!(r.recall("old", day, code), Check::TooOld);
        assert_eq!(r.recall("nope", day, code), Check::Unknown);
        // The window is the simulator's: a short one refuses what a day would take.
        r.sent_at("second", now_ms() - 1000);
        let short = Duration::from_millis(500);
        assert_eq!(r.recall("second", short, code), Check::TooOld);
        let log = r.log();
        let seen: Vec<(&str, bool, Option<i64>)> = log
            .iter()
            .map(|l| (l.provider_id.as_str(), l.withdrawn, l.error))
            .collect();
        assert_eq!(
            seen,
            [
                ("fresh", true, None),
                ("old", false, Some(2)),
                ("nope", false, Some(1)),
                ("second", false, Some(2)),
            ]
        );
    }

    #[test]
    fn the_oldest_sent_ids_are_forgotten_past_the_cap() {
        let r = Recalls::default();
        for i in 0..=SENT_CAP {
            r.sent(&i.to_string());
        }
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(r.recall("0", day, code), Check::Unknown);
        assert_eq!(r.recall("1", day, code), Check::Withdrawn);
    }

    /// Over real sockets: each provider's recall takes what it sent, refuses an id it
    /// never sent, and refuses what is past its window, with its own errors.
    mod wire {
        use serde_json::{json, Value};

        use crate::{start, Kind, SimConfig, SimHandle};

        struct Sim {
            h: SimHandle,
            c: reqwest::Client,
            token: String,
        }

        impl Sim {
            async fn new(kind: Kind, window: u64) -> Sim {
                crate::init_tls();
                let h = start(SimConfig {
                    threads: 1,
                    recall_window_seconds: window,
                    ..SimConfig::new(kind)
                })
                .unwrap();
                let c = reqwest::Client::new();
                let base = h.url();
                let token = match kind {
                    Kind::Dingtalk => {
                        let url = format!("{base}/gettoken?appkey=sim-key&appsecret=sim-secret");
                        c.get(url)
                            .send()
                            .await
                            .unwrap()
                            .json::<Value>()
                            .await
                            .unwrap()["access_token"]
                            .clone()
                    }
                    Kind::Wecom => {
                        let url =
                            format!("{base}/cgi-bin/gettoken?corpid=sim-key&corpsecret=sim-secret");
                        c.get(url)
                            .send()
                            .await
                            .unwrap()
                            .json::<Value>()
                            .await
                            .unwrap()["access_token"]
                            .clone()
                    }
                    Kind::Feishu => {
                        let url = format!("{base}/open-apis/auth/v3/tenant_access_token/internal");
                        let body = json!({"app_id": "sim-key", "app_secret": "sim-secret"});
                        c.post(url)
                            .json(&body)
                            .send()
                            .await
                            .unwrap()
                            .json::<Value>()
                            .await
                            .unwrap()["tenant_access_token"]
                            .clone()
                    }
                    _ => Value::Null,
                };
                let token = token.as_str().unwrap_or_default().to_owned();
                Sim { h, c, token }
            }

            /// Sends to two users; answers the id to recall.
            async fn send(&self) -> String {
                let (base, t) = (self.h.url(), &self.token);
                let text = json!({"msgtype": "text", "text": {"content": "hi"}});
                let req = match self.h.kind() {
                    Kind::Dingtalk => self
                        .c
                        .post(format!(
                            "{base}/topapi/message/corpconversation/asyncsend_v2?access_token={t}"
                        ))
                        .json(&json!({"agent_id": 1, "userid_list": "a,b", "msg": text})),
                    Kind::Wecom => self
                        .c
                        .post(format!("{base}/cgi-bin/message/send?access_token={t}"))
                        .json(&json!({"touser": "a|b", "msgtype": "text", "agentid": 1,
                                      "text": {"content": "hi"}})),
                    Kind::Feishu => self
                        .c
                        .post(format!(
                            "{base}/open-apis/im/v1/messages?receive_id_type=open_id"
                        ))
                        .bearer_auth(t)
                        .json(&json!({"receive_id": "a", "msg_type": "text",
                                      "content": "{\"text\":\"hi\"}"})),
                    _ => self
                        .c
                        .post(format!("{base}/v3/push"))
                        .basic_auth("sim-key", Some("sim-secret"))
                        .json(&json!({"platform": "all",
                                      "audience": {"registration_id": ["a", "b"]},
                                      "notification": {"alert": "hi"}})),
                };
                let v: Value = req.send().await.unwrap().json().await.unwrap();
                let id = match self.h.kind() {
                    Kind::Dingtalk => v["task_id"].clone(),
                    Kind::Wecom => v["msgid"].clone(),
                    Kind::Feishu => v["data"]["message_id"].clone(),
                    _ => v["msg_id"].clone(),
                };
                crate::http::as_string(&id).unwrap()
            }

            /// Recalls `id`: (HTTP status, the provider's code; 0 for a success).
            async fn recall(&self, id: &str) -> (u16, i64) {
                let (base, t) = (self.h.url(), &self.token);
                let req = match self.h.kind() {
                    Kind::Dingtalk => self
                        .c
                        .post(format!(
                            "{base}/topapi/message/corpconversation/recall?access_token={t}"
                        ))
                        .json(
                            &json!({"agent_id": 1, "msg_task_id": id.parse::<u64>().unwrap_or(1)}),
                        ),
                    Kind::Wecom => self
                        .c
                        .post(format!("{base}/cgi-bin/message/recall?access_token={t}"))
                        .json(&json!({"msgid": id})),
                    Kind::Feishu => self
                        .c
                        .delete(format!("{base}/open-apis/im/v1/messages/{id}"))
                        .bearer_auth(t),
                    _ => self
                        .c
                        .delete(format!("{base}/v3/push/{id}"))
                        .basic_auth("sim-key", Some("sim-secret")),
                };
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap();
                let code = v
                    .get("errcode")
                    .or_else(|| v.get("code"))
                    .or_else(|| v.pointer("/error/code"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                (status, code)
            }
        }

        #[tokio::test]
        async fn each_provider_withdraws_what_it_sent_and_refuses_the_rest() {
            // (kind, unknown id, its code, the code past the window)
            let cases = [
                (Kind::Dingtalk, "12345", 40035, 853002),
                (Kind::Wecom, "nope", 40058, 301099),
                (Kind::Feishu, "om_nope", 230001, 230009),
                (Kind::Jpush, "12345", 1003, 1003),
            ];
            for (kind, unknown, unknown_code, old_code) in cases {
                let sim = Sim::new(kind, 24 * 3600).await;
                let id = sim.send().await;
                let (status, code) = sim.recall(&id).await;
                assert_eq!((status, code), (200, 0), "{kind}");
                let (_, code) = sim.recall(unknown).await;
                assert_eq!(code, unknown_code, "{kind}");
                let log: Vec<(String, bool, Option<i64>)> = sim
                    .h
                    .recalls()
                    .into_iter()
                    .map(|r| (r.provider_id, r.withdrawn, r.error))
                    .collect();
                assert_eq!(
                    log,
                    [
                        (id, true, None),
                        (unknown.to_owned(), false, Some(unknown_code))
                    ],
                    "{kind}"
                );
                // The control surface shows the same log.
                let shown: Value = sim
                    .c
                    .get(format!("{}/_sim/recalls", sim.h.url()))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(shown.as_array().map(Vec::len), Some(2), "{kind}");

                let past = Sim::new(kind, 0).await;
                let id = past.send().await;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let (status, code) = past.recall(&id).await;
                assert_eq!(code, old_code, "{kind}");
                assert_ne!(status, 500, "{kind}");
                assert!(!past.h.recalls()[0].withdrawn, "{kind}");
            }
        }
    }
}
