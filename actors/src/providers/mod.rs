//! Provider clients, one file per provider. Each turns a [`Batch`](crate::channel::Batch)
//! into its provider's wire format, makes the call, and classifies the answer
//! (`crate::channel::ErrorClass`); queuing, pacing and retries are the sender's job.
//!
//! Every client is built on its channel's arbiter (its connection pool belongs to that
//! thread's runtime) from the channel's `settings`; a setting that is missing or wrong is
//! an error that names it, and the channel does not start.

pub mod dingtalk;
pub mod email;
pub mod feishu;
pub mod inbox;
pub mod jpush;
pub mod jsms;
pub mod poll;
pub mod robot;
pub mod token;
pub mod webhook;
pub mod wechat;
pub mod wecom;

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
        let field = if path == "." {
            "settings".to_owned()
        } else {
            format!("settings.{path}")
        };
        format!("{field}: {}", e.into_inner())
    })
}

/// Checks a channel's settings without starting anything (config and admin validation).
pub fn check_settings(ty: ChannelType, settings: &Value) -> Result<(), String> {
    match ty {
        ChannelType::Inbox => parse_settings::<inbox::Settings>(settings).map(|_| ()),
        ChannelType::Webhook => {
            let s = parse_settings::<webhook::Settings>(settings)?;
            webhook::secret_key(&s.secret).map(|_| ())
        }
        ChannelType::Email => email::check(&parse_settings::<email::Settings>(settings)?),
        ChannelType::Wecom => parse_settings::<wecom::Settings>(settings).map(|_| ()),
        ChannelType::Dingtalk if is_robot(settings) => {
            robot::check(&parse_settings::<robot::Settings>(settings)?)
        }
        ChannelType::Dingtalk => parse_settings::<dingtalk::Settings>(settings).map(|_| ()),
        ChannelType::Feishu => parse_settings::<feishu::Settings>(settings).map(|_| ()),
        ChannelType::Jpush => parse_settings::<jpush::Settings>(settings).map(|_| ()),
        ChannelType::Jsms => parse_settings::<jsms::Settings>(settings).map(|_| ()),
        ChannelType::WechatOa => parse_settings::<wechat::Settings>(settings).map(|_| ()),
        // Types whose clients come later accept any settings; their senders report that
        // they cannot start and their deliveries stay queued.
        ChannelType::SmsCmpp => crate::cmpp::settings::parse(settings).map(|_| ()),
        ChannelType::WechatMp | ChannelType::Alipay => Ok(()),
    }
}

/// A `dingtalk` channel with `mode = "robot"` sends through custom robots (group
/// webhooks) instead of work notices.
fn is_robot(settings: &Value) -> bool {
    settings.get("mode").and_then(Value::as_str) == Some("robot")
}

/// Builds the provider client for a channel (called on the channel's arbiter).
pub fn build(config: &SenderConfig, deps: &ProviderDeps) -> Result<Rc<dyn Provider>, String> {
    match config.channel_type {
        ChannelType::Inbox => Ok(Rc::new(inbox::Inbox::new(config, deps)?)),
        ChannelType::Webhook => Ok(Rc::new(webhook::Webhook::new(config)?)),
        ChannelType::Email => Ok(Rc::new(email::Email::new(config)?)),
        ChannelType::Wecom => Ok(Rc::new(wecom::Wecom::new(config)?)),
        ChannelType::Dingtalk if is_robot(&config.settings) => {
            Ok(Rc::new(robot::Robot::new(config)?))
        }
        ChannelType::Dingtalk => Ok(Rc::new(dingtalk::Dingtalk::new(config, deps)?)),
        ChannelType::Feishu => Ok(Rc::new(feishu::Feishu::new(config)?)),
        ChannelType::Jpush => Ok(Rc::new(jpush::Jpush::new(config, deps)?)),
        ChannelType::Jsms => Ok(Rc::new(jsms::Jsms::new(config)?)),
        ChannelType::WechatOa => Ok(Rc::new(wechat::Wechat::new(config)?)),
        ChannelType::SmsCmpp => Ok(Rc::new(crate::cmpp::CmppAccount::new(config, deps)?)),
        other => Err(format!(
            "channels of type `{}` cannot send from this build",
            other.as_str()
        )),
    }
}

/// The HTTP client every HTTP provider uses: keep-alive pool sized to the channel's
/// concurrency, a request timeout, no redirects (a redirect is an error, not a delivery).
pub fn http_client(config: &SenderConfig, timeout: Duration) -> Result<reqwest::Client, String> {
    init_tls();
    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(config.pool_size.max(1))
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &config.tls_ca_file {
        builder = builder.tls_certs_merge(tls_roots(path)?);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Installs rustls' ring provider as the process default, which HTTPS clients need
/// before they are built. Another component may have installed one already, which is as
/// good.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The certificates of a PEM file of extra trusted roots (`settings.tls_ca_file`).
pub fn tls_roots(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("settings.tls_ca_file: cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        format!(
            "settings.tls_ca_file: {} is not PEM certificates: {e}",
            path.display()
        )
    })?;
    if certs.is_empty() {
        return Err(format!(
            "settings.tls_ca_file: {} holds no certificate",
            path.display()
        ));
    }
    Ok(certs)
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// Checks a channel as the supervisor would start it: the sender's settings and the
/// provider's own (for `check-config` and `PUT /admin/channels/{code}`).
pub fn check_channel(entry: &crate::directory::ChannelEntry) -> Result<(), String> {
    let config = crate::channel::sender_config(entry)?;
    if let Some(path) = &config.tls_ca_file {
        tls_roots(path)?;
    }
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

/// An HTTP answer read whole: status, headers, and the body as JSON (`Null` when it is
/// not JSON).
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

/// A header as seconds (`Retry-After`, rate-limit reset headers), at most an hour.
pub fn header_seconds(headers: &reqwest::header::HeaderMap, name: &str) -> Option<Duration> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

impl Answer {
    /// A header as seconds (`Retry-After`, rate-limit reset headers).
    pub fn seconds(&self, name: &str) -> Option<Duration> {
        header_seconds(&self.headers, name)
    }

    /// `errcode` (DingTalk, WeCom, WeChat) or `code` (Feishu) of the body; 0 when absent.
    pub fn errcode(&self) -> i64 {
        self.body
            .get("errcode")
            .or_else(|| self.body.get("code"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }

    pub fn errmsg(&self) -> String {
        self.body
            .get("errmsg")
            .or_else(|| self.body.get("msg"))
            .or_else(|| self.body.pointer("/error/message"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    }
}

/// Largest provider answer read; a longer one is a retryable `answer_too_large`.
const MAX_ANSWER: usize = 1 << 20;

/// Reads an answer's body, at most `limit` bytes. Reading it to the end also lets the
/// connection go back to the pool.
pub async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, crate::channel::ProviderError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| crate::channel::ProviderError::transport(&e))?
    {
        if out.len() + chunk.len() > limit {
            return Err(crate::channel::ProviderError::retryable(
                "answer_too_large",
                format!("the provider's answer is longer than {limit} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Sends a request and reads the answer; a transport failure is a retryable error.
pub async fn call(req: reqwest::RequestBuilder) -> Result<Answer, crate::channel::ProviderError> {
    let resp = req
        .send()
        .await
        .map_err(|e| crate::channel::ProviderError::transport(&e))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = read_limited(resp, MAX_ANSWER).await?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// The text of a message's content for chat-like channels: `text`, else `body`.
pub fn content_text(content: &Value) -> Option<String> {
    content
        .get("text")
        .or_else(|| content.get("body"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Checks an answer of the providers that report business errors as HTTP 200 with a
/// nonzero `errcode` (DingTalk, WeCom, WeChat): 5xx is retryable, other non-2xx
/// permanent, and a nonzero `errcode` is classified by the provider's `classify`.
pub fn check_errcode(
    a: &Answer,
    classify: impl Fn(i64, &str) -> crate::channel::ProviderError,
) -> Result<(), crate::channel::ProviderError> {
    use crate::channel::ProviderError;
    let status = a.status.as_u16().to_string();
    if a.status.is_server_error() {
        return Err(ProviderError::retryable(status, "server error"));
    }
    if !a.status.is_success() {
        return Err(ProviderError::permanent(status, "unexpected HTTP status"));
    }
    match a.errcode() {
        0 => Ok(()),
        code => Err(classify(code, &a.errmsg())),
    }
}

/// Reads a token endpoint's answer: `checked` is the provider's verdict on it, `token` and
/// `ttl` the fields holding the token and its lifetime in seconds. A refused credential at
/// the token endpoint is configuration, not something another refresh fixes: permanent.
pub fn token_answer(
    a: &Answer,
    checked: Result<(), crate::channel::ProviderError>,
    token: &str,
    ttl: &str,
) -> Result<(String, Duration), crate::channel::ProviderError> {
    use crate::channel::{ErrorClass, ProviderError};
    checked.map_err(|mut e| {
        if e.class == ErrorClass::Auth {
            e.class = ErrorClass::Permanent;
        }
        e
    })?;
    let value = a.body[token].as_str().unwrap_or_default().to_owned();
    if value.is_empty() {
        return Err(ProviderError::retryable(
            "no_token",
            format!("the token endpoint answered no `{token}`"),
        ));
    }
    let ttl = a.body[ttl].as_u64().unwrap_or(7200);
    Ok((value, Duration::from_secs(ttl)))
}
