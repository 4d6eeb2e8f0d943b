use serde_json::json;
use umsd_sim::{Faults, Kind, SimConfig};

use crate::common::*;

#[tokio::test]
async fn token_send_partial_invalid_and_errors() {
    let sim = start(SimConfig {
        rate_per_second: Some(2),
        ..config(Kind::Wecom)
    });
    let c = client();
    let base = sim.url();
    let (_, bad) = get_json(
        &c,
        &format!("{base}/cgi-bin/gettoken?corpid=sim-key&corpsecret=x"),
    )
    .await;
    assert_eq!(bad["errcode"], 40001);
    let token_url = format!("{base}/cgi-bin/gettoken?corpid=sim-key&corpsecret=sim-secret");
    let (_, t) = get_json(&c, &token_url).await;
    assert_eq!(t["errcode"], 0);
    let token = t["access_token"].as_str().unwrap().to_owned();
    let (_, again) = get_json(&c, &token_url).await;
    assert_eq!(again["access_token"], token.as_str());

    let send = |t: &str| format!("{base}/cgi-bin/message/send?access_token={t}");
    let body = |to: &str| json!({"touser": to, "msgtype": "text", "agentid": 1000002, "text": {"content": "hi"}});

    let (status, ok) = post_json(&c, &send(&token), &body("alice|InvalidBob|carol")).await;
    assert_eq!(status, 200);
    assert_eq!(ok["errcode"], 0);
    assert_eq!(ok["invaliduser"], "invalidbob");
    let msgid = ok["msgid"].as_str().unwrap().to_owned();
    let received = sim.received();
    let who: Vec<&str> = received.iter().map(|r| r.recipient.as_str()).collect();
    assert_eq!(who, ["alice", "carol"]);
    assert!(received.iter().all(|r| r.provider_id == msgid));

    let (_, all_bad) = post_json(&c, &send(&token), &body("invalid1|invalid2")).await;
    assert_eq!(all_bad["errcode"], 81013);
    let (_, limited) = post_json(&c, &send(&token), &body("alice")).await;
    assert_eq!(limited["errcode"], 45009);
    assert_eq!(limited["errmsg"], "api freq out of limit");

    let (_, unknown) = post_json(&c, &send("nope"), &body("alice")).await;
    assert_eq!(unknown["errcode"], 40014);
    let (_, missing) = post_json(&c, &format!("{base}/cgi-bin/message/send"), &body("alice")).await;
    assert_eq!(missing["errcode"], 41001);

    sim.set_faults(Faults {
        expire_tokens: true,
        ..Faults::default()
    });
    let (_, expired) = post_json(&c, &send(&token), &body("alice")).await;
    assert_eq!(expired["errcode"], 42001);
    let (_, fresh) = get_json(&c, &token_url).await;
    assert_ne!(fresh["access_token"], token.as_str());
}

#[tokio::test]
async fn busy_and_permanent_faults() {
    let sim = start(config(Kind::Wecom));
    let c = client();
    let base = sim.url();
    let (_, t) = get_json(
        &c,
        &format!("{base}/cgi-bin/gettoken?corpid=sim-key&corpsecret=sim-secret"),
    )
    .await;
    let url = format!(
        "{base}/cgi-bin/message/send?access_token={}",
        t["access_token"].as_str().unwrap()
    );
    let body = json!({"touser": "a", "msgtype": "text", "agentid": 1, "text": {"content": "x"}});
    sim.set_faults(Faults {
        busy_next: 1,
        permanent_next: 1,
        ..Faults::default()
    });
    let (_, busy) = post_json(&c, &url, &body).await;
    assert_eq!(busy["errcode"], -1);
    let (_, perm) = post_json(&c, &url, &body).await;
    assert_eq!(perm["errcode"], 81013);
}
