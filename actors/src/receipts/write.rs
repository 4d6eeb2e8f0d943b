//! One flush of a lane: receipts matched to deliveries by provider id (parts of a
//! delivery sent in several tallied), then every change applied in rounds with at most one
//! change per delivery each.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::events::{ReceiptEvent, ReceiptKey};
use crate::domain::{ChannelCode, DeliveryState};
use crate::metrics as m;
use crate::store::status::{AppliedChange, Matched, PartsTally, StatusChange};
use crate::store::{Store, StoreError};

/// A receipt waiting to be matched.
pub(super) struct Held {
    pub event: ReceiptEvent,
    pub first_seen: Instant,
    pub next_try: Instant,
}

/// Receipt states that settle one part of a delivery sent in several.
fn is_part_outcome(state: DeliveryState) -> bool {
    matches!(state, DeliveryState::Delivered | DeliveryState::Undelivered)
}

/// The states a receipt that comes after the delivery's receipt window closed may move it
/// from: a late receipt is still recorded.
pub fn late_from(state: DeliveryState) -> &'static [DeliveryState] {
    match state {
        DeliveryState::Delivered
        | DeliveryState::Undelivered
        | DeliveryState::Read
        | DeliveryState::Clicked => &[DeliveryState::Unknown],
        _ => &[],
    }
}

/// The states a receipt may move a delivery from.
pub fn receipt_from(state: DeliveryState) -> &'static [DeliveryState] {
    use DeliveryState::*;
    match state {
        Delivered | Undelivered => &[Submitted],
        Read => &[Submitted, Delivered],
        Clicked => &[Submitted, Delivered, Read],
        _ => &[],
    }
}

pub(super) type HeldBack = Vec<Held>;
/// Per channel: (provider id, state) of each part report, and the deliveries they name.
type PartReports = (Vec<(String, DeliveryState)>, Vec<i64>);

/// One flush: receipts are matched to deliveries, then everything is applied in rounds
/// with at most one change per delivery each (an `UPDATE … FROM` applies only one).
/// Returns the receipts to try again later.
pub(super) async fn write(
    store: &Store,
    changes: &[(ChannelCode, StatusChange)],
    due: Vec<Held>,
    grace: Duration,
    callback_apps: &HashSet<i32>,
    report: bool,
) -> Result<(HeldBack, Vec<AppliedChange>), (StoreError, HeldBack)> {
    let mut channel_of: HashMap<i64, String> = HashMap::new();
    let mut all: Vec<StatusChange> = Vec::with_capacity(changes.len() + due.len());
    for (ch, c) in changes {
        // Only a provider id to remember needs the channel.
        if c.expect_receipt.is_some() {
            channel_of.insert(c.delivery_id, ch.to_string());
        }
        all.push(c.clone());
    }

    // Match receipts by provider id, per channel.
    let mut by_channel: HashMap<&ChannelCode, Vec<String>> = HashMap::new();
    for h in &due {
        if let ReceiptKey::Provider(pid) = &h.event.key {
            by_channel
                .entry(&h.event.channel)
                .or_default()
                .push(pid.clone());
        }
    }
    let mut matched: HashMap<(ChannelCode, String), Matched> = HashMap::new();
    for (ch, pids) in by_channel {
        match store.match_provider_ids(ch, &pids).await {
            Ok(found) => {
                for (pid, m) in found {
                    matched.insert((ch.clone(), pid), m);
                }
            }
            Err(e) => return Err((e, due)),
        }
    }
    // Deliveries sent in several parts: record each part's outcome, then see how they stand.
    let mut part_reports: HashMap<&str, PartReports> = HashMap::new();
    for h in &due {
        if let ReceiptKey::Provider(pid) = &h.event.key {
            if let Some(m) = matched.get(&(h.event.channel.clone(), pid.clone())) {
                if m.parts > 1 && is_part_outcome(h.event.state) {
                    let e = part_reports.entry(h.event.channel.as_str()).or_default();
                    e.0.push((pid.clone(), h.event.state));
                    e.1.push(m.delivery_id);
                }
            }
        }
    }
    let mut tallies: HashMap<i64, PartsTally> = HashMap::new();
    for (ch, (reports, ids)) in part_reports {
        match store.record_parts(ch, &reports, &ids).await {
            Ok(t) => tallies.extend(t),
            Err(e) => return Err((e, due)),
        }
    }
    // One verdict per delivery sent in parts.
    let mut decided: HashSet<i64> = HashSet::new();
    let now = Instant::now();
    let mut held = Vec::new();
    let mut receipt_count: HashMap<(ChannelCode, &'static str), u64> = HashMap::new();
    // Receipt changes, to try again from `unknown` if they find their delivery moved on.
    let mut from_receipts: Vec<(ChannelCode, StatusChange)> = Vec::new();
    for mut h in due {
        let id = match &h.event.key {
            ReceiptKey::Delivery { id, message_pk } => Some((*id, *message_pk)),
            ReceiptKey::Provider(pid) => {
                match matched.get(&(h.event.channel.clone(), pid.clone())) {
                    Some(m) if m.parts > 1 && is_part_outcome(h.event.state) => {
                        *receipt_count
                            .entry((h.event.channel.clone(), "part"))
                            .or_default() += 1;
                        let Some(t) = tallies.get(&m.delivery_id) else {
                            continue;
                        };
                        let complete = match h.event.state {
                            // The first failed part fails the delivery.
                            DeliveryState::Undelivered => true,
                            _ => t.failed == 0 && t.delivered >= t.parts,
                        };
                        if !complete || !decided.insert(m.delivery_id) {
                            continue;
                        }
                        Some((m.delivery_id, m.message_pk))
                    }
                    Some(m) => Some((m.delivery_id, m.message_pk)),
                    None => None,
                }
            }
        };
        match id {
            Some((id, message_pk)) => {
                *receipt_count
                    .entry((h.event.channel.clone(), h.event.state.as_str()))
                    .or_default() += 1;
                let change = StatusChange {
                    delivery_id: id,
                    message_pk,
                    state: h.event.state,
                    from: receipt_from(h.event.state),
                    provider_id: None,
                    code: h.event.code.clone(),
                    reason: h.event.reason.clone(),
                    attempts: 0,
                    expect_receipt: None,
                    segments: Vec::new(),
                    receipt_by: None,
                    at: h.event.at,
                };
                if !late_from(change.state).is_empty() {
                    from_receipts.push((h.event.channel.clone(), change.clone()));
                }
                all.push(change);
            }
            None if now.duration_since(h.first_seen) < grace => {
                h.next_try = now + Duration::from_secs(1);
                held.push(h);
            }
            None => {
                metrics::counter!(m::RECEIPTS_UNMATCHED_TOTAL, "channel" => h.event.channel.to_string())
                    .increment(1);
                tracing::info!(channel = %h.event.channel, key = ?h.event.key,
                    state = h.event.state.as_str(), "receipt for an unknown delivery ignored");
            }
        }
    }

    // Rounds of unique delivery ids, in arrival order. What applied is needed to find
    // late receipts when there are receipts.
    let report = report || !from_receipts.is_empty();
    let mut reported = match apply_rounds(store, &channel_of, all, callback_apps, report).await {
        Ok(r) => r,
        Err(e) => return Err((e, held)),
    };
    // Receipts that did not apply may have come after their window closed: the delivery
    // is `unknown`. They apply from there, and are counted as late.
    if !from_receipts.is_empty() {
        let applied: HashSet<(i64, DeliveryState)> =
            reported.iter().map(|a| (a.delivery_id, a.state)).collect();
        let mut seen = HashSet::new();
        let mut channel_of_late: HashMap<i64, ChannelCode> = HashMap::new();
        let late: Vec<StatusChange> = from_receipts
            .into_iter()
            .filter(|(_, c)| !applied.contains(&(c.delivery_id, c.state)))
            .filter(|(_, c)| seen.insert(c.delivery_id))
            .map(|(ch, c)| {
                channel_of_late.insert(c.delivery_id, ch);
                StatusChange {
                    from: late_from(c.state),
                    ..c
                }
            })
            .collect();
        if !late.is_empty() {
            let mut again = match apply_rounds(store, &channel_of, late, callback_apps, true).await
            {
                Ok(r) => r,
                Err(e) => return Err((e, held)),
            };
            let mut by_channel: HashMap<&ChannelCode, u64> = HashMap::new();
            for a in &again {
                if let Some(ch) = channel_of_late.get(&a.delivery_id) {
                    *by_channel.entry(ch).or_default() += 1;
                }
            }
            for (ch, n) in by_channel {
                metrics::counter!(m::RECEIPTS_LATE_TOTAL, "channel" => ch.to_string()).increment(n);
            }
            reported.append(&mut again);
        }
    }
    for ((channel, kind), n) in receipt_count {
        metrics::counter!(m::RECEIPTS_TOTAL, "channel" => channel.to_string(), "kind" => kind)
            .increment(n);
    }
    Ok((held, reported))
}

/// Applies `changes` in rounds with at most one change per delivery each (an `UPDATE …
/// FROM` applies only one), in arrival order; returns what applied when `report`.
pub(super) async fn apply_rounds(
    store: &Store,
    channel_of: &HashMap<i64, String>,
    changes: Vec<StatusChange>,
    callback_apps: &HashSet<i32>,
    report: bool,
) -> Result<Vec<AppliedChange>, StoreError> {
    let mut reported = Vec::new();
    let mut rest = changes;
    while !rest.is_empty() {
        let mut seen = HashSet::new();
        let (round, later): (Vec<StatusChange>, Vec<StatusChange>) =
            rest.into_iter().partition(|c| seen.insert(c.delivery_id));
        rest = later;
        metrics::histogram!(m::STATUS_BATCH_SIZE).record(round.len() as f64);
        let mut applied = store
            .apply_changes(channel_of, &round, callback_apps, report)
            .await?;
        reported.append(&mut applied.changes);
        metrics::counter!(m::STATUS_WRITES_TOTAL, "outcome" => "applied")
            .increment(applied.applied as u64);
        metrics::counter!(m::STATUS_WRITES_TOTAL, "outcome" => "stale")
            .increment(applied.stale as u64);
        for (channel, n) in applied.after_fallback {
            metrics::counter!(m::STRATEGY_LATE_RECEIPTS_TOTAL, "channel" => channel).increment(n);
        }
    }
    Ok(reported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryState::*;

    #[test]
    fn receipts_move_deliveries_from_these_states_and_late_ones_from_unknown() {
        let table: [(DeliveryState, &[DeliveryState], &[DeliveryState]); 6] = [
            (Delivered, &[Submitted], &[Unknown]),
            (Undelivered, &[Submitted], &[Unknown]),
            (Read, &[Submitted, Delivered], &[Unknown]),
            (Clicked, &[Submitted, Delivered, Read], &[Unknown]),
            (Submitted, &[], &[]),
            (Unknown, &[], &[]),
        ];
        for (state, from, late) in table {
            assert_eq!(receipt_from(state), from, "{state:?}");
            assert_eq!(late_from(state), late, "{state:?}");
        }
    }
}
