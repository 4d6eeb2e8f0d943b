//! The in-memory directory of apps, channels and grants that every request consults.
//!
//! Loaded from PostgreSQL at start and reloaded after each admin change and periodically
//! (so several nodes converge). Readers take a cheap `Arc` clone of the current snapshot;
//! a reload swaps the whole snapshot, never mutates one in place.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::domain::send::{ChannelAccess, ChannelLookup};
use crate::domain::ChannelType;
use crate::store::directory::hash_secret;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct AppEntry {
    pub id: i32,
    pub key: String,
    pub name: String,
    pub salt: Vec<u8>,
    pub secret_hash: Vec<u8>,
    pub enabled: bool,
    /// channel code → enabled by the app
    pub grants: HashMap<String, bool>,
}

impl AppEntry {
    /// Constant-time comparison of the presented secret's hash with the stored one.
    pub fn verify(&self, secret: &str) -> bool {
        let presented = hash_secret(&self.salt, secret);
        presented.len() == self.secret_hash.len()
            && presented
                .iter()
                .zip(self.secret_hash.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChannelEntry {
    pub code: String,
    pub channel_type: ChannelType,
    pub enabled: bool,
    pub rate_per_second: Option<f64>,
    pub burst: Option<i32>,
    pub pool_size: Option<i32>,
    /// Provider settings, credentials included: never returned by the API as they are.
    pub settings: serde_json::Value,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub apps: HashMap<String, AppEntry>,
    pub channels: HashMap<String, ChannelEntry>,
}

/// An app's view of the channels: what validation of its sends consults.
pub struct AppChannels<'a> {
    pub snapshot: &'a Snapshot,
    pub app: &'a AppEntry,
}

impl ChannelLookup for AppChannels<'_> {
    fn access(&self, code: &str) -> ChannelAccess {
        let (Some(granted), Some(channel)) =
            (self.app.grants.get(code), self.snapshot.channels.get(code))
        else {
            return ChannelAccess::Unknown;
        };
        if *granted && channel.enabled {
            ChannelAccess::Usable(channel.channel_type)
        } else {
            ChannelAccess::Disabled
        }
    }
}

#[derive(Debug, Default)]
pub struct Directory {
    current: RwLock<Arc<Snapshot>>,
}

impl Directory {
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: RwLock::new(Arc::new(snapshot)),
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub async fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let fresh = Arc::new(store.load_directory().await?);
        match self.current.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }
}
