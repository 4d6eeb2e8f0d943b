//! `POST /v1/messages` and `GET /v1/messages/{id}`: acceptance, idempotency, validation,
//! authentication and isolation between apps.

use reqwest::StatusCode;
use serde_json::json;

use super::{error_of, inbox_message, TestApp};

#[actix_web::test]
async fn a_send_is_committed_before_it_is_accepted() {
    let app = TestApp::spawn().await;
    let (status, body) = app.send(&inbox_message(Some("order-1"), "u1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["message_id"], "order-1");
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("msg_"));
    // The answer came after COMMIT: the row is visible to anyone now.
    assert_eq!(app.stored().await, 1);

    for ident in [id.as_str(), "order-1"] {
        let (status, got) = app
            .get_as(("demo", "demo-secret"), &format!("/v1/messages/{ident}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got["id"], id);
        assert_eq!(got["message_id"], "order-1");
        // Planned and delivered in the background: `u1` is not a user of the app.
        assert!(
            ["accepted", "dispatching", "done"].contains(&got["status"].as_str().unwrap()),
            "{got}"
        );
        assert_eq!(got["priority"], "normal");
        assert!(got["funnel"]["channels"]["inbox"]["planned"].as_i64() <= Some(1));
        assert!(got["losses"].is_array());
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_send_without_message_id_is_accepted_each_time() {
    let app = TestApp::spawn().await;
    let (s1, b1) = app.send(&inbox_message(None, "u1")).await;
    let (s2, b2) = app.send(&inbox_message(None, "u1")).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_ne!(b1["id"], b2["id"]);
    assert!(b1["message_id"].is_null());
    assert_eq!(app.stored().await, 2);
}

#[actix_web::test]
async fn a_replay_answers_the_first_answer_and_a_different_body_conflicts() {
    let app = TestApp::spawn().await;
    let first = app.send(&inbox_message(Some("k-1"), "u1")).await;
    assert_eq!(first.0, StatusCode::ACCEPTED);
    let again = app.send(&inbox_message(Some("k-1"), "u1")).await;
    assert_eq!(again.0, StatusCode::OK);
    assert_eq!(
        again.1, first.1,
        "a replay answers exactly the first answer"
    );

    let (status, body) = app.send(&inbox_message(Some("k-1"), "u2")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        error_of(&body),
        ("idempotency_conflict".into(), Some("message_id".into()))
    );
    assert_eq!(app.stored().await, 1);
}

#[actix_web::test]
async fn concurrent_replays_store_one_message() {
    let app = TestApp::spawn().await;
    let body = inbox_message(Some("race-1"), "u1");
    let sends = (0..20).map(|_| app.send(&body));
    let answers = futures_util::future::join_all(sends).await;
    let accepted = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .count();
    let replayed = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!((accepted, replayed), (1, 19));
    let ids: std::collections::HashSet<_> = answers.iter().map(|(_, b)| b["id"].clone()).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(app.stored().await, 1);
}

#[actix_web::test]
async fn apps_never_see_each_other() {
    let app = TestApp::spawn().await;
    let (_, mine) = app.send(&inbox_message(Some("shared-key"), "u1")).await;
    let id = mine["id"].as_str().unwrap();
    let other = ("other", "other-secret");
    for ident in [id, "shared-key"] {
        let (status, body) = app.get_as(other, &format!("/v1/messages/{ident}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(error_of(&body).0, "not_found");
    }
    // The same idempotency key is independent per app.
    let (status, theirs) = app
        .post_as(
            other,
            "/v1/messages",
            &inbox_message(Some("shared-key"), "u9"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(theirs["id"], mine["id"]);
    // Channels granted only to another app are unknown.
    let mut sms = inbox_message(None, "u1");
    sms["channels"] = json!(["sms"]);
    sms["content"] = json!({"sms": {"text": "hi"}});
    let (status, body) = app.post_as(other, "/v1/messages", &sms).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_of(&body),
        ("unknown_channel".into(), Some("channels[0]".into()))
    );
}

#[actix_web::test]
async fn credentials_are_checked() {
    let app = TestApp::spawn().await;
    let body = inbox_message(None, "u1");
    let url = app.url("/v1/messages");
    let attempts = [
        app.http.post(&url).json(&body),
        app.http
            .post(&url)
            .basic_auth("demo", Some("wrong"))
            .json(&body),
        app.http
            .post(&url)
            .basic_auth("nobody", Some("demo-secret"))
            .json(&body),
        app.http
            .post(&url)
            .basic_auth("demo", None::<&str>)
            .json(&body),
        app.http.post(&url).bearer_auth("demo-secret").json(&body),
        app.http
            .post(&url)
            .header("Authorization", "Basic !!!")
            .json(&body),
    ];
    for req in attempts {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(res.headers().contains_key("www-authenticate"));
        let b: serde_json::Value = res.json().await.unwrap();
        assert_eq!(error_of(&b).0, "unauthorized");
    }
    let (status, _) = app.get_as(("demo", "bad"), "/v1/messages/x").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.stored().await, 0);
}

#[actix_web::test]
async fn every_rule_names_its_field_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let ok = inbox_message(None, "u1");
    let with = |patch: serde_json::Value| {
        let mut v = ok.clone();
        for (k, val) in patch.as_object().unwrap() {
            if val.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = val.clone();
            }
        }
        v
    };
    let cases = vec![
        (
            with(json!({"message_id": "has space"})),
            "invalid_value",
            "message_id",
        ),
        (
            with(json!({"message_id": "x".repeat(65)})),
            "invalid_value",
            "message_id",
        ),
        (
            with(json!({"message_id": 5})),
            "invalid_value",
            "message_id",
        ),
        (with(json!({"audience": null})), "missing_field", "audience"),
        (
            with(json!({"audience": {}})),
            "invalid_audience",
            "audience",
        ),
        (
            with(json!({"audience": {"user_ids": []}})),
            "invalid_value",
            "audience.user_ids",
        ),
        (
            with(json!({"audience": {"user_ids": ["a b"]}})),
            "invalid_value",
            "audience.user_ids[0]",
        ),
        (
            with(
                json!({"audience": {"user_ids": (0..1001).map(|i| format!("u{i}")).collect::<Vec<_>>()}}),
            ),
            "invalid_value",
            "audience.user_ids",
        ),
        (
            with(json!({"audience": {"user_ids": ["u"], "broadcast": true}})),
            "invalid_audience",
            "audience",
        ),
        (
            with(json!({"audience": {"broadcast": false}})),
            "invalid_value",
            "audience.broadcast",
        ),
        (
            with(json!({"audience": {"tags": {"any": []}}})),
            "invalid_value",
            "audience.tags.any",
        ),
        (
            with(json!({"audience": {"tags": {"any": ["a"], "all": ["b"]}}})),
            "invalid_value",
            "audience.tags",
        ),
        (
            with(json!({"audience": {"segment": "seg-1"}})),
            "unknown_segment",
            "audience.segment",
        ),
        (
            with(json!({"audience": {"addresses": {"email": ["a@example.com"]}}})),
            "unknown_channel",
            "audience.addresses.email",
        ),
        (
            with(json!({"audience": {"friends": true}})),
            "unknown_field",
            "audience.friends",
        ),
        (with(json!({"channels": null})), "missing_field", "channels"),
        (with(json!({"channels": []})), "invalid_value", "channels"),
        (
            with(json!({"channels": ["nope"]})),
            "unknown_channel",
            "channels[0]",
        ),
        (
            with(json!({"channels": ["inbox", "off"]})),
            "channel_disabled",
            "channels[1]",
        ),
        (
            with(json!({"channels": ["inbox", "inbox"]})),
            "duplicate_value",
            "channels[1]",
        ),
        (
            with(json!({"channels": ["inbox", "email"]})),
            "missing_content",
            "content.email",
        ),
        (with(json!({"content": null})), "missing_field", "content"),
        (
            with(json!({"content": {"inbox": {"title": "t"}}})),
            "missing_field",
            "content.inbox.body",
        ),
        (
            with(json!({"content": {"inbox": {"title": "", "body": "b"}}})),
            "invalid_value",
            "content.inbox.title",
        ),
        (
            with(json!({"content": {"inbox": {"title": "t", "body": "b", "x": 1}}})),
            "unknown_field",
            "content.inbox.x",
        ),
        (
            with(json!({"content": {"inbox": "text"}})),
            "invalid_value",
            "content.inbox",
        ),
        (
            with(json!({"content": {"webhook": {"body": {}}}})),
            "missing_content",
            "content.inbox",
        ),
        (
            with(json!({"content": {"nonsense": {}}})),
            "unknown_field",
            "content.nonsense",
        ),
        (
            with(json!({"template": {"id": "welcome"}})),
            "invalid_value",
            "template",
        ),
        (
            with(json!({"content": null, "template": {"id": "welcome"}})),
            "unknown_template",
            "template.id",
        ),
        (
            with(json!({"strategy": "push-then-sms"})),
            "unknown_strategy",
            "strategy",
        ),
        (
            with(json!({"priority": "urgent"})),
            "invalid_value",
            "priority",
        ),
        (
            with(json!({"send_at": "next week"})),
            "invalid_value",
            "send_at",
        ),
        (
            with(json!({"send_at": "2999-01-01T00:00:00Z"})),
            "invalid_value",
            "send_at",
        ),
        (
            with(json!({"ttl_seconds": 0})),
            "invalid_value",
            "ttl_seconds",
        ),
        (
            with(json!({"ttl_seconds": -5})),
            "invalid_value",
            "ttl_seconds",
        ),
        (
            with(json!({"filter": {"blacklist": "bl"}})),
            "unknown_list",
            "filter",
        ),
        (with(json!({"filter": {}})), "invalid_value", "filter"),
        (
            with(json!({"callback_url": "ftp://x"})),
            "invalid_value",
            "callback_url",
        ),
        (
            with(json!({"callback_url": "https://app.example.com/cb"})),
            "callback_not_configured",
            "callback_url",
        ),
        (with(json!({"surprise": 1})), "unknown_field", "surprise"),
    ];
    for (body, code, field) in cases {
        let (status, answer) = app.send(&body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {answer}"
        );
        assert_eq!(
            error_of(&answer),
            (code.to_owned(), Some(field.to_owned())),
            "{body}"
        );
    }
    // Per-type content rules for the other types granted here.
    let sms = json!({"audience": {"addresses": {"sms": ["12ab"]}}, "channels": ["sms"],
                     "content": {"sms": {"text": "hi"}}});
    let (status, answer) = app.send(&sms).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error_of(&answer).1.as_deref(),
        Some("audience.addresses.sms[0]")
    );
    let email = json!({"audience": {"addresses": {"email": ["a@example.com"]}}, "channels": ["email"],
                       "content": {"email": {"subject": "s"}}});
    let (status, answer) = app.send(&email).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&answer).1.as_deref(), Some("content.email.text"));

    assert_eq!(app.stored().await, 0, "a rejected request writes nothing");
    assert_eq!(app.count("SELECT count(*) FROM message_keys").await, 0);

    // And the same shapes, valid, are accepted.
    let ok_sms = json!({"audience": {"addresses": {"sms": ["+8613800138000"]}}, "channels": ["sms"],
                        "content": {"sms": {"text": "hi", "signature": "【umsd】"}}, "priority": "high",
                        "ttl_seconds": 600});
    assert_eq!(app.send(&ok_sms).await.0, StatusCode::ACCEPTED);
    let at = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let (status, body) = app.send(&with(json!({"send_at": at}))).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("scheduled"))
    );
}

#[actix_web::test]
async fn malformed_and_oversized_bodies() {
    let app = TestApp::spawn().await;
    let url = app.url("/v1/messages");
    for raw in ["{", "not json", "{\"audience\": }", "[1,2", "{} {}"] {
        let res = app
            .http
            .post(&url)
            .basic_auth("demo", Some("demo-secret"))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{raw}");
        let b: serde_json::Value = res.json().await.unwrap();
        assert_eq!(error_of(&b), ("invalid_json".into(), None));
    }
    // A JSON value of the wrong kind is a field error, not a syntax error.
    let (status, b) = app.send(&json!([1, 2])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{b}");

    let mut big = inbox_message(None, "u1");
    big["content"]["inbox"]["body"] = json!("x".repeat((1 << 20) + 10));
    let (status, b) = app.send(&big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_of(&b).0, "payload_too_large");
    assert_eq!(app.stored().await, 0);
}

#[actix_web::test]
async fn replays_racing_in_separate_transactions_store_one_message() {
    // One message per transaction and several transactions in flight: the same key is
    // committed concurrently and the database settles it.
    let app = TestApp::spawn_with(|c| {
        c.ingest.max_batch = 1;
        c.ingest.commit_concurrency = 4;
    })
    .await;
    for round in 0..5 {
        let same = inbox_message(Some(&format!("race-{round}")), "u1");
        let other = inbox_message(Some(&format!("race-{round}")), "u2");
        let mut sends: Vec<_> = (0..8).map(|_| app.send(&same)).collect();
        sends.push(app.send(&other));
        let answers = futures_util::future::join_all(sends).await;
        let created = answers
            .iter()
            .filter(|(s, _)| *s == StatusCode::ACCEPTED)
            .count();
        let conflicts = answers
            .iter()
            .filter(|(s, _)| *s == StatusCode::CONFLICT)
            .count();
        assert_eq!(created, 1, "{answers:?}");
        assert!(answers.iter().all(|(s, _)| [
            StatusCode::ACCEPTED,
            StatusCode::OK,
            StatusCode::CONFLICT
        ]
        .contains(s)));
        // Whichever body won, every other answer agrees with it.
        assert!(conflicts == 1 || conflicts == 8, "{answers:?}");
    }
    assert_eq!(app.stored().await, 5);
    assert_eq!(app.count("SELECT count(*) FROM message_keys").await, 5);
    let metrics = app.metrics().await;
    let races: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("umsd_ingest_key_races_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(races > 0.0, "the race path was exercised");
}
