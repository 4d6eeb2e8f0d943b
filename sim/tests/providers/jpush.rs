use serde_json::{json, Value};
use umsd_sim::{Faults, Kind, OutcomeMix, SimConfig};

use crate::common::*;

async fn push(c: &reqwest::Client, base: &str, secret: &str, body: &Value) -> reqwest::Response {
    c.post(format!("{base}/v3/push"))
        .basic_auth("sim-key", Some(secret))
        .json(body)
        .send()
        .await
        .unwrap()
}

fn notification(rids: &[&str]) -> Value {
    json!({
        "platform": "all",
        "audience": {"registration_id": rids},
        "notification": {"alert": "hi"},
        "options": {"sendno": 18, "apns_production": false},
    })
}

async fn status(c: &reqwest::Client, base: &str, msg_id: &str, rids: &[&str]) -> Value {
    let r = c
        .post(format!("{base}/v3/status/message"))
        .basic_auth("sim-key", Some("sim-secret"))
        .json(&json!({"msg_id": msg_id.parse::<u64>().unwrap(), "registration_ids": rids}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn push_report_and_errors() {
    let sim = start(SimConfig {
        rate_per_second: Some(2),
        ..config(Kind::Jpush)
    });
    let c = client();
    let base = sim.url();

    let r = push(&c, &base, "wrong", &notification(&["r1"])).await;
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], 1004);

    let r = push(
        &c,
        &base,
        "sim-secret",
        &notification(&["r1", "invalid9", "r2"]),
    )
    .await;
    assert_eq!(r.status(), 200);
    for h in [
        "x-rate-limit-quota",
        "x-rate-limit-remaining",
        "x-rate-limit-reset",
    ] {
        assert!(r.headers().contains_key(h), "{h}");
    }
    let ok: Value = r.json().await.unwrap();
    assert_eq!(ok["sendno"], "18");
    let msg_id = ok["msg_id"].as_str().unwrap().to_owned();

    let r = push(
        &c,
        &base,
        "sim-secret",
        &notification(&["invalid1", "invalid2"]),
    )
    .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], 1011);
    assert_eq!(e["error"]["message"], "cannot find user by this audience");

    let r = push(&c, &base, "sim-secret", &notification(&["r3"])).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("x-rate-limit-reset"));
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], 2002);

    // Before the delay the report knows nothing yet.
    let rids = ["r1", "r2", "invalid9", "stranger"];
    assert_eq!(status(&c, &base, &msg_id, &rids).await, json!({}));
    let report = eventually(|| {
        let c = c.clone();
        let base = base.clone();
        let msg_id = msg_id.clone();
        async move {
            let v = status(&c, &base, &msg_id, &rids).await;
            (!v.as_object().unwrap().is_empty()).then_some(v)
        }
    })
    .await;
    assert_eq!(
        report,
        json!({
            "r1": {"status": 0},
            "r2": {"status": 0},
            "invalid9": {"status": 2},
            "stranger": {"status": 3},
        })
    );
    let r = c
        .get(format!("{base}/v3/received?msg_ids={msg_id}"))
        .basic_auth("sim-key", Some("sim-secret"))
        .send()
        .await
        .unwrap();
    let rows: Value = r.json().await.unwrap();
    assert_eq!(rows[0]["msg_id"], msg_id.as_str());
    assert_eq!(rows[0]["android_received"], 2);

    let got: Vec<String> = sim.received().into_iter().map(|r| r.recipient).collect();
    assert_eq!(got, ["r1", "r2"]);
}

#[tokio::test]
async fn undelivered_and_fault_codes() {
    let sim = start(SimConfig {
        outcomes: OutcomeMix {
            delivered: 0,
            undelivered: 1,
            clicked: 0,
        },
        ..config(Kind::Jpush)
    });
    let c = client();
    let base = sim.url();
    sim.set_faults(Faults {
        fail_next: 1,
        busy_next: 1,
        permanent_next: 1,
        ..Faults::default()
    });
    let body = notification(&["r1"]);
    for (http, code) in [(500, 1000), (503, 1030), (400, 1003)] {
        let r = push(&c, &base, "sim-secret", &body).await;
        assert_eq!(r.status(), http);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], code);
    }
    let r = push(&c, &base, "sim-secret", &body).await;
    let ok: Value = r.json().await.unwrap();
    let msg_id = ok["msg_id"].as_str().unwrap().to_owned();
    let v = eventually(|| {
        let c = c.clone();
        let base = base.clone();
        let msg_id = msg_id.clone();
        async move {
            let v = status(&c, &base, &msg_id, &["r1"]).await;
            (!v.as_object().unwrap().is_empty()).then_some(v)
        }
    })
    .await;
    assert_eq!(v, json!({"r1": {"status": 1}}));
}

#[tokio::test]
async fn cid_repeats_the_first_result() {
    let sim = start(config(Kind::Jpush));
    let c = client();
    let base = sim.url();
    let mut body = notification(&["r1"]);
    body["cid"] = json!("sim-key-0001");
    let a: Value = push(&c, &base, "sim-secret", &body)
        .await
        .json()
        .await
        .unwrap();
    let b: Value = push(&c, &base, "sim-secret", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(sim.received().len(), 1);
}
