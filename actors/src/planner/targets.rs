//! Who a message goes to on which channel: pure functions over the directory snapshot and
//! the resolved users, tested by tables. The planner does the I/O around them.

use std::collections::HashSet;

use crate::directory::Snapshot;
use crate::domain::ChannelType;
use crate::store::plan::ResolvedUser;

/// A message's channel as the planner sees it.
pub struct PlanChannel {
    pub code: String,
    pub channel_type: ChannelType,
    /// Configured, switched on, granted to the app and not switched off by it.
    pub usable: bool,
    /// The strategy step it is, for a message sent with a strategy.
    pub step: Option<i16>,
}

pub fn resolve_channels(snapshot: &Snapshot, app_id: i32, codes: &[String]) -> Vec<PlanChannel> {
    let app = snapshot.apps.values().find(|a| a.id == app_id);
    codes
        .iter()
        .map(|code| {
            let channel = snapshot.channels.get(code.as_str());
            let granted = app
                .and_then(|a| a.grants.get(code))
                .copied()
                .unwrap_or(false);
            PlanChannel {
                code: code.clone(),
                channel_type: channel.map_or(ChannelType::Inbox, |c| c.channel_type),
                usable: granted
                    && app.is_some_and(|a| a.enabled)
                    && channel.is_some_and(|c| c.enabled),
                step: None,
            }
        })
        .collect()
}

/// Pairs every requested id (once, in the order given) with its user, `None` for ids that
/// are not users.
pub fn with_unknown(
    ids: &[String],
    find: impl Fn(&str) -> Option<ResolvedUser>,
) -> Vec<(String, Option<ResolvedUser>)> {
    let mut seen = HashSet::new();
    ids.iter()
        .filter(|id| seen.insert(id.as_str()))
        .map(|id| (id.clone(), find(id)))
        .collect()
}

/// The user's address on a channel: the binding of the channel type's binding type with
/// the narrowest matching scope. The inbox is addressed by the user id itself.
pub fn address_for(user: &ResolvedUser, code: &str, ty: ChannelType) -> Option<String> {
    let Some(binding_type) = ty.binding_type() else {
        return Some(user.user_id.clone());
    };
    let channel_scope = format!("channel:{code}");
    let rank = |scope: &str| {
        if scope == channel_scope {
            Some(0)
        } else if scope == "app" {
            Some(1)
        } else if scope == "all" {
            Some(2)
        } else {
            None
        }
    };
    user.bindings
        .iter()
        .filter(|(t, _, _)| t == binding_type)
        .filter_map(|(_, v, s)| rank(s).map(|r| (r, v)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, v)| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(bindings: &[(&str, &str, &str)]) -> ResolvedUser {
        ResolvedUser {
            user_id: "u1".into(),
            enabled: true,
            bindings: bindings
                .iter()
                .map(|(t, v, s)| (t.to_string(), v.to_string(), s.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_narrowest_scope_wins() {
        let u = user(&[
            ("email", "all@x.io", "all"),
            ("email", "app@x.io", "app"),
            ("email", "ch@x.io", "channel:mail2"),
        ]);
        assert_eq!(
            address_for(&u, "mail2", ChannelType::Email).as_deref(),
            Some("ch@x.io")
        );
        assert_eq!(
            address_for(&u, "mail1", ChannelType::Email).as_deref(),
            Some("app@x.io")
        );
        let u = user(&[
            ("email", "all@x.io", "all"),
            ("phone", "+8613800138000", "all"),
        ]);
        assert_eq!(
            address_for(&u, "mail1", ChannelType::Email).as_deref(),
            Some("all@x.io")
        );
        assert_eq!(address_for(&u, "push", ChannelType::Jpush), None);
        assert_eq!(
            address_for(&u, "inbox", ChannelType::Inbox).as_deref(),
            Some("u1")
        );
    }
}
