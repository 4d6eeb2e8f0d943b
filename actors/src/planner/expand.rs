//! A message's targets as deliveries: one per (target, channel), queued when it can go
//! out, or written lost with the reason it cannot (`unknown_user`, `user_disabled`,
//! `channel_disabled`, `no_address`). Pure apart from taking delivery ids.

use std::collections::BTreeMap;

use super::targets::{address_for, PlanChannel};
use crate::domain::ids::IdGenerator;
use crate::domain::DeliveryState;
use crate::store::plan::{NewDelivery, ResolvedUser};

/// Deliveries to direct addresses, per channel code (channels the message does not name
/// are ignored).
pub fn to_addresses(
    ids: &IdGenerator,
    channels: &[PlanChannel],
    addresses: &BTreeMap<String, Vec<String>>,
) -> Vec<NewDelivery> {
    let mut out = Vec::new();
    for (code, list) in addresses {
        let Some(ch) = channels.iter().find(|c| &c.code == code) else {
            continue;
        };
        for addr in list {
            out.push(delivery(ids, ch, None, Some(addr.clone())));
        }
    }
    out
}

/// Deliveries to users (`None`: the id is not a user of the app) on every channel.
pub fn to_users(
    ids: &IdGenerator,
    channels: &[PlanChannel],
    users: &[(String, Option<ResolvedUser>)],
    out: &mut Vec<NewDelivery>,
) {
    for (user_id, user) in users {
        for ch in channels {
            out.push(user_delivery(ids, ch, user_id, user.as_ref()));
        }
    }
}

fn delivery(
    ids: &IdGenerator,
    ch: &PlanChannel,
    user_id: Option<String>,
    addr: Option<String>,
) -> NewDelivery {
    let (state, reason) = if !ch.usable {
        (DeliveryState::Filtered, Some("channel_disabled"))
    } else {
        (DeliveryState::Queued, None)
    };
    NewDelivery {
        id: ids.next_id(),
        channel_code: ch.code.clone(),
        user_id,
        address: addr,
        state,
        reason,
        step: ch.step,
    }
}

fn user_delivery(
    ids: &IdGenerator,
    ch: &PlanChannel,
    user_id: &str,
    user: Option<&ResolvedUser>,
) -> NewDelivery {
    let lost = |state, reason| NewDelivery {
        id: ids.next_id(),
        channel_code: ch.code.clone(),
        user_id: Some(user_id.to_owned()),
        address: None,
        state,
        reason: Some(reason),
        step: ch.step,
    };
    let Some(user) = user else {
        return lost(DeliveryState::Filtered, "unknown_user");
    };
    if !user.enabled {
        return lost(DeliveryState::Filtered, "user_disabled");
    }
    if !ch.usable {
        return lost(DeliveryState::Filtered, "channel_disabled");
    }
    match address_for(user, &ch.code, ch.channel_type) {
        Some(addr) => delivery(ids, ch, Some(user_id.to_owned()), Some(addr)),
        None => lost(DeliveryState::Failed, "no_address"),
    }
}
