//! `/v1/strategies`: stored only when every rule holds (each refusal names its field and
//! writes nothing), shown with what each condition means on its channel, unusable while a
//! channel of it is switched off, per app.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{error_of, TestApp, ADMIN, DEMO};

const OTHER: (&str, &str) = ("other", "other-secret");

fn inbox_then_email() -> Value {
    json!({"steps": [
        {"channel": "inbox"},
        {"channel": "email", "when": {"op": "and", "conditions": [
            {"step": 1, "event": "not_delivered", "within_seconds": 300}]}}]})
}

async fn delete(app: &TestApp, path: &str) -> StatusCode {
    app.http
        .delete(app.url(path))
        .basic_auth(DEMO.0, Some(DEMO.1))
        .send()
        .await
        .unwrap()
        .status()
}

#[actix_web::test]
async fn strategies_are_stored_shown_listed_and_deleted() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .put_as(DEMO, "/v1/strategies/fallback", &inbox_then_email())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], "fallback");
    assert_eq!(body["usable"], true, "{body}");
    assert_eq!(body["steps"][0]["type"], "inbox");
    assert_eq!(body["steps"][0]["delivered_means"], "confirmed");
    assert_eq!(body["steps"][1]["type"], "email");
    assert_eq!(body["steps"][1]["delivered_means"], "accepted_by_provider");
    let cond = &body["steps"][1]["when"]["conditions"][0];
    assert_eq!(cond["event"], "not_delivered");
    assert!(
        cond["means"].as_str().unwrap().contains("receipt"),
        "{cond}"
    );

    let (status, _) = app
        .put_as(DEMO, "/v1/strategies/fallback", &inbox_then_email())
        .await;
    assert_eq!(status, StatusCode::OK, "a second PUT replaces");
    let (status, got) = app.get("/v1/strategies/fallback").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["steps"], body["steps"]);
    let (_, list) = app.get("/v1/strategies").await;
    assert_eq!(list["strategies"][0]["id"], "fallback", "{list}");
    // Another app sees none of them.
    let (status, _) = app.get_as(OTHER, "/v1/strategies/fallback").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    assert_eq!(
        delete(&app, "/v1/strategies/fallback").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        delete(&app, "/v1/strategies/fallback").await,
        StatusCode::NOT_FOUND
    );
    let (status, _) = app.get("/v1/strategies/fallback").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[actix_web::test]
async fn a_strategy_that_breaks_a_rule_is_refused_naming_the_field_and_not_stored() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({"steps": [{"channel": "inbox"}]}),
            ("invalid_value", "steps"),
        ),
        (
            json!({"steps": [{"channel": "inbox"}, {"channel": "inbox", "when": {"op": "or",
                "conditions": [{"step": 1, "event": "not_delivered", "within_seconds": 60}]}}]}),
            ("duplicate_value", "steps[1].channel"),
        ),
        (
            json!({"steps": [{"channel": "inbox"}, {"channel": "off", "when": {"op": "or",
                "conditions": [{"step": 1, "event": "not_delivered", "within_seconds": 60}]}}]}),
            ("channel_disabled", "steps[1].channel"),
        ),
        (
            json!({"steps": [{"channel": "inbox"}, {"channel": "email", "when": {"op": "or",
                "conditions": [{"step": 2, "event": "not_delivered", "within_seconds": 60}]}}]}),
            ("invalid_value", "steps[1].when.conditions[0].step"),
        ),
        (
            // The inbox reports reads, not clicks.
            json!({"steps": [{"channel": "inbox"}, {"channel": "email", "when": {"op": "or",
                "conditions": [{"step": 1, "event": "not_clicked", "within_seconds": 60}]}}]}),
            ("unsupported_event", "steps[1].when.conditions[0].event"),
        ),
        (
            json!({"steps": [{"channel": "inbox"}, {"channel": "email", "when": {"op": "or",
                "conditions": [{"step": 1, "event": "not_delivered", "within_seconds": 1}]}}]}),
            (
                "invalid_value",
                "steps[1].when.conditions[0].within_seconds",
            ),
        ),
    ];
    for (body, (code, field)) in cases {
        let (status, got) = app.put_as(DEMO, "/v1/strategies/bad", &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {got}");
        assert_eq!(error_of(&got), (code.into(), Some(field.into())), "{body}");
    }
    // Shape errors name the path too.
    let (status, got) = app
        .put_as(
            DEMO,
            "/v1/strategies/bad",
            &json!({"steps": [{"channel": "inbox"}, {"channel": "email", "when": {"op": "xor",
                "conditions": []}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{got}");
    assert!(error_of(&got).1.unwrap_or_default().contains("op"), "{got}");
    let (status, _) = app.get("/v1/strategies/bad").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");
    app.stop().await;
}

#[actix_web::test]
async fn a_channel_switched_off_makes_its_strategies_unusable_until_it_is_on_again() {
    let app = TestApp::spawn().await;
    let (status, _) = app
        .put_as(DEMO, "/v1/strategies/fallback", &inbox_then_email())
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let grant = |enabled: bool| {
        app.http
            .put(app.url("/admin/apps/demo/grants/email"))
            .bearer_auth(ADMIN)
            .json(&json!({ "enabled": enabled }))
            .send()
    };
    assert_eq!(grant(false).await.unwrap().status(), StatusCode::OK);
    let (_, got) = app.get("/v1/strategies/fallback").await;
    assert_eq!(got["usable"], false, "{got}");
    assert_eq!(got["problem"]["field"], "steps[1].channel", "{got}");
    let send = json!({"audience": {"user_ids": ["u1"]}, "strategy": "fallback",
        "content": {"inbox": {"title": "t", "body": "b"}, "email": {"subject": "s", "text": "t"}}});
    let (status, body) = app.send(&send).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        error_of(&body),
        ("strategy_unusable".into(), Some("strategy".into()))
    );
    assert_eq!(grant(true).await.unwrap().status(), StatusCode::OK);
    let (_, got) = app.get("/v1/strategies/fallback").await;
    assert_eq!(got["usable"], true, "{got}");
    assert_eq!(app.stored().await, 0, "a refused send writes nothing");
    // Usable again: the send is accepted and planned on the first step's channel only.
    let (status, body) = app.send(&send).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(app.stored().await, 1);
    app.stop().await;
}
