//! Receipt windows: a delivery whose receipt does not come within its channel's window
//! becomes `unknown` (a `no_receipt` loss) and its message reaches `done`; a receipt that
//! comes later still applies and is counted as late.

use serde_json::json;
use umsd_sim::ismg::IsmgConfig;

use crate::sms::{sim_config, Rig};

fn counter(metrics: &str, name: &str, channel: &str) -> f64 {
    let prefix = format!("{name}{{channel=\"{channel}\"}}");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[actix_web::test]
async fn no_report_within_the_window_makes_deliveries_unknown_and_a_late_report_still_counts() {
    // Reports come 3 s after each SUBMIT; the channel waits 1 s for them.
    let rig = Rig::new(
        IsmgConfig {
            report_delay_ms: 3000,
            ..sim_config()
        },
        json!({"receipt_window_seconds": 1}),
    )
    .await;
    let users = rig.users(3).await;
    let id = rig.send(&users, "hello").await;

    // The window closes: every delivery is final as `unknown`, the message is done.
    let deliveries = rig.settled(&id, 10).await;
    assert_eq!(deliveries.len(), 3);
    for d in &deliveries {
        assert_eq!(d["state"], "unknown", "{d}");
        assert_eq!(d["code"], "no_receipt", "{d}");
    }
    let (_, m) = rig.app.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(m["funnel"]["users"]["sent"], 3, "{m}");
    assert_eq!(m["funnel"]["users"]["delivered"], 0, "{m}");
    assert_eq!(
        m["losses"],
        json!([{"stage": "sent_to_delivered", "channel": rig.code, "reason": "no_receipt",
                "count": 3}]),
        "{m}"
    );
    let metrics = rig.app.metrics().await;
    assert_eq!(
        counter(&metrics, "umsd_receipt_windows_closed_total", &rig.code),
        3.0
    );
    assert_eq!(
        rig.app.count("SELECT count(*) FROM receipt_waits").await,
        0,
        "the waits are gone once dealt with"
    );

    // The reports come after all: recorded, the deliveries delivered, counted as late.
    let m = rig
        .app
        .wait_for(&format!("/v1/messages/{id}"), 10, |m| {
            m["funnel"]["users"]["delivered"] == 3
        })
        .await;
    assert_eq!(m["status"], "done");
    assert_eq!(m["losses"], json!([]), "{m}");
    let metrics = rig.app.metrics().await;
    assert_eq!(
        counter(&metrics, "umsd_receipts_late_total", &rig.code),
        3.0
    );
    let (_, d) = rig.app.get(&format!("/v1/messages/{id}/deliveries")).await;
    let events: Vec<&str> = d["deliveries"][0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["submitted", "unknown", "delivered"], "{d}");
}
