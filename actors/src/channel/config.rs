//! A channel's settings as its sender runs them, parsed once from the channel's row (the
//! configuration file, the admin API and the database give the same shape): the sender's
//! own knobs (rate, concurrency, backlog, retries, aging, extra TLS roots) and the
//! provider's typed settings ([`ChannelSettings`]). A setting that does not hold is a
//! [`SettingsError`] naming it; the admin API answers it as 422.

use std::time::Duration;

use serde_json::Value;

use super::retry::RetryPolicy;
use crate::domain::channel::{ChannelCode, ChannelType};
use crate::providers::contract::SettingsError;
use crate::providers::settings::ChannelSettings;
use crate::providers::support::tls;

/// Settings keys every channel understands (the rest belong to its provider).
pub const SENDER_KEYS: &[&str] = &[
    "backlog",
    "max_attempts",
    "retry_base_ms",
    "retry_max_ms",
    "aging_seconds",
    "tls_ca_file",
];

/// Provider calls in flight at once when `pool_size` is not set (CMPP: every session's
/// window).
pub const DEFAULT_POOL_SIZE: usize = 8;
/// Calls in flight on an inbox channel when `pool_size` is not set.
pub const INBOX_POOL_SIZE: usize = 64;
/// Deliveries a sender holds in memory when `settings.backlog` is not set.
pub const DEFAULT_BACKLOG: usize = 10_000;

/// A channel row's columns, as given.
#[derive(Debug, Clone, Copy)]
pub struct ChannelRow<'a> {
    pub code: &'a ChannelCode,
    pub channel_type: ChannelType,
    pub rate_per_second: Option<f64>,
    pub burst: Option<i32>,
    pub pool_size: Option<i32>,
    pub settings: &'a Value,
}

/// A channel's settings, parsed.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub code: ChannelCode,
    pub channel_type: ChannelType,
    /// `None`: no limit.
    pub rate_per_second: Option<f64>,
    pub burst: Option<u32>,
    /// Provider calls in flight at once.
    pub pool_size: usize,
    /// Most deliveries held in memory.
    pub backlog: usize,
    /// A lower-priority delivery waiting this long goes before higher-priority work.
    pub aging: Duration,
    pub retry: RetryPolicy,
    /// How long after a delivery was submitted its receipt may take: then it becomes
    /// `unknown` (`settings.receipt_window_seconds`, default per type, see
    /// [`default_receipt_window`]).
    pub receipt_window: chrono::Duration,
    /// Extra trusted roots for the provider's HTTPS endpoints (`settings.tls_ca_file`),
    /// beside the system's.
    pub tls_roots: Vec<reqwest::Certificate>,
    /// The provider's own settings (credentials, endpoints), typed.
    pub provider: ChannelSettings,
}

/// The receipt window of a channel type, in seconds: how long after submission a
/// delivery's receipt is waited for. SMS reports can come as late as the carrier's
/// validity period allows (a day here); the app-push and messaging APIs report within
/// minutes, so an hour is generous.
pub fn default_receipt_window(t: ChannelType) -> u64 {
    match t {
        ChannelType::SmsCmpp | ChannelType::Jsms => 86_400,
        _ => 3_600,
    }
}

impl ChannelConfig {
    /// Parses a channel row: the sender's keys are taken out of `settings`, the rest are
    /// the provider's.
    pub fn parse(row: ChannelRow<'_>) -> Result<Self, SettingsError> {
        let mut provider = row.settings.clone();
        let mut knob = |key: &str, default: u64, min: u64, max: u64| {
            let v = match provider.as_object_mut().and_then(|o| o.remove(key)) {
                None | Some(Value::Null) => return Ok(default),
                Some(v) => v,
            };
            match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(SettingsError::new(
                    format!("settings.{key}"),
                    format!("a whole number from {min} to {max}"),
                )),
            }
        };
        let backlog = knob("backlog", DEFAULT_BACKLOG as u64, 1, 1_000_000)? as usize;
        let max_attempts = knob("max_attempts", 5, 1, 100)? as i16;
        let base = knob("retry_base_ms", 1000, 1, 3_600_000)?;
        let max = knob("retry_max_ms", 300_000, 1, 86_400_000)?;
        let aging = knob("aging_seconds", 30, 1, 86_400)?;
        let receipt_window = knob(
            "receipt_window_seconds",
            default_receipt_window(row.channel_type),
            1,
            30 * 86_400,
        )?;
        let tls_roots = match provider
            .as_object_mut()
            .and_then(|o| o.remove("tls_ca_file"))
        {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(path)) if !path.is_empty() => {
                tls::roots(std::path::Path::new(&path))?
            }
            Some(_) => {
                return Err(SettingsError::new(
                    "settings.tls_ca_file",
                    "the path of a PEM file",
                ))
            }
        };
        let settings = ChannelSettings::parse(row.channel_type, &provider)?;
        let pool_size = match row.pool_size {
            None => match &settings {
                // A CMPP account keeps every session's window full.
                ChannelSettings::SmsCmpp(c) => (c.max_connections * c.window).min(1024),
                // Inbox calls wait to share one write (see `providers/inbox.rs`), so more
                // of them in flight make larger writes, not more connections.
                ChannelSettings::Inbox(_) => INBOX_POOL_SIZE,
                _ => DEFAULT_POOL_SIZE,
            },
            Some(n) if (1..=1024).contains(&n) => n as usize,
            Some(_) => return Err(SettingsError::new("pool_size", "from 1 to 1024")),
        };
        let burst = match row.burst {
            None => None,
            Some(n) if n >= 1 => Some(n as u32),
            Some(_) => return Err(SettingsError::new("burst", "at least 1")),
        };
        if let Some(r) = row.rate_per_second {
            if !(r.is_finite() && r > 0.0) {
                return Err(SettingsError::new("rate_per_second", "a positive number"));
            }
        }
        Ok(Self {
            code: row.code.clone(),
            channel_type: row.channel_type,
            rate_per_second: row.rate_per_second,
            burst,
            pool_size,
            backlog,
            aging: Duration::from_secs(aging),
            receipt_window: chrono::Duration::seconds(receipt_window as i64),
            retry: RetryPolicy {
                max_attempts,
                base: Duration::from_millis(base),
                max: Duration::from_millis(max.max(base)),
            },
            tls_roots,
            provider: settings,
        })
    }
}
