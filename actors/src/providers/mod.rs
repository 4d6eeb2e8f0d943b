//! Provider clients, one file per provider. Each turns a [`Batch`](crate::channel::Batch)
//! into its provider's wire format, makes the call, and classifies the answer
//! (`crate::channel::ErrorClass`); queuing, pacing and retries are the sender's job.
//!
//! Every client is built on its channel's arbiter (its connection pool belongs to that
//! thread's runtime) from the channel's `settings`; a setting that is missing or wrong is
//! an error that names it, and the channel does not start.

pub mod inbox;
pub mod webhook;

use std::rc::Rc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::channel::sender::SenderConfig;
use crate::channel::Provider;
use crate::domain::ChannelType;
use crate::receipts::Receipts;
use crate::store::Store;

/// What a provider client may use besides its settings.
#[derive(Clone)]
pub struct ProviderDeps {
    pub store: Store,
    pub receipts: actix::Addr<Receipts>,
}

/// Parses a channel's settings into a provider's settings type, naming the bad field.
pub fn parse_settings<T: DeserializeOwned>(settings: &Value) -> Result<T, String> {
    let value = if settings.is_null() {
        Value::Object(Default::default())
    } else {
        settings.clone()
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        format!("settings.{path}: {}", e.into_inner())
    })
}

/// Checks a channel's settings without starting anything (config and admin validation).
pub fn check_settings(ty: ChannelType, settings: &Value) -> Result<(), String> {
    match ty {
        ChannelType::Inbox => parse_settings::<inbox::Settings>(settings).map(|_| ()),
        ChannelType::Webhook => parse_settings::<webhook::Settings>(settings).map(|_| ()),
        // Types whose clients come later accept any settings for now; their senders
        // report that they cannot start.
        _ => Ok(()),
    }
}

/// Builds the provider client for a channel (called on the channel's arbiter).
pub fn build(config: &SenderConfig, deps: &ProviderDeps) -> Result<Rc<dyn Provider>, String> {
    match config.channel_type {
        ChannelType::Inbox => Ok(Rc::new(inbox::Inbox::new(config, deps)?)),
        ChannelType::Webhook => Ok(Rc::new(webhook::Webhook::new(config)?)),
        other => Err(format!(
            "channels of type `{}` cannot send from this build",
            other.as_str()
        )),
    }
}

/// The HTTP client every HTTP provider uses: keep-alive pool sized to the channel's
/// concurrency, a request timeout, no redirects (a redirect is an error, not a delivery).
pub fn http_client(pool_size: usize, timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool_size.max(1))
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// Checks a channel as the supervisor would start it: the sender's settings and the
/// provider's own (for `check-config` and `PUT /admin/channels/{code}`).
pub fn check_channel(entry: &crate::directory::ChannelEntry) -> Result<(), String> {
    let config = crate::channel::sender_config(entry)?;
    check_settings(entry.channel_type, &config.settings)
}

/// Settings keys whose values are credentials: never shown by the API.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "private_key"]
        .iter()
        .any(|s| k.contains(s))
}

/// A channel's settings with every credential removed.
pub fn redacted(settings: &Value) -> Value {
    match settings {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !is_secret_key(k))
                .map(|(k, v)| (k.clone(), redacted(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}
