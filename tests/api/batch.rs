//! `POST /v1/messages/batch`: 1–100 messages, all or nothing.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{error_of, inbox_message, TestApp};

fn batch(messages: Vec<Value>) -> Value {
    json!({ "messages": messages })
}

#[actix_web::test]
async fn a_batch_is_stored_whole_and_answered_in_order() {
    let app = TestApp::spawn().await;
    let msgs: Vec<Value> = (0..100)
        .map(|i| inbox_message(Some(&format!("b-{i}")), &format!("u{i}")))
        .collect();
    let (status, body) = app
        .post_as(
            ("demo", "demo-secret"),
            "/v1/messages/batch",
            &batch(msgs.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 100);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["message_id"], format!("b-{i}"));
        assert_eq!(r["status"], "accepted");
    }
    assert_eq!(app.stored().await, 100);

    // Replaying the whole batch answers the same results with 200 and stores nothing new.
    let (status, again) = app
        .post_as(("demo", "demo-secret"), "/v1/messages/batch", &batch(msgs))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["results"], body["results"]);
    assert_eq!(app.stored().await, 100);
}

#[actix_web::test]
async fn one_bad_message_stores_nothing() {
    let app = TestApp::spawn().await;
    let mut msgs: Vec<Value> = (0..5)
        .map(|i| inbox_message(Some(&format!("c-{i}")), "u1"))
        .collect();
    msgs[3]["channels"] = json!(["nope"]);
    let (status, body) = app
        .post_as(("demo", "demo-secret"), "/v1/messages/batch", &batch(msgs))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_of(&body),
        (
            "unknown_channel".into(),
            Some("messages[3].channels[0]".into())
        )
    );
    assert_eq!(app.stored().await, 0);
    assert_eq!(app.count("SELECT count(*) FROM message_keys").await, 0);
}

#[actix_web::test]
async fn a_conflict_inside_a_batch_stores_nothing() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.send(&inbox_message(Some("taken"), "u1")).await.0,
        StatusCode::ACCEPTED
    );
    let msgs = vec![
        inbox_message(Some("fresh-1"), "u1"),
        inbox_message(Some("taken"), "someone-else"),
        inbox_message(Some("fresh-2"), "u1"),
    ];
    let (status, body) = app
        .post_as(("demo", "demo-secret"), "/v1/messages/batch", &batch(msgs))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        error_of(&body),
        (
            "idempotency_conflict".into(),
            Some("messages[1].message_id".into())
        )
    );
    assert_eq!(app.stored().await, 1, "only the earlier single send");

    // The same key twice in one batch with different bodies.
    let msgs = vec![
        inbox_message(Some("twice"), "a"),
        inbox_message(Some("twice"), "b"),
    ];
    let (status, body) = app
        .post_as(("demo", "demo-secret"), "/v1/messages/batch", &batch(msgs))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_of(&body).1.as_deref(), Some("messages[1].message_id"));
    assert_eq!(app.stored().await, 1);
}

#[actix_web::test]
async fn batch_size_is_bounded() {
    let app = TestApp::spawn().await;
    for n in [0usize, 101] {
        let msgs: Vec<Value> = (0..n).map(|_| inbox_message(None, "u1")).collect();
        let (status, body) = app
            .post_as(("demo", "demo-secret"), "/v1/messages/batch", &batch(msgs))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{n}");
        assert_eq!(
            error_of(&body),
            ("invalid_value".into(), Some("messages".into()))
        );
    }
    let (status, body) = app
        .post_as(
            ("demo", "demo-secret"),
            "/v1/messages/batch",
            &json!({"msgs": []}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&body).0, "unknown_field");
    assert_eq!(app.stored().await, 0);
}
