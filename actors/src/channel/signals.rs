//! Per-channel "work was queued" signals between the planner and the channel senders.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI16, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use crate::domain::Priority;

/// Per-channel "work was queued" signals: the planner wakes a channel's sender after it
/// commits deliveries for it, so the sender need not poll the database.
#[derive(Debug, Default)]
pub struct WorkSignals {
    map: RwLock<HashMap<String, Arc<Signal>>>,
}

/// One channel's signal, with the most urgent priority queued since the sender last
/// looked (so it knows whether new work may sort before where its listing stands).
#[derive(Debug)]
pub struct Signal {
    notify: Notify,
    best: AtomicI16,
}

/// `best` when nothing was queued since the last look.
const NONE: i16 = i16::MAX;

impl Default for Signal {
    fn default() -> Self {
        Self {
            notify: Notify::new(),
            best: AtomicI16::new(NONE),
        }
    }
}

impl Signal {
    /// Waits for the next wake-up.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// The most urgent priority queued since the last call, if any.
    pub fn take_best(&self) -> Option<Priority> {
        match self.best.swap(NONE, Ordering::Relaxed) {
            NONE => None,
            p => Priority::from_i16(p),
        }
    }
}

impl WorkSignals {
    pub fn get(&self, code: &str) -> Arc<Signal> {
        if let Ok(map) = self.map.read() {
            if let Some(n) = map.get(code) {
                return n.clone();
            }
        }
        match self.map.write() {
            Ok(mut map) => map.entry(code.to_owned()).or_default().clone(),
            Err(poisoned) => poisoned
                .into_inner()
                .entry(code.to_owned())
                .or_default()
                .clone(),
        }
    }

    /// Work of `priority` (at best) was queued on `code`.
    pub fn wake(&self, code: &str, priority: Priority) {
        let signal = self.get(code);
        signal.best.fetch_min(priority.as_i16(), Ordering::Relaxed);
        signal.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_urgent_priority_is_kept_until_taken() {
        let s = WorkSignals::default();
        s.wake("a", Priority::Low);
        s.wake("a", Priority::High);
        s.wake("a", Priority::Normal);
        let a = s.get("a");
        assert_eq!(a.take_best(), Some(Priority::High));
        assert_eq!(a.take_best(), None);
        assert_eq!(s.get("b").take_best(), None);
    }
}
