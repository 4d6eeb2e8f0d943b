//! Email over SMTP with lettre's async transport and its connection pool (sized to the
//! channel's `pool_size`). TLS: `none`, `starttls` (required), or `tls` (implicit, SMTPS).
//!
//! One SMTP transaction per recipient: a rejected `RCPT TO` aborts a whole transaction,
//! so separate transactions are what give each recipient its own outcome. A 250 from the
//! relay is the delivery as far as umsd can see (there are no delivery receipts); 4xx
//! replies and connection failures are retried, 5xx replies fail the delivery with the
//! reply code.

use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use serde_json::Value;

use super::context::ProviderContext;
use super::contract::{Attempt, Batch, BuildError, Provider, ProviderError, SettingsError};
use super::support::http::default_timeout_ms;

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    None,
    Starttls,
    Tls,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_tls")]
    pub tls: TlsMode,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The sender, e.g. `UMS <noreply@example.com>`.
    pub from: String,
    /// Accept a certificate that does not verify (test relays with self-signed
    /// certificates only).
    #[serde(default)]
    pub accept_invalid_certs: bool,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_tls() -> TlsMode {
    TlsMode::Starttls
}

pub struct Email {
    /// Always `Some` until dropped (see `Drop`).
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
}

impl Drop for Email {
    /// lettre's pool spawns its clean-up on the current tokio runtime when dropped, and
    /// panics without one; a client dropped after its runtime is gone (an arbiter torn
    /// down abruptly) leaks its idle connections to the process exit instead.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            std::mem::forget(self.transport.take());
        }
    }
}

/// Checks the settings without building a transport (a pooled transport must be built,
/// and dropped, inside a runtime).
pub fn check(s: &Settings) -> Result<(), SettingsError> {
    from(s)?;
    if s.tls != TlsMode::None {
        tls_parameters(s)?;
    }
    if s.username.is_some() != s.password.is_some() {
        return Err(credentials_apart());
    }
    Ok(())
}

fn from(s: &Settings) -> Result<Mailbox, SettingsError> {
    s.from
        .parse::<Mailbox>()
        .map_err(|e| SettingsError::new("settings.from", format!("not a mailbox: {e}")))
}

fn tls_parameters(s: &Settings) -> Result<TlsParameters, SettingsError> {
    TlsParameters::builder(s.host.clone())
        .dangerous_accept_invalid_certs(s.accept_invalid_certs)
        .build()
        .map_err(|e| SettingsError::new("settings.tls", e.to_string()))
}

fn credentials_apart() -> SettingsError {
    SettingsError::new("settings.username", "username and password go together")
}

/// Builds the transport (no connection is made yet). Must run inside a tokio runtime.
pub fn transport(
    s: &Settings,
    pool_size: usize,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, SettingsError> {
    let tls_params = || tls_parameters(s);
    let (tls, port) = match s.tls {
        TlsMode::None => (Tls::None, 25),
        TlsMode::Starttls => (Tls::Required(tls_params()?), 587),
        TlsMode::Tls => (Tls::Wrapper(tls_params()?), 465),
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
        .port(s.port.unwrap_or(port))
        .tls(tls)
        .timeout(Some(Duration::from_millis(s.timeout_ms)))
        .pool_config(PoolConfig::new().max_size(pool_size.max(1) as u32));
    match (&s.username, &s.password) {
        (Some(u), Some(p)) => b = b.credentials(Credentials::new(u.clone(), p.clone())),
        (None, None) => {}
        _ => return Err(credentials_apart()),
    }
    Ok(b.build())
}

impl Email {
    pub fn new(ctx: &ProviderContext, s: &Settings) -> Result<Self, BuildError> {
        Ok(Self {
            transport: Some(transport(s, ctx.pool_size)?),
            from: from(s)?,
        })
    }
}

/// Classifies a failed SMTP transaction.
pub fn classify(e: &lettre::transport::smtp::Error) -> ProviderError {
    let code = e.status().map(|c| c.to_string()).unwrap_or_else(|| {
        if e.is_timeout() {
            "timeout".into()
        } else {
            "connection".into()
        }
    });
    if e.is_permanent() {
        ProviderError::permanent(code, e.to_string())
    } else {
        // 4xx, and network or TLS failures: the message may go through later.
        ProviderError::retryable(code, e.to_string())
    }
}

fn build(from: &Mailbox, to: &str, content: &Value) -> Result<Message, ProviderError> {
    let to: Mailbox = to.parse().map_err(|_| {
        ProviderError::permanent("invalid_address", format!("`{to}` is not an email address"))
    })?;
    let subject = content.get("subject").and_then(Value::as_str).unwrap_or("");
    let text = content.get("text").and_then(Value::as_str);
    let html = content.get("html").and_then(Value::as_str);
    let b = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject);
    let m = match (text, html) {
        (Some(t), Some(h)) => b.multipart(MultiPart::alternative_plain_html(
            t.to_owned(),
            h.to_owned(),
        )),
        (None, Some(h)) => b.singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(h.to_owned()),
        ),
        (Some(t), None) => b.singlepart(SinglePart::plain(t.to_owned())),
        (None, None) => {
            return Err(ProviderError::permanent(
                "no_content",
                "email content needs `text` or `html`",
            ))
        }
    };
    m.map_err(|e| ProviderError::permanent("invalid_message", e.to_string()))
}

impl Provider for Email {
    fn send(&self, batch: Batch) -> LocalBoxFuture<'static, Vec<(i64, Attempt)>> {
        let transport = self.transport.clone();
        let from = self.from.clone();
        Box::pin(async move {
            let Some(transport) = transport else {
                return crate::providers::contract::all(
                    &batch,
                    Attempt::Failed(ProviderError::retryable(
                        "stopped",
                        "the channel is stopping",
                    )),
                );
            };
            let mut out = Vec::with_capacity(batch.targets.len());
            for t in &batch.targets {
                let attempt = match build(&from, &t.address, &batch.content) {
                    Err(e) => Attempt::Failed(e),
                    Ok(m) => match transport.send(m).await {
                        Ok(resp) => Attempt::delivered(resp.first_line().map(str::to_owned)),
                        Err(e) => Attempt::Failed(classify(&e)),
                    },
                };
                out.push((t.delivery_id, attempt));
            }
            out
        })
    }
}
