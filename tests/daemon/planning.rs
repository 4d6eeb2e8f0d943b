//! Batched planning under SIGKILL: umsd is killed while it plans many one-user messages
//! per transaction, and restarted on the same data directory. Every stored message ends
//! with exactly one delivery, delivered once: a pass that died before COMMIT is planned
//! again, one that committed is not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{cleanup, eventually, free_port, test_dir, Daemon};

const USERS: usize = 500;
/// Messages per batch request (the API's limit is 100).
const PER_REQUEST: usize = 100;
const CLIENTS: usize = 8;

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_during_batched_planning_loses_and_doubles_nothing() {
    let dir = test_dir("planning-kill");
    let port = free_port();
    let mut d = Daemon::start(&dir, port);
    d.wait_ready(Duration::from_secs(60)).await;
    let http = crate::http();
    let users: Vec<_> = (0..USERS)
        .map(|i| json!({"user_id": format!("p{i}")}))
        .collect();
    let res = http
        .post(format!("{}/v1/users/batch", d.base()))
        .basic_auth("demo", Some("demo-secret"))
        .json(&json!({"users": users}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());

    // Clients send batches of one-user messages until the daemon dies.
    let acked = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (acked, next, base) = (acked.clone(), next.clone(), d.base());
            tokio::spawn(async move {
                let http = crate::http_builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let messages: Vec<_> = (0..PER_REQUEST)
                        .map(|i| {
                            let k = n * PER_REQUEST + i;
                            json!({
                                "message_id": format!("pk-{k}"),
                                "audience": {"user_ids": [format!("p{}", k % USERS)]},
                                "channels": ["inbox"],
                                "content": {"inbox": {"title": "t", "body": format!("{k}")}},
                            })
                        })
                        .collect();
                    let res = http
                        .post(format!("{base}/v1/messages/batch"))
                        .basic_auth("demo", Some("demo-secret"))
                        .json(&json!({"messages": messages}))
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status().is_success() => {
                            acked.fetch_add(PER_REQUEST, Ordering::Relaxed);
                        }
                        Ok(r) => panic!("a batch was refused: {}", r.status()),
                        Err(_) => break, // the daemon is gone
                    }
                }
            })
        })
        .collect();

    // Kill it once planning is well under way and messages still wait to be planned.
    let db = d.db().await;
    let (planned, waiting) = eventually(
        Duration::from_secs(60),
        || format!("planning to be under way\n{}", d.log()),
        || {
            let db = &db;
            async move {
                let planned = count(db, "SELECT count(*) FROM deliveries").await;
                let waiting = count(db, "SELECT count(*) FROM message_queue").await;
                if planned >= 3000 && waiting > 0 {
                    Ok((planned, waiting))
                } else {
                    Err(format!("{planned} planned, {waiting} waiting"))
                }
            }
        },
    )
    .await;
    d.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.load(Ordering::Relaxed) as i64;
    let db = d.db().await;
    let stored = count(&db, "SELECT count(*) FROM messages").await;
    let left = count(&db, "SELECT count(*) FROM message_queue").await;
    eprintln!(
        "killed with {planned} planned and {waiting} waiting; {acked} acked, {stored} stored, \
         {left} unplanned at the kill"
    );
    assert!(stored >= acked, "an acknowledged message was lost");
    assert!(left > 0, "the kill came after planning had caught up");
    drop(db);

    let mut d = Daemon::start(&dir, port);
    d.wait_ready(Duration::from_secs(60)).await;
    let db = d.db().await;
    eventually(
        Duration::from_secs(120),
        || format!("every message planned and delivered\n{}", d.log()),
        || {
            let db = &db;
            async move {
                let left = count(db, "SELECT count(*) FROM message_queue").await
                    + count(db, "SELECT count(*) FROM dispatch_queue").await;
                let inbox = count(db, "SELECT count(*) FROM inbox").await;
                if left == 0 && inbox >= stored {
                    Ok(())
                } else {
                    Err(format!("{left} queue rows left, {inbox} in the inbox"))
                }
            }
        },
    )
    .await;
    // Exactly one delivery per message, delivered, and one inbox row each.
    assert_eq!(count(&db, "SELECT count(*) FROM deliveries").await, stored);
    assert_eq!(
        count(&db, "SELECT count(DISTINCT message_pk) FROM deliveries").await,
        stored
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM deliveries WHERE state = 5").await,
        stored
    );
    assert_eq!(count(&db, "SELECT count(*) FROM inbox").await, stored);
    assert_eq!(
        count(&db, "SELECT count(*) FROM messages WHERE status < 2").await,
        0,
        "a message was left unplanned"
    );
    drop(db);
    d.terminate(Duration::from_secs(30));
    cleanup(&dir);
}
