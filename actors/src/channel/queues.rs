//! A channel sender's three in-memory priority queues.
//!
//! High goes before normal before low, with aging: when the oldest entry of a lower queue
//! has waited longer than `aging`, it goes first, so a steady stream of high-priority work
//! slows low-priority work down but never starves it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::domain::{MessagePk, Priority};
use crate::store::dispatch::QueuedDelivery;

#[derive(Debug)]
pub struct Entry {
    pub delivery: QueuedDelivery,
    pub since: Instant,
}

#[derive(Debug)]
pub struct PriorityQueues {
    queues: [VecDeque<Entry>; 3],
    aging: Duration,
}

fn slot(p: Priority) -> usize {
    match p {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

impl PriorityQueues {
    pub fn new(aging: Duration) -> Self {
        Self {
            queues: Default::default(),
            aging,
        }
    }

    pub fn push(&mut self, delivery: QueuedDelivery, since: Instant) {
        self.queues[slot(delivery.priority)].push_back(Entry { delivery, since });
    }

    /// Puts an entry back at the head of its queue (a throttled attempt goes first again).
    pub fn push_front(&mut self, entry: Entry) {
        self.queues[slot(entry.delivery.priority)].push_front(entry);
    }

    pub fn len(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }

    pub fn len_of(&self, p: Priority) -> usize {
        self.queues[slot(p)].len()
    }

    /// The queue the next batch comes from.
    fn pick(&self, now: Instant) -> Option<usize> {
        // An aged lower queue first (the oldest of them), then strict priority.
        let aged = (1..3)
            .rev()
            .filter_map(|i| {
                let head = self.queues[i].front()?;
                (now.duration_since(head.since) >= self.aging).then_some((head.since, i))
            })
            .min();
        if let Some((_, i)) = aged {
            return Some(i);
        }
        (0..3).find(|i| !self.queues[*i].is_empty())
    }

    /// How many entries the next batch would take: the head of the chosen queue and the
    /// entries right behind it of the same message, up to `max`.
    pub fn peek_batch(&self, now: Instant, max: usize) -> Option<(usize, MessagePk)> {
        let q = &self.queues[self.pick(now)?];
        let first = q.front()?.delivery.message_pk;
        let n = q
            .iter()
            .take(max.max(1))
            .take_while(|e| e.delivery.message_pk == first)
            .count();
        Some((n, first))
    }

    /// Drops every entry of a message (it was recalled); answers how many.
    pub fn forget(&mut self, message: MessagePk) -> usize {
        let before = self.len();
        for q in &mut self.queues {
            q.retain(|e| e.delivery.message_pk != message);
        }
        before - self.len()
    }

    /// Takes the batch `peek_batch` described (`n` entries from the chosen queue).
    pub fn take_batch(&mut self, now: Instant, n: usize) -> Vec<Entry> {
        let Some(i) = self.pick(now) else {
            return Vec::new();
        };
        let q = &mut self.queues[i];
        let n = n.min(q.len());
        q.drain(..n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: i64, msg: i64, p: Priority) -> QueuedDelivery {
        QueuedDelivery {
            delivery_id: id,
            priority: p,
            message_pk: MessagePk(msg),
            app_id: 1,
            user_id: None,
            address: "a".into(),
            attempts: 0,
        }
    }

    #[test]
    fn high_goes_first_and_batches_stay_within_one_message() {
        let mut q = PriorityQueues::new(Duration::from_secs(60));
        let now = Instant::now();
        q.push(d(1, 10, Priority::Low), now);
        q.push(d(2, 11, Priority::Normal), now);
        q.push(d(3, 12, Priority::High), now);
        q.push(d(4, 12, Priority::High), now);
        q.push(d(5, 13, Priority::High), now);
        assert_eq!(q.peek_batch(now, 10).map(|b| b.0), Some(2));
        let b = q.take_batch(now, 2);
        assert_eq!(
            b.iter().map(|e| e.delivery.delivery_id).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(q.take_batch(now, 1)[0].delivery.delivery_id, 5);
        assert_eq!(q.take_batch(now, 1)[0].delivery.delivery_id, 2);
        assert_eq!(q.take_batch(now, 1)[0].delivery.delivery_id, 1);
        assert!(q.is_empty());
    }

    #[test]
    fn an_aged_low_entry_overtakes_high_work() {
        let mut q = PriorityQueues::new(Duration::from_secs(5));
        let start = Instant::now();
        q.push(d(1, 10, Priority::Low), start);
        let later = start + Duration::from_secs(6);
        q.push(d(2, 11, Priority::High), later);
        assert_eq!(q.take_batch(later, 1)[0].delivery.delivery_id, 1);
        assert_eq!(q.take_batch(later, 1)[0].delivery.delivery_id, 2);
    }
}
