//! Restart recovery: deliveries queued (or in flight) when umsd is SIGKILLed are sent
//! after it restarts. On the inbox, whose writes are keyed by delivery id, none is stored
//! twice; on a webhook channel the duplicate window is measured: the receiver sees a
//! delivery twice only if it was in flight when umsd died (at most `pool_size`).

use std::time::Duration;

use serde_json::json;

use super::{cleanup, eventually, free_port, test_dir, write_config, Daemon};

async fn count(d: &Daemon, sql: &str) -> i64 {
    d.db().await.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits until `sql` (one count) answers at least `n`, for at most `secs`.
async fn at_least(d: &Daemon, sql: &str, n: i64, secs: u64) {
    let db = &d.db().await;
    eventually(
        Duration::from_secs(secs),
        || format!("{sql} to reach {n}\n{}", d.log()),
        || async move {
            let got: i64 = db.query_one(sql, &[]).await.unwrap().get(0);
            if got >= n {
                Ok(())
            } else {
                Err(got)
            }
        },
    )
    .await;
}

#[actix_web::test]
async fn queued_deliveries_are_delivered_after_a_sigkill_and_restart() {
    const USERS: usize = 300;
    let dir = test_dir("recovery");
    let sim = umsd_sim::start(umsd_sim::SimConfig::new(umsd_sim::Kind::Webhook)).unwrap();
    let secret = sim.config().app_secret;
    write_config(
        &dir,
        &format!(
            "rate_per_second = 40\nburst = 1\n\n[[channels]]\ncode = \"hook\"\ntype = \"webhook\"\n\
             rate_per_second = 40\nburst = 1\npool_size = 4\nsettings = {{ secret = \"{secret}\" }}\n"
        ),
    );
    let text = std::fs::read_to_string(dir.join("umsd.toml")).unwrap();
    std::fs::write(
        dir.join("umsd.toml"),
        text.replace("grants = [\"inbox\"]", "grants = [\"inbox\", \"hook\"]"),
    )
    .unwrap();
    let port = free_port();
    let mut d = Daemon::start(&dir, port);
    d.wait_ready(Duration::from_secs(60)).await;
    let http = crate::http();
    let users: Vec<String> = (0..USERS).map(|i| format!("k{i:04}")).collect();
    let rows: Vec<_> = users
        .iter()
        .map(|u| {
            json!({"user_id": u, "bindings": [
                {"type": "webhook", "value": format!("{}/hooks/{u}", sim.url())}]})
        })
        .collect();
    let res = http
        .post(format!("{}/v1/users/batch", d.base()))
        .basic_auth("demo", Some("demo-secret"))
        .json(&json!({"users": rows}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let res = http
        .post(format!("{}/v1/messages", d.base()))
        .basic_auth("demo", Some("demo-secret"))
        .json(&json!({
            "audience": {"user_ids": users},
            "channels": ["inbox", "hook"],
            "content": {"inbox": {"title": "t", "body": "survives"},
                        "hook": {"body": {"k": 1}}},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);

    // Let some go out, then kill umsd mid-backlog.
    at_least(&d, "SELECT count(*) FROM inbox", 40, 20).await;
    d.kill9();
    let before = count(&d, "SELECT count(*) FROM inbox").await;
    let queued = count(&d, "SELECT count(*) FROM deliveries WHERE state = 2").await;
    assert!(before < USERS as i64, "all delivered before the kill");
    assert!(queued > 0);
    // Nothing is lost. A delivery stored but whose outcome was not yet written when the
    // process died is in both (at most one per in-flight call); it is sent again after
    // the restart and the inbox stores it once.
    let inbox_queued = count(
        &d,
        "SELECT count(*) FROM deliveries WHERE state = 2 AND channel_code = 'inbox'",
    )
    .await;
    assert!(before + inbox_queued >= USERS as i64, "a delivery was lost");
    assert!(before + inbox_queued <= USERS as i64 + 8);

    let mut d = Daemon::start(&dir, port);
    d.wait_ready(Duration::from_secs(60)).await;
    at_least(&d, "SELECT count(*) FROM inbox", USERS as i64, 30).await;
    // Nothing more is stored once every inbox delivery's outcome is recorded and the
    // channel has let go of the message.
    at_least(
        &d,
        "SELECT (SELECT count(*) FROM deliveries WHERE channel_code = 'inbox' AND state = 5)
              - (SELECT count(*) FROM dispatch_queue WHERE channel_code = 'inbox')",
        USERS as i64,
        30,
    )
    .await;
    assert_eq!(count(&d, "SELECT count(*) FROM inbox").await, USERS as i64);
    assert_eq!(
        count(&d, "SELECT count(DISTINCT user_id) FROM inbox").await,
        USERS as i64
    );
    assert_eq!(count(&d, "SELECT count(*) FROM dispatch_queue").await, 0);
    // The webhook receiver got every delivery; a repeat only for those in flight.
    at_least(
        &d,
        "SELECT count(*) FROM deliveries WHERE state = 5",
        2 * USERS as i64,
        30,
    )
    .await;
    let mut seen = std::collections::HashMap::<String, u32>::new();
    for r in sim.received() {
        let id = r.body["data"]["delivery_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *seen.entry(id).or_default() += 1;
    }
    let repeats: u32 = seen.values().map(|n| n - 1).sum();
    assert_eq!(seen.len(), USERS, "every webhook delivery arrived");
    assert!(
        repeats <= 4,
        "{repeats} repeats, more than the calls in flight"
    );
    eprintln!("webhook deliveries received twice after SIGKILL: {repeats}");
    assert_eq!(
        count(&d, "SELECT count(*) FROM deliveries WHERE state = 5").await,
        2 * USERS as i64,
        "every delivery is recorded delivered"
    );
    assert!(d.terminate(Duration::from_secs(30)));
    sim.shutdown();
    cleanup(&dir);
}
