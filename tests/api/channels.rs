//! Every channel end to end against its simulator over real sockets: the channel is
//! created through `PUT /admin/channels/{code}` pointing at the simulator, granted to the
//! app, and a user is bound on it. Then, per channel: success with its receipt, a 5xx that
//! is retried and recovers, a throttled answer that pauses the channel and still delivers,
//! an expired token refreshed once (token providers), and a permanent failure recorded
//! with the provider's code; plus partial failures where the provider has them.

use serde_json::{json, Value};
use umsd_sim::{Faults, Kind, SimConfig, SimHandle};

use crate::{TestApp, ADMIN, DEMO};

const CODE: &str = "ch";

struct Case {
    kind: Kind,
    channel_type: &'static str,
    binding: &'static str,
    /// Receipts arrive (pushed or pulled) rather than acceptance being the delivery.
    receipts: bool,
    tokens: bool,
    permanent_code: &'static str,
    /// The provider rejects unknown recipients individually.
    partial: bool,
}

fn settings(case: &Case, sim: &SimHandle) -> Value {
    let c = sim.config();
    let url = sim.url();
    let mut s = match case.kind {
        Kind::Wecom => {
            json!({"base_url": url, "corpid": c.app_key, "corpsecret": c.app_secret, "agentid": 1})
        }
        Kind::Dingtalk => json!({"base_url": url, "appkey": c.app_key, "appsecret": c.app_secret,
                                  "agent_id": 1, "poll_interval_ms": 200}),
        Kind::Feishu => json!({"base_url": url, "app_id": c.app_key, "app_secret": c.app_secret}),
        Kind::Jpush => json!({"base_url": url, "report_url": url, "app_key": c.app_key,
                               "master_secret": c.app_secret, "poll_interval_ms": 200}),
        Kind::Jsms => json!({"base_url": url, "app_key": c.app_key, "master_secret": c.app_secret}),
        Kind::WechatOa => json!({"base_url": url, "appid": c.app_key, "secret": c.app_secret,
                                  "quota_pause_seconds": 1}),
        Kind::Webhook => json!({"secret": c.app_secret}),
        Kind::DingtalkRobot => json!({"mode": "robot", "base_url": url, "secret": c.app_secret}),
    };
    s["retry_base_ms"] = json!(100);
    s["retry_max_ms"] = json!(500);
    s
}

fn content(case: &Case) -> Value {
    match case.kind {
        Kind::Jpush => json!({"title": "Order", "alert": "Your order has shipped"}),
        Kind::Jsms => json!({"template_id": 1, "params": {"code": "1234"}}),
        Kind::WechatOa => json!({"template_id": "tpl-1", "data": {"first": {"value": "hi"}}}),
        Kind::Webhook => json!({"body": {"order": 1234}}),
        _ => json!({"text": "Your order has shipped"}),
    }
}

fn address(case: &Case, sim: &SimHandle, user: &str) -> String {
    match case.kind {
        Kind::Jsms => {
            // A well-formed number JSMS does not serve (not a mainland mobile).
            if user.starts_with("invalid") {
                "+442071838750".into()
            } else {
                format!("+86138001{:05}", user.bytes().map(u32::from).sum::<u32>())
            }
        }
        Kind::Webhook => format!("{}/hook/{user}", sim.url()),
        // A robot's address is its access token (one group per robot).
        Kind::DingtalkRobot if user.starts_with("invalid") => "no-such-robot".into(),
        Kind::DingtalkRobot => sim.config().app_key,
        _ => user.to_owned(),
    }
}

/// Creates (or replaces) channel `code` through the admin API and grants it to the demo
/// app; answers the channel as the API shows it.
pub(crate) async fn add_channel(app: &TestApp, code: &str, channel: &Value) -> Value {
    let res = app
        .http
        .put(app.url(&format!("/admin/channels/{code}")))
        .bearer_auth(ADMIN)
        .json(channel)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let res = app
        .http
        .put(app.url(&format!("/admin/apps/demo/grants/{code}")))
        .bearer_auth(ADMIN)
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    body
}

struct Rig {
    app: TestApp,
    sim: SimHandle,
}

impl Rig {
    async fn new(case: &Case) -> Rig {
        let app = TestApp::spawn().await;
        let sim = umsd_sim::start(SimConfig {
            receipt_delay_ms: 100,
            callback_url: Some(app.url(&format!("/callbacks/{CODE}"))),
            // A limited simulator advertises a 1 s reset window (an unlimited one
            // advertises JPush's free-tier minute).
            rate_per_second: Some(1000),
            ..SimConfig::new(case.kind)
        })
        .unwrap();
        let body = add_channel(
            &app,
            CODE,
            &json!({"type": case.channel_type, "pool_size": 4, "settings": settings(case, &sim)}),
        )
        .await;
        assert!(body["settings"].get("app_secret").is_none());
        assert!(body["settings"].get("secret").is_none());
        Rig { app, sim }
    }

    async fn user(&self, case: &Case, user: &str) {
        let (status, body) = self
            .app
            .put_as(
                DEMO,
                &format!("/v1/users/{user}"),
                &json!({"bindings": [{"type": case.binding, "value": address(case, &self.sim, user)}]}),
            )
            .await;
        assert!(status.is_success(), "{body}");
    }

    async fn send(&self, case: &Case, users: &[&str]) -> String {
        let (status, sent) = self
            .app
            .send(&json!({
                "audience": {"user_ids": users},
                "channels": [CODE],
                "content": {CODE: content(case)},
            }))
            .await;
        assert_eq!(status, 202, "{sent}");
        sent["id"].as_str().unwrap().to_owned()
    }

    /// Waits until every delivery of the message is final; returns them by user.
    async fn settled(&self, id: &str) -> Vec<Value> {
        let m = self
            .app
            .wait_for(&format!("/v1/messages/{id}"), 45, |m| m["status"] == "done")
            .await;
        let (_, d) = self.app.get(&format!("/v1/messages/{id}/deliveries")).await;
        assert!(m["funnel"].is_object());
        d["deliveries"].as_array().unwrap().clone()
    }
}

fn events(d: &Value) -> Vec<String> {
    d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap().to_owned())
        .collect()
}

async fn run(case: Case) {
    let rig = Rig::new(&case).await;
    for u in ["u1", "u2", "u3", "u4", "u5", "invalid1"] {
        rig.user(&case, u).await;
    }

    // Success, with its receipt where the provider sends one.
    let id = rig.send(&case, &["u1"]).await;
    let d = rig.settled(&id).await;
    assert_eq!(d[0]["state"], "delivered", "{d:?}");
    let ev = events(&d[0]);
    // Where acceptance is the delivery, there is no separate `submitted` step.
    let first = if case.receipts {
        "submitted"
    } else {
        "delivered"
    };
    assert_eq!(ev.first().map(String::as_str), Some(first), "{ev:?}");
    assert!(rig.sim.stats().recipients_accepted >= 1);
    if case.receipts {
        assert!(d[0]["provider_id"].is_string(), "{d:?}");
    }

    // A 5xx is retried with backoff and recovers.
    rig.sim.set_faults(Faults {
        fail_next: 1,
        ..Faults::default()
    });
    let id = rig.send(&case, &["u2"]).await;
    let d = rig.settled(&id).await;
    assert_eq!(d[0]["state"], "delivered", "{d:?}");
    assert_eq!(d[0]["attempts"], 2, "{d:?}");
    // The retry (an event row) comes before the first outcome (kept in the delivery's
    // row), in time order.
    let ev = events(&d[0]);
    assert_eq!(
        ev.iter().take(2).map(String::as_str).collect::<Vec<_>>(),
        ["queued", first],
        "a retry, then the outcome: {d:?}"
    );

    // Throttled: the channel pauses, then delivers.
    rig.sim.set_faults(Faults {
        rate_limit_next: 1,
        ..Faults::default()
    });
    let id = rig.send(&case, &["u3"]).await;
    let d = rig.settled(&id).await;
    assert_eq!(d[0]["state"], "delivered", "{d:?}");
    let metrics = rig.app.metrics().await;
    assert!(
        metrics.contains(&format!(
            "umsd_delivery_retries_total{{channel=\"{CODE}\",class=\"rate_limited\"}}"
        )),
        "no rate_limited retry counted"
    );

    // An expired token is refreshed once and the send goes through.
    if case.tokens {
        let issued = rig.sim.stats().token_issued;
        rig.sim.set_faults(Faults {
            expire_tokens: true,
            ..Faults::default()
        });
        let id = rig.send(&case, &["u4"]).await;
        let d = rig.settled(&id).await;
        assert_eq!(d[0]["state"], "delivered", "{d:?}");
        assert_eq!(d[0]["attempts"], 1, "refreshed within the attempt: {d:?}");
        assert_eq!(rig.sim.stats().token_issued, issued + 1);
        assert!(rig
            .app
            .metrics()
            .await
            .contains("umsd_token_refreshes_total"));
    }

    // A permanent failure is recorded with the provider's code, without retries.
    rig.sim.set_faults(Faults {
        permanent_next: 1,
        ..Faults::default()
    });
    let id = rig.send(&case, &["u5"]).await;
    let d = rig.settled(&id).await;
    assert_eq!(d[0]["state"], "failed", "{d:?}");
    assert_eq!(d[0]["code"], case.permanent_code, "{d:?}");
    assert_eq!(d[0]["attempts"], 1);
    let (_, m) = rig.app.get(&format!("/v1/messages/{id}")).await;
    let loss = &m["losses"][0];
    assert_eq!(loss["stage"], "effective_to_sent", "{m}");
    assert_eq!(loss["reason"], case.permanent_code, "{m}");

    // An invalid recipient next to a valid one: only it fails.
    if !case.partial {
        rig.sim.shutdown();
        rig.app.stop().await;
        return;
    }
    let id = rig.send(&case, &["u1", "invalid1"]).await;
    let d = rig.settled(&id).await;
    let by_user = |u: &str| d.iter().find(|x| x["user_id"] == u).unwrap().clone();
    assert_eq!(by_user("u1")["state"], "delivered", "{d:?}");
    let bad = by_user("invalid1");
    assert!(
        bad["state"] == "failed" || bad["state"] == "undelivered",
        "{bad}"
    );
    rig.sim.shutdown();
    rig.app.stop().await;
}

#[actix_web::test]
async fn wecom() {
    run(Case {
        kind: Kind::Wecom,
        channel_type: "wecom",
        binding: "wecom",
        receipts: false,
        tokens: true,
        permanent_code: "81013",
        partial: true,
    })
    .await;
}

#[actix_web::test]
async fn dingtalk() {
    run(Case {
        kind: Kind::Dingtalk,
        channel_type: "dingtalk",
        binding: "dingtalk",
        receipts: true,
        tokens: true,
        permanent_code: "88",
        partial: true,
    })
    .await;
}

#[actix_web::test]
async fn dingtalk_robot() {
    run(Case {
        kind: Kind::DingtalkRobot,
        channel_type: "dingtalk",
        binding: "dingtalk",
        receipts: false,
        tokens: false,
        permanent_code: "310000",
        partial: true,
    })
    .await;
}

#[actix_web::test]
async fn feishu() {
    run(Case {
        kind: Kind::Feishu,
        channel_type: "feishu",
        binding: "feishu",
        receipts: false,
        tokens: true,
        permanent_code: "230001",
        partial: true,
    })
    .await;
}

#[actix_web::test]
async fn jpush() {
    run(Case {
        kind: Kind::Jpush,
        channel_type: "jpush",
        binding: "jpush",
        receipts: true,
        tokens: false,
        permanent_code: "1003",
        partial: true,
    })
    .await;
}

#[actix_web::test]
async fn jsms() {
    run(Case {
        kind: Kind::Jsms,
        channel_type: "jsms",
        binding: "phone",
        receipts: true,
        tokens: false,
        permanent_code: "50013",
        partial: true,
    })
    .await;
}

#[actix_web::test]
async fn wechat_oa() {
    run(Case {
        kind: Kind::WechatOa,
        channel_type: "wechat_oa",
        binding: "wechat_openid",
        receipts: true,
        tokens: true,
        permanent_code: "40037",
        partial: true,
    })
    .await;
}

#[actix_web::test]
async fn webhook() {
    run(Case {
        kind: Kind::Webhook,
        channel_type: "webhook",
        binding: "webhook",
        receipts: false,
        tokens: false,
        permanent_code: "400",
        partial: false,
    })
    .await;
}

/// A webhook binding that passes the binding check (an `http://` or `https://` prefix)
/// but is no URL fails at once, with `invalid_url`, and only that recipient.
#[actix_web::test]
async fn webhook_with_an_invalid_url_fails_only_that_recipient() {
    let case = Case {
        kind: Kind::Webhook,
        channel_type: "webhook",
        binding: "webhook",
        receipts: false,
        tokens: false,
        permanent_code: "400",
        partial: false,
    };
    let rig = Rig::new(&case).await;
    rig.user(&case, "good").await;
    for (user, value) in [("nohost", "http://"), ("badhost", "http://[::1/x")] {
        let (status, body) = rig
            .app
            .put_as(
                DEMO,
                &format!("/v1/users/{user}"),
                &json!({"bindings": [{"type": "webhook", "value": value}]}),
            )
            .await;
        assert!(status.is_success(), "{body}");
    }
    let id = rig.send(&case, &["good", "nohost", "badhost"]).await;
    let d = rig.settled(&id).await;
    let by_user = |u: &str| d.iter().find(|x| x["user_id"] == u).unwrap().clone();
    assert_eq!(by_user("good")["state"], "delivered", "{d:?}");
    for user in ["nohost", "badhost"] {
        let bad = by_user(user);
        assert_eq!(bad["state"], "failed", "{bad}");
        assert_eq!(bad["code"], "invalid_url", "{bad}");
        assert_eq!(bad["attempts"], 1, "{bad}");
    }
    assert_eq!(rig.sim.stats().send_requests, 1);
    rig.sim.shutdown();
    rig.app.stop().await;
}

/// A webhook receiver on HTTPS with a private certificate: trusted through the channel's
/// `tls_ca_file`, refused (and retried, then failed) without it.
#[actix_web::test]
async fn webhook_over_https_trusts_the_channel_s_ca_file() {
    let app = TestApp::spawn().await;
    let sim = umsd_sim::start(SimConfig {
        tls: true,
        ..SimConfig::new(Kind::Webhook)
    })
    .unwrap();
    assert!(sim.url().starts_with("https://"));
    let ca = std::env::temp_dir().join(format!("umsd-test-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, sim.cert_pem().unwrap()).unwrap();
    let secret = sim.config().app_secret;
    for (code, settings) in [
        (
            "hooks_trusted",
            json!({"secret": secret, "tls_ca_file": ca.to_str().unwrap()}),
        ),
        (
            "hooks_plain",
            json!({"secret": secret, "max_attempts": 2, "retry_base_ms": 50}),
        ),
    ] {
        add_channel(
            &app,
            code,
            &json!({"type": "webhook", "settings": settings}),
        )
        .await;
    }
    // A CA file that is not there is refused when the channel is configured.
    let res = app
        .http
        .put(app.url("/admin/channels/hooks_bad"))
        .bearer_auth(ADMIN)
        .json(&json!({"type": "webhook", "settings": {"secret": secret, "tls_ca_file": "/nonexistent/ca.pem"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let body = res.text().await.unwrap();
    assert!(body.contains("tls_ca_file"), "{body}");
    let (status, body) = app
        .put_as(
            DEMO,
            "/v1/users/tls1",
            &json!({"bindings": [{"type": "webhook", "value": format!("{}/hook/tls1", sim.url())}]}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let mut states = Vec::new();
    for code in ["hooks_trusted", "hooks_plain"] {
        let (status, sent) = app
            .send(&json!({
                "audience": {"user_ids": ["tls1"]},
                "channels": [code],
                "content": {code: {"body": {"n": 1}}},
            }))
            .await;
        assert_eq!(status, 202, "{sent}");
        let id = sent["id"].as_str().unwrap().to_owned();
        app.wait_for(&format!("/v1/messages/{id}"), 30, |m| m["status"] == "done")
            .await;
        let (_, d) = app.get(&format!("/v1/messages/{id}/deliveries")).await;
        states.push(d["deliveries"][0].clone());
    }
    assert_eq!(states[0]["state"], "delivered", "{}", states[0]);
    assert_eq!(states[1]["state"], "failed", "{}", states[1]);
    assert_eq!(states[1]["attempts"], 2, "{}", states[1]);
    assert_eq!(sim.stats().send_requests, 1);
    let _ = std::fs::remove_file(&ca);
    sim.shutdown();
    app.stop().await;
}

/// Clicks and reads come back: DingTalk `read_user_id_list` (pulled) and Feishu read
/// events (pushed) move deliveries to `read`.
#[actix_web::test]
async fn read_receipts_come_back() {
    for (kind, ty) in [(Kind::Dingtalk, "dingtalk"), (Kind::Feishu, "feishu")] {
        let case = Case {
            kind,
            channel_type: ty,
            binding: ty,
            receipts: true,
            tokens: true,
            permanent_code: "",
            partial: false,
        };
        let app = TestApp::spawn().await;
        let sim = umsd_sim::start(SimConfig {
            receipt_delay_ms: 100,
            outcomes: umsd_sim::OutcomeMix {
                delivered: 0,
                undelivered: 0,
                clicked: 1,
            },
            callback_url: Some(app.url(&format!("/callbacks/{CODE}"))),
            ..SimConfig::new(kind)
        })
        .unwrap();
        let rig = Rig { app, sim };
        add_channel(
            &rig.app,
            CODE,
            &json!({"type": ty, "settings": settings(&case, &rig.sim)}),
        )
        .await;
        rig.user(&case, "r1").await;
        let id = rig.send(&case, &["r1"]).await;
        let d = rig
            .app
            .wait_for(&format!("/v1/messages/{id}/deliveries"), 20, |d| {
                d["deliveries"][0]["state"] == "read"
            })
            .await;
        assert_eq!(d["deliveries"][0]["state"], "read", "{ty}");
        let (_, m) = rig.app.get(&format!("/v1/messages/{id}")).await;
        assert_eq!(m["funnel"]["users"]["delivered"], 1, "{m}");
        rig.sim.shutdown();
        rig.app.stop().await;
    }
}

/// Email through a real SMTP server (the bundled sink) in each TLS mode: one transaction
/// per recipient, so a rejected recipient fails alone (550, permanent) and a busy one is
/// retried (450) until its attempts run out.
#[actix_web::test]
async fn email_over_smtp_in_every_tls_mode() {
    use umsd_sim::smtp::{self, SmtpConfig};
    for (mode, starttls, implicit) in [
        ("none", false, false),
        ("starttls", true, false),
        ("tls", false, true),
    ] {
        let sink = smtp::start(SmtpConfig {
            tls: starttls,
            implicit_tls: implicit,
            ..SmtpConfig::default()
        })
        .unwrap();
        let app = TestApp::spawn().await;
        add_channel(
            &app,
            "mail",
            &json!({"type": "email", "pool_size": 2, "settings": {
                "host": "127.0.0.1", "port": sink.addr().port(), "tls": mode,
                "accept_invalid_certs": true, "from": "UMS <noreply@example.com>",
                "max_attempts": 2, "retry_base_ms": 100,
            }}),
        )
        .await;
        for (u, addr) in [
            ("e1", "e1@example.com"),
            ("e2", "reject@example.com"),
            ("e3", "busy@example.com"),
        ] {
            let (status, body) = app
                .put_as(
                    DEMO,
                    &format!("/v1/users/{u}"),
                    &json!({"bindings": [{"type": "email", "value": addr}]}),
                )
                .await;
            assert!(status.is_success(), "{body}");
        }
        let (status, sent) = app
            .send(&json!({
                "audience": {"user_ids": ["e1", "e2", "e3"]},
                "channels": ["mail"],
                "content": {"mail": {"subject": "Order shipped", "text": "Your order has shipped",
                                     "html": "<p>Your order has shipped</p>"}},
            }))
            .await;
        assert_eq!(status, 202, "{sent}");
        let id = sent["id"].as_str().unwrap();
        app.wait_for(&format!("/v1/messages/{id}"), 20, |m| m["status"] == "done")
            .await;
        let (_, d) = app.get(&format!("/v1/messages/{id}/deliveries")).await;
        let by = |u: &str| {
            d["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["user_id"] == u)
                .unwrap()
                .clone()
        };
        assert_eq!(by("e1")["state"], "delivered", "{mode}: {d}");
        assert_eq!(by("e2")["state"], "failed", "{mode}: {d}");
        assert_eq!(by("e2")["code"], "550", "{mode}: {d}");
        assert_eq!(by("e2")["attempts"], 1);
        assert_eq!(by("e3")["state"], "failed", "{mode}: {d}");
        assert_eq!(by("e3")["code"], "450", "{mode}: {d}");
        assert_eq!(by("e3")["attempts"], 2);
        let mails = sink.received();
        assert_eq!(mails.len(), 1, "{mode}");
        assert_eq!(mails[0].to, ["e1@example.com"]);
        assert!(mails[0].data.contains("Subject: Order shipped"));
        assert_eq!(mails[0].tls, starttls || implicit, "{mode}");
        app.stop().await;
        sink.shutdown();
    }
}

/// A receipt for an id umsd never sent is answered, retried for the grace period, then
/// counted and dropped — not an error, not a loop. A badly signed one is refused.
#[actix_web::test]
async fn unknown_and_forged_receipts() {
    let app = TestApp::spawn_with(|c| c.delivery.receipt_grace_seconds = 1).await;
    let sim = umsd_sim::start(SimConfig::new(Kind::Jsms)).unwrap();
    let case = Case {
        kind: Kind::Jsms,
        channel_type: "jsms",
        binding: "phone",
        receipts: true,
        tokens: false,
        permanent_code: "",
        partial: false,
    };
    let res = app
        .http
        .put(app.url(&format!("/admin/channels/{CODE}")))
        .bearer_auth(ADMIN)
        .json(&json!({"type": "jsms", "settings": settings(&case, &sim)}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let c = sim.config();
    let form = |key: &str, secret: &str| {
        let (nonce, ts) = ("12345", "1700000000000");
        let sig = umsd_sim::sign::jsms_callback(key, secret, nonce, ts);
        let data =
            json!({"msgId": "999999", "status": 4001, "receiveTime": 1, "phone": "+8613800138000"});
        vec![
            ("nonce".to_owned(), nonce.to_owned()),
            ("timestamp".to_owned(), ts.to_owned()),
            ("signature".to_owned(), sig),
            ("type".to_owned(), "SMS_REPORT".to_owned()),
            ("data".to_owned(), data.to_string()),
        ]
    };
    let post = |body: Vec<(String, String)>| {
        let encoded: String = body
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        app.http
            .post(app.url(&format!("/callbacks/{CODE}")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encoded)
            .send()
    };
    let res = post(form(&c.app_key, "wrong-secret")).await.unwrap();
    assert_eq!(res.status(), 401);
    let res = post(form(&c.app_key, &c.app_secret)).await.unwrap();
    assert_eq!(res.status(), 200);
    let unmatched = format!("umsd_receipts_unmatched_total{{channel=\"{CODE}\"}}");
    crate::eventually(6, "the unknown receipt to be counted", || async {
        if app.metrics().await.contains(&unmatched) {
            Ok(())
        } else {
            Err(&unmatched)
        }
    })
    .await;
    sim.shutdown();
    app.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
