//! Recall (`DELETE /v1/messages/{id}`) and the message history (`GET /v1/messages`).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{error_of, eventually, TestApp, DEMO};

async fn make_users(app: &TestApp, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let rows: Vec<Value> = ids.iter().map(|u| json!({"user_id": u})).collect();
    let (status, body) = app
        .post_as(DEMO, "/v1/users/batch", &json!({"users": rows}))
        .await;
    assert!(status.is_success(), "{body}");
    ids
}

async fn send_inbox(app: &TestApp, users: &[String], key: &str) -> String {
    let (status, body) = app
        .send(&json!({"message_id": key, "audience": {"user_ids": users},
                      "channels": ["inbox"], "content": {"inbox": {"title": "t", "body": "b"}}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn a_delivered_message_is_withdrawn_from_the_inbox_and_listed_as_recalled() {
    let app = TestApp::spawn().await;
    let users = make_users(&app, 3).await;
    let id = send_inbox(&app, &users, "recall-me").await;
    app.wait_for(&format!("/v1/messages/{id}"), 10, |m| m["status"] == "done")
        .await;
    let (_, list) = app.get("/v1/messages?status=done").await;
    let line = &list["messages"][0];
    assert_eq!(line["id"], id.as_str(), "{list}");
    assert_eq!(line["users"]["delivered"], 3, "{list}");
    assert_eq!(line["delivery_rate"], 1.0, "{list}");
    assert_eq!(line["click_rate"], 0.0, "{list}");
    // Filtered by creation time: the message is inside its own second, not after it.
    let created = line["created_at"].as_str().unwrap().to_owned();
    let at = chrono::DateTime::parse_from_rfc3339(&created).unwrap();
    let q = |t: chrono::DateTime<chrono::FixedOffset>| {
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .replace('+', "%2B")
    };
    let (_, list) = app
        .get(&format!(
            "/v1/messages?from={}&to={}",
            q(at - chrono::Duration::seconds(1)),
            q(at + chrono::Duration::seconds(1))
        ))
        .await;
    assert_eq!(list["messages"][0]["id"], id.as_str(), "{list}");
    let (_, list) = app
        .get(&format!(
            "/v1/messages?from={}",
            q(at + chrono::Duration::seconds(1))
        ))
        .await;
    assert_eq!(list["messages"], json!([]), "{list}");
    let (status, body) = app.get("/v1/messages?from=yesterday").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_of(&body).1.as_deref(), Some("from"));

    let (status, m) = app.delete("/v1/messages/recall-me").await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["status"], "recalled", "{m}");
    assert_eq!(
        m["recall"]["channels"]["inbox"],
        json!({"cancelled": 0, "recalled": 3, "not_recalled": 0, "reasons": {}}),
        "{m}"
    );
    assert_eq!(app.count("SELECT count(*) FROM inbox").await, 0);
    let (_, d) = app
        .get(&format!("/v1/messages/{id}/deliveries?user_id=r0"))
        .await;
    let d = &d["deliveries"][0];
    assert_eq!(d["state"], "recalled", "{d}");
    let states: Vec<&str> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["delivered", "recalled"], "{d}");
    // The report stays with the message; a second recall is refused.
    let (_, again) = app.get("/v1/messages/recall-me").await;
    assert_eq!(again["recall"], m["recall"]);
    let (status, body) = app.delete("/v1/messages/recall-me").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_of(&body).0, "not_recallable");
    let (_, list) = app.get("/v1/messages?status=recalled").await;
    assert_eq!(list["messages"][0]["id"], id.as_str(), "{list}");
    let (_, list) = app.get("/v1/messages?status=done").await;
    assert_eq!(list["messages"], json!([]), "{list}");
    app.stop().await;
}

#[actix_web::test]
async fn recalling_cancels_what_was_not_sent_yet() {
    // One inbox delivery every 5 s: the first goes at once, the others wait.
    let app = TestApp::spawn_with(|c| {
        let inbox = c.channels.iter_mut().find(|ch| ch.code == "inbox").unwrap();
        inbox.rate_per_second = Some(0.2);
        inbox.burst = Some(1);
    })
    .await;
    let users = make_users(&app, 4).await;
    let id = send_inbox(&app, &users, "half-sent").await;
    app.wait_for(&format!("/v1/messages/{id}"), 10, |m| {
        m["funnel"]["users"]["delivered"] == 1
    })
    .await;
    let (status, m) = app.delete(&format!("/v1/messages/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(
        m["recall"]["channels"]["inbox"],
        json!({"cancelled": 3, "recalled": 1, "not_recalled": 0, "reasons": {}}),
        "{m}"
    );
    assert_eq!(m["funnel"]["users"]["sent"], 1, "{m}");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM dispatch_queue WHERE message_pk = {}",
            umsd_actors::domain::MessagePk::parse(&id).unwrap().0
        ))
        .await,
        0
    );
    // The sender let go of what it held: its queue is empty.
    eventually(5, "the inbox sender's queue to empty", || async {
        let metrics = app.metrics().await;
        let held: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("umsd_channel_queue_depth{channel=\"inbox\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if held == 0.0 {
            Ok(())
        } else {
            Err(held)
        }
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM inbox").await, 0);
    app.stop().await;
}

#[actix_web::test]
async fn a_message_past_its_recall_window_is_refused_and_a_strategy_stops_on_recall() {
    let app = TestApp::spawn_with(|c| c.delivery.recall_window_seconds = 2).await;
    let users = make_users(&app, 2).await;
    // Pending strategy steps and their deadlines go with a recall.
    let (status, body) = app
        .put_as(
            DEMO,
            "/v1/strategies/later",
            &json!({"steps": [{"channel": "email"}, {"channel": "inbox", "when": {"op": "or",
                "conditions": [{"step": 1, "event": "not_delivered", "within_seconds": 60}]}}]}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (status, body) = app
        .send(
            &json!({"message_id": "with-steps", "audience": {"user_ids": users},
                      "strategy": "later",
                      "content": {"email": {"subject": "s", "text": "t"},
                                  "inbox": {"title": "t", "body": "b"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_count("SELECT count(*) FROM strategy_timers", 10, |n| n == 1)
        .await;
    let (status, m) = app.delete("/v1/messages/with-steps").await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["strategy"]["pending_deadlines"], 0, "{m}");
    assert_eq!(app.count("SELECT count(*) FROM strategy_timers").await, 0);

    // Past the window: refused, nothing changes.
    let id = send_inbox(&app, &users, "too-old").await;
    let created = app.get(&format!("/v1/messages/{id}")).await.1["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = chrono::DateTime::parse_from_rfc3339(&created).unwrap();
    eventually(10, "the recall window to pass", || async {
        let age = chrono::Utc::now() - created.with_timezone(&chrono::Utc);
        if age > chrono::Duration::milliseconds(2100) {
            Ok(())
        } else {
            Err(age)
        }
    })
    .await;
    let (status, body) = app.delete("/v1/messages/too-old").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_of(&body).0, "recall_window_passed");
    let (_, m) = app.get("/v1/messages/too-old").await;
    assert_ne!(m["status"], "recalled", "{m}");
    app.stop().await;
}
