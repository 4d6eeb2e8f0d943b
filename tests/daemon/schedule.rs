//! A scheduled message whose time passed while umsd was down fires when it starts again,
//! exactly once, with its lateness recorded; one not yet due keeps waiting.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{cleanup, eventually, free_port, inbox_message, test_dir, write_config, Daemon};

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn message(d: &Daemon, key: &str) -> Value {
    crate::http()
        .get(format!("{}/v1/messages/{key}", d.base()))
        .basic_auth("demo", Some("demo-secret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_message_due_while_umsd_was_down_fires_once_at_start_up() {
    let dir = test_dir("schedule");
    write_config(&dir, "");
    let port = free_port();
    let mut d = Daemon::start(&dir, port);
    d.wait_ready(Duration::from_secs(60)).await;
    let http = crate::http();
    let res = http
        .put(format!("{}/v1/users/u1", d.base()))
        .basic_auth("demo", Some("demo-secret"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let due = Utc::now() + chrono::Duration::seconds(2);
    for (key, send_at) in [("soon", due), ("tomorrow", due + chrono::Duration::days(1))] {
        let mut m = inbox_message(key);
        m["send_at"] = json!(at(send_at));
        let res = http
            .post(format!("{}/v1/messages", d.base()))
            .basic_auth("demo", Some("demo-secret"))
            .json(&m)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], "scheduled");
    }
    d.kill9();

    // umsd is down when the time comes.
    super::until_past(due, Duration::from_secs(10)).await;
    let mut restarted = Daemon::start(&dir, port);
    restarted.wait_ready(Duration::from_secs(60)).await;
    let d = &restarted;
    let m = eventually(
        Duration::from_secs(20),
        || format!("`soon` to be done\n{}", d.log()),
        || async move {
            let m = message(d, "soon").await;
            if m["status"] == "done" {
                Ok(m)
            } else {
                Err(m)
            }
        },
    )
    .await;
    let fired = DateTime::parse_from_rfc3339(m["fired_at"].as_str().unwrap()).unwrap();
    let late = fired.with_timezone(&Utc) - due;
    assert!(late > chrono::Duration::milliseconds(500), "{m}");
    assert_eq!(m["funnel"]["users"]["delivered"], 1, "{m}");
    let db = d.db().await;
    let inbox: i64 = db
        .query_one("SELECT count(*) FROM inbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(inbox, 1, "fired exactly once");
    assert_eq!(message(d, "tomorrow").await["status"], "scheduled");
    let sum = d.metric("umsd_scheduler_lateness_seconds_sum").await;
    assert!(sum > 0.5, "lateness recorded: {sum}");
    drop(db);
    restarted.terminate(Duration::from_secs(30));
    cleanup(&dir);
}
