use std::time::{Duration, Instant};

use serde_json::{json, Value};
use umsd_sim::{Faults, Kind, Stats};

use crate::common::*;

fn body(rids: &[String]) -> Value {
    json!({"platform": "all", "audience": {"registration_id": rids}, "notification": {"alert": "x"}})
}

async fn push(
    c: &reqwest::Client,
    base: &str,
    rids: &[String],
) -> reqwest::Result<reqwest::Response> {
    c.post(format!("{base}/v3/push"))
        .basic_auth("sim-key", Some("sim-secret"))
        .json(&body(rids))
        .send()
        .await
}

#[tokio::test]
async fn faults_and_stats_over_http() {
    let sim = start(config(Kind::Jpush));
    let c = client();
    let base = sim.url();
    let rids = vec!["r1".to_owned()];

    let r = c
        .post(format!("{base}/_sim/faults"))
        .json(&json!({"fail_next": 1, "drop_next": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pending: Faults = r.json().await.unwrap();
    assert_eq!((pending.fail_next, pending.drop_next), (1, 1));

    // Dropped: the connection closes without a response.
    assert!(push(&c, &base, &rids).await.is_err());
    let r = push(&c, &base, &rids).await.unwrap();
    assert_eq!(r.status(), 500);
    let r = push(&c, &base, &rids).await.unwrap();
    assert_eq!(r.status(), 200);

    let (_, stats) = get_json(&c, &format!("{base}/_sim/stats")).await;
    let stats: Stats = serde_json::from_value(stats).unwrap();
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.send_requests, 3);
    assert_eq!(stats.faults_injected, 2);
    assert_eq!(stats.recipients_accepted, 1);
    assert_eq!(stats, sim.stats());

    let (_, received) = get_json(&c, &format!("{base}/_sim/received?limit=5")).await;
    assert_eq!(received.as_array().unwrap().len(), 1);
    assert_eq!(received[0]["recipient"], "r1");
    let (_, cfg) = get_json(&c, &format!("{base}/_sim/config")).await;
    assert_eq!(cfg["kind"], "jpush");
    assert_eq!(cfg["app_secret"], "sim-secret");
}

#[tokio::test]
async fn latency_and_held_requests() {
    let sim = start(config(Kind::Jpush));
    let c = client();
    let base = sim.url();
    let rids = vec!["r1".to_owned()];

    sim.set_faults(Faults {
        latency_ms: 150,
        ..Faults::default()
    });
    let t = Instant::now();
    push(&c, &base, &rids).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));

    sim.set_faults(Faults {
        timeout_next: 1,
        ..Faults::default()
    });
    umsd_sim::init_tls();
    let short = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let e = push(&short, &base, &rids).await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(push(&c, &base, &rids).await.unwrap().status(), 200);

    // A held connection does not keep the simulator from stopping.
    let t = Instant::now();
    sim.shutdown();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(push(&c, &base, &rids).await.is_err(), "listener closed");
}

#[tokio::test]
async fn received_ring_is_bounded() {
    let sim = start(config(Kind::Jpush));
    let c = client();
    let base = sim.url();
    for batch in 0..101 {
        let rids: Vec<String> = (0..1000).map(|i| format!("r{batch}-{i}")).collect();
        assert_eq!(push(&c, &base, &rids).await.unwrap().status(), 200);
    }
    assert_eq!(sim.stats().recipients_accepted, 101_000);
    assert_eq!(sim.received_count(), 100_000);
    let tail = sim.received_tail(2);
    assert_eq!(tail[1].recipient, "r100-999");
    assert_eq!(tail[0].recipient, "r100-998");
}
