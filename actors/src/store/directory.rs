//! Registry tables: apps, channels and grants — loading them for the in-memory
//! directory and writing them from config or the admin API.

use rand::RngCore;
use serde_json::Value;

use super::{Store, StoreError};
use crate::domain::app::hash_secret;
use crate::domain::{ChannelCode, ChannelType};

/// An app as declared in the configuration file.
#[derive(Debug, Clone)]
pub struct AppSpec {
    pub key: String,
    pub name: String,
    pub secret: String,
    pub enabled: bool,
    pub grants: Vec<String>,
}

/// A channel as declared in the configuration file or sent to `PUT /admin/channels/{code}`.
#[derive(Debug, Clone)]
pub struct ChannelSpec {
    pub code: String,
    pub channel_type: ChannelType,
    pub enabled: bool,
    pub rate_per_second: Option<f64>,
    pub burst: Option<i32>,
    pub pool_size: Option<i32>,
    pub settings: Value,
}

/// The registry as stored, for the in-memory directory to be built from.
#[derive(Debug, Clone, Default)]
pub struct DirectoryRows {
    pub apps: Vec<AppRow>,
    pub channels: Vec<ChannelRow>,
    pub grants: Vec<GrantRow>,
}

#[derive(Debug, Clone)]
pub struct AppRow {
    pub id: i32,
    pub key: String,
    pub name: String,
    pub salt: Vec<u8>,
    pub secret_hash: Vec<u8>,
    pub enabled: bool,
}

#[derive(Debug, Clone)]
pub struct ChannelRow {
    pub code: ChannelCode,
    pub channel_type: ChannelType,
    pub enabled: bool,
    pub rate_per_second: Option<f64>,
    pub burst: Option<i32>,
    pub pool_size: Option<i32>,
    /// Provider settings, credentials included.
    pub settings: Value,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone)]
pub struct GrantRow {
    pub app_id: i32,
    pub channel_code: String,
    pub enabled: bool,
}

fn new_salt() -> [u8; 16] {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    salt
}

impl Store {
    /// Reads apps, channels and grants as stored.
    pub async fn load_directory(&self) -> Result<DirectoryRows, StoreError> {
        let client = self.client().await?;
        let apps = client
            .query(
                "SELECT id, app_key, name, secret_salt, secret_hash, enabled FROM apps",
                &[],
            )
            .await?
            .into_iter()
            .map(|row| AppRow {
                id: row.get(0),
                key: row.get(1),
                name: row.get(2),
                salt: row.get(3),
                secret_hash: row.get(4),
                enabled: row.get(5),
            })
            .collect();
        let mut channels = Vec::new();
        for row in client
            .query(
                "SELECT code, type, enabled, rate_per_second, burst, pool_size, settings,
                        updated_at
                 FROM channels",
                &[],
            )
            .await?
        {
            let code: String = row.get(0);
            let ty: String = row.get(1);
            let Some(channel_type) = ChannelType::parse(&ty) else {
                tracing::warn!(%code, %ty, "channel of unknown type ignored");
                continue;
            };
            channels.push(ChannelRow {
                code: ChannelCode::from_stored(&code),
                channel_type,
                enabled: row.get(2),
                rate_per_second: row.get(3),
                burst: row.get(4),
                pool_size: row.get(5),
                settings: row.get(6),
                updated_at: row.get(7),
            });
        }
        let grants = client
            .query("SELECT app_id, channel_code, enabled FROM grants", &[])
            .await?
            .into_iter()
            .map(|row| GrantRow {
                app_id: row.get(0),
                channel_code: row.get(1),
                enabled: row.get(2),
            })
            .collect();
        Ok(DirectoryRows {
            apps,
            channels,
            grants,
        })
    }

    /// Creates or updates the configured channels, apps and grants in one transaction.
    /// Idempotent: running it twice with the same input changes nothing the second time
    /// (an app's secret hash is rewritten only when the secret changed).
    pub async fn bootstrap(
        &self,
        channels: &[ChannelSpec],
        apps: &[AppSpec],
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for ch in channels {
            tx.execute(
                "INSERT INTO channels (code, type, enabled, rate_per_second, burst, pool_size,
                                       settings, source)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'config')
                 ON CONFLICT (code) DO UPDATE SET
                     enabled = EXCLUDED.enabled, rate_per_second = EXCLUDED.rate_per_second,
                     burst = EXCLUDED.burst, pool_size = EXCLUDED.pool_size,
                     settings = EXCLUDED.settings, source = 'config', updated_at = now()
                 WHERE channels.type = EXCLUDED.type",
                &[
                    &ch.code,
                    &ch.channel_type.as_str(),
                    &ch.enabled,
                    &ch.rate_per_second,
                    &ch.burst,
                    &ch.pool_size,
                    &ch.settings,
                ],
            )
            .await?;
            let row = tx
                .query_one("SELECT type FROM channels WHERE code = $1", &[&ch.code])
                .await?;
            let existing: String = row.get(0);
            if existing != ch.channel_type.as_str() {
                return Err(StoreError::Data(format!(
                    "channel `{}` exists with type `{existing}`; a channel's type cannot change",
                    ch.code
                )));
            }
        }
        for app in apps {
            let current = tx
                .query_opt(
                    "SELECT id, secret_salt, secret_hash FROM apps WHERE app_key = $1",
                    &[&app.key],
                )
                .await?;
            let app_id: i32 = match current {
                Some(row) => {
                    let id: i32 = row.get(0);
                    let salt: Vec<u8> = row.get(1);
                    let hash: Vec<u8> = row.get(2);
                    if hash_secret(&salt, &app.secret).as_slice() != hash.as_slice() {
                        let salt = new_salt();
                        let hash = hash_secret(&salt, &app.secret);
                        tx.execute(
                            "UPDATE apps SET secret_salt = $2, secret_hash = $3 WHERE id = $1",
                            &[&id, &salt.as_slice(), &hash.as_slice()],
                        )
                        .await?;
                    }
                    tx.execute(
                        "UPDATE apps SET name = $2, enabled = $3, source = 'config',
                                         updated_at = now()
                         WHERE id = $1 AND (name, enabled, source) IS DISTINCT FROM ($2, $3, 'config')",
                        &[&id, &app.name, &app.enabled],
                    )
                    .await?;
                    id
                }
                None => {
                    let salt = new_salt();
                    let hash = hash_secret(&salt, &app.secret);
                    tx.query_one(
                        "INSERT INTO apps (app_key, name, secret_salt, secret_hash, enabled, source)
                         VALUES ($1, $2, $3, $4, $5, 'config') RETURNING id",
                        &[&app.key, &app.name, &salt.as_slice(), &hash.as_slice(), &app.enabled],
                    )
                    .await?
                    .get(0)
                }
            };
            for code in &app.grants {
                tx.execute(
                    "INSERT INTO grants (app_id, channel_code) VALUES ($1, $2)
                     ON CONFLICT (app_id, channel_code) DO NOTHING",
                    &[&app_id, code],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Creates an app with a fresh key and secret; returns (key, secret). The secret is
    /// not stored, only its salted hash.
    pub async fn create_app(&self, name: &str) -> Result<(String, String), StoreError> {
        let mut key_bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut key_bytes);
        let key = format!("app_{}", hex(&key_bytes));
        let mut secret_bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut secret_bytes);
        let secret = hex(&secret_bytes);
        let salt = new_salt();
        let hash = hash_secret(&salt, &secret);
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO apps (app_key, name, secret_salt, secret_hash) VALUES ($1, $2, $3, $4)",
                &[&key, &name, &salt.as_slice(), &hash.as_slice()],
            )
            .await?;
        Ok((key, secret))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// The first of `refs` that does not resolve for this app, if any.
    pub async fn first_missing_reference(
        &self,
        app_id: i32,
        refs: &[crate::domain::send::Reference],
    ) -> Result<Option<crate::domain::send::Reference>, StoreError> {
        use crate::domain::send::Reference;
        if refs.is_empty() {
            return Ok(None);
        }
        let client = self.client().await?;
        for r in refs {
            let (sql, value) = match r {
                Reference::Template(id) => (
                    "SELECT 1 FROM templates WHERE app_id = $1 AND template_id = $2",
                    id,
                ),
                Reference::Strategy(id) => (
                    "SELECT 1 FROM strategies WHERE app_id = $1 AND strategy_id = $2",
                    id,
                ),
                Reference::List(id) => {
                    ("SELECT 1 FROM lists WHERE app_id = $1 AND list_id = $2", id)
                }
                Reference::Segment(id) => (
                    "SELECT 1 FROM segments WHERE app_id = $1 AND segment_id = $2",
                    id,
                ),
                Reference::CallbackUrl(url) => (
                    "SELECT 1 FROM callback_endpoints WHERE app_id = $1 AND url = $2",
                    url,
                ),
            };
            if client.query_opt(sql, &[&app_id, value]).await?.is_none() {
                return Ok(Some(r.clone()));
            }
        }
        Ok(None)
    }
}

impl Store {
    /// Creates or replaces a channel (`PUT /admin/channels/{code}`). A channel's type
    /// cannot change: answers `false` (and writes nothing) when it exists with another.
    pub async fn put_channel(&self, ch: &ChannelSpec) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO channels (code, type, enabled, rate_per_second, burst, pool_size,
                                       settings, source)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'api')
                 ON CONFLICT (code) DO UPDATE SET
                     enabled = EXCLUDED.enabled, rate_per_second = EXCLUDED.rate_per_second,
                     burst = EXCLUDED.burst, pool_size = EXCLUDED.pool_size,
                     settings = EXCLUDED.settings, updated_at = now()
                 WHERE channels.type = EXCLUDED.type",
                &[
                    &ch.code,
                    &ch.channel_type.as_str(),
                    &ch.enabled,
                    &ch.rate_per_second,
                    &ch.burst,
                    &ch.pool_size,
                    &ch.settings,
                ],
            )
            .await?;
        Ok(n == 1)
    }
}

/// Why a grant could not be written.
#[derive(Debug, PartialEq, Eq)]
pub enum GrantTarget {
    Stored,
    NoApp,
    NoChannel,
}

impl Store {
    /// Grants (or switches off for the app) a channel; creates the grant if needed.
    pub async fn put_grant(
        &self,
        app_key: &str,
        channel_code: &str,
        enabled: bool,
    ) -> Result<GrantTarget, StoreError> {
        let client = self.client().await?;
        let Some(app) = client
            .query_opt("SELECT id FROM apps WHERE app_key = $1", &[&app_key])
            .await?
        else {
            return Ok(GrantTarget::NoApp);
        };
        let app_id: i32 = app.get(0);
        if client
            .query_opt("SELECT 1 FROM channels WHERE code = $1", &[&channel_code])
            .await?
            .is_none()
        {
            return Ok(GrantTarget::NoChannel);
        }
        client
            .execute(
                "INSERT INTO grants (app_id, channel_code, enabled) VALUES ($1, $2, $3)
                 ON CONFLICT (app_id, channel_code) DO UPDATE
                 SET enabled = EXCLUDED.enabled, updated_at = now()",
                &[&app_id, &channel_code, &enabled],
            )
            .await?;
        Ok(GrantTarget::Stored)
    }
}
