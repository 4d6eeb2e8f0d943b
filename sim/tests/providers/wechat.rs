use serde_json::{json, Value};
use umsd_sim::{Faults, Kind, OutcomeMix, SimConfig};

use crate::common::*;

async fn fetch(c: &reqwest::Client, base: &str) -> String {
    let (_, t) = get_json(
        c,
        &format!(
            "{base}/cgi-bin/token?grant_type=client_credential&appid=sim-key&secret=sim-secret"
        ),
    )
    .await;
    assert_eq!(t["expires_in"], 7200);
    t["access_token"].as_str().unwrap().to_owned()
}

fn template(to: &str) -> Value {
    json!({
        "touser": to,
        "template_id": "tpl-1",
        "url": "https://example.com/order/1",
        "data": {"keyword1": {"value": "paid", "color": "#173177"}},
    })
}

#[tokio::test]
async fn tokens_send_and_errors() {
    let sim = start(SimConfig {
        rate_per_second: Some(2),
        ..config(Kind::WechatOa)
    });
    let c = client();
    let base = sim.url();
    let (_, bad) = get_json(
        &c,
        &format!("{base}/cgi-bin/token?grant_type=client_credential&appid=sim-key&secret=x"),
    )
    .await;
    assert_eq!(bad["errcode"], 40001);

    let old = fetch(&c, &base).await;
    let new = fetch(&c, &base).await;
    assert_ne!(old, new, "every fetch issues a new token");
    let (_, stable) = post_json(
        &c,
        &format!("{base}/cgi-bin/stable_token"),
        &json!({"grant_type": "client_credential", "appid": "sim-key", "secret": "sim-secret"}),
    )
    .await;
    assert_eq!(
        stable["access_token"],
        new.as_str(),
        "stable_token keeps the current one"
    );

    let send = |t: &str| format!("{base}/cgi-bin/message/template/send?access_token={t}");
    // The superseded token still works during the short overlap.
    let (_, ok) = post_json(&c, &send(&old), &template("o_alice")).await;
    assert_eq!(ok["errcode"], 0);
    assert_eq!(ok["errmsg"], "ok");
    assert!(ok["msgid"].is_u64());
    let (_, invalid) = post_json(&c, &send(&new), &template("invalid_openid")).await;
    assert_eq!(invalid["errcode"], 40003);
    let (_, limited) = post_json(&c, &send(&new), &template("o_alice")).await;
    assert_eq!(limited["errcode"], 45009);

    let (_, unknown) = post_json(&c, &send("nope"), &template("o_alice")).await;
    assert_eq!(unknown["errcode"], 40001);
    sim.set_faults(Faults {
        expire_tokens: true,
        ..Faults::default()
    });
    let (_, expired) = post_json(&c, &send(&new), &template("o_alice")).await;
    assert_eq!(expired["errcode"], 42001);
}

#[tokio::test]
async fn job_results_are_pushed_as_xml() {
    let mut rx = Receiver::start(0).await;
    let sim = start(SimConfig {
        outcomes: OutcomeMix {
            delivered: 0,
            undelivered: 1,
            clicked: 0,
        },
        callback_url: Some(rx.url()),
        ..config(Kind::WechatOa)
    });
    let c = client();
    let base = sim.url();
    let t = fetch(&c, &base).await;
    let (_, ok) = post_json(
        &c,
        &format!("{base}/cgi-bin/message/template/send?access_token={t}"),
        &template("o_bob"),
    )
    .await;
    let msgid = ok["msgid"].as_u64().unwrap();
    let pushed = rx.next().await;
    let xml = std::str::from_utf8(&pushed.body).unwrap();
    assert!(xml.starts_with("<xml><ToUserName><![CDATA[gh_"), "{xml}");
    assert!(
        xml.contains("<FromUserName><![CDATA[o_bob]]></FromUserName>"),
        "{xml}"
    );
    assert!(
        xml.contains("<MsgType><![CDATA[event]]></MsgType>"),
        "{xml}"
    );
    assert!(
        xml.contains("<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>"),
        "{xml}"
    );
    assert!(xml.contains(&format!("<MsgID>{msgid}</MsgID>")), "{xml}");
    assert!(
        xml.contains("<Status><![CDATA[failed:user block]]></Status></xml>"),
        "{xml}"
    );
    assert!(xml.contains("<CreateTime>"), "{xml}");
}

#[tokio::test]
async fn delivered_pushes_success_and_faults() {
    let mut rx = Receiver::start(0).await;
    let sim = start(SimConfig {
        callback_url: Some(rx.url()),
        ..config(Kind::WechatOa)
    });
    let c = client();
    let base = sim.url();
    let t = fetch(&c, &base).await;
    let url = format!("{base}/cgi-bin/message/template/send?access_token={t}");
    sim.set_faults(Faults {
        busy_next: 1,
        permanent_next: 1,
        ..Faults::default()
    });
    let (_, busy) = post_json(&c, &url, &template("o_c")).await;
    assert_eq!(busy["errcode"], -1);
    let (_, perm) = post_json(&c, &url, &template("o_c")).await;
    assert_eq!(perm["errcode"], 40037);
    let (_, ok) = post_json(&c, &url, &template("o_c")).await;
    assert_eq!(ok["errcode"], 0);
    let xml = String::from_utf8(rx.next().await.body.to_vec()).unwrap();
    assert!(
        xml.contains("<Status><![CDATA[success]]></Status>"),
        "{xml}"
    );
}
