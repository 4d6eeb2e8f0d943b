//! The messages a sender has work for, as it tracks them, and which of them to pull next
//! within the room of its backlog: a pure decision, tested below.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::{MessagePk, Priority};
use crate::store::dispatch::DispatchRow;

/// Messages listed per pull.
pub const DISPATCH_ROWS: i64 = 1000;
/// Most deliveries of one message per pull.
pub const PULL_PER_MESSAGE: usize = 1000;
/// Extra room for high-priority work beyond `backlog`, so it never waits behind a full
/// in-memory backlog of lower-priority deliveries.
pub const HIGH_HEADROOM: usize = 256;

/// A message's content for this channel, with the message's expiry (`ttl_seconds`).
pub type Content = (Arc<Value>, Option<DateTime<Utc>>);

/// A message with queued deliveries on this channel, as the sender tracks it.
pub struct MessageWork {
    pub row: DispatchRow,
    /// The highest delivery id pulled so far.
    pub after: i64,
    /// `pages` of the dispatch row when a pull found nothing more: drained until a page is
    /// added.
    pub drained_at: Option<i32>,
    /// Content for this channel and the message's expiry (`None` when it has none).
    pub content: Option<Content>,
    pub content_loaded: bool,
    /// Rate-limit permits per delivery (the provider's `cost` of the content).
    pub cost: Option<u32>,
    /// Its deliveries held in memory (queued, waiting to retry, in flight).
    pub held: usize,
    /// Its dispatch row is being removed.
    pub finishing: bool,
}

impl MessageWork {
    pub fn new(row: DispatchRow) -> Self {
        Self {
            row,
            after: 0,
            drained_at: None,
            content: None,
            content_loaded: false,
            cost: None,
            held: 0,
            finishing: false,
        }
    }
}

/// One message to pull: its row, the id to pull after, and how many at most.
pub type Want = (DispatchRow, i64, i64);

/// Which listed messages to pull, and how many of each, within the room of the in-memory
/// backlog (high priority has extra room). Also answers the first listed message with new
/// work that was left out for want of room, so the sender lists again from there as room
/// frees up.
///
/// `known` answers, for a message the sender already pulled from, the highest delivery id
/// pulled and the `pages` at which it was found drained.
pub fn plan_pull(
    rows: &[DispatchRow],
    known: impl Fn(MessagePk) -> Option<(i64, Option<i32>)>,
    room: usize,
    high_room: usize,
) -> (Vec<Want>, Option<usize>) {
    let mut wants = Vec::new();
    let mut left_out = None;
    let (mut left, mut left_high) = (room, high_room);
    for (i, row) in rows.iter().enumerate() {
        let (after, drained_at) = known(row.message_pk).unwrap_or((0, None));
        if drained_at == Some(row.pages) {
            continue; // nothing new since it was drained
        }
        let budget = if row.priority == Priority::High {
            left_high
        } else {
            left
        };
        let lim = budget.min(PULL_PER_MESSAGE);
        if lim == 0 {
            left_out = left_out.or(Some(i));
            continue;
        }
        wants.push((*row, after, lim as i64));
        left = left.saturating_sub(lim);
        left_high = left_high.saturating_sub(lim);
    }
    (wants, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pk: i64, priority: Priority) -> DispatchRow {
        DispatchRow {
            message_pk: MessagePk(pk),
            priority,
            app_id: 1,
            pages: 1,
        }
    }

    #[test]
    fn a_pull_that_runs_out_of_room_says_so() {
        // Three messages, room for two full pulls: the third is left out, and the sender
        // must know to pull again even if the first two turn out nearly empty.
        let rows: Vec<DispatchRow> = (1..=3).map(|pk| row(pk, Priority::Normal)).collect();
        let (wants, left_out) = plan_pull(&rows, |_| None, 2 * PULL_PER_MESSAGE, 0);
        assert_eq!(wants.len(), 2);
        assert_eq!(left_out, Some(2));
        let (wants, left_out) = plan_pull(&rows, |_| None, 3 * PULL_PER_MESSAGE, 0);
        assert_eq!(wants.len(), 3);
        assert_eq!(left_out, None);
    }

    #[test]
    fn drained_messages_take_no_room_and_high_priority_has_its_own() {
        let rows = vec![
            row(1, Priority::Normal),
            row(2, Priority::Normal),
            row(3, Priority::High),
        ];
        // message 1 was drained at these pages
        let known = |pk: MessagePk| (pk == MessagePk(1)).then_some((500, Some(1)));
        let (wants, left_out) = plan_pull(&rows, known, 10, 10 + HIGH_HEADROOM);
        let pks: Vec<(i64, i64)> = wants.iter().map(|w| (w.0.message_pk.0, w.2)).collect();
        assert_eq!(pks, vec![(2, 10), (3, HIGH_HEADROOM as i64)]);
        assert_eq!(left_out, None);
    }
}
