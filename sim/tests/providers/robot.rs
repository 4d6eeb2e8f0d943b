use serde_json::json;
use umsd_sim::{Faults, Kind};

use crate::common::*;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn url(base: &str, token: &str, ts: u64, sign: &str) -> String {
    let sign: String = form_urlencoded::byte_serialize(sign.as_bytes()).collect();
    format!("{base}/robot/send?access_token={token}&timestamp={ts}&sign={sign}")
}

#[tokio::test]
async fn signed_send_and_signature_errors() {
    let sim = start(config(Kind::DingtalkRobot));
    let cfg = sim.config();
    assert!(cfg.app_secret.starts_with("SEC"));
    let c = client();
    let base = sim.url();
    let body = json!({"msgtype": "text", "text": {"content": "hello"}, "at": {"isAtAll": false}});

    let ts = now_ms();
    let sign = umsd_sim::sign::dingtalk_robot(&cfg.app_secret, ts);
    let (status, ok) = post_json(&c, &url(&base, &cfg.app_key, ts, &sign), &body).await;
    assert_eq!(status, 200);
    assert_eq!(ok, json!({"errcode": 0, "errmsg": "ok"}));
    assert_eq!(sim.received()[0].recipient, cfg.app_key);

    let wrong = umsd_sim::sign::dingtalk_robot("SECother", ts);
    let (_, bad) = post_json(&c, &url(&base, &cfg.app_key, ts, &wrong), &body).await;
    assert_eq!(bad["errcode"], 310000);
    assert_eq!(bad["errmsg"], "sign not match");

    let stale = ts - 3_700_000;
    let stale_sign = umsd_sim::sign::dingtalk_robot(&cfg.app_secret, stale);
    let (_, old) = post_json(&c, &url(&base, &cfg.app_key, stale, &stale_sign), &body).await;
    assert_eq!(old["errcode"], 310000);
    assert_eq!(old["errmsg"], "invalid timestamp");

    let (_, unsigned) = post_json(
        &c,
        &format!("{base}/robot/send?access_token={}", cfg.app_key),
        &body,
    )
    .await;
    assert_eq!(unsigned["errcode"], 310000);

    let (_, no_robot) = post_json(&c, &url(&base, "other", ts, &sign), &body).await;
    assert_eq!(no_robot["errcode"], 300001);

    sim.set_faults(Faults {
        rate_limit_next: 1,
        busy_next: 1,
        ..Faults::default()
    });
    let (_, busy) = post_json(&c, &url(&base, &cfg.app_key, ts, &sign), &body).await;
    assert_eq!(busy["errcode"], -1);
    let (_, limited) = post_json(&c, &url(&base, &cfg.app_key, ts, &sign), &body).await;
    assert_eq!(limited["errcode"], 410100);
    assert_eq!(sim.stats().token_rejected, 4);
}
