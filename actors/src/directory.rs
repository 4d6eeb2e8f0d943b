//! The in-memory directory of apps, channels and grants that every request consults.
//!
//! Loaded from PostgreSQL at start and reloaded after each admin change and periodically
//! (so several nodes converge). Readers take a cheap `Arc` clone of the current snapshot;
//! a reload swaps the whole snapshot, never mutates one in place. A channel's settings are
//! parsed here, once per change of its row: what the senders run and the inbound
//! endpoints verify with is the typed [`ChannelConfig`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::channel::config::{ChannelConfig, ChannelRow};
use crate::domain::app::secret_matches;
use crate::domain::send::{ChannelAccess, ChannelLookup};
use crate::domain::{ChannelCode, ChannelType};
use crate::providers::contract::SettingsError;
use crate::store::directory::{self as rows, DirectoryRows};
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
        secret_matches(&self.salt, &self.secret_hash, secret)
    }
}

#[derive(Debug, Clone)]
pub struct ChannelEntry {
    pub code: ChannelCode,
    pub channel_type: ChannelType,
    pub enabled: bool,
    pub rate_per_second: Option<f64>,
    pub burst: Option<i32>,
    pub pool_size: Option<i32>,
    /// Provider settings as stored, credentials included: never returned by the API as
    /// they are.
    pub settings: serde_json::Value,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// The settings parsed, or what is wrong with them.
    pub config: Result<Arc<ChannelConfig>, SettingsError>,
}

impl ChannelEntry {
    /// Builds an entry from its row, parsing its settings.
    pub fn new(row: rows::ChannelRow) -> Self {
        let config = ChannelConfig::parse(ChannelRow {
            code: &row.code,
            channel_type: row.channel_type,
            rate_per_second: row.rate_per_second,
            burst: row.burst,
            pool_size: row.pool_size,
            settings: &row.settings,
        })
        .map(Arc::new);
        Self::with_config(row, config)
    }

    fn with_config(
        row: rows::ChannelRow,
        config: Result<Arc<ChannelConfig>, SettingsError>,
    ) -> Self {
        Self {
            code: row.code,
            channel_type: row.channel_type,
            enabled: row.enabled,
            rate_per_second: row.rate_per_second,
            burst: row.burst,
            pool_size: row.pool_size,
            settings: row.settings,
            updated_at: row.updated_at,
            config,
        }
    }

    /// Whether two entries run the same way (a sender started from one need not restart
    /// for the other).
    pub fn same_as(&self, other: &ChannelEntry) -> bool {
        self.code == other.code
            && self.channel_type == other.channel_type
            && self.enabled == other.enabled
            && self.rate_per_second == other.rate_per_second
            && self.burst == other.burst
            && self.pool_size == other.pool_size
            && self.settings == other.settings
            && self.updated_at == other.updated_at
    }

    /// The same row as this entry's: its parsed settings can be kept.
    fn same_row(&self, row: &rows::ChannelRow) -> bool {
        self.code == row.code
            && self.channel_type == row.channel_type
            && self.rate_per_second == row.rate_per_second
            && self.burst == row.burst
            && self.pool_size == row.pool_size
            && self.settings == row.settings
            && self.updated_at == row.updated_at
    }
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub apps: HashMap<String, AppEntry>,
    pub channels: HashMap<ChannelCode, ChannelEntry>,
}

impl Snapshot {
    /// Builds a snapshot from the stored rows; a channel whose row did not change since
    /// `previous` keeps its parsed settings.
    pub fn build(rows: DirectoryRows, previous: Option<&Snapshot>) -> Self {
        let mut apps: HashMap<String, AppEntry> = rows
            .apps
            .into_iter()
            .map(|a| {
                (
                    a.key.clone(),
                    AppEntry {
                        id: a.id,
                        key: a.key,
                        name: a.name,
                        salt: a.salt,
                        secret_hash: a.secret_hash,
                        enabled: a.enabled,
                        grants: HashMap::new(),
                    },
                )
            })
            .collect();
        let by_id: HashMap<i32, String> = apps.values().map(|a| (a.id, a.key.clone())).collect();
        for g in rows.grants {
            if let Some(app) = by_id.get(&g.app_id).and_then(|k| apps.get_mut(k)) {
                app.grants.insert(g.channel_code, g.enabled);
            }
        }
        let channels = rows
            .channels
            .into_iter()
            .map(|row| {
                let kept = previous
                    .and_then(|p| p.channels.get(&row.code))
                    .filter(|e| e.same_row(&row))
                    .map(|e| e.config.clone());
                let entry = match kept {
                    Some(config) => ChannelEntry::with_config(row, config),
                    None => ChannelEntry::new(row),
                };
                (entry.code.clone(), entry)
            })
            .collect();
        Self { apps, channels }
    }
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

    /// Reads the registry again and swaps the snapshot.
    pub async fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let rows = store.load_directory().await?;
        let fresh = Arc::new(Snapshot::build(rows, Some(&self.snapshot())));
        match self.current.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// Loads the registry for the first time.
    pub async fn load(store: &Store) -> Result<Self, StoreError> {
        let rows = store.load_directory().await?;
        Ok(Self::new(Snapshot::build(rows, None)))
    }
}
