//! Scheduled sends: the rules for `send_at`, firing at the time, listing, editing and
//! cancelling until due, and the result kept when a channel was switched off meanwhile.

use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{error_of, inbox_message, TestApp, ADMIN, DEMO};

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn time_of(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("no time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

fn scheduled(key: &str, user: &str, send_at: DateTime<Utc>) -> Value {
    let mut m = inbox_message(Some(key), user);
    m["send_at"] = json!(at(send_at));
    m
}

/// The app with user `u1` (an inbox needs no binding).
async fn spawn() -> TestApp {
    let app = TestApp::spawn().await;
    let (status, body) = app.put_as(DEMO, "/v1/users/u1", &json!({})).await;
    assert!(status.is_success(), "{body}");
    app
}

async fn patch(app: &TestApp, path: &str, body: &Value) -> (StatusCode, Value) {
    let res = app
        .http
        .patch(app.url(path))
        .basic_auth(DEMO.0, Some(DEMO.1))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
async fn send_at_in_the_past_or_beyond_the_history_is_refused_and_a_little_behind_is_now() {
    let app = spawn().await;
    let now = Utc::now();
    for (send_at, why) in [
        ("2020-01-01T00:00:00Z".to_owned(), "past"),
        (at(now - Duration::minutes(5)), "past"),
        // The default history is 7 days: at most 6 ahead.
        (
            at(now + Duration::days(6) + Duration::hours(1)),
            "days ahead",
        ),
    ] {
        let mut m = inbox_message(None, "u1");
        m["send_at"] = json!(send_at);
        let (status, body) = app.send(&m).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{send_at}: {body}"
        );
        assert_eq!(
            error_of(&body),
            ("invalid_value".into(), Some("send_at".into()))
        );
        let text = body["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains(why), "{text}");
    }
    assert_eq!(app.stored().await, 0, "a refused send wrote nothing");

    // A few seconds behind our clock is "now".
    let (status, body) = app
        .send(&scheduled("behind", "u1", now - Duration::seconds(10)))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "accepted");
    app.wait_for("/v1/messages/behind", 10, |m| m["status"] == "done")
        .await;
    app.stop().await;
}

#[actix_web::test]
async fn a_scheduled_message_waits_is_listed_and_fires_at_its_time() {
    let app = spawn().await;
    // As sent: to the millisecond.
    let due = time_of(&json!(at(Utc::now() + Duration::seconds(2))));
    let (status, body) = app.send(&scheduled("later", "u1", due)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "scheduled");

    let (_, m) = app.get("/v1/messages/later").await;
    assert_eq!(m["status"], "scheduled", "{m}");
    assert_eq!(time_of(&m["send_at"]), due);
    assert!(m["fired_at"].is_null());
    let (status, list) = app.get("/v1/messages?status=scheduled").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["messages"][0]["message_id"], "later", "{list}");
    assert_eq!(list["messages"][0]["status"], "scheduled");
    assert_eq!(
        app.count("SELECT count(*) FROM inbox").await,
        0,
        "nothing is sent before its time"
    );

    let m = app
        .wait_for("/v1/messages/later", 10, |m| m["status"] == "done")
        .await;
    let fired = time_of(&m["fired_at"]);
    assert!(fired >= due, "fired {fired} before {due}");
    assert!(
        fired - due < Duration::seconds(1),
        "fired {fired}, due {due}"
    );
    assert_eq!(m["funnel"]["users"]["delivered"], 1, "{m}");
    assert_eq!(app.count("SELECT count(*) FROM inbox").await, 1);
    let (_, list) = app.get("/v1/messages?status=scheduled").await;
    assert_eq!(list["messages"], json!([]), "{list}");
    // (The metrics registry is shared by the tests of this process: at least this one.)
    let metrics = app.metrics().await;
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(value("umsd_scheduler_fired_total") >= 1.0, "{metrics}");
    assert!(value("umsd_scheduler_lateness_seconds_count") >= 1.0);

    // Listing asks for a status it knows.
    let (status, body) = app.get("/v1/messages?status=sent").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_of(&body).1.as_deref(), Some("status"));
    app.stop().await;
}

#[actix_web::test]
async fn a_scheduled_message_is_edited_and_cancelled_until_due_and_not_after() {
    let app = spawn().await;
    let later = Utc::now() + Duration::hours(1);
    for key in ["edit-me", "cancel-me"] {
        let (status, body) = app.send(&scheduled(key, "u1", later)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }

    // Bad edits change nothing.
    let (status, body) = patch(&app, "/v1/messages/edit-me", &json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = patch(
        &app,
        "/v1/messages/edit-me",
        &json!({"send_at": "2020-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_of(&body).1.as_deref(), Some("send_at"));
    let (status, body) = patch(
        &app,
        "/v1/messages/edit-me",
        &json!({"content": {"inbox": {"title": "no body"}}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = patch(&app, "/v1/messages/nope", &json!({"send_at": at(later)})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // New content and an earlier time: it goes out then, with the new content.
    let soon = Utc::now() + Duration::seconds(1);
    let (status, body) = patch(
        &app,
        "/v1/messages/edit-me",
        &json!({"send_at": at(soon), "content": {"inbox": {"title": "Moved", "body": "New text"}}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "scheduled");
    assert_eq!(time_of(&body["send_at"]), time_of(&json!(at(soon))));
    app.wait_for("/v1/messages/edit-me", 10, |m| m["status"] == "done")
        .await;
    let db = app.db().await;
    let row = db
        .query_one("SELECT title, body FROM inbox", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("Moved".into(), "New text".into())
    );
    // Too late to edit once it went out; deleting it now recalls it: the inbox item is
    // withdrawn.
    let (status, body) = patch(&app, "/v1/messages/edit-me", &json!({"send_at": at(later)})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_of(&body).0, "not_scheduled");
    let (status, body) = app.delete("/v1/messages/edit-me").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "recalled", "{body}");
    assert_eq!(body["recall"]["channels"]["inbox"]["recalled"], 1, "{body}");
    assert_eq!(app.count("SELECT count(*) FROM inbox").await, 0);

    // Cancelled: never sent, no longer listed, and final.
    let (status, body) = app.delete("/v1/messages/cancel-me").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancelled");
    let (_, list) = app.get("/v1/messages?status=scheduled").await;
    assert_eq!(list["messages"], json!([]), "{list}");
    let (status, body) = app.delete("/v1/messages/cancel-me").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = patch(
        &app,
        "/v1/messages/cancel-me",
        &json!({"send_at": at(soon)}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(app.count("SELECT count(*) FROM message_schedule").await, 0);
    app.stop().await;
}

#[actix_web::test]
async fn a_scheduled_message_whose_channel_was_switched_off_says_so() {
    let app = spawn().await;
    let due = Utc::now() + Duration::seconds(1);
    let (status, body) = app.send(&scheduled("orphan", "u1", due)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let res = app
        .http
        .put(app.url("/admin/apps/demo/grants/inbox"))
        .bearer_auth(ADMIN)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let m = app
        .wait_for("/v1/messages/orphan", 10, |m| m["status"] == "done")
        .await;
    assert_eq!(m["funnel"]["users"]["sent"], 0, "{m}");
    assert_eq!(
        m["losses"],
        json!([{"stage": "planned_to_effective", "channel": "inbox",
                "reason": "channel_disabled", "count": 1}]),
        "{m}"
    );
    app.stop().await;
}
