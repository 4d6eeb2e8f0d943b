use std::time::Duration;

use serde_json::{json, Value};
use umsd_sim::{Kind, OutcomeMix, SimConfig};

use crate::common::*;

async fn send(c: &reqwest::Client, url: &str, secret: &str, body: &Value) -> (u16, Value) {
    let r = c
        .post(url)
        .basic_auth("sim-key", Some(secret))
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn send_batch_and_errors() {
    let sim = start(SimConfig {
        rate_per_second: Some(4),
        ..config(Kind::Jsms)
    });
    let c = client();
    let one = format!("{}/v1/messages", sim.url());
    let batch = format!("{}/v1/messages/batch", sim.url());
    let msg = |m: &str| json!({"mobile": m, "temp_id": 1, "temp_para": {"code": "1234"}});

    let (status, e) = send(&c, &one, "wrong", &msg("13800138000")).await;
    assert_eq!((status, e["error"]["code"].as_i64()), (401, Some(50002)));

    let (status, ok) = send(&c, &one, "sim-secret", &msg("+8613800138000")).await;
    assert_eq!(status, 200);
    assert!(ok["msg_id"].is_u64(), "msg_id is a number: {ok}");

    for bad in ["invalid138", "1380013800"] {
        let (status, e) = send(&c, &one, "sim-secret", &msg(bad)).await;
        assert_eq!(
            (status, e["error"]["code"].as_i64()),
            (403, Some(50006)),
            "{bad}"
        );
    }

    let (status, b) = send(
        &c,
        &batch,
        "sim-secret",
        &json!({"temp_id": 1, "recipients": [
            {"mobile": "13800138001", "temp_para": {"code": "1"}},
            {"mobile": "invalid", "temp_para": {"code": "2"}},
        ]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(b["success_count"], 1);
    assert_eq!(b["failure_count"], 1);
    assert!(b["recipients"][0]["msg_id"].is_u64());
    assert_eq!(b["recipients"][0]["mobile"], "13800138001");
    assert_eq!(b["recipients"][1]["error_code"], 50006);
    assert_eq!(b["recipients"][1]["mobile"], "invalid");

    let (status, e) = send(&c, &one, "sim-secret", &msg("13800138002")).await;
    assert_eq!((status, e["error"]["code"].as_i64()), (403, Some(50009)));
    assert_eq!(sim.stats().recipients_accepted, 2);
}

#[tokio::test]
async fn signed_reports_are_pushed_and_retried() {
    // The first push attempt fails: the report must come again.
    let mut rx = Receiver::start(1).await;
    let sim = start(SimConfig {
        outcomes: OutcomeMix {
            delivered: 0,
            undelivered: 1,
            clicked: 0,
        },
        callback_url: Some(rx.url()),
        ..config(Kind::Jsms)
    });
    let c = client();
    let (_, ok) = send(
        &c,
        &format!("{}/v1/messages", sim.url()),
        "sim-secret",
        &json!({"mobile": "13800138000", "temp_id": 5, "temp_para": {}}),
    )
    .await;
    let msg_id = ok["msg_id"].as_u64().unwrap();

    let first = rx.next().await;
    let retry = rx.next().await;
    for pushed in [&first, &retry] {
        assert_eq!(pushed.path, "/callback");
        assert_eq!(
            pushed.headers["content-type"],
            "application/x-www-form-urlencoded"
        );
        let f = form(&pushed.body);
        let (nonce, ts) = (field(&f, "nonce"), field(&f, "timestamp"));
        assert!(nonce.parse::<u64>().is_ok());
        assert!(ts.parse::<u64>().is_ok());
        assert_eq!(
            field(&f, "signature"),
            umsd_sim::sign::jsms_callback("sim-key", "sim-secret", nonce, ts)
        );
        assert_eq!(field(&f, "type"), "SMS_REPORT");
        let data: Value = serde_json::from_str(field(&f, "data")).unwrap();
        assert_eq!(data["msgId"], msg_id.to_string());
        assert_eq!(data["status"], 4004);
        assert_eq!(data["phone"], "13800138000");
        assert!(data["receiveTime"].is_u64());
    }
    eventually(|| async {
        let s = sim.stats();
        (s.receipts_pushed == 1 && s.receipts_push_failed == 1).then_some(())
    })
    .await;
    assert!(rx.quiet_for(Duration::from_millis(300)).await);
}
