//! Overload and database failure: 503 with Retry-After, never a 2xx for something that
//! was not committed, and recovery once the database is back.

use reqwest::StatusCode;

use super::{error_of, inbox_message, TestApp};

#[actix_web::test]
async fn a_full_ingest_queue_answers_503_with_retry_after() {
    // One message may be pending. A lock held by another session stalls its commit, so
    // the next send finds the ingest full.
    let app = TestApp::spawn_with(|c| c.ingest.max_pending = 1).await;
    let mut blocker = app.db().await;
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE message_queue IN EXCLUSIVE MODE")
        .await
        .unwrap();

    let first_body = inbox_message(Some("q-1"), "u1");
    let first = app.send(&first_body);
    let second = async {
        // The first send is pending once its write waits for the lock.
        app.wait_count(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            10,
            |n| n >= 1,
        )
        .await;
        let res = app
            .http
            .post(app.url("/v1/messages"))
            .basic_auth("demo", Some("demo-secret"))
            .json(&inbox_message(Some("q-2"), "u1"))
            .send()
            .await
            .unwrap();
        let retry_after = res.headers().get("retry-after").cloned();
        let answer = (
            res.status(),
            retry_after,
            res.json::<serde_json::Value>().await.unwrap(),
        );
        lock.rollback().await.unwrap();
        answer
    };
    let ((s1, _), (s2, retry_after, b2)) = tokio::join!(first, second);
    assert_eq!(
        s1,
        StatusCode::ACCEPTED,
        "the stalled send completes once the lock is gone"
    );
    assert_eq!(s2, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after.is_some(), "503 carries Retry-After");
    assert_eq!(error_of(&b2).0, "queue_full");
    assert_eq!(app.stored().await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE message_id = 'q-2'")
            .await,
        0
    );
    // A batch larger than the ingest may hold is refused whole.
    let batch =
        serde_json::json!({"messages": [inbox_message(None, "a"), inbox_message(None, "b")]});
    let (status, body) = app
        .post_as(("demo", "demo-secret"), "/v1/messages/batch", &batch)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_of(&body).0, "queue_full");
    assert_eq!(app.stored().await, 1);
}

/// Makes the test database refuse connections and drops the ones umsd holds.
async fn take_database_down(app: &TestApp, down: bool) {
    let mut admin_cfg = app.pg.clone();
    admin_cfg.dbname("postgres");
    let admin = crate::common::connect(&admin_cfg).await;
    let db = app.pg.get_dbname().unwrap().to_owned();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" WITH ALLOW_CONNECTIONS {}",
            if down { "false" } else { "true" }
        ))
        .await
        .unwrap();
    if down {
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db],
            )
            .await
            .unwrap();
    }
}

#[actix_web::test]
async fn an_unreachable_database_answers_503_and_recovers() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.send(&inbox_message(Some("before"), "u1")).await.0,
        StatusCode::ACCEPTED
    );

    take_database_down(&app, true).await;
    let mut refused = 0;
    for i in 0..5 {
        let res = app
            .http
            .post(app.url("/v1/messages"))
            .basic_auth("demo", Some("demo-secret"))
            .json(&inbox_message(Some(&format!("down-{i}")), "u1"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "send {i}");
        assert!(res.headers().contains_key("retry-after"));
        let b: serde_json::Value = res.json().await.unwrap();
        assert_eq!(error_of(&b).0, "database_unavailable");
        refused += 1;
    }
    assert_eq!(refused, 5);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Liveness is not readiness: the process is alive.
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    take_database_down(&app, false).await;
    let (status, _) = app.send(&inbox_message(Some("after"), "u1")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    // Nothing that was refused was stored.
    assert_eq!(app.stored().await, 2);
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE message_id LIKE 'down-%'")
            .await,
        0
    );
}

#[actix_web::test]
async fn sends_are_refused_while_planning_is_behind_and_accepted_once_it_catches_up() {
    // At most 5 unplanned messages (10 for high priority). A lock held by another session
    // stalls the planner's write of deliveries; sends, which write other tables, go on
    // being accepted until the backlog passes the bound.
    let app = TestApp::spawn_with(|c| {
        c.ingest.max_unplanned = 5;
        c.ingest.max_planning_lag_s = 0;
    })
    .await;
    let mut blocker = app.db().await;
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE deliveries IN EXCLUSIVE MODE")
        .await
        .unwrap();

    let mut accepted = 0;
    let refused = loop {
        let res = app
            .http
            .post(app.url("/v1/messages"))
            .basic_auth("demo", Some("demo-secret"))
            .json(&inbox_message(Some(&format!("b-{accepted}")), "u1"))
            .send()
            .await
            .unwrap();
        if res.status() == StatusCode::ACCEPTED {
            accepted += 1;
            assert!(accepted <= 5, "more accepted than the bound");
            continue;
        }
        break res;
    };
    assert_eq!(accepted, 5);
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body = refused.json::<serde_json::Value>().await.unwrap();
    assert_eq!(error_of(&body).0, "planning_behind");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("waiting to be planned")),
        "{body}"
    );
    assert_eq!(app.stored().await, 5, "a refused send wrote nothing");

    // High priority is held to twice the bound.
    let mut urgent = inbox_message(Some("urgent-1"), "u1");
    urgent["priority"] = serde_json::json!("high");
    let (status, _) = app.send(&urgent).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // The gauge shows the backlog once it is counted (every second).
    let metrics = super::eventually(5, "the backlog gauge", || async {
        let m = app.metrics().await;
        let n = m
            .lines()
            .find_map(|l| l.strip_prefix("umsd_planner_backlog "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if n >= 6.0 {
            Ok(m)
        } else {
            Err(n)
        }
    })
    .await;
    assert!(metrics.contains("umsd_planner_oldest_seconds"));

    // Once the planner can write again it catches up and sends are accepted again.
    lock.rollback().await.unwrap();
    app.wait_count("SELECT count(*) FROM message_queue", 10, |n| n == 0)
        .await;
    let (status, _) = super::eventually(5, "a send to be accepted again", || async {
        let (status, body) = app.send(&inbox_message(None, "u1")).await;
        if status == StatusCode::ACCEPTED {
            Ok((status, body))
        } else {
            Err(status)
        }
    })
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Every accepted message is planned once.
    app.wait_count("SELECT count(*) FROM deliveries", 10, |n| n == 7)
        .await;
    assert_eq!(app.stored().await, 7);
}

#[actix_web::test]
async fn sends_naming_a_channel_whose_dispatch_is_behind_are_refused_and_others_accepted() {
    // The `sms` channel's gateway is never there: its deliveries stay queued, and after
    // 3 s (the bound) sends naming it are refused; the inbox is not held up.
    let app = TestApp::spawn_with(|c| c.ingest.max_dispatch_lag_s = 3).await;
    let (status, body) = app
        .put_as(
            super::DEMO,
            "/v1/users/u1",
            &serde_json::json!({"bindings": [{"type": "phone", "value": "+8613800138000"}]}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let sms = |priority: &str| {
        serde_json::json!({"audience": {"user_ids": ["u1"]}, "channels": ["sms"],
            "priority": priority, "content": {"sms": {"text": "hello"}}})
    };
    let (status, _) = app.send(&sms("normal")).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let refused = super::eventually(15, "a send on `sms` to be refused", || async {
        let res = app
            .http
            .post(app.url("/v1/messages"))
            .basic_auth("demo", Some("demo-secret"))
            .json(&sms("normal"))
            .send()
            .await
            .unwrap();
        if res.status() == StatusCode::SERVICE_UNAVAILABLE {
            Ok(res)
        } else {
            Err(res.status())
        }
    })
    .await;
    let stored = app.stored().await;
    // High priority goes before the queued normal work: held to twice the bound.
    let (status, body) = app.send(&sms("high")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let retry: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=30).contains(&retry));
    let body = refused.json::<serde_json::Value>().await.unwrap();
    assert_eq!(error_of(&body).0, "dispatch_behind");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`sms`")),
        "{body}"
    );
    // Other channels are not held up; a refused send wrote nothing.
    let (status, _) = app.send(&inbox_message(None, "u1")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(app.stored().await, stored + 2);
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l
                .starts_with("umsd_dispatch_oldest_seconds{channel=\"sms\",priority=\"normal\"}")),
        "{metrics}"
    );
    app.stop().await;
}
