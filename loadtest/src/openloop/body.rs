//! The JSON body of request `i`: a one-user message on one channel, with that channel's
//! content shape and, optionally, a priority. The inbox body is also what the copied rows
//! of R_copy carry, so an HTTP send and a copied row hold the same bytes.

use serde::Serialize;
use umsd_actors::domain::Priority;

/// Users the one-user messages cycle through by default: request `i` goes to
/// `u{i % 10000}`.
pub const DEFAULT_USERS: u64 = 10_000;

/// The content shape a channel type takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentKind {
    /// `{"title": …, "body": …}`.
    Inbox,
    /// `{"body": <any JSON>}`.
    Webhook,
}

/// What the bodies of a phase look like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BodySpec {
    /// The channel code the messages name (and key their content by).
    channel: String,
    kind: ContentKind,
    /// Request `i` goes to user `u{i % users}`.
    users: u64,
    /// `None`: the field is left out (the daemon's default, normal).
    priority: Option<Priority>,
    /// The channel code as a JSON string, quotes included.
    #[serde(skip)]
    channel_json: String,
}

impl BodySpec {
    /// One-user messages on the channel `channel` with content of `kind`.
    pub fn new(channel: &str, kind: ContentKind) -> Self {
        Self {
            channel: channel.to_owned(),
            kind,
            users: DEFAULT_USERS,
            priority: None,
            channel_json: serde_json::Value::from(channel).to_string(),
        }
    }

    /// The bench's own messages: on the `inbox` channel.
    pub fn inbox() -> Self {
        Self::new("inbox", ContentKind::Inbox)
    }

    /// Cycles through `users` users (`u0` … `u{users-1}`) instead of 10 000.
    pub fn with_users(mut self, users: u64) -> Self {
        self.users = users.max(1);
        self
    }

    /// Names the priority in every body.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// The body of request `i` with this `message_id`.
    pub fn body(&self, message_id: &str, i: u64) -> String {
        let content = match self.kind {
            ContentKind::Inbox => {
                format!(r#"{{"title":"Order shipped","body":"Your order {i} has shipped"}}"#)
            }
            ContentKind::Webhook => format!(
                r#"{{"body":{{"event":"order.shipped","order":"{i}","text":"Your order {i} has shipped"}}}}"#
            ),
        };
        let priority = match self.priority {
            Some(p) => format!(r#","priority":"{}""#, p.as_str()),
            None => String::new(),
        };
        format!(
            r#"{{"message_id":"{id}","audience":{{"user_ids":["{user}"]}},"channels":[{ch}],"content":{{{ch}:{content}}}{priority}}}"#,
            id = message_id,
            user = user_of(i, self.users),
            ch = self.channel_json,
        )
    }
}

/// The user id request `i` goes to among `users` users: `u{i % users}`.
pub fn user_of(i: u64, users: u64) -> String {
    format!("u{}", i % users.max(1))
}

/// The inbox body of request `i`, used both for HTTP sends and for the copied rows so the
/// two write the same bytes.
pub fn message_body(message_id: &str, i: u64) -> String {
    BodySpec::inbox().body(message_id, i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
    }

    #[test]
    fn inbox_bodies_are_what_they_always_were() {
        assert_eq!(
            message_body("lt-x-7", 7),
            r#"{"message_id":"lt-x-7","audience":{"user_ids":["u7"]},"channels":["inbox"],"content":{"inbox":{"title":"Order shipped","body":"Your order 7 has shipped"}}}"#
        );
        let v = parse(&message_body("lt-x-10007", 10_007));
        assert_eq!(v["audience"]["user_ids"][0], "u7");
        assert!(v.get("priority").is_none());
    }

    #[test]
    fn bodies_name_the_channel_and_the_priority() {
        let cases = [
            (BodySpec::inbox(), 3, "inbox", "u3", None),
            (
                BodySpec::new("hook", ContentKind::Webhook),
                12_345,
                "hook",
                "u2345",
                None,
            ),
            (
                BodySpec::new("hook", ContentKind::Webhook)
                    .with_users(1000)
                    .with_priority(Priority::High),
                4321,
                "hook",
                "u321",
                Some("high"),
            ),
            (
                BodySpec::new("in\"box", ContentKind::Inbox).with_priority(Priority::Low),
                1,
                "in\"box",
                "u1",
                Some("low"),
            ),
        ];
        for (spec, i, channel, user, priority) in cases {
            let v = parse(&spec.body("m-1", i));
            assert_eq!(v["message_id"], "m-1");
            assert_eq!(v["channels"], serde_json::json!([channel]));
            assert_eq!(v["audience"]["user_ids"], serde_json::json!([user]));
            assert_eq!(v["priority"].as_str(), priority);
            let content = &v["content"][channel];
            match spec.kind {
                ContentKind::Inbox => {
                    assert_eq!(content["title"], "Order shipped");
                    assert_eq!(content["body"], format!("Your order {i} has shipped"));
                }
                ContentKind::Webhook => {
                    assert_eq!(content["body"]["order"], i.to_string());
                    assert_eq!(content.as_object().map(|o| o.len()), Some(1));
                }
            }
            assert_eq!(spec.channel, channel);
        }
    }

    #[test]
    fn users_cycle() {
        assert_eq!(user_of(10_001, DEFAULT_USERS), "u1");
        assert_eq!(user_of(5, 0), "u0");
        assert_eq!(BodySpec::inbox().with_users(0).users, 1);
    }
}
