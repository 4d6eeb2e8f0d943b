//! The delivery engine end to end: planning, the inbox channel, receipts, the funnel and
//! the deliveries life cycle.

use serde_json::{json, Value};

use crate::{eventually, TestApp, DEMO};

fn channel_funnel<'a>(m: &'a Value, code: &str) -> &'a Value {
    &m["funnel"]["channels"][code]
}

#[actix_web::test]
async fn an_inbox_message_is_planned_delivered_and_read() {
    let app = TestApp::spawn().await;
    for (user, enabled) in [("u1", true), ("u2", true), ("off1", false)] {
        let (status, _) = app
            .put_as(
                DEMO,
                &format!("/v1/users/{user}"),
                &json!({"enabled": enabled}),
            )
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
    // Storing in the inbox is the delivery: queued → delivered in one step, then read.
    assert_eq!(events, ["delivered", "read"], "{d}");
    // The first outcomes (u1's and u2's `delivered`) are kept in the deliveries' rows;
    // only the later `read` is an event row.
    assert_eq!(app.count("SELECT count(*) FROM delivery_events").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM deliveries WHERE sent_state = 5 AND sent_at IS NOT NULL")
            .await,
        2
    );
    let (_, all) = app.get(&format!("/v1/messages/{id}/deliveries")).await;
    assert_eq!(all["deliveries"].as_array().unwrap().len(), 4);

    // Nothing is left to do.
    assert_eq!(app.count("SELECT count(*) FROM dispatch_queue").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM message_queue").await, 0);
    // Every stage reports, with bounded labels (the recorder is shared by the tests of
    // this process, so only presence is checked).
    let metrics = app.metrics().await;
    for line in [
        r#"umsd_planner_targets_total{channel="inbox",outcome="queued"}"#,
        r#"umsd_planner_targets_total{channel="inbox",outcome="unknown_user"}"#,
        r#"umsd_planner_targets_total{channel="inbox",outcome="user_disabled"}"#,
        r#"umsd_delivery_outcomes_total{channel="inbox",type="inbox",outcome="delivered"}"#,
        r#"umsd_receipts_total{channel="inbox",kind="read"}"#,
        r#"umsd_channel_queue_depth{channel="inbox",priority="high"}"#,
        r#"umsd_channel_in_flight{channel="inbox"}"#,
        "umsd_provider_request_duration_seconds_bucket",
        "umsd_accept_to_submit_seconds_bucket",
        "umsd_planner_lag_seconds_bucket",
        "umsd_status_batch_size_bucket",
        r#"umsd_status_writes_total{outcome="applied"}"#,
    ] {
        assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn tags_and_direct_addresses_are_planned() {
    let app = TestApp::spawn().await;
    for (user, tags) in [
        ("t1", vec!["vip"]),
        ("t2", vec!["vip", "beta"]),
        ("t3", vec![]),
    ] {
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

/// Creates users `{prefix}0000`… with no bindings (the inbox needs none).
async fn make_users(app: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i:04}")).collect();
    for chunk in ids.chunks(1000) {
        let rows: Vec<Value> = chunk.iter().map(|u| json!({"user_id": u})).collect();
        let (status, body) = app
            .post_as(DEMO, "/v1/users/batch", &json!({"users": rows}))
            .await;
        assert!(status.is_success(), "{body}");
    }
    ids
}

fn paced_inbox(rate: f64, burst: i32) -> impl FnOnce(&mut umsd::config::Config) {
    move |c| {
        let inbox = c.channels.iter_mut().find(|ch| ch.code == "inbox").unwrap();
        inbox.rate_per_second = Some(rate);
        inbox.burst = Some(burst);
    }
}

#[actix_web::test]
async fn a_rate_limited_channel_delivers_a_backlog_at_its_rate() {
    const RATE: f64 = 50.0;
    // A small burst lets the limiter make up for a timer that fires late on a busy
    // machine; it adds at most 5 deliveries (1 %) to the 10 s window.
    let app = TestApp::spawn_with(paced_inbox(RATE, 5)).await;
    let users = make_users(&app, "r", 600).await;
    let (status, sent) = app
        .send(&json!({
            "audience": {"user_ids": users},
            "channels": ["inbox"],
            "content": {"inbox": {"title": "t", "body": "paced"}},
        }))
        .await;
    assert_eq!(status, 202, "{sent}");
    // Measure over 10 s of steady sending, from the first stored item. The window's count
    // is final once an item is stored 0.1 s past it (a write begun inside the window has
    // committed by then), or once the whole backlog is in.
    let db = app.db().await;
    let all = users.len() as i64;
    eventually(
        30,
        "an inbox item stored 10.1 s after the first",
        || async {
            let row = db
                .query_one(
                    "SELECT count(*), \
                            max(created_at) > min(created_at) + interval '10.1 seconds' \
                     FROM inbox",
                    &[],
                )
                .await
                .unwrap();
            let (n, closed): (i64, Option<bool>) = (row.get(0), row.get(1));
            if closed == Some(true) || n == all {
                Ok(())
            } else {
                Err(format!("{n} items stored"))
            }
        },
    )
    .await;
    let first: chrono::DateTime<chrono::Utc> = db
        .query_one("SELECT min(created_at) FROM inbox", &[])
        .await
        .unwrap()
        .get(0);
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM inbox WHERE created_at > $1 AND created_at <= $1 + interval '10 seconds'",
            &[&first],
        )
        .await
        .unwrap()
        .get(0);
    let rate = n as f64 / 10.0;
    assert!(
        (rate - RATE).abs() <= RATE * 0.05,
        "delivered {n} in 10 s = {rate}/s, want {RATE}/s ± 5 %"
    );
    assert!(app
        .metrics()
        .await
        .contains("umsd_channel_rate_limit_wait_seconds_bucket{channel=\"inbox\""));
    app.stop().await;
}

#[actix_web::test]
async fn a_high_priority_message_overtakes_a_low_priority_backlog() {
    let app = TestApp::spawn_with(paced_inbox(20.0, 1)).await;
    let users = make_users(&app, "p", 200).await;
    let (status, low) = app
        .send(&json!({
            "audience": {"user_ids": users},
            "channels": ["inbox"],
            "content": {"inbox": {"title": "t", "body": "low"}},
            "priority": "low",
        }))
        .await;
    assert_eq!(status, 202, "{low}");
    // The backlog is planned and ten low sends (0.5 s at 20/s) went out.
    let db = app.db().await;
    eventually(10, "the low backlog planned and 10 of it sent", || async {
        let row = db
            .query_one(
                "SELECT (SELECT count(*) FROM deliveries), (SELECT count(*) FROM inbox)",
                &[],
            )
            .await
            .unwrap();
        let (planned, sent): (i64, i64) = (row.get(0), row.get(1));
        if planned == 200 && sent >= 10 {
            Ok(())
        } else {
            Err(format!("{planned} planned, {sent} sent"))
        }
    })
    .await;
    let (status, high) = app
        .send(&json!({
            "audience": {"user_ids": ["p0199"]},
            "channels": ["inbox"],
            "content": {"inbox": {"title": "t", "body": "high"}},
            "priority": "high",
        }))
        .await;
    assert_eq!(status, 202, "{high}");
    let high_id = high["id"].as_str().unwrap();
    app.wait_for(&format!("/v1/messages/{high_id}"), 10, |m| {
        m["status"] == "done"
    })
    .await;
    let before: i64 = db
        .query_one(
            "SELECT count(*) FROM inbox WHERE body = 'low'
             AND created_at < (SELECT created_at FROM inbox WHERE body = 'high')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // Ten low sends went out before the high one was accepted; it waited for at most a
    // few rate slots after its planning, while 170+ low ones still waited.
    assert!(
        before < 30,
        "{before} low deliveries went before the high one"
    );
    app.stop().await;
}

#[actix_web::test]
async fn deliveries_past_the_ttl_fail_as_expired_without_being_sent() {
    let app = TestApp::spawn_with(paced_inbox(2.0, 1)).await;
    let users = make_users(&app, "x", 10).await;
    let (status, sent) = app
        .send(&json!({
            "audience": {"user_ids": users},
            "channels": ["inbox"],
            "content": {"inbox": {"title": "t", "body": "soon stale"}},
            "ttl_seconds": 1,
        }))
        .await;
    assert_eq!(status, 202, "{sent}");
    let id = sent["id"].as_str().unwrap();
    let m = app
        .wait_for(&format!("/v1/messages/{id}"), 20, |m| m["status"] == "done")
        .await;
    let inbox = &m["funnel"]["channels"]["inbox"];
    let delivered = inbox["delivered"].as_i64().unwrap();
    assert!((1..=4).contains(&delivered), "{m}");
    assert_eq!(inbox["failed"].as_i64().unwrap(), 10 - delivered, "{m}");
    assert_eq!(m["losses"][0]["reason"], "expired", "{m}");
    assert_eq!(app.count("SELECT count(*) FROM inbox").await, delivered);
    app.stop().await;
}
