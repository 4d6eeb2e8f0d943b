//! Configuration: one documented struct tree. Sources, later ones winning: built-in
//! defaults, the TOML file, `UMSD_…` environment variables (`__` separates levels, e.g.
//! `UMSD_DATABASE__URL`, `UMSD_INGEST__MAX_BATCH`), then command-line flags.
//! Unknown keys are an error that names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use umsd_actors::channel::config::{ChannelConfig, ChannelRow};
use umsd_actors::domain::app::is_valid_app_key;
use umsd_actors::domain::{ChannelCode, ChannelType};
use umsd_actors::ingest::IngestConfig;
use umsd_actors::planner::backlog::Bounds;
use umsd_actors::store::directory::{AppSpec, ChannelSpec};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// 0–255; part of every id this node makes. Unique per node sharing a database.
    pub node_id: u8,
    /// Bearer token for `/admin/...`. Empty disables the operator API.
    pub admin_token: String,
    /// Where the embedded PostgreSQL cluster lives (`<data_dir>/pg`).
    pub data_dir: PathBuf,
    /// Print example commands (with the first app's credentials) once listening. For
    /// demos: it prints a secret.
    pub hints: bool,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub ingest: IngestSection,
    pub retention: RetentionConfig,
    pub bench: BenchConfig,
    pub delivery: DeliveryConfig,
    pub log: LogConfig,
    pub apps: Vec<AppConfig>,
    pub channels: Vec<ChannelSection>,
    /// Provider simulators started inside umsd (the demo configuration): each listens on
    /// its own port and stands in for one provider.
    pub simulators: Vec<umsd_sim::SimConfig>,
    /// An SMTP sink started inside umsd (the demo's email channel points at it).
    pub smtp_simulator: Option<umsd_sim::smtp::SmtpConfig>,
    /// A CMPP gateway (ISMG) simulator started inside umsd (the demo's SMS channel).
    pub ismg_simulator: Option<umsd_sim::ismg::IsmgConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: 0,
            admin_token: String::new(),
            data_dir: PathBuf::from("data"),
            hints: false,
            http: HttpConfig::default(),
            database: DatabaseConfig::default(),
            ingest: IngestSection::default(),
            retention: RetentionConfig::default(),
            bench: BenchConfig::default(),
            delivery: DeliveryConfig::default(),
            log: LogConfig::default(),
            apps: Vec::new(),
            channels: Vec::new(),
            simulators: Vec::new(),
            smtp_simulator: None,
            ismg_simulator: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Threads (actix arbiters) the channel senders are spread over.
    pub channel_arbiters: usize,
    /// Seconds a receipt naming no known delivery is tried again (it can outrun the write
    /// of its provider id) before it is counted as unmatched and dropped.
    pub receipt_grace_seconds: u64,
    /// Seconds after its creation a message can still be recalled (`DELETE
    /// /v1/messages/{id}`). Providers withdraw messages up to 24 h old, hence the default;
    /// a shorter window is a policy of the operator's.
    pub recall_window_seconds: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            channel_arbiters: 2,
            receipt_grace_seconds: 30,
            recall_window_seconds: 86_400,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Seconds to wait for in-flight requests at shutdown.
    pub shutdown_timeout_seconds: u64,
    /// Most concurrent connections per worker.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 0,
            shutdown_timeout_seconds: 30,
            max_connections: 25_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// PostgreSQL URL (`postgres://user:pass@host/db`) or key=value string. Empty: start
    /// the embedded cluster under `<data_dir>/pg`.
    pub url: String,
    pub pool_size: usize,
    pub connect_timeout_ms: u64,
    /// Longest a request waits for a free connection before it gets 503.
    pub wait_timeout_ms: u64,
    pub statement_timeout_ms: u64,
    pub embedded: EmbeddedConfig,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            pool_size: 16,
            connect_timeout_ms: 5_000,
            wait_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            embedded: EmbeddedConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    pub shared_buffers: String,
    pub max_connections: u32,
    /// Stop the embedded cluster when umsd stops.
    pub stop_on_exit: bool,
    /// Directory of initdb/pg_ctl/postgres; empty searches PATH, then
    /// /usr/lib/postgresql/*/bin.
    pub bin_dir: PathBuf,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            shared_buffers: "256MB".into(),
            max_connections: 100,
            stop_on_exit: true,
            bin_dir: PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    /// Most messages written in one transaction.
    pub max_batch: usize,
    /// Longest a message waits for companions before its transaction starts.
    pub max_wait_ms: u64,
    /// Most messages buffered or committing; beyond it sends get 503.
    pub max_pending: usize,
    /// Group-commit transactions in flight at once.
    pub commit_concurrency: usize,
    /// Requests queued for the ingest actor (its mailbox); beyond it sends get 503.
    pub queue_capacity: usize,
    /// Most due messages waiting to be planned; at this many, sends get 503 (high
    /// priority: twice as many); 0 = no bound.
    pub max_unplanned: u64,
    /// Seconds the oldest due message may wait to be planned before sends get 503 (high
    /// priority: twice as long); 0 = no bound.
    pub max_planning_lag_s: u64,
    /// Seconds the oldest queued work on a channel may wait to be sent before sends naming
    /// that channel get 503 (only work of the send's priority or more urgent counts; high
    /// priority: twice as long); 0 = no bound.
    pub max_dispatch_lag_s: u64,
}

impl Default for IngestSection {
    fn default() -> Self {
        let d = IngestConfig::default();
        Self {
            max_batch: d.max_batch,
            max_wait_ms: d.max_wait.as_millis() as u64,
            max_pending: d.max_pending,
            commit_concurrency: d.commit_concurrency,
            queue_capacity: d.mailbox,
            max_unplanned: d.planning.max_unplanned,
            max_planning_lag_s: d.planning.max_lag.as_secs(),
            max_dispatch_lag_s: d.max_dispatch_lag.as_secs(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days of history kept (1–60); older day partitions are dropped.
    pub days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { days: 7 }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BenchConfig {
    /// Enables `POST /bench/messages`: parses and validates like the send route, stores
    /// nothing. For the load-test harness only.
    pub null_route: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter, e.g. `info` or `umsd=debug,info`.
    pub filter: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: "text".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub key: String,
    #[serde(default)]
    pub name: Option<String>,
    /// The master secret (only its salted hash is stored).
    pub secret: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Channel codes granted to this app.
    #[serde(default)]
    pub grants: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSection {
    pub code: ChannelCode,
    #[serde(rename = "type")]
    pub channel_type: ChannelType,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub rate_per_second: Option<f64>,
    #[serde(default)]
    pub burst: Option<i32>,
    #[serde(default)]
    pub pool_size: Option<i32>,
    #[serde(default = "empty_table")]
    pub settings: serde_json::Value,
}

fn yes() -> bool {
    true
}

fn empty_table() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Command-line values that override the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(Box<figment::Error>),
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Loads defaults ← file ← `UMSD_…` environment ← overrides, then validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing(path.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("UMSD_").split("__"));
        if let Some(listen) = overrides.listen {
            figment = figment.merge(Serialized::default("http.listen", listen));
        }
        if let Some(dir) = &overrides.data_dir {
            figment = figment.merge(Serialized::default("data_dir", dir));
        }
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Rules serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=60).contains(&self.retention.days) {
            return Err(invalid("retention.days", "must be between 1 and 60"));
        }
        if self.database.pool_size == 0 {
            return Err(invalid("database.pool_size", "must be at least 1"));
        }
        let ing = &self.ingest;
        if ing.max_batch == 0 || ing.max_pending == 0 || ing.commit_concurrency == 0 {
            return Err(invalid(
                "ingest",
                "max_batch, max_pending and commit_concurrency must be at least 1",
            ));
        }
        if ing.queue_capacity == 0 {
            return Err(invalid("ingest.queue_capacity", "must be at least 1"));
        }
        if ing.commit_concurrency >= self.database.pool_size {
            return Err(invalid(
                "ingest.commit_concurrency",
                "must be below database.pool_size (reads need connections too)",
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", "must be `text` or `json`"));
        }
        for (i, ch) in self.channels.iter().enumerate() {
            let key = format!("channels[{i}]");
            if self.channels[..i].iter().any(|c| c.code == ch.code) {
                return Err(invalid(
                    format!("{key}.code"),
                    format!("`{}` is defined twice", ch.code),
                ));
            }
            if !ch.settings.is_object() {
                return Err(invalid(format!("{key}.settings"), "must be a table"));
            }
            if matches!(ch.rate_per_second, Some(r) if r <= 0.0) {
                return Err(invalid(
                    format!("{key}.rate_per_second"),
                    "must be positive",
                ));
            }
            // The settings are parsed as the sender will parse them.
            if let Err(e) = ChannelConfig::parse(ChannelRow {
                code: &ch.code,
                channel_type: ch.channel_type,
                rate_per_second: ch.rate_per_second,
                burst: ch.burst,
                pool_size: ch.pool_size,
                settings: &ch.settings,
            }) {
                return Err(invalid(format!("{key}.{}", e.field), e.message));
            }
        }
        if self.delivery.channel_arbiters == 0 || self.delivery.channel_arbiters > 64 {
            return Err(invalid("delivery.channel_arbiters", "must be 1-64"));
        }
        for (i, app) in self.apps.iter().enumerate() {
            let key = format!("apps[{i}]");
            if !is_valid_app_key(&app.key) {
                return Err(invalid(
                    format!("{key}.key"),
                    "must be 1-64 characters of [A-Za-z0-9_-]",
                ));
            }
            if app.secret.len() < 8 {
                return Err(invalid(
                    format!("{key}.secret"),
                    "must be at least 8 characters",
                ));
            }
            if self.apps[..i].iter().any(|a| a.key == app.key) {
                return Err(invalid(
                    format!("{key}.key"),
                    format!("`{}` is defined twice", app.key),
                ));
            }
            for (j, code) in app.grants.iter().enumerate() {
                if !self.channels.iter().any(|c| &c.code == code) {
                    return Err(invalid(
                        format!("{key}.grants[{j}]"),
                        format!("no channel `{code}` is configured"),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn ingest_config(&self) -> IngestConfig {
        IngestConfig {
            max_batch: self.ingest.max_batch,
            max_wait: Duration::from_millis(self.ingest.max_wait_ms),
            max_pending: self.ingest.max_pending,
            commit_concurrency: self.ingest.commit_concurrency,
            mailbox: self.ingest.queue_capacity,
            node_id: self.node_id,
            planning: Bounds {
                max_unplanned: self.ingest.max_unplanned,
                max_lag: Duration::from_secs(self.ingest.max_planning_lag_s),
            },
            max_dispatch_lag: Duration::from_secs(self.ingest.max_dispatch_lag_s),
        }
    }

    pub fn app_specs(&self) -> Vec<AppSpec> {
        self.apps
            .iter()
            .map(|a| AppSpec {
                key: a.key.clone(),
                name: a.name.clone().unwrap_or_else(|| a.key.clone()),
                secret: a.secret.clone(),
                enabled: a.enabled,
                grants: a.grants.clone(),
            })
            .collect()
    }

    pub fn channel_specs(&self) -> Vec<ChannelSpec> {
        self.channels
            .iter()
            .map(|c| ChannelSpec {
                code: c.code.to_string(),
                channel_type: c.channel_type,
                enabled: c.enabled,
                rate_per_second: c.rate_per_second,
                burst: c.burst,
                pool_size: c.pool_size,
                settings: c.settings.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::new(text)
    }

    // A tiny temp-file helper; the crate has no tempfile dependency.
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn new(text: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "umsd-config-test-{}-{}.toml",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                std::fs::write(&path, text).unwrap();
                Self(path)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let f = write("[ingest]\nmax_bacth = 5\n");
        let err = Config::load(Some(&f.0), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_bacth"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let f = write("[http]\nlisten = \"127.0.0.1:9000\"\n");
        let c = Config::load(
            Some(&f.0),
            &Overrides {
                listen: Some("127.0.0.1:9001".parse().unwrap()),
                data_dir: None,
            },
        )
        .unwrap();
        assert_eq!(c.http.listen.port(), 9001);
    }

    #[test]
    fn grants_must_name_configured_channels() {
        let f = write("[[apps]]\nkey = \"a\"\nsecret = \"12345678\"\ngrants = [\"sms\"]\n");
        let err = Config::load(Some(&f.0), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("apps[0].grants[0]"), "{err}");
    }

    #[test]
    fn the_demo_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
        let c = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(c.admin_token, "demo-admin");
        assert!(c.apps.iter().any(|a| a.key == "demo"));
    }
}
