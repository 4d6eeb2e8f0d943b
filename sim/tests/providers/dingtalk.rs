use serde_json::{json, Value};
use umsd_sim::{Faults, Kind, OutcomeMix, SimConfig};

use crate::common::*;

fn strings(v: &Value) -> Vec<String> {
    let mut s: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect();
    s.sort();
    s
}

#[tokio::test]
async fn token_send_and_pull_results() {
    let sim = start(SimConfig {
        outcomes: OutcomeMix {
            delivered: 1,
            undelivered: 1,
            clicked: 1,
        },
        ..config(Kind::Dingtalk)
    });
    let c = client();
    let base = sim.url();
    let token_url = format!("{base}/gettoken?appkey=sim-key&appsecret=sim-secret");
    let (_, t1) = get_json(&c, &token_url).await;
    assert_eq!(t1["errcode"], 0);
    assert_eq!(t1["expires_in"], 7200);
    let token = t1["access_token"].as_str().unwrap().to_owned();
    let (_, t2) = get_json(&c, &token_url).await;
    assert_eq!(
        t2["access_token"],
        token.as_str(),
        "same token within its lifetime"
    );

    let users: Vec<String> = (0..30).map(|i| format!("user{i}")).collect();
    let list = format!("{},invalid_x", users.join(","));
    let (status, sent) = post_json(
        &c,
        &format!("{base}/topapi/message/corpconversation/asyncsend_v2?access_token={token}"),
        &json!({"agent_id": 1001, "userid_list": list, "msg": {"msgtype": "text", "text": {"content": "hi"}}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sent["errcode"], 0);
    assert_eq!(sent["errmsg"], "ok");
    let task_id = sent["task_id"].as_u64().unwrap();
    assert!(sent["request_id"].is_string());

    let q = json!({"agent_id": 1001, "task_id": task_id});
    let progress_url =
        format!("{base}/topapi/message/corpconversation/getsendprogress?access_token={token}");
    let result_url =
        format!("{base}/topapi/message/corpconversation/getsendresult?access_token={token}");
    // Before the delay nobody is in any list.
    let (_, early) = post_json(&c, &result_url, &q).await;
    assert_eq!(early["errcode"], 0);
    for (_, list) in early["send_result"].as_object().unwrap() {
        assert!(list.as_array().unwrap().is_empty());
    }
    let (_, p) = post_json(&c, &progress_url, &q).await;
    assert_eq!(p["progress"]["status"], 1);

    eventually(|| {
        let c = c.clone();
        let url = progress_url.clone();
        let q = q.clone();
        async move {
            let (_, p) = post_json(&c, &url, &q).await;
            (p["progress"]["status"] == 2).then_some(())
        }
    })
    .await;
    let (_, done) = post_json(&c, &result_url, &q).await;
    let r = &done["send_result"];
    assert_eq!(strings(&r["invalid_user_id_list"]), vec!["invalid_x"]);
    assert!(r["forbidden_user_id_list"].as_array().unwrap().is_empty());
    let mut all = strings(&r["failed_user_id_list"]);
    all.extend(strings(&r["read_user_id_list"]));
    all.extend(strings(&r["unread_user_id_list"]));
    all.sort();
    let mut expected = users.clone();
    expected.sort();
    assert_eq!(all, expected, "every valid user in exactly one list");

    let received = sim.received();
    assert_eq!(received.len(), 30);
    assert!(received
        .iter()
        .all(|r| r.provider_id == task_id.to_string()));
    assert_eq!(received[0].body["agent_id"], 1001);
    assert_eq!(sim.stats().recipients_accepted, 30);
}

#[tokio::test]
async fn auth_rate_limit_and_fault_codes() {
    let sim = start(SimConfig {
        rate_per_second: Some(1),
        ..config(Kind::Dingtalk)
    });
    let c = client();
    let base = sim.url();
    let (_, bad) = get_json(
        &c,
        &format!("{base}/gettoken?appkey=sim-key&appsecret=nope"),
    )
    .await;
    assert_eq!(bad["errcode"], 40089);

    let token_url = format!("{base}/gettoken?appkey=sim-key&appsecret=sim-secret");
    let (_, t) = get_json(&c, &token_url).await;
    let token = t["access_token"].as_str().unwrap().to_owned();
    let send_url =
        |t: &str| format!("{base}/topapi/message/corpconversation/asyncsend_v2?access_token={t}");
    let body = json!({"agent_id": 1, "userid_list": "u1", "msg": {"msgtype": "text", "text": {"content": "x"}}});

    let (status, unknown) = post_json(&c, &send_url("nope"), &body).await;
    assert_eq!(
        (status.as_u16(), unknown["errcode"].as_i64()),
        (200, Some(40014))
    );

    let (_, ok) = post_json(&c, &send_url(&token), &body).await;
    assert_eq!(ok["errcode"], 0);
    let (status, limited) = post_json(&c, &send_url(&token), &body).await;
    assert_eq!(status, 200);
    assert_eq!(limited["errcode"], 90018);
    assert_eq!(sim.stats().rate_limited, 1);

    sim.set_faults(Faults {
        expire_tokens: true,
        ..Faults::default()
    });
    let (_, expired) = post_json(&c, &send_url(&token), &body).await;
    assert_eq!(expired["errcode"], 40014);
    let (_, t2) = get_json(&c, &token_url).await;
    assert_ne!(
        t2["access_token"],
        token.as_str(),
        "a new token after expiry"
    );

    let sim = start(config(Kind::Dingtalk));
    let base = sim.url();
    let (_, t) = get_json(
        &c,
        &format!("{base}/gettoken?appkey=sim-key&appsecret=sim-secret"),
    )
    .await;
    let url = format!(
        "{base}/topapi/message/corpconversation/asyncsend_v2?access_token={}",
        t["access_token"].as_str().unwrap()
    );
    sim.set_faults(Faults {
        busy_next: 1,
        permanent_next: 1,
        fail_next: 1,
        ..Faults::default()
    });
    let r = c.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let (_, busy) = post_json(&c, &url, &body).await;
    assert_eq!(busy["errcode"], -1);
    let (_, perm) = post_json(&c, &url, &body).await;
    assert_eq!(perm["errcode"], 88);
    assert_eq!(perm["sub_code"], "60011");
    let (_, ok) = post_json(&c, &url, &body).await;
    assert_eq!(ok["errcode"], 0);
    assert_eq!(sim.stats().faults_injected, 3);
}
