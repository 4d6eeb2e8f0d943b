//! Strategy deadlines survive SIGKILL: a later step due while umsd was down goes out when
//! it starts again, exactly once per target, with its lateness recorded.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{cleanup, eventually, free_port, test_dir, write_config, Daemon};

/// A mail channel nobody has an address on: step 1 is lost for every target
/// (`no_address`), so step 2 falls due for all of them.
const MAIL: &str = r#"[[channels]]
code = "mail"
type = "email"
settings = { host = "127.0.0.1", port = 9, tls = "none", from = "umsd <noreply@umsd.local>" }
"#;

const USERS: usize = 50;

async fn call(d: &Daemon, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let mut req = crate::http().request(method, format!("{}{path}", d.base()));
    req = if path.starts_with("/admin") {
        req.bearer_auth("t-admin")
    } else {
        req.basic_auth("demo", Some("demo-secret"))
    };
    let res = req.json(&body).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn count(d: &Daemon, sql: &str) -> i64 {
    d.db().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[actix_web::test]
async fn a_later_step_due_while_umsd_was_down_goes_out_once_per_target_at_start_up() {
    let dir = test_dir("fallback");
    write_config(&dir, MAIL);
    let port = free_port();
    let mut d = Daemon::start(&dir, port);
    d.wait_ready(Duration::from_secs(60)).await;
    let users: Vec<Value> = (0..USERS)
        .map(|i| json!({"user_id": format!("u{i}")}))
        .collect();
    let (status, body) = call(
        &d,
        reqwest::Method::POST,
        "/v1/users/batch",
        json!({"users": users}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &d,
        reqwest::Method::PUT,
        "/admin/apps/demo/grants/mail",
        json!({"enabled": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &d,
        reqwest::Method::PUT,
        "/v1/strategies/mail-then-inbox",
        json!({"steps": [{"channel": "mail"}, {"channel": "inbox", "when": {"op": "and",
            "conditions": [{"step": 1, "event": "not_delivered", "within_seconds": 10}]}}]}),
    )
    .await;
    assert!(status == 200 || status == 201, "{body}");
    let ids: Vec<String> = (0..USERS).map(|i| format!("u{i}")).collect();
    let (status, body) = call(
        &d,
        reqwest::Method::POST,
        "/v1/messages",
        json!({"message_id": "fallback-1", "audience": {"user_ids": ids}, "strategy": "mail-then-inbox",
               "content": {"email": {"subject": "s", "text": "t"}, "inbox": {"title": "t", "body": "b"}}}),
    )
    .await;
    assert_eq!(status, 202, "{body}");

    // Step 1 is planned (lost for everyone) and its deadline is pending: then umsd dies.
    let d_ref = &d;
    eventually(
        Duration::from_secs(20),
        || format!("step 1 planned with its deadline\n{}", d_ref.log()),
        || async move {
            let timers = count(d_ref, "SELECT count(*) FROM strategy_timers").await;
            let step1 = count(d_ref, "SELECT count(*) FROM deliveries WHERE step = 1").await;
            if timers == 1 && step1 == USERS as i64 {
                Ok(())
            } else {
                Err(format!("{timers} timers, {step1} step-1 deliveries"))
            }
        },
    )
    .await;
    let due: DateTime<Utc> = d
        .db()
        .await
        .query_one("SELECT due_at FROM strategy_timers", &[])
        .await
        .unwrap()
        .get(0);
    d.kill9();

    // umsd is down when the deadline comes.
    super::until_past(due, Duration::from_secs(20)).await;
    let mut restarted = Daemon::start(&dir, port);
    restarted.wait_ready(Duration::from_secs(60)).await;
    let d = &restarted;
    let m = eventually(
        Duration::from_secs(30),
        || format!("the message to be done\n{}", d.log()),
        || async move {
            let (_, m) = call(
                d,
                reqwest::Method::GET,
                "/v1/messages/fallback-1",
                Value::Null,
            )
            .await;
            if m["status"] == "done" {
                Ok(m)
            } else {
                Err(m)
            }
        },
    )
    .await;
    assert_eq!(m["strategy"]["steps"][0]["fell_back"], USERS, "{m}");
    assert_eq!(
        m["strategy"]["steps"][1]["funnel"]["delivered"], USERS,
        "{m}"
    );
    assert_eq!(
        count(d, "SELECT count(*) FROM inbox").await,
        USERS as i64,
        "each target's step 2 went out exactly once"
    );
    assert_eq!(count(d, "SELECT count(*) FROM strategy_timers").await, 0);
    let sum = d.metric("umsd_strategy_timer_lateness_seconds_sum").await;
    assert!(sum > 0.5, "lateness recorded: {sum}");
    restarted.terminate(Duration::from_secs(30));
    cleanup(&dir);
}
