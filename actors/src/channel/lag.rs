//! How far dispatch is behind, per channel and priority: the age of the oldest message
//! with deliveries still queued there (`dispatch_queue`), measured every second. The
//! ingest refuses a send that names a channel whose work ahead of it is older than the
//! bound — a message accepted then would wait behind it — so a channel that cannot keep
//! up (a provider down and retried, a broadcast on a slow rate limit) says so at the door
//! instead of accepting work it cannot deliver in reasonable time.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::Priority;

/// The oldest queued message per channel, by priority (high, normal, low).
pub type Oldest = [Option<DateTime<Utc>>; 3];

#[derive(Debug, Default)]
pub struct DispatchLag {
    oldest: RwLock<HashMap<String, Oldest>>,
}

impl DispatchLag {
    /// A measurement of every channel.
    pub fn set(&self, oldest: HashMap<String, Oldest>) {
        match self.oldest.write() {
            Ok(mut g) => *g = oldest,
            Err(p) => *p.into_inner() = oldest,
        }
    }

    /// The first of `channels` whose queued work ahead of a `priority` message is older
    /// than `max_lag` (high priority: twice as old), with that age.
    pub fn behind(
        &self,
        channels: &[String],
        priority: Priority,
        now: DateTime<Utc>,
        max_lag: Duration,
    ) -> Option<(String, Duration)> {
        let g = match self.oldest.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        channels.iter().find_map(|c| {
            let oldest = g.get(c)?;
            admit_dispatch(oldest, priority, now, max_lag).map(|age| (c.clone(), age))
        })
    }
}

/// The admission rule: work of the same or a more urgent priority goes before a message;
/// when the oldest of it is older than `max_lag` (high priority: twice), the answer is its
/// age. Zero means no bound.
pub fn admit_dispatch(
    oldest: &Oldest,
    priority: Priority,
    now: DateTime<Utc>,
    max_lag: Duration,
) -> Option<Duration> {
    if max_lag.is_zero() {
        return None;
    }
    let factor: u32 = if priority == Priority::High { 2 } else { 1 };
    let ahead = oldest
        .iter()
        .take(priority.as_i16().clamp(0, 2) as usize + 1)
        .flatten()
        .min()?;
    let age = (now - *ahead).to_std().unwrap_or(Duration::ZERO);
    (age > max_lag * factor).then_some(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_waits_behind_work_of_its_priority_or_more_urgent() {
        let now = Utc::now();
        let ago = |s: i64| Some(now - chrono::Duration::seconds(s));
        let bound = Duration::from_secs(60);
        let table: [(Oldest, Priority, Option<u64>); 8] = [
            ([None, None, None], Priority::Normal, None),
            ([None, ago(30), None], Priority::Normal, None),
            ([None, ago(90), None], Priority::Normal, Some(90)),
            // Old low-priority work does not hold up normal or high sends.
            ([None, None, ago(900)], Priority::Normal, None),
            ([None, None, ago(900)], Priority::Low, Some(900)),
            // Old normal work: a high send is held to twice the bound.
            ([None, ago(90), None], Priority::High, None),
            ([ago(130), ago(90), None], Priority::High, Some(130)),
            ([ago(10), ago(90), None], Priority::Low, Some(90)),
        ];
        for (oldest, priority, want) in table {
            let got = admit_dispatch(&oldest, priority, now, bound).map(|d| d.as_secs());
            assert_eq!(got, want, "{oldest:?} {priority:?}");
        }
        assert_eq!(
            admit_dispatch(&[ago(900), None, None], Priority::Low, now, Duration::ZERO),
            None,
            "zero: no bound"
        );
    }
}
