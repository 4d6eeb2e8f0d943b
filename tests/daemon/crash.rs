//! Crash safety: the real binary under load is SIGKILLed at random moments and restarted on
//! the same data directory. Every send answered 2xx must be stored; none answered 4xx/5xx
//! may be; a send that got no answer may be either, and resending it with the same
//! `message_id` settles it without a duplicate.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::StatusCode;

use super::{cleanup, eventually, free_port, inbox_message, test_dir, Daemon};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acked,
    Refused(u16),
    NoAnswer,
}

const CLIENTS: usize = 16;
const KILLS: usize = 4;

type Outcomes = Arc<Mutex<HashMap<String, Outcome>>>;

/// CLIENTS tasks sending `<prefix>-<n>` until `stop`, recording each answer; a task ends
/// at its first unanswered request (the daemon is gone).
fn load(
    base: &str,
    prefix: &'static str,
    outcomes: &Outcomes,
    next: &Arc<AtomicUsize>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|_| {
            let (outcomes, next, stop, base) = (
                outcomes.clone(),
                next.clone(),
                stop.clone(),
                base.to_owned(),
            );
            tokio::spawn(async move {
                let http = crate::http_builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{prefix}-{}", next.fetch_add(1, Ordering::Relaxed));
                    let res = http
                        .post(format!("{base}/v1/messages"))
                        .basic_auth("demo", Some("demo-secret"))
                        .json(&inbox_message(&key))
                        .send()
                        .await;
                    let outcome = match res {
                        Ok(r) if r.status().is_success() => Outcome::Acked,
                        Ok(r) => Outcome::Refused(r.status().as_u16()),
                        Err(_) => Outcome::NoAnswer,
                    };
                    let gone = outcome == Outcome::NoAnswer;
                    outcomes.lock().unwrap().insert(key, outcome);
                    if gone {
                        break;
                    }
                }
            })
        })
        .collect()
}

/// Sends answered 2xx so far.
fn acked(outcomes: &Outcomes) -> usize {
    outcomes
        .lock()
        .unwrap()
        .values()
        .filter(|o| **o == Outcome::Acked)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sends_survive_sigkill() {
    let dir = test_dir("crash");
    let port = free_port();
    let mut d = Daemon::start(&dir, port);
    d.wait_ready(Duration::from_secs(90)).await;

    let outcomes: Outcomes = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    for round in 0..KILLS {
        let stop = Arc::new(AtomicBool::new(false));
        let before = acked(&outcomes);
        let tasks = load(&d.base(), "crash", &outcomes, &next, &stop);
        // A random moment of the load, counted in sends acknowledged this round (about
        // 0.3 to 1.5 s of it on a 2-core machine), so that every round kills a daemon under
        // load however fast the machine is.
        let wait = rand::rng().random_range(150..750);
        eventually(
            Duration::from_secs(60),
            || format!("{wait} sends acknowledged in round {round}\n{}", d.log()),
            || {
                std::future::ready(match acked(&outcomes) - before {
                    n if n >= wait => Ok(()),
                    n => Err(n),
                })
            },
        )
        .await;
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        let acked = acked(&outcomes);
        eprintln!("round {round}: killed after {wait} acknowledged, {acked} acked so far");
        d = Daemon::start(&dir, port);
        d.wait_ready(Duration::from_secs(90)).await;
    }

    let outcomes = outcomes.lock().unwrap().clone();
    let db = d.db().await;
    let rows = db
        .query(
            "SELECT message_id, count(*) FROM messages WHERE message_id LIKE 'crash-%' GROUP BY 1",
            &[],
        )
        .await
        .unwrap();
    let mut stored = HashSet::new();
    for row in rows {
        let key: String = row.get(0);
        let n: i64 = row.get(1);
        assert_eq!(n, 1, "{key} stored {n} times");
        stored.insert(key);
    }
    let acked: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| **o == Outcome::Acked)
        .collect();
    assert!(
        acked.len() > 100,
        "the load was real: {} acked",
        acked.len()
    );
    for (key, _) in &acked {
        assert!(
            stored.contains(*key),
            "{key} was acknowledged but is not stored"
        );
    }
    for (key, o) in &outcomes {
        if let Outcome::Refused(status) = o {
            assert!(
                !stored.contains(key),
                "{key} was refused ({status}) but is stored"
            );
        }
    }

    // Unanswered sends: resending settles each one, never duplicating it.
    let http = crate::http();
    let unanswered: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| **o == Outcome::NoAnswer)
        .map(|(k, _)| k.clone())
        .collect();
    for key in &unanswered {
        let res = http
            .post(format!("{}/v1/messages", d.base()))
            .basic_auth("demo", Some("demo-secret"))
            .json(&inbox_message(key))
            .send()
            .await
            .unwrap();
        let expected = if stored.contains(key) {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        assert_eq!(res.status(), expected, "resending {key}");
    }
    let duplicates: i64 = db
        .query_one(
            "SELECT count(*) - count(DISTINCT message_id) FROM messages WHERE message_id LIKE 'crash-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(duplicates, 0);
    let expected_total =
        (stored.len() + unanswered.iter().filter(|k| !stored.contains(*k)).count()) as i64;
    let total: i64 = db
        .query_one(
            "SELECT count(*) FROM messages WHERE message_id LIKE 'crash-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, expected_total);
    eprintln!(
        "{} sends: {} acked, {} refused, {} unanswered ({} of those were stored)",
        outcomes.len(),
        acked.len(),
        outcomes
            .values()
            .filter(|o| matches!(o, Outcome::Refused(_)))
            .count(),
        unanswered.len(),
        unanswered.iter().filter(|k| stored.contains(*k)).count()
    );
    drop(db);
    assert!(d.terminate(Duration::from_secs(60)));
    cleanup(&dir);
}

/// SIGTERM under load: umsd stops accepting, answers what it accepted, exits 0 and stops
/// its cluster; exactly the acknowledged sends are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_loses_nothing() {
    let dir = test_dir("graceful");
    let port = free_port();
    let mut d = Daemon::start(&dir, port);
    d.wait_ready(Duration::from_secs(90)).await;

    let outcomes: Outcomes = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&d.base(), "graceful", &outcomes, &next, &stop);
    // SIGTERM in the middle of a real load: once more sends are acknowledged than the
    // check below asks for (while 16 clients keep sending).
    eventually(
        Duration::from_secs(60),
        || format!("51 sends acknowledged\n{}", d.log()),
        || {
            std::future::ready(match acked(&outcomes) {
                n if n > 50 => Ok(()),
                n => Err(n),
            })
        },
    )
    .await;
    assert!(
        d.terminate(Duration::from_secs(60)),
        "umsd exits 0 on SIGTERM"
    );
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(d.postmaster(), None, "the embedded cluster was stopped");
    assert!(d.log().contains("draining the ingest"));

    // Look at what is stored (starting umsd again brings its cluster back).
    let mut d = Daemon::start(&dir, port);
    d.wait_ready(Duration::from_secs(60)).await;
    let db = d.db().await;
    let stored: HashSet<String> = db
        .query(
            "SELECT message_id FROM messages WHERE message_id LIKE 'graceful-%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let outcomes = outcomes.lock().unwrap().clone();
    let acked: HashSet<String> = outcomes
        .iter()
        .filter(|(_, o)| **o == Outcome::Acked)
        .map(|(k, _)| k.clone())
        .collect();
    assert!(acked.len() > 50, "the load was real: {} acked", acked.len());
    assert!(acked.is_subset(&stored), "an acknowledged send was lost");
    // Whatever got no answer reached umsd after it stopped listening: not stored.
    let extra: Vec<_> = stored.difference(&acked).collect();
    assert!(extra.is_empty(), "stored without an answer: {extra:?}");
    drop(db);
    assert!(d.terminate(Duration::from_secs(60)));
    cleanup(&dir);
}
