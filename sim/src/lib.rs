//! Local simulators of the messaging providers umsd delivers through.
//!
//! Each HTTP simulator speaks one provider's real wire format (paths, auth, token
//! lifetimes, success and error bodies, receipts) on its own TCP listener, served by a
//! dedicated OS thread with its own tokio runtime, so it can be embedded in any process:
//! the daemon's demo configuration, integration tests and the load-test harness. Faults
//! (latency, 5xx, busy, rate limit, hangs, dropped connections, expired tokens, permanent
//! errors) can be injected through [`SimHandle::set_faults`] or over HTTP on the
//! simulator's own listener:
//!
//! - `GET /_sim/stats`: [`Stats`] as JSON
//! - `GET /_sim/received?limit=N`: the last N (default 1000) [`Received`] entries
//! - `GET /_sim/recalls`: every [`Recall`] answered (DingTalk, WeCom, Feishu, JPush)
//! - `GET /_sim/faults` / `POST /_sim/faults`: read or replace the [`Faults`]
//! - `GET /_sim/config`: the effective [`SimConfig`] (with the credentials it accepts)
//!
//! [`smtp`] holds an SMTP sink for the e-mail channel, [`ismg`] a CMPP gateway (ISMG) for
//! the SMS channel.
//!
//! The simulators never reach anything but the callback URL they are given.

mod http;
pub mod ismg;
mod providers;
mod recalls;
mod receipts;
mod server;
pub mod sign;
pub mod smtp;
mod state;
mod tls;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

/// The provider a simulator stands in for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// DingTalk work notifications (oapi token, asyncsend_v2, pull status).
    #[default]
    Dingtalk,
    /// DingTalk custom group robot (signed webhook).
    DingtalkRobot,
    /// WeCom (Enterprise WeChat) application messages.
    Wecom,
    /// Feishu / Lark IM messages with read events.
    Feishu,
    /// JPush v3 push with the report pull API.
    Jpush,
    /// JSMS template SMS with pushed delivery reports.
    Jsms,
    /// WeChat Official Account template messages with pushed job results.
    WechatOa,
    /// A customer's webhook endpoint verifying Standard Webhooks signatures.
    Webhook,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 8] = [
        Kind::Dingtalk,
        Kind::DingtalkRobot,
        Kind::Wecom,
        Kind::Feishu,
        Kind::Jpush,
        Kind::Jsms,
        Kind::WechatOa,
        Kind::Webhook,
    ];

    /// The serde / CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Dingtalk => "dingtalk",
            Kind::DingtalkRobot => "dingtalk_robot",
            Kind::Wecom => "wecom",
            Kind::Feishu => "feishu",
            Kind::Jpush => "jpush",
            Kind::Jsms => "jsms",
            Kind::WechatOa => "wechat_oa",
            Kind::Webhook => "webhook",
        }
    }

    /// The key (app key, corp id, app id, robot access token) a simulator accepts when
    /// the configuration leaves `app_key` empty.
    pub fn default_app_key(self) -> &'static str {
        match self {
            Kind::DingtalkRobot => "sim-robot-token",
            _ => "sim-key",
        }
    }

    /// The secret a simulator accepts when the configuration leaves `app_secret` empty.
    pub fn default_app_secret(self) -> &'static str {
        match self {
            // Robot signing secrets always start with "SEC".
            Kind::DingtalkRobot => "SECsim-robot-secret",
            // base64("sim-webhook-signing-key-0001"), 28 bytes.
            Kind::Webhook => "whsec_c2ltLXdlYmhvb2stc2lnbmluZy1rZXktMDAwMQ==",
            _ => "sim-secret",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown kind {s:?}, expected one of {}", names.join(", "))
            })
    }
}

/// Configuration of one HTTP simulator.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Which provider to simulate.
    pub kind: Kind,
    /// Listen address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Worker threads of the simulator's own runtime.
    pub threads: usize,
    /// Token-bucket rate of send requests (burst = rate); `None` = unlimited. Over it the
    /// provider's own rate-limit error is answered.
    pub rate_per_second: Option<u32>,
    /// Lifetime of issued access tokens.
    pub token_ttl_seconds: u64,
    /// Time from acceptance until a recipient's outcome is visible or pushed.
    pub receipt_delay_ms: u64,
    /// Weights of the outcome drawn for every accepted recipient.
    pub outcomes: OutcomeMix,
    /// Where pushed receipts go (JSMS reports, WeChat job results, Feishu read events).
    pub callback_url: Option<String>,
    /// Key the simulator accepts; empty = [`Kind::default_app_key`]. DingTalk appkey,
    /// WeCom corpid, Feishu app_id, JPush/JSMS appKey, WeChat appid, robot access_token.
    pub app_key: String,
    /// Secret the simulator accepts; empty = [`Kind::default_app_secret`]. DingTalk
    /// appsecret, WeCom corpsecret, Feishu app_secret, JPush/JSMS masterSecret, WeChat
    /// secret, robot signing secret (`SEC…`), webhook `whsec_…` secret.
    pub app_secret: String,
    /// Serve HTTPS with a fresh self-signed certificate (see [`SimHandle::cert_pem`]).
    pub tls: bool,
    /// How old a message may be and still be recalled (DingTalk, WeCom, Feishu, JPush);
    /// older ones are refused with the provider's error. 24 h, as the providers document.
    pub recall_window_seconds: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            kind: Kind::default(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            threads: 2,
            rate_per_second: None,
            token_ttl_seconds: 7200,
            receipt_delay_ms: 300,
            outcomes: OutcomeMix::default(),
            callback_url: None,
            app_key: String::new(),
            app_secret: String::new(),
            tls: false,
            recall_window_seconds: 24 * 3600,
        }
    }
}

impl SimConfig {
    /// Defaults for `kind`, with that kind's default credentials filled in.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            ..Self::default()
        }
        .resolved()
    }

    /// The configuration with empty credentials replaced by the kind's defaults.
    pub fn resolved(mut self) -> Self {
        if self.app_key.is_empty() {
            self.app_key = self.kind.default_app_key().to_owned();
        }
        if self.app_secret.is_empty() {
            self.app_secret = self.kind.default_app_secret().to_owned();
        }
        self
    }
}

/// Relative weights of the outcomes drawn for accepted recipients. All zero means
/// "delivered".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutcomeMix {
    /// Delivered (unread where the provider tells read from unread).
    pub delivered: u32,
    /// Not delivered (failed at the provider or handset).
    pub undelivered: u32,
    /// Delivered and read / clicked where the provider reports it.
    pub clicked: u32,
}

impl Default for OutcomeMix {
    fn default() -> Self {
        Self {
            delivered: 100,
            undelivered: 0,
            clicked: 0,
        }
    }
}

/// Injected faults. Counters (`*_next`) apply to the next N send requests and count down;
/// `latency_ms` applies to every request while set; `expire_tokens` is a one-shot action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Faults {
    /// Added to every request (the control surface excepted) while set.
    pub latency_ms: u64,
    /// Next N send requests answer 5xx (JPush 500 code 1000, JSMS 500 code 50019, others
    /// a plain 503).
    pub fail_next: u32,
    /// Next N send requests answer the provider's "system busy" error.
    pub busy_next: u32,
    /// Next N send requests answer the provider's rate-limit error, whatever the bucket.
    pub rate_limit_next: u32,
    /// Next N send requests never answer: the connection is held 60 s, then closed.
    pub timeout_next: u32,
    /// Next N send requests: the connection is closed without any response.
    pub drop_next: u32,
    /// Invalidate every token issued so far (they answer "expired" from now on).
    pub expire_tokens: bool,
    /// Next N send requests answer a permanent error for the whole request.
    pub permanent_next: u32,
}

/// Counters of one simulator. They keep counting when the received ring wraps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Stats {
    /// Requests served, the control surface excepted.
    pub requests: u64,
    /// Send requests (the provider's message endpoints).
    pub send_requests: u64,
    /// Recipients accepted for delivery (invalid ones excluded).
    pub recipients_accepted: u64,
    /// Requests answered with the rate-limit error (bucket or injected).
    pub rate_limited: u64,
    /// Access tokens issued (the same token handed out again counts too).
    pub token_issued: u64,
    /// Requests refused for authentication: bad, expired or missing token, bad
    /// credentials, bad signature.
    pub token_rejected: u64,
    /// Send requests answered by an injected fault.
    pub faults_injected: u64,
    /// Receipts pushed to the callback URL and answered with 2xx.
    pub receipts_pushed: u64,
    /// Push attempts that failed (non-2xx or transport error); retried ones included.
    pub receipts_push_failed: u64,
    /// Receipts given up: retries exhausted, or the push queue was full.
    pub receipts_dropped: u64,
}

/// One accepted recipient.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Received {
    /// User id, open id, registration id, mobile, robot token or webhook path.
    pub recipient: String,
    /// The id the provider answered for it (task id, msgid, message_id, msg_id, …).
    pub provider_id: String,
    /// The request body: JSON as sent (a JSON string if the body was not JSON).
    pub body: serde_json::Value,
    /// Acceptance time, Unix milliseconds.
    pub at_ms: u64,
}

/// One recall (withdraw) request a simulator answered.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Recall {
    /// The id it named: DingTalk task id, WeCom msgid, Feishu message_id, JPush msg_id.
    pub provider_id: String,
    /// Withdrawn; otherwise refused with the provider's error code `error` (the id is
    /// unknown, or older than [`SimConfig::recall_window_seconds`]).
    pub withdrawn: bool,
    pub error: Option<i64>,
    /// When it was answered, Unix milliseconds.
    pub at_ms: u64,
}

/// Installs rustls' ring provider as the process default: HTTP clients (the simulators'
/// receipt pushes, tests, the load generator) need one before they are built.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A running HTTP simulator. Dropping it shuts it down too.
pub struct SimHandle {
    addr: SocketAddr,
    cert_pem: Option<String>,
    sim: Arc<state::Sim>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// The bound listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:9001`.
    pub fn url(&self) -> String {
        let scheme = if self.cert_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// With `tls`: the simulator's self-signed certificate, PEM.
    pub fn cert_pem(&self) -> Option<&str> {
        self.cert_pem.as_deref()
    }

    /// The provider this simulator stands in for.
    pub fn kind(&self) -> Kind {
        self.sim.cfg.kind
    }

    /// The effective configuration, with the credentials the simulator accepts.
    pub fn config(&self) -> SimConfig {
        self.sim.cfg.clone()
    }

    /// Replace the injected faults (and run `expire_tokens` if set).
    pub fn set_faults(&self, f: Faults) {
        self.sim.set_faults(&f);
    }

    /// The faults still pending.
    pub fn faults(&self) -> Faults {
        self.sim.faults.snapshot()
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        self.sim.counters.snapshot()
    }

    /// The accepted recipients still in the ring (the last 100 000), oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.sim.received(usize::MAX)
    }

    /// The last `n` accepted recipients, oldest first; cheaper than [`Self::received`]
    /// when the ring is full of large batch bodies.
    pub fn received_tail(&self, n: usize) -> Vec<Received> {
        self.sim.received(n)
    }

    /// How many entries the received ring holds (at most 100 000).
    pub fn received_count(&self) -> usize {
        self.sim.received_count()
    }

    /// The recall requests answered (the last 10 000), oldest first, refused ones too.
    pub fn recalls(&self) -> Vec<Recall> {
        self.sim.recalls.log()
    }

    /// Stop the listener and the simulator's thread.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("kind", &self.sim.cfg.kind)
            .field("addr", &self.addr)
            .finish()
    }
}

/// Start a simulator: bind its listener now (so errors surface here) and serve it from
/// a dedicated thread.
pub fn start(cfg: SimConfig) -> std::io::Result<SimHandle> {
    server::start(cfg.resolved())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_json_fills_defaults_and_refuses_unknown_keys() {
        let list: Vec<SimConfig> = serde_json::from_str(
            r#"[{"kind": "wechat_oa", "listen": "127.0.0.1:9007", "rate_per_second": 50},
                {"kind": "dingtalk_robot", "outcomes": {"clicked": 5}}]"#,
        )
        .unwrap();
        assert_eq!(list[0].kind, Kind::WechatOa);
        assert_eq!(list[0].threads, 2);
        assert_eq!(list[0].receipt_delay_ms, 300);
        assert_eq!(list[0].rate_per_second, Some(50));
        assert_eq!(list[1].outcomes.clicked, 5);
        assert_eq!(list[1].outcomes.delivered, 100);
        let robot = list[1].clone().resolved();
        assert!(robot.app_secret.starts_with("SEC"));
        assert!(serde_json::from_str::<SimConfig>(r#"{"kind": "wecom", "port": 1}"#).is_err());
    }

    #[test]
    fn kind_names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>(), Ok(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert!("sms".parse::<Kind>().is_err());
    }
}
