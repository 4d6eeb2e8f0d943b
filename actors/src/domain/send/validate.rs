//! [`SendRequest::validate`]: every rule of a send request that needs no database, in the
//! order a caller would fix them: id, channels, audience, content, filter, callback,
//! schedule, TTL.

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use super::access::{usable, ChannelLookup};
use super::address::{check_id, is_address_for, is_user_id};
use super::content::check_content;
use super::error::FieldError;
use super::{
    when, Audience, NewMessage, Reference, Refused, SendClock, SendRequest, When, MAX_ADDRESSES,
    MAX_TAGS, MAX_TTL_SECONDS, MAX_USER_IDS, SEND_AT_TOLERANCE_SECONDS,
};
use crate::domain::{ChannelType, IdempotencyKey, MessageStatus};

impl SendRequest {
    /// Checks every rule that needs no database; `clock` decides scheduled vs accepted.
    pub fn validate(
        self,
        channels: &dyn ChannelLookup,
        clock: SendClock,
    ) -> Result<NewMessage, FieldError> {
        let now = clock.now;
        let mut refs = Vec::new();
        let message_id = match &self.message_id {
            None => None,
            Some(key) => Some(IdempotencyKey::parse(key).ok_or_else(|| {
                FieldError::new(
                    "invalid_value",
                    "message_id",
                    "must be 1-64 characters of [A-Za-z0-9_.:-]",
                )
            })?),
        };

        // Channels: each known, granted, enabled, listed once.
        let mut resolved: Vec<(String, ChannelType)> = Vec::new();
        match (&self.channels, &self.strategy) {
            (None, None) => {
                return Err(FieldError::new(
                    "missing_field",
                    "channels",
                    "give `channels` or a `strategy`",
                ))
            }
            (Some(list), _) => {
                if list.is_empty() {
                    return Err(FieldError::new(
                        "invalid_value",
                        "channels",
                        "must name at least one channel",
                    ));
                }
                for (i, code) in list.iter().enumerate() {
                    let field = format!("channels[{i}]");
                    let ty = usable(channels, code, &field)?;
                    if resolved.iter().any(|(c, _)| c == code) {
                        return Err(FieldError::new(
                            "duplicate_value",
                            field,
                            format!("channel `{code}` is listed twice"),
                        ));
                    }
                    resolved.push((code.clone(), ty));
                }
            }
            (None, Some(_)) => {}
        }
        if let Some(strategy) = &self.strategy {
            check_id(strategy, "strategy")?;
            refs.push(Reference::Strategy(strategy.clone()));
        }

        self.audience.check(channels, &resolved, &mut refs)?;

        // Content: either a template or per-channel content for each channel.
        match (&self.content, &self.template) {
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "invalid_value",
                    "template",
                    "give either `content` or `template`, not both",
                ))
            }
            (None, None) => {
                return Err(FieldError::new(
                    "missing_field",
                    "content",
                    "give `content` or `template`",
                ))
            }
            (None, Some(t)) => {
                check_id(&t.id, "template.id")?;
                refs.push(Reference::Template(t.id.clone()));
            }
            (Some(content), None) => check_content(content, channels, &resolved, &self.strategy)?,
        }

        if let Some(filter) = &self.filter {
            let id = match (&filter.blacklist, &filter.whitelist) {
                (Some(b), None) => b,
                (None, Some(w)) => w,
                _ => {
                    return Err(FieldError::new(
                        "invalid_value",
                        "filter",
                        "give exactly one of `blacklist` or `whitelist`",
                    ))
                }
            };
            check_id(id, "filter")?;
            refs.push(Reference::List(id.clone()));
        }
        if let Some(url) = &self.callback_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2048 {
                return Err(FieldError::new(
                    "invalid_value",
                    "callback_url",
                    "must be an http(s) URL of at most 2048 characters",
                ));
            }
            refs.push(Reference::CallbackUrl(url.clone()));
        }

        let send_at = match &self.send_at {
            None => None,
            Some(s) => Some(
                DateTime::parse_from_rfc3339(s)
                    .map_err(|_| {
                        FieldError::new("invalid_value", "send_at", "must be an RFC 3339 time")
                    })?
                    .with_timezone(&Utc),
            ),
        };
        let status = match send_at.map(|t| when(t, clock)) {
            None | Some(Ok(When::Now)) => MessageStatus::Accepted,
            Some(Ok(When::At(_))) => MessageStatus::Scheduled,
            Some(Err(Refused::Past)) => {
                return Err(FieldError::new(
                    "invalid_value",
                    "send_at",
                    format!(
                        "is in the past (more than {SEND_AT_TOLERANCE_SECONDS} s ago); \
                         leave it out to send now"
                    ),
                ))
            }
            Some(Err(Refused::TooFarAhead)) => {
                return Err(FieldError::new(
                    "invalid_value",
                    "send_at",
                    format!(
                        "may be at most {} days ahead (the history kept, less a day)",
                        clock.max_ahead.num_days()
                    ),
                ))
            }
        };
        let expires_at = match self.ttl_seconds {
            None => None,
            Some(0) => {
                return Err(FieldError::new(
                    "invalid_value",
                    "ttl_seconds",
                    "must be at least 1",
                ))
            }
            Some(s) if s > MAX_TTL_SECONDS => {
                return Err(FieldError::new(
                    "invalid_value",
                    "ttl_seconds",
                    format!("must be at most {MAX_TTL_SECONDS}"),
                ))
            }
            Some(s) => Some(send_at.unwrap_or(now).max(now) + Duration::seconds(i64::from(s))),
        };

        let request_json = serde_json::to_string(&self).map_err(|e| {
            FieldError::new("invalid_value", "", format!("cannot encode request: {e}"))
        })?;
        let body_hash: [u8; 32] = Sha256::digest(request_json.as_bytes()).into();
        Ok(NewMessage {
            message_id,
            priority: self.priority.unwrap_or_default(),
            status,
            send_at,
            expires_at,
            channels: resolved.into_iter().map(|(c, _)| c).collect(),
            request_json,
            strategy: None,
            body_hash,
            refs,
        })
    }
}

impl Audience {
    fn check(
        &self,
        channels: &dyn ChannelLookup,
        resolved: &[(String, ChannelType)],
        refs: &mut Vec<Reference>,
    ) -> Result<(), FieldError> {
        let given = [
            self.user_ids.is_some(),
            self.tags.is_some(),
            self.segment.is_some(),
            self.broadcast.is_some(),
            self.addresses.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if given != 1 {
            return Err(FieldError::new(
                "invalid_audience",
                "audience",
                "give exactly one of user_ids, tags, segment, broadcast, addresses",
            ));
        }
        if let Some(ids) = &self.user_ids {
            if ids.is_empty() || ids.len() > MAX_USER_IDS {
                return Err(FieldError::new(
                    "invalid_value",
                    "audience.user_ids",
                    format!("must hold 1-{MAX_USER_IDS} user ids"),
                ));
            }
            for (i, id) in ids.iter().enumerate() {
                if !is_user_id(id) {
                    return Err(FieldError::new(
                        "invalid_value",
                        format!("audience.user_ids[{i}]"),
                        "a user id is 1-128 characters without spaces or control characters",
                    ));
                }
            }
        }
        if let Some(tags) = &self.tags {
            let (list, name) = match (&tags.any, &tags.all) {
                (Some(l), None) => (l, "any"),
                (None, Some(l)) => (l, "all"),
                _ => {
                    return Err(FieldError::new(
                        "invalid_value",
                        "audience.tags",
                        "give exactly one of `any` or `all`",
                    ))
                }
            };
            if list.is_empty() || list.len() > MAX_TAGS {
                return Err(FieldError::new(
                    "invalid_value",
                    format!("audience.tags.{name}"),
                    format!("must hold 1-{MAX_TAGS} tags"),
                ));
            }
            for (i, t) in list.iter().enumerate() {
                check_id(t, &format!("audience.tags.{name}[{i}]"))?;
            }
        }
        if let Some(seg) = &self.segment {
            check_id(seg, "audience.segment")?;
            refs.push(Reference::Segment(seg.clone()));
        }
        if self.broadcast == Some(false) {
            return Err(FieldError::new(
                "invalid_value",
                "audience.broadcast",
                "must be true when given",
            ));
        }
        if let Some(addresses) = &self.addresses {
            let total: usize = addresses.values().map(Vec::len).sum();
            if total == 0 || total > MAX_ADDRESSES {
                return Err(FieldError::new(
                    "invalid_value",
                    "audience.addresses",
                    format!("must hold 1-{MAX_ADDRESSES} addresses in all"),
                ));
            }
            for (code, list) in addresses {
                let field = format!("audience.addresses.{code}");
                let ty = match resolved.iter().find(|(c, _)| c == code) {
                    Some((_, ty)) => *ty,
                    None if resolved.is_empty() => usable(channels, code, &field)?,
                    None => {
                        return Err(FieldError::new(
                            "unknown_channel",
                            field,
                            format!("`{code}` is not one of this message's channels"),
                        ))
                    }
                };
                for (i, addr) in list.iter().enumerate() {
                    if !is_address_for(ty, addr) {
                        return Err(FieldError::new(
                            "invalid_value",
                            format!("{field}[{i}]"),
                            format!("not a valid {} address", ty.as_str()),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::send::ChannelAccess;
    use serde_json::Value;

    struct Two;
    impl ChannelLookup for Two {
        fn access(&self, code: &str) -> ChannelAccess {
            match code {
                "inbox" => ChannelAccess::Usable(ChannelType::Inbox),
                "sms" => ChannelAccess::Usable(ChannelType::SmsCmpp),
                "off" => ChannelAccess::Disabled,
                _ => ChannelAccess::Unknown,
            }
        }
    }

    fn req(v: Value) -> SendRequest {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("bad fixture: {e}"))
    }

    #[test]
    fn a_plain_send_validates_and_hashes_stably() {
        let body = serde_json::json!({"message_id": "k1", "audience": {"user_ids": ["u1"]},
            "channels": ["inbox"], "content": {"inbox": {"title": "t", "body": "b"}}});
        let a = req(body.clone()).validate(&Two, SendClock::with_retention(Utc::now(), 7));
        let b = req(body).validate(&Two, SendClock::with_retention(Utc::now(), 7));
        let (a, b) = (
            a.unwrap_or_else(|e| panic!("{e}")),
            b.unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(a.body_hash, b.body_hash);
        assert_eq!(a.status, MessageStatus::Accepted);
        assert_eq!(a.channels, vec!["inbox".to_owned()]);
    }

    #[test]
    fn rules_name_the_field() {
        let cases = [
            (
                serde_json::json!({"audience": {"user_ids": ["u1"]}, "channels": ["nope"],
                "content": {"inbox": {"title": "t", "body": "b"}}}),
                "channels[0]",
                "unknown_channel",
            ),
            (
                serde_json::json!({"audience": {"user_ids": ["u1"]}, "channels": ["off"],
                "content": {}}),
                "channels[0]",
                "channel_disabled",
            ),
            (
                serde_json::json!({"audience": {"user_ids": []}, "channels": ["inbox"],
                "content": {"inbox": {"title": "t", "body": "b"}}}),
                "audience.user_ids",
                "invalid_value",
            ),
            (
                serde_json::json!({"audience": {"user_ids": ["u"], "broadcast": true}, "channels": ["inbox"],
                "content": {"inbox": {"title": "t", "body": "b"}}}),
                "audience",
                "invalid_audience",
            ),
            (
                serde_json::json!({"audience": {"addresses": {"sms": ["12ab"]}}, "channels": ["sms"],
                "content": {"sms": {"text": "x"}}}),
                "audience.addresses.sms[0]",
                "invalid_value",
            ),
            (
                serde_json::json!({"audience": {"user_ids": ["u1"]}, "channels": ["inbox", "sms"],
                "content": {"inbox": {"title": "t", "body": "b"}}}),
                "content.sms",
                "missing_content",
            ),
            (
                serde_json::json!({"audience": {"user_ids": ["u1"]}, "channels": ["inbox"],
                "content": {"inbox": {"title": "t"}}}),
                "content.inbox.body",
                "missing_field",
            ),
            (
                serde_json::json!({"message_id": "a b", "audience": {"user_ids": ["u1"]}, "channels": ["inbox"],
                "content": {"inbox": {"title": "t", "body": "b"}}}),
                "message_id",
                "invalid_value",
            ),
            (
                serde_json::json!({"audience": {"user_ids": ["u1"]}, "channels": ["inbox"], "ttl_seconds": 0,
                "content": {"inbox": {"title": "t", "body": "b"}}}),
                "ttl_seconds",
                "invalid_value",
            ),
            (
                serde_json::json!({"audience": {"user_ids": ["u1"]}, "channels": ["inbox"], "send_at": "tomorrow",
                "content": {"inbox": {"title": "t", "body": "b"}}}),
                "send_at",
                "invalid_value",
            ),
            (
                serde_json::json!({"audience": {"user_ids": ["u1"]}, "channels": ["inbox"],
                "send_at": "2020-01-01T00:00:00Z", "content": {"inbox": {"title": "t", "body": "b"}}}),
                "send_at",
                "invalid_value",
            ),
            (
                serde_json::json!({"audience": {"user_ids": ["u1"]}, "channels": ["inbox"],
                "send_at": (Utc::now() + Duration::days(7)).to_rfc3339(),
                "content": {"inbox": {"title": "t", "body": "b"}}}),
                "send_at",
                "invalid_value",
            ),
        ];
        for (body, field, code) in cases {
            let err = req(body.clone())
                .validate(&Two, SendClock::with_retention(Utc::now(), 7))
                .err()
                .unwrap_or_else(|| panic!("accepted {body}"));
            assert_eq!((err.field.as_str(), err.code), (field, code), "{body}");
        }
    }

    #[test]
    fn future_send_at_is_scheduled() {
        let at = (Utc::now() + Duration::hours(1)).to_rfc3339();
        let m = req(
            serde_json::json!({"audience": {"broadcast": true}, "channels": ["inbox"],
            "send_at": at, "content": {"inbox": {"title": "t", "body": "b"}}}),
        )
        .validate(&Two, SendClock::with_retention(Utc::now(), 7))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.status, MessageStatus::Scheduled);
    }
}
