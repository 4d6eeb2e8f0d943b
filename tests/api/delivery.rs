//! The delivery engine end to end: planning, the inbox channel, receipts, the funnel and
//! the deliveries life cycle.

use serde_json::{json, Value};

use crate::{TestApp, DEMO};

fn channel_funnel<'a>(m: &'a Value, code: &str) -> &'a Value {
    &m["funnel"]["channels"][code]
}

#[actix_web::test]
async fn an_inbox_message_is_planned_delivered_and_read() {
    let app = TestApp::spawn().await;
    for (user, enabled) in [("u1", true), ("u2", true), ("off1", false)] {
        let (status, _) = app
            .put_as(DEMO, &format!("/v1/users/{user}"), &json!({"enabled": enabled}))
            .await;
        assert!(status.is_success(), "{status}");
    }
    let (status, sent) = app
        .send(&json!({
            "audience": {"user_ids": ["u1", "u2", "off1", "ghost"]},
            "channels": ["inbox"],
            "content": {"inbox": {"title": "Hello", "body": "Your order has shipped"}},
        }))
        .await;
    assert_eq!(status, 202, "{sent}");
    let id = sent["id"].as_str().unwrap().to_owned();

    let m = app
        .wait_for(&format!("/v1/messages/{id}"), 10, |m| m["status"] == "done")
        .await;
    let users = &m["funnel"]["users"];
    assert_eq!(users["planned"], 4, "{m}");
    assert_eq!(users["effective"], 2, "{m}");
    assert_eq!(users["sent"], 2, "{m}");
    assert_eq!(users["delivered"], 2, "{m}");
    let inbox = channel_funnel(&m, "inbox");
    assert_eq!(inbox["planned"], 4);
    assert_eq!(inbox["effective"], 2);
    assert_eq!(inbox["delivered"], 2);
    let losses = m["losses"].as_array().unwrap();
    let loss = |reason: &str| {
        losses
            .iter()
            .find(|l| l["reason"] == reason)
            .unwrap_or_else(|| panic!("no {reason} loss in {m}"))
            .clone()
    };
    assert_eq!(loss("unknown_user")["count"], 1);
    assert_eq!(loss("unknown_user")["stage"], "planned_to_effective");
    assert_eq!(loss("user_disabled")["count"], 1);

    // The inbox shows it; reading it is a `read` receipt.
    let (status, list) = app.get("/v1/inbox/u1?unread=true").await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["body"], "Your order has shipped");
    assert_eq!(items[0]["message"], id.as_str());
    let item = items[0]["id"].as_str().unwrap().to_owned();
    let (status, marked) = app
        .post_as(DEMO, "/v1/inbox/u1/read", &json!({"ids": [item]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(marked["marked"], 1);
    let (_, unread) = app.get("/v1/inbox/u1?unread=true").await;
    assert_eq!(unread["items"].as_array().unwrap().len(), 0);

    let d = app
        .wait_for(
            &format!("/v1/messages/{id}/deliveries?user_id=u1"),
            10,
            |d| d["deliveries"][0]["state"] == "read",
        )
        .await;
    let events: Vec<&str> = d["deliveries"][0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["submitted", "delivered", "read"], "{d}");
    let (_, all) = app.get(&format!("/v1/messages/{id}/deliveries")).await;
    assert_eq!(all["deliveries"].as_array().unwrap().len(), 4);

    // Nothing is left to do.
    assert_eq!(app.count("SELECT count(*) FROM delivery_queue").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM message_queue").await, 0);
    let metrics = app.metrics().await;
    assert!(metrics.contains("umsd_planner_targets_total"), "{metrics}");
    assert!(metrics.contains("umsd_delivery_outcomes_total"));
    app.stop().await;
}

#[actix_web::test]
async fn tags_and_direct_addresses_are_planned() {
    let app = TestApp::spawn().await;
    for (user, tags) in [("t1", vec!["vip"]), ("t2", vec!["vip", "beta"]), ("t3", vec![])] {
        app.put_as(DEMO, &format!("/v1/users/{user}"), &json!({"tags": tags}))
            .await;
    }
    let (status, sent) = app
        .send(&json!({
            "audience": {"tags": {"any": ["vip"]}},
            "channels": ["inbox"],
            "content": {"inbox": {"title": "Hi", "body": "for vips"}},
        }))
        .await;
    assert_eq!(status, 202, "{sent}");
    let id = sent["id"].as_str().unwrap();
    let m = app
        .wait_for(&format!("/v1/messages/{id}"), 10, |m| m["status"] == "done")
        .await;
    assert_eq!(m["funnel"]["users"]["delivered"], 2, "{m}");
    let (_, t3) = app.get("/v1/inbox/t3").await;
    assert_eq!(t3["items"].as_array().unwrap().len(), 0);

    let (status, sent) = app
        .send(&json!({
            "audience": {"addresses": {"inbox": ["t3"]}},
            "channels": ["inbox"],
            "content": {"inbox": {"title": "Hi", "body": "direct"}},
        }))
        .await;
    assert_eq!(status, 202, "{sent}");
    let id = sent["id"].as_str().unwrap();
    app.wait_for(&format!("/v1/messages/{id}"), 10, |m| m["status"] == "done")
        .await;
    let (_, t3) = app.get("/v1/inbox/t3").await;
    assert_eq!(t3["items"][0]["body"], "direct");
    app.stop().await;
}
