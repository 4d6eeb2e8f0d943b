//! How long a delivery waits before it is tried again, and the retries waiting for it.

use std::time::{Duration, Instant};

use super::queues::Entry;

/// Retry timing: exponential backoff with ±20 % jitter, capped, for a bounded number of
/// attempts.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: i16,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`, after `attempt` failed attempts (≥ 1).
    pub fn delay(&self, attempt: i16) -> Duration {
        let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 20)).unwrap_or(0);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.max);
        let jitter = rand::random_range(0.8..1.2);
        raw.mul_f64(jitter)
    }
}

/// A retry waiting for its backoff. Ordered so that a `BinaryHeap`'s top is the soonest
/// due (and, at the same instant, the earliest queued).
pub struct Delayed {
    pub due: Instant,
    pub seq: u64,
    pub entry: Entry,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let d1 = p.delay(1);
        assert!(d1 >= Duration::from_millis(80) && d1 <= Duration::from_millis(120));
        let d3 = p.delay(3);
        assert!(d3 >= Duration::from_millis(320) && d3 <= Duration::from_millis(480));
        assert!(p.delay(12) <= Duration::from_millis(1200));
    }

    #[test]
    fn retries_come_due_soonest_first_then_in_queue_order() {
        use crate::domain::{MessagePk, Priority};
        use crate::store::dispatch::QueuedDelivery;
        use std::collections::BinaryHeap;
        let t0 = Instant::now();
        let entry = |id: i64| Entry {
            delivery: QueuedDelivery {
                delivery_id: id,
                priority: Priority::Normal,
                message_pk: MessagePk(1),
                app_id: 1,
                user_id: None,
                address: String::new(),
                attempts: 1,
            },
            since: t0,
        };
        let mut heap = BinaryHeap::new();
        for (id, due_ms, seq) in [(1, 30, 1), (2, 10, 2), (3, 30, 3), (4, 20, 4)] {
            heap.push(Delayed {
                due: t0 + Duration::from_millis(due_ms),
                seq,
                entry: entry(id),
            });
        }
        let order: Vec<i64> = std::iter::from_fn(|| heap.pop())
            .map(|d| d.entry.delivery.delivery_id)
            .collect();
        assert_eq!(order, vec![2, 4, 1, 3]);
    }
}
