//! A send bound to its strategy: the rules a send naming a strategy must meet beyond the
//! strategy's own, and what the message keeps of it.

use super::StrategySpec;
use crate::domain::send::{FieldError, SendRequest};
use crate::domain::ChannelType;

/// What a message sent with a strategy keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The channels planned at once: the first step's.
    pub channels: Vec<String>,
    /// The steps as JSON, fixed for the message's life.
    pub steps_json: String,
}

/// Binds a validated send to `spec`, whose steps' channels have the types `types`.
/// `given` are the channels the send named itself (none when it left `channels` out).
pub fn bind(
    spec: &StrategySpec,
    types: &[ChannelType],
    request: &SendRequest,
    given: &[String],
) -> Result<Bound, FieldError> {
    if request.audience.addresses.is_some() {
        return Err(FieldError::new(
            "invalid_audience",
            "audience.addresses",
            "a strategy falls back from channel to channel per user: address users \
             (user_ids, tags, a segment or broadcast), not direct addresses",
        ));
    }
    if !given.is_empty() {
        let mut mine: Vec<&str> = spec.steps.iter().map(|s| s.channel.as_str()).collect();
        let mut theirs: Vec<&str> = given.iter().map(String::as_str).collect();
        mine.sort_unstable();
        theirs.sort_unstable();
        if mine != theirs {
            return Err(FieldError::new(
                "invalid_value",
                "channels",
                format!(
                    "with a strategy, `channels` may be left out or must be its channels ({})",
                    spec.steps
                        .iter()
                        .map(|s| s.channel.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    if let Some(content) = &request.content {
        for (step, ty) in spec.steps.iter().zip(types) {
            if !content.contains_key(&step.channel) && !content.contains_key(ty.as_str()) {
                return Err(FieldError::new(
                    "missing_content",
                    format!("content.{}", step.channel),
                    format!(
                        "no content for channel `{}` of the strategy (key it by `{}` or `{}`)",
                        step.channel,
                        step.channel,
                        ty.as_str()
                    ),
                ));
            }
        }
    }
    let steps_json = serde_json::to_string(&spec.steps)
        .map_err(|e| FieldError::new("invalid_value", "strategy", format!("{e}")))?;
    Ok(Bound {
        channels: spec
            .steps
            .first()
            .map(|s| s.channel.clone())
            .into_iter()
            .collect(),
        steps_json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> StrategySpec {
        serde_json::from_value(serde_json::json!({"steps": [
            {"channel": "push"},
            {"channel": "sms", "when": {"op": "and", "conditions": [
                {"step": 1, "event": "not_delivered", "within_seconds": 60}]}}]}))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn request(v: serde_json::Value) -> SendRequest {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn sends_bind_to_their_strategy_as_the_table_says() {
        let types = [ChannelType::Jpush, ChannelType::SmsCmpp];
        let users = serde_json::json!({"user_ids": ["u1"]});
        let both = serde_json::json!({"push": {"alert": "a"}, "sms_cmpp": {"text": "b"}});
        let table: &[(&str, serde_json::Value, &[&str], Option<&str>)] = &[
            (
                "channels left out",
                serde_json::json!({"audience": users, "strategy": "s", "content": both}),
                &[],
                None,
            ),
            (
                "the same channels in another order",
                serde_json::json!({"audience": users, "strategy": "s", "content": both}),
                &["sms", "push"],
                None,
            ),
            (
                "other channels",
                serde_json::json!({"audience": users, "strategy": "s", "content": both}),
                &["push"],
                Some("channels"),
            ),
            (
                "direct addresses",
                serde_json::json!({"audience": {"addresses": {"sms": ["+8613800138000"]}}, "strategy": "s", "content": both}),
                &[],
                Some("audience.addresses"),
            ),
            (
                "content missing for a step",
                serde_json::json!({"audience": users, "strategy": "s", "content": {"push": {"alert": "a"}}}),
                &[],
                Some("content.sms"),
            ),
            (
                "a template covers every step",
                serde_json::json!({"audience": users, "strategy": "s", "template": {"id": "t"}}),
                &[],
                None,
            ),
        ];
        for (name, body, given, want) in table {
            let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
            let got = bind(&spec(), &types, &request(body.clone()), &given);
            match (got, want) {
                (Ok(b), None) => {
                    assert_eq!(b.channels, vec!["push".to_owned()], "{name}");
                    assert!(b.steps_json.contains("not_delivered"), "{name}");
                }
                (Err(e), Some(field)) => assert_eq!(e.field, *field, "{name}"),
                (got, want) => panic!("{name}: {got:?} vs {want:?}"),
            }
        }
    }
}
