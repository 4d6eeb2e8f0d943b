use serde_json::{json, Value};
use umsd_sim::{Faults, Kind, OutcomeMix, SimConfig};

use crate::common::*;

async fn token(c: &reqwest::Client, base: &str) -> String {
    let (status, t) = post_json(
        c,
        &format!("{base}/open-apis/auth/v3/tenant_access_token/internal"),
        &json!({"app_id": "sim-key", "app_secret": "sim-secret"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(t["code"], 0);
    assert_eq!(t["msg"], "ok");
    t["tenant_access_token"].as_str().unwrap().to_owned()
}

async fn send(c: &reqwest::Client, base: &str, auth: Option<&str>, body: &Value) -> (u16, Value) {
    let mut r = c.post(format!(
        "{base}/open-apis/im/v1/messages?receive_id_type=open_id"
    ));
    if let Some(t) = auth {
        r = r.bearer_auth(t);
    }
    let r = r.json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn text(to: &str) -> Value {
    json!({"receive_id": to, "msg_type": "text", "content": "{\"text\":\"hi\"}"})
}

#[tokio::test]
async fn token_send_idempotency_and_errors() {
    let sim = start(SimConfig {
        rate_per_second: Some(3),
        ..config(Kind::Feishu)
    });
    let c = client();
    let base = sim.url();
    let (status, bad) = post_json(
        &c,
        &format!("{base}/open-apis/auth/v3/tenant_access_token/internal"),
        &json!({"app_id": "sim-key", "app_secret": "x"}),
    )
    .await;
    assert_eq!((status.as_u16(), bad["code"].as_i64()), (400, Some(10014)));
    let t = token(&c, &base).await;
    assert!(t.starts_with("t-"));
    assert_eq!(
        token(&c, &base).await,
        t,
        "same token while > 30 min remain"
    );

    let mut body = text("ou_alice");
    body["uuid"] = json!("req-1");
    let (status, first) = send(&c, &base, Some(&t), &body).await;
    assert_eq!(status, 200);
    assert_eq!(first["code"], 0);
    assert_eq!(first["msg"], "success");
    let message_id = first["data"]["message_id"].as_str().unwrap().to_owned();
    assert!(message_id.starts_with("om_"));
    let (_, again) = send(&c, &base, Some(&t), &body).await;
    assert_eq!(again["data"]["message_id"], message_id.as_str());
    assert_eq!(sim.received().len(), 1, "a repeated uuid sends nothing new");

    let (status, invalid) = send(&c, &base, Some(&t), &text("invalid_user")).await;
    assert_eq!((status, invalid["code"].as_i64()), (400, Some(230034)));

    // The bucket (3/s) is spent by now: the gateway answers 429 with its headers.
    let r = c
        .post(format!(
            "{base}/open-apis/im/v1/messages?receive_id_type=open_id"
        ))
        .bearer_auth(&t)
        .json(&text("ou_bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("x-ogw-ratelimit-limit"));
    assert!(r.headers().contains_key("x-ogw-ratelimit-reset"));
    let limited: Value = r.json().await.unwrap();
    assert_eq!(limited["code"], 99991400);
    assert_eq!(limited["msg"], "request trigger frequency limit");

    let (status, missing) = send(&c, &base, None, &text("ou_bob")).await;
    assert_eq!((status, missing["code"].as_i64()), (400, Some(99991661)));
    let (status, unknown) = send(&c, &base, Some("t-nope"), &text("ou_bob")).await;
    assert_eq!((status, unknown["code"].as_i64()), (400, Some(99991663)));
    sim.set_faults(Faults {
        expire_tokens: true,
        ..Faults::default()
    });
    let (status, expired) = send(&c, &base, Some(&t), &text("ou_bob")).await;
    assert_eq!((status, expired["code"].as_i64()), (400, Some(99991663)));
    assert_ne!(token(&c, &base).await, t);
}

#[tokio::test]
async fn read_event_is_pushed_for_clicks() {
    let mut rx = Receiver::start(0).await;
    let sim = start(SimConfig {
        outcomes: OutcomeMix {
            delivered: 0,
            undelivered: 0,
            clicked: 1,
        },
        callback_url: Some(rx.url()),
        ..config(Kind::Feishu)
    });
    let c = client();
    let base = sim.url();
    let t = token(&c, &base).await;
    let (_, sent) = send(&c, &base, Some(&t), &text("ou_carol")).await;
    let message_id = sent["data"]["message_id"].as_str().unwrap().to_owned();

    let pushed = rx.next().await;
    let ev: Value = serde_json::from_slice(&pushed.body).unwrap();
    assert_eq!(ev["schema"], "2.0");
    assert_eq!(ev["header"]["event_type"], "im.message.message_read_v1");
    assert_eq!(ev["header"]["app_id"], "sim-key");
    assert_eq!(ev["header"]["token"], "");
    assert!(ev["header"]["event_id"].is_string());
    assert!(ev["header"]["create_time"].is_string());
    assert_eq!(ev["event"]["reader"]["reader_id"]["open_id"], "ou_carol");
    assert!(ev["event"]["reader"]["read_time"].is_string());
    assert_eq!(ev["event"]["message_id_list"], json!([message_id]));
    eventually(|| async { (sim.stats().receipts_pushed == 1).then_some(()) }).await;
}

#[tokio::test]
async fn no_event_without_click_and_fault_codes() {
    let mut rx = Receiver::start(0).await;
    let sim = start(SimConfig {
        callback_url: Some(rx.url()),
        ..config(Kind::Feishu)
    });
    let c = client();
    let base = sim.url();
    let t = token(&c, &base).await;
    sim.set_faults(Faults {
        busy_next: 1,
        permanent_next: 1,
        ..Faults::default()
    });
    let (status, _) = send(&c, &base, Some(&t), &text("ou_dan")).await;
    assert_eq!(status, 500);
    let (status, perm) = send(&c, &base, Some(&t), &text("ou_dan")).await;
    assert_eq!((status, perm["code"].as_i64()), (400, Some(230001)));
    let (status, _) = send(&c, &base, Some(&t), &text("ou_dan")).await;
    assert_eq!(status, 200);
    assert!(
        rx.quiet_for(std::time::Duration::from_millis(DELAY_MS * 3))
            .await
    );
}
