use serde_json::{json, Value};

use super::*;
use crate::domain::send::ChannelAccess;

/// push (JPush), sms (CMPP), mp (Mini Program), hook (webhook), and a switched-off one.
struct Channels;
impl ChannelLookup for Channels {
    fn access(&self, code: &str) -> ChannelAccess {
        match code {
            "push" => ChannelAccess::Usable(ChannelType::Jpush),
            "sms" => ChannelAccess::Usable(ChannelType::SmsCmpp),
            "mp" => ChannelAccess::Usable(ChannelType::WechatMp),
            "hook" => ChannelAccess::Usable(ChannelType::Webhook),
            "off" => ChannelAccess::Disabled,
            _ => ChannelAccess::Unknown,
        }
    }
}

fn spec(v: Value) -> StrategySpec {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("bad fixture: {e}"))
}

fn cond(step: usize, event: &str, within: u32) -> Value {
    json!({"step": step, "event": event, "within_seconds": within})
}

fn two(first: &str, second: &str, conditions: Vec<Value>) -> Value {
    json!({"steps": [{"channel": first},
                     {"channel": second, "when": {"op": "and", "conditions": conditions}}]})
}

#[test]
fn a_strategy_is_checked_rule_by_rule_naming_the_field() {
    let ok = two("push", "sms", vec![cond(1, "not_delivered", 300)]);
    let three = json!({"steps": [
        {"channel": "push"},
        {"channel": "sms", "when": {"op": "or", "conditions": [cond(1, "not_clicked", 60)]}},
        {"channel": "hook", "when": {"op": "and", "conditions": [
            cond(1, "not_delivered", 60), cond(2, "not_clicked", 600)]}}]});
    let table: Vec<(Value, Option<(&str, &str)>)> = vec![
        (ok.clone(), None),
        (three, None),
        (
            json!({"steps": [{"channel": "push"}]}),
            Some(("invalid_value", "steps")),
        ),
        (json!({"steps": []}), Some(("invalid_value", "steps"))),
        (
            two("push", "push", vec![cond(1, "not_delivered", 300)]),
            Some(("duplicate_value", "steps[1].channel")),
        ),
        (
            two("push", "nope", vec![cond(1, "not_delivered", 300)]),
            Some(("unknown_channel", "steps[1].channel")),
        ),
        (
            two("off", "sms", vec![cond(1, "not_delivered", 300)]),
            Some(("channel_disabled", "steps[0].channel")),
        ),
        (
            json!({"steps": [{"channel": "push", "when": {"op": "and", "conditions": []}},
                             {"channel": "sms"}]}),
            Some(("invalid_value", "steps[0].when")),
        ),
        (
            json!({"steps": [{"channel": "push"}, {"channel": "sms"}]}),
            Some(("missing_field", "steps[1].when")),
        ),
        (
            two("push", "sms", vec![]),
            Some(("invalid_value", "steps[1].when.conditions")),
        ),
        (
            two("push", "sms", vec![cond(2, "not_delivered", 300)]),
            Some(("invalid_value", "steps[1].when.conditions[0].step")),
        ),
        (
            two("push", "sms", vec![cond(0, "not_delivered", 300)]),
            Some(("invalid_value", "steps[1].when.conditions[0].step")),
        ),
        (
            two(
                "push",
                "sms",
                vec![cond(1, "not_delivered", 300), cond(1, "not_delivered", 60)],
            ),
            Some(("duplicate_value", "steps[1].when.conditions[1]")),
        ),
        (
            two("mp", "sms", vec![cond(1, "not_clicked", 300)]),
            Some(("unsupported_event", "steps[1].when.conditions[0].event")),
        ),
        (
            two("hook", "sms", vec![cond(1, "not_clicked", 300)]),
            Some(("unsupported_event", "steps[1].when.conditions[0].event")),
        ),
        // Delivered on the Mini Program only means accepted: allowed.
        (two("mp", "sms", vec![cond(1, "not_delivered", 300)]), None),
        (
            two("push", "sms", vec![cond(1, "not_delivered", 9)]),
            Some((
                "invalid_value",
                "steps[1].when.conditions[0].within_seconds",
            )),
        ),
        (
            two(
                "push",
                "sms",
                vec![cond(1, "not_delivered", 3 * 86_400 + 1)],
            ),
            Some((
                "invalid_value",
                "steps[1].when.conditions[0].within_seconds",
            )),
        ),
        (
            two("push", "bad id!", vec![cond(1, "not_delivered", 300)]),
            Some(("invalid_value", "steps[1].channel")),
        ),
    ];
    for (body, want) in table {
        let got = spec(body.clone()).check(&Channels);
        match (got, want) {
            (Ok(_), None) => {}
            (Err(e), Some((code, field))) => {
                assert_eq!((e.code, e.field.as_str()), (code, field), "{body}")
            }
            (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
        }
    }
    assert_eq!(
        spec(ok).check(&Channels).ok(),
        Some(vec![ChannelType::Jpush, ChannelType::SmsCmpp])
    );
}

#[test]
fn unknown_events_and_ops_are_refused_by_shape() {
    for body in [
        two("push", "sms", vec![cond(1, "delivered", 300)]),
        json!({"steps": [{"channel": "push"},
                         {"channel": "sms", "when": {"op": "xor", "conditions": [
                             cond(1, "not_delivered", 300)]}}]}),
    ] {
        assert!(serde_json::from_value::<StrategySpec>(body).is_err());
    }
}

#[test]
fn what_delivered_means_follows_the_channel_type() {
    use ChannelType::*;
    let table = [
        (Jpush, Delivery::Confirmed, true),
        (SmsCmpp, Delivery::Confirmed, true),
        (Inbox, Delivery::Confirmed, false),
        (Email, Delivery::Accepted, true),
        (Wecom, Delivery::Accepted, true),
        (Alipay, Delivery::Accepted, true),
        (Webhook, Delivery::Accepted, false),
        (WechatMp, Delivery::Accepted, false),
    ];
    for (t, delivery, clicks) in table {
        assert_eq!(reports(t), Reports { delivery, clicks }, "{t:?}");
    }
    assert!(meaning(Event::NotDelivered, Webhook).contains("only that the provider took"));
    assert!(meaning(Event::NotDelivered, Jpush).contains("receipt"));
}
