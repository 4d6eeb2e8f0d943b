//! What the delivery scenarios (`fanout`, `backlog`, `cmpp`) share: the daemon config they
//! write (the load-test app granted channels that point at in-process simulators,
//! [`config`]), creating users with bindings and submitting messages as fast as the API
//! takes them ([`api`]), and reading the outcome back from the database (per-channel
//! counts, delivery times, accept→submit latency, [`outcome`]).

mod api;
mod config;
mod outcome;

pub use api::{message_body, send_messages, Api, MakeBody, SendSummary};
pub use config::{config_text, require_started_daemon, ChannelDef, Setting};
pub use outcome::{
    accepts, channel_events, dispatch_rows, final_count, queued_deliveries, rate, state_counts,
    Accepts, ChannelEvents, SubmitLatency,
};

#[cfg(test)]
mod tests {
    use super::outcome::{is_final, state_name};
    use super::*;
    use chrono::{DateTime, Utc};
    use serde_json::{json, Value};

    #[test]
    fn rates_and_states() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let t1 = t0 + chrono::Duration::milliseconds(2500);
        assert_eq!(rate(5000, t0, t1), Some(2000.0));
        assert_eq!(rate(5000, t1, t0), None);
        assert_eq!(rate(0, t0, t1), None);
        assert_eq!(state_name(5), "delivered");
        assert_eq!(state_name(3), "submitted");
        assert!(is_final("delivered") && is_final("failed") && !is_final("queued"));
        let body: Value = serde_json::from_str(&message_body(
            "fo-1",
            &["u0000".into(), "u0001".into()],
            &["hook"],
            &json!({"hook": {"body": {"a": 1}}}),
        ))
        .unwrap();
        assert_eq!(body["audience"]["user_ids"][1], "u0001");
        assert_eq!(body["content"]["hook"]["body"]["a"], 1);
    }
}
