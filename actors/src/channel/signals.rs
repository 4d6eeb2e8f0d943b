//! Per-channel "work was queued" signals between the planner and the channel senders.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

/// Per-channel "work was queued" signals: the planner wakes a channel's sender after it
/// commits deliveries for it, so the sender need not poll the database.
#[derive(Debug, Default)]
pub struct WorkSignals {
    map: RwLock<HashMap<String, Arc<Notify>>>,
}

impl WorkSignals {
    pub fn get(&self, code: &str) -> Arc<Notify> {
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

    pub fn wake(&self, code: &str) {
        self.get(code).notify_one();
    }
}
