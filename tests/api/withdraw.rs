//! Recall (`DELETE /v1/messages/{id}`) through the providers that can take a message back,
//! each against its simulator over real sockets: the message goes to two users, is sent,
//! then recalled; the report counts what each provider withdrew, and the simulator shows
//! the recall calls it was asked, with the ids it handed out when it took the message.
//! A provider without a recall API reports its deliveries as kept, `no_recall_api`.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{json, Value};
use umsd_sim::{Kind, SimConfig, SimHandle};

use crate::channels::add_channel;
use crate::{TestApp, DEMO};

const USERS: [&str; 2] = ["u1", "u2"];

struct Rig {
    app: TestApp,
    sim: SimHandle,
    code: &'static str,
}

/// The channel type (also its code here) and the binding type of a simulator's kind.
fn channel_type(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Dingtalk => ("dingtalk", "dingtalk"),
        Kind::Wecom => ("wecom", "wecom"),
        Kind::Feishu => ("feishu", "feishu"),
        Kind::Jpush => ("jpush", "jpush"),
        Kind::Webhook => ("webhook", "webhook"),
        other => panic!("no recall case for {other}"),
    }
}

fn settings(sim: &SimHandle) -> Value {
    let c = sim.config();
    let url = sim.url();
    match sim.kind() {
        Kind::Dingtalk => json!({"base_url": url, "appkey": c.app_key, "appsecret": c.app_secret,
                                  "agent_id": 1, "poll_interval_ms": 200}),
        Kind::Wecom => {
            json!({"base_url": url, "corpid": c.app_key, "corpsecret": c.app_secret, "agentid": 1})
        }
        Kind::Feishu => json!({"base_url": url, "app_id": c.app_key, "app_secret": c.app_secret}),
        Kind::Jpush => json!({"base_url": url, "report_url": url, "app_key": c.app_key,
                               "master_secret": c.app_secret, "poll_interval_ms": 200}),
        _ => json!({"secret": c.app_secret}),
    }
}

fn content(kind: Kind) -> Value {
    match kind {
        Kind::Jpush => json!({"title": "Order", "alert": "Your order has shipped"}),
        Kind::Webhook => json!({"body": {"order": 1234}}),
        _ => json!({"text": "Your order has shipped"}),
    }
}

impl Rig {
    /// The app with a channel of `kind` against a fresh simulator that lets messages be
    /// recalled for `window_seconds`, and the two users bound on it.
    async fn new(kind: Kind, window_seconds: u64) -> Rig {
        let (code, binding) = channel_type(kind);
        let app = TestApp::spawn().await;
        let sim = umsd_sim::start(SimConfig {
            receipt_delay_ms: 100,
            callback_url: Some(app.url(&format!("/callbacks/{code}"))),
            recall_window_seconds: window_seconds,
            ..SimConfig::new(kind)
        })
        .unwrap();
        add_channel(
            &app,
            code,
            &json!({"type": code, "pool_size": 4, "settings": settings(&sim)}),
        )
        .await;
        for user in USERS {
            let address = match kind {
                Kind::Webhook => format!("{}/hook/{user}", sim.url()),
                _ => user.to_owned(),
            };
            let (status, body) = app
                .put_as(
                    DEMO,
                    &format!("/v1/users/{user}"),
                    &json!({"bindings": [{"type": binding, "value": address}]}),
                )
                .await;
            assert!(status.is_success(), "{body}");
        }
        Rig { app, sim, code }
    }

    /// Sends one message to both users and waits until every delivery is final.
    async fn send(&self) -> String {
        let (status, sent) = self
            .app
            .send(&json!({
                "audience": {"user_ids": USERS},
                "channels": [self.code],
                "content": {self.code: content(self.sim.kind())},
            }))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
        let id = sent["id"].as_str().unwrap().to_owned();
        let m = self
            .app
            .wait_for(&format!("/v1/messages/{id}"), 45, |m| m["status"] == "done")
            .await;
        assert_eq!(m["funnel"]["users"]["delivered"], 2, "{m}");
        id
    }

    /// Recalls message `id`; answers the message with its recall report.
    async fn recall(&self, id: &str) -> Value {
        let res = self
            .app
            .http
            .delete(self.app.url(&format!("/v1/messages/{id}")))
            .basic_auth(DEMO.0, Some(DEMO.1))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let m: Value = res.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{m}");
        assert_eq!(m["status"], "recalled", "{m}");
        m
    }

    /// The ids the simulator answered when it took the message: what a recall names.
    fn sent_ids(&self) -> BTreeSet<String> {
        self.sim
            .received()
            .into_iter()
            .map(|r| r.provider_id)
            .collect()
    }

    async fn stop(self) {
        self.sim.shutdown();
        self.app.stop().await;
    }
}

/// A message sent to two users through `kind` is withdrawn from both, with one recall
/// call per id the provider handed out (a DingTalk task, a WeCom msgid or a JPush msg_id
/// covers both users; each Feishu message is one user's).
async fn withdrawn_through(kind: Kind) {
    let rig = Rig::new(kind, 24 * 3600).await;
    let id = rig.send().await;
    let sent = rig.sent_ids();
    assert!(!sent.is_empty());
    if kind == Kind::Feishu {
        assert_eq!(sent.len(), 2, "one message per user: {sent:?}");
    }

    let m = rig.recall(&id).await;
    assert_eq!(
        m["recall"]["channels"][rig.code],
        json!({"cancelled": 0, "recalled": 2, "not_recalled": 0, "reasons": {}}),
        "{m}"
    );
    let recalls = rig.sim.recalls();
    assert!(recalls.iter().all(|r| r.withdrawn), "{recalls:?}");
    let asked: Vec<String> = recalls.into_iter().map(|r| r.provider_id).collect();
    assert_eq!(asked.len(), sent.len(), "one call per id: {asked:?}");
    assert_eq!(asked.into_iter().collect::<BTreeSet<_>>(), sent);

    let (_, d) = rig.app.get(&format!("/v1/messages/{id}/deliveries")).await;
    let states: Vec<&str> = d["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["recalled", "recalled"], "{d}");
    rig.stop().await;
}

#[actix_web::test]
async fn dingtalk_work_notices_are_recalled_by_task() {
    withdrawn_through(Kind::Dingtalk).await;
}

#[actix_web::test]
async fn wecom_app_messages_are_recalled_by_msgid() {
    withdrawn_through(Kind::Wecom).await;
}

#[actix_web::test]
async fn feishu_messages_are_recalled_one_by_one() {
    withdrawn_through(Kind::Feishu).await;
}

#[actix_web::test]
async fn jpush_pushes_are_withdrawn_by_msg_id() {
    withdrawn_through(Kind::Jpush).await;
}

#[actix_web::test]
async fn a_provider_past_its_own_window_keeps_the_message() {
    // The provider's window closed although the daemon's is open.
    let rig = Rig::new(Kind::Feishu, 0).await;
    let id = rig.send().await;
    let m = rig.recall(&id).await;
    assert_eq!(
        m["recall"]["channels"][rig.code],
        json!({"cancelled": 0, "recalled": 0, "not_recalled": 2,
               "reasons": {"recall_window_passed": 2}}),
        "{m}"
    );
    let recalls = rig.sim.recalls();
    assert_eq!(recalls.len(), 2, "{recalls:?}");
    assert!(
        recalls
            .iter()
            .all(|r| !r.withdrawn && r.error == Some(230009)),
        "{recalls:?}"
    );
    let (_, d) = rig.app.get(&format!("/v1/messages/{id}/deliveries")).await;
    assert!(
        d["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["state"] == "delivered"),
        "{d}"
    );
    rig.stop().await;
}

#[actix_web::test]
async fn a_channel_without_a_recall_api_reports_what_it_kept() {
    let rig = Rig::new(Kind::Webhook, 24 * 3600).await;
    let id = rig.send().await;
    let m = rig.recall(&id).await;
    assert_eq!(
        m["recall"]["channels"][rig.code],
        json!({"cancelled": 0, "recalled": 0, "not_recalled": 2,
               "reasons": {"no_recall_api": 2}}),
        "{m}"
    );
    assert!(rig.sim.recalls().is_empty());
    rig.stop().await;
}
