//! Fallback strategies end to end: SMS on one CMPP gateway simulator, falling back to a
//! second one. The first gateway sends no status reports of its own, so the test decides
//! which user's report comes, when, and with what outcome.

use serde_json::{json, Value};
use umsd_actors::domain::{ChannelCode, DeliveryState, MessagePk};
use umsd_actors::receipts::{Incoming, ReceiptEvent, ReceiptKey};
use umsd_actors::supervisor::GetReceipts;
use umsd_cmpp::MsgId;
use umsd_sim::ismg::{self, IsmgConfig, IsmgHandle};

use crate::sms::{settings, sim_config, Rig};
use crate::{eventually, DEMO};

/// Two SMS channels: `a` (reports only when the test sends one) and `b` (reports at once).
struct Pair {
    rig: Rig,
    b: IsmgHandle,
    b_code: String,
}

impl Pair {
    async fn new() -> Pair {
        let rig = Rig::new(
            IsmgConfig {
                report_delay_ms: 3_600_000,
                ..sim_config()
            },
            json!({}),
        )
        .await;
        let b = ismg::start(sim_config()).unwrap();
        let b_code = format!("{}b", rig.code);
        crate::channels::add_channel(
            &rig.app,
            &b_code,
            &json!({"type": "sms_cmpp", "settings": settings(&b, json!({}))}),
        )
        .await;
        Pair { rig, b, b_code }
    }

    async fn strategy(&self, id: &str, when: Value) {
        let (status, body) = self
            .rig
            .app
            .put_as(
                DEMO,
                &format!("/v1/strategies/{id}"),
                &json!({"steps": [{"channel": self.rig.code},
                                  {"channel": self.b_code, "when": when}]}),
            )
            .await;
        assert!(status.is_success(), "{body}");
    }

    async fn send(&self, strategy: &str, users: &[String]) -> String {
        let (status, sent) = self
            .rig
            .app
            .send(&json!({
                "audience": {"user_ids": users},
                "strategy": strategy,
                "content": {"sms_cmpp": {"text": "your code is 1234"}},
            }))
            .await;
        assert_eq!(status, 202, "{sent}");
        sent["id"].as_str().unwrap().to_owned()
    }

    /// The Msg_Id gateway `a` gave each phone number, once all `n` were submitted.
    async fn submitted_on_a(&self, n: usize) -> Vec<(String, MsgId)> {
        let sim = &self.rig.sim;
        eventually(10, "every SUBMIT on the first channel", || async move {
            let all: Vec<(String, MsgId)> = sim
                .submits()
                .iter()
                .flat_map(|s| {
                    s.dest_terminal_ids
                        .iter()
                        .cloned()
                        .zip(s.msg_ids().collect::<Vec<_>>())
                })
                .collect();
            if all.len() >= n {
                Ok(all)
            } else {
                Err(all.len())
            }
        })
        .await
    }

    /// The phone numbers gateway `b` got, sorted.
    fn sent_on_b(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .b
            .submits()
            .iter()
            .flat_map(|s| s.dest_terminal_ids.clone())
            .collect();
        v.sort();
        v
    }
}

fn phone(i: usize) -> String {
    format!("+86139{i:08}")
}

fn counter(metrics: &str, name: &str, labels: &str) -> f64 {
    let prefix = format!("{name}{{{labels}}}");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn report_for(submitted: &[(String, MsgId)], phone: &str) -> MsgId {
    submitted
        .iter()
        .find(|(p, _)| p.ends_with(phone.trim_start_matches('+')) || p == phone)
        .map(|(_, m)| *m)
        .unwrap_or_else(|| panic!("no SUBMIT to {phone}: {submitted:?}"))
}

#[actix_web::test]
async fn users_not_delivered_in_time_fall_back_and_only_they() {
    let pair = Pair::new().await;
    pair.strategy(
        "sms-then-sms",
        json!({"op": "and", "conditions": [
            {"step": 1, "event": "not_delivered", "within_seconds": 10}]}),
    )
    .await;
    let users = pair.rig.users(4).await;
    let id = pair.send("sms-then-sms", &users).await;
    let submitted = pair.submitted_on_a(4).await;
    // p0 and p1 are delivered in time, p2 hears nothing, p3's report says undelivered.
    for (i, stat) in [(0, "DELIVRD"), (1, "DELIVRD"), (3, "UNDELIV")] {
        assert!(pair
            .rig
            .sim
            .send_report(report_for(&submitted, &phone(i)), stat));
    }
    let app = &pair.rig.app;
    let m = app
        .wait_for(&format!("/v1/messages/{id}"), 30, |m| m["status"] == "done")
        .await;
    let b = pair.sent_on_b();
    assert_eq!(b.len(), 2, "{b:?}");
    assert!(
        b[0].ends_with("13900000002") && b[1].ends_with("13900000003"),
        "{b:?}"
    );
    let steps = &m["strategy"]["steps"];
    assert_eq!(steps[0]["funnel"]["planned"], 4, "{m}");
    assert_eq!(steps[0]["funnel"]["delivered"], 2, "{m}");
    assert_eq!(steps[0]["fell_back"], 2, "{m}");
    assert_eq!(steps[1]["funnel"]["planned"], 2, "{m}");
    assert_eq!(steps[1]["funnel"]["delivered"], 2, "{m}");
    assert_eq!(m["strategy"]["pending_deadlines"], 0, "{m}");
    assert_eq!(m["funnel"]["users"]["delivered"], 4, "{m}");

    // The life cycle says which step a delivery was and why it went out.
    let (_, d) = app
        .get(&format!("/v1/messages/{id}/deliveries?user_id=p2"))
        .await;
    let list = d["deliveries"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{d}");
    assert_eq!(list[0]["step"], 1, "{d}");
    assert!(list[0]["fell_back_at"].is_string(), "{d}");
    assert_eq!(list[1]["step"], 2, "{d}");
    assert_eq!(list[1]["channel"], pair.b_code.as_str(), "{d}");
    assert_eq!(
        list[1]["because"],
        format!("step 1 ({}) not delivered within 10 s", pair.rig.code),
        "{d}"
    );

    let metrics = app.metrics().await;
    let fell = format!("from=\"{}\",to=\"{}\"", pair.rig.code, pair.b_code);
    assert_eq!(
        counter(&metrics, "umsd_strategy_fallbacks_total", &fell),
        2.0
    );
    let settled = format!("channel=\"{}\"", pair.b_code);
    assert_eq!(
        counter(&metrics, "umsd_strategy_settled_total", &settled),
        2.0
    );

    // p2's report comes after all: recorded, and counted as a late receipt.
    assert!(pair
        .rig
        .sim
        .send_report(report_for(&submitted, &phone(2)), "DELIVRD"));
    let m = app
        .wait_for(&format!("/v1/messages/{id}"), 10, |m| {
            m["strategy"]["steps"][0]["late_receipts"] == 1
        })
        .await;
    assert_eq!(m["strategy"]["steps"][0]["funnel"]["delivered"], 3, "{m}");
    let late = format!("channel=\"{}\"", pair.rig.code);
    eventually(5, "the late receipt counted", || async {
        let n = counter(
            &app.metrics().await,
            "umsd_strategy_late_receipts_total",
            &late,
        );
        if n == 1.0 {
            Ok(())
        } else {
            Err(n)
        }
    })
    .await;
    assert_eq!(pair.sent_on_b().len(), 2, "nothing more went out");
}

/// A click on delivery `id` of message `message`, as the status writer gets clicks.
async fn click(app: &crate::TestApp, channel: &str, message: &str, id: &str) {
    let receipts = app.supervisor().send(GetReceipts).await.unwrap().unwrap();
    let taken = receipts
        .send(Incoming(vec![ReceiptEvent {
            channel: ChannelCode::parse(channel).unwrap(),
            key: ReceiptKey::Delivery {
                id: id.parse().unwrap(),
                message_pk: MessagePk::parse(message).unwrap(),
            },
            state: DeliveryState::Clicked,
            code: None,
            reason: None,
            at: chrono::Utc::now(),
        }]))
        .await
        .unwrap();
    assert!(taken);
}

#[actix_web::test]
async fn or_fires_on_either_condition_and_needs_neither_after_a_click_while_and_needs_both() {
    // Two conditions on step 1: no delivery within 10 s, no click within 10 s. Of three
    // users, all delivered in time: p0 does not click (OR falls back, AND does not), p1
    // clicks in time (neither falls back).
    let pair = Pair::new().await;
    let conditions = json!([
        {"step": 1, "event": "not_delivered", "within_seconds": 10},
        {"step": 1, "event": "not_clicked", "within_seconds": 10}]);
    pair.strategy("either", json!({"op": "or", "conditions": conditions}))
        .await;
    pair.strategy("both", json!({"op": "and", "conditions": conditions}))
        .await;
    let users = pair.rig.users(2).await;
    let either = pair.send("either", &users).await;
    pair.submitted_on_a(2).await;
    let both = pair.send("both", &users).await;
    let submitted = pair.submitted_on_a(4).await;
    for (_, msg_id) in &submitted {
        assert!(pair.rig.sim.send_report(*msg_id, "DELIVRD"));
    }
    let app = &pair.rig.app;
    for id in [&either, &both] {
        let d = app
            .wait_for(
                &format!("/v1/messages/{id}/deliveries?user_id=p1"),
                10,
                |d| d["deliveries"][0]["state"] == "delivered",
            )
            .await;
        let first = d["deliveries"][0]["id"].as_str().unwrap();
        click(app, &pair.rig.code, id, first).await;
    }
    for id in [&either, &both] {
        app.wait_for(&format!("/v1/messages/{id}"), 30, |m| m["status"] == "done")
            .await;
    }
    let (_, m) = app.get(&format!("/v1/messages/{either}")).await;
    assert_eq!(m["strategy"]["steps"][0]["funnel"]["clicked"], 1, "{m}");
    assert_eq!(m["strategy"]["steps"][1]["funnel"]["planned"], 1, "{m}");
    let (_, m) = app.get(&format!("/v1/messages/{both}")).await;
    assert_eq!(m["strategy"]["steps"][1]["funnel"]["planned"], 0, "{m}");
    let b = pair.sent_on_b();
    assert_eq!(b.len(), 1, "only p0 of the OR message: {b:?}");
    assert!(b[0].ends_with("13900000000"), "{b:?}");
}
