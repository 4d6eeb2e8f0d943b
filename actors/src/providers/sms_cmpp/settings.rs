//! The settings of an `sms_cmpp` channel (`PUT /admin/channels/{code}` → `settings`), parsed
//! and checked once so that the session actors work with values known to be usable.

use std::time::Duration;

use serde::Deserialize;

use crate::providers::contract::SettingsError;
use umsd_cmpp::split::Signature;
use umsd_cmpp::{MsgFmt, Version};

/// As given in the channel's `settings` (unknown keys are refused, naming the key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The gateway (ISMG).
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Source_Addr: the SP's account (SP_Id), at most 6 characters.
    pub account: String,
    /// The shared secret of the login's MD5.
    pub password: String,
    #[serde(default = "default_version")]
    pub version: String,
    /// Src_Id: the access number messages come from (at most 21 digits).
    pub src_id: String,
    /// Service_Id (at most 10 characters).
    #[serde(default)]
    pub service_id: String,
    /// Sessions (TCP connections) the account may hold at once.
    #[serde(default = "default_connections")]
    pub max_connections: u32,
    /// SUBMITs sent and not yet answered, per session.
    #[serde(default = "default_window")]
    pub window: u32,
    /// An idle session sends ACTIVE_TEST this often.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: u64,
    /// T: how long a request waits for its response before it is sent again.
    #[serde(default = "default_response_timeout")]
    pub response_timeout_seconds: u64,
    /// N: sends of a request before the session gives up on it and reconnects.
    #[serde(default = "default_tries")]
    pub tries: u32,
    /// Refuse a gateway whose AuthenticatorISMG is wrong (otherwise: log a warning).
    #[serde(default)]
    pub verify_ismg_auth: bool,
    /// Text put in front of every message (e.g. "【umsd】"), counted in its length.
    #[serde(default)]
    pub signature: String,
    /// Where the signature goes: `prefix` (default), `suffix`, or `gateway` (the gateway
    /// adds it to the first segment; it is only counted).
    #[serde(default = "default_signature_position")]
    pub signature_position: String,
    /// Encoding of text that is not pure ASCII: `ucs2` (default) or `gbk`.
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// Ask the gateway for status reports (Registered_Delivery).
    #[serde(default = "default_true")]
    pub registered_delivery: bool,
    /// First wait before connecting again after a lost session; it doubles up to
    /// `reconnect_max_ms`.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// First wait after the gateway refused the credentials or the account (CONNECT
    /// status 2 or 3): a configuration error, retried slowly (doubling up to 15 min).
    #[serde(default = "default_refused_backoff")]
    pub refused_login_backoff_seconds: u64,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
}

fn default_port() -> u16 {
    7890
}
fn default_version() -> String {
    "3.0".into()
}
fn default_connections() -> u32 {
    1
}
fn default_window() -> u32 {
    16
}
fn default_heartbeat() -> u64 {
    180
}
fn default_response_timeout() -> u64 {
    60
}
fn default_tries() -> u32 {
    3
}
fn default_signature_position() -> String {
    "prefix".into()
}
fn default_encoding() -> String {
    "ucs2".into()
}
fn default_true() -> bool {
    true
}
fn default_reconnect_min() -> u64 {
    500
}
fn default_reconnect_max() -> u64 {
    30_000
}
fn default_refused_backoff() -> u64 {
    60
}
fn default_connect_timeout() -> u64 {
    5_000
}

/// Where the signature goes, with its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignaturePlace {
    None,
    Prefix(String),
    Suffix(String),
    Gateway(String),
}

impl SignaturePlace {
    pub fn as_split(&self) -> Signature<'_> {
        match self {
            SignaturePlace::None => Signature::None,
            SignaturePlace::Prefix(s) => Signature::Prefix(s),
            SignaturePlace::Suffix(s) => Signature::Suffix(s),
            SignaturePlace::Gateway(s) => Signature::AddedByGateway(s),
        }
    }
}

/// Checked settings, in the units the sessions use.
#[derive(Debug, Clone)]
pub struct CmppConfig {
    pub host: String,
    pub port: u16,
    pub account: String,
    pub password: String,
    pub version: Version,
    pub src_id: String,
    pub service_id: String,
    pub max_connections: usize,
    pub window: usize,
    pub heartbeat: Duration,
    pub response_timeout: Duration,
    pub tries: u32,
    pub verify_ismg_auth: bool,
    pub signature: SignaturePlace,
    pub non_ascii: MsgFmt,
    pub registered_delivery: bool,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub refused_backoff: Duration,
    pub connect_timeout: Duration,
}

fn field(name: &str, msg: &str) -> SettingsError {
    SettingsError::new(format!("settings.{name}"), msg)
}

impl Settings {
    /// Checks every value; the error names the field.
    pub fn check(self) -> Result<CmppConfig, SettingsError> {
        if self.host.trim().is_empty() {
            return Err(field("host", "the gateway's host name or address"));
        }
        if self.port == 0 {
            return Err(field("port", "from 1 to 65535"));
        }
        if self.account.is_empty() || self.account.len() > 6 || !self.account.is_ascii() {
            return Err(field("account", "1 to 6 ASCII characters (Source_Addr)"));
        }
        if self.password.is_empty() {
            return Err(field("password", "the account's shared secret"));
        }
        let version = match self.version.as_str() {
            "2.0" => Version::V20,
            "3.0" => Version::V30,
            _ => return Err(field("version", "\"2.0\" or \"3.0\"")),
        };
        if self.src_id.is_empty()
            || self.src_id.len() > 21
            || !self.src_id.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(field("src_id", "1 to 21 digits (the access number)"));
        }
        if self.service_id.len() > 10 || !self.service_id.is_ascii() {
            return Err(field("service_id", "at most 10 ASCII characters"));
        }
        if !(1..=64).contains(&self.max_connections) {
            return Err(field("max_connections", "from 1 to 64"));
        }
        if !(1..=1024).contains(&self.window) {
            return Err(field("window", "from 1 to 1024"));
        }
        if !(1..=3600).contains(&self.heartbeat_seconds) {
            return Err(field("heartbeat_seconds", "from 1 to 3600"));
        }
        if !(1..=600).contains(&self.response_timeout_seconds) {
            return Err(field("response_timeout_seconds", "from 1 to 600"));
        }
        if !(1..=10).contains(&self.tries) {
            return Err(field("tries", "from 1 to 10"));
        }
        let signature = match (self.signature.is_empty(), self.signature_position.as_str()) {
            (_, p) if !matches!(p, "prefix" | "suffix" | "gateway") => {
                return Err(field(
                    "signature_position",
                    "\"prefix\", \"suffix\" or \"gateway\"",
                ))
            }
            (true, _) => SignaturePlace::None,
            (false, "prefix") => SignaturePlace::Prefix(self.signature),
            (false, "suffix") => SignaturePlace::Suffix(self.signature),
            (false, _) => SignaturePlace::Gateway(self.signature),
        };
        if let SignaturePlace::Prefix(s) | SignaturePlace::Suffix(s) | SignaturePlace::Gateway(s) =
            &signature
        {
            if s.chars().count() > 20 {
                return Err(field("signature", "at most 20 characters"));
            }
        }
        let non_ascii = match self.encoding.as_str() {
            "ucs2" => MsgFmt::UCS2,
            "gbk" => MsgFmt::GBK,
            _ => return Err(field("encoding", "\"ucs2\" or \"gbk\"")),
        };
        if !(1..=3_600_000).contains(&self.reconnect_min_ms) {
            return Err(field("reconnect_min_ms", "from 1 to 3600000"));
        }
        if !(self.reconnect_min_ms..=3_600_000).contains(&self.reconnect_max_ms) {
            return Err(field(
                "reconnect_max_ms",
                "from reconnect_min_ms to 3600000",
            ));
        }
        if !(1..=3600).contains(&self.refused_login_backoff_seconds) {
            return Err(field("refused_login_backoff_seconds", "from 1 to 3600"));
        }
        if !(1..=600_000).contains(&self.connect_timeout_ms) {
            return Err(field("connect_timeout_ms", "from 1 to 600000"));
        }
        Ok(CmppConfig {
            host: self.host,
            port: self.port,
            account: self.account,
            password: self.password,
            version,
            src_id: self.src_id,
            service_id: self.service_id,
            max_connections: self.max_connections as usize,
            window: self.window as usize,
            heartbeat: Duration::from_secs(self.heartbeat_seconds),
            response_timeout: Duration::from_secs(self.response_timeout_seconds),
            tries: self.tries,
            verify_ismg_auth: self.verify_ismg_auth,
            signature,
            non_ascii,
            registered_delivery: self.registered_delivery,
            reconnect_min: Duration::from_millis(self.reconnect_min_ms),
            reconnect_max: Duration::from_millis(self.reconnect_max_ms),
            refused_backoff: Duration::from_secs(self.refused_login_backoff_seconds),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ChannelType;
    use crate::providers::settings::ChannelSettings;
    use serde_json::json;

    fn parse(v: &serde_json::Value) -> Result<CmppConfig, SettingsError> {
        match ChannelSettings::parse(ChannelType::SmsCmpp, v)? {
            ChannelSettings::SmsCmpp(c) => Ok(c),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn base() -> serde_json::Value {
        json!({"host": "127.0.0.1", "port": 7890, "account": "900001", "password": "888888",
               "version": "3.0", "src_id": "10690001", "service_id": "umsd",
               "max_connections": 2, "window": 16, "heartbeat_seconds": 180,
               "response_timeout_seconds": 60, "tries": 3, "verify_ismg_auth": false,
               "signature": "【umsd】"})
    }

    #[test]
    fn the_documented_example_is_accepted() {
        let c = parse(&base()).unwrap();
        assert_eq!(c.version, Version::V30);
        assert_eq!(c.max_connections, 2);
        assert_eq!(c.signature, SignaturePlace::Prefix("【umsd】".into()));
        assert_eq!(c.response_timeout, Duration::from_secs(60));
    }

    #[test]
    fn bad_values_name_their_field() {
        for (key, value, named) in [
            ("version", json!("2.5"), "settings.version"),
            ("account", json!("9000011"), "settings.account"),
            ("src_id", json!("1069x"), "settings.src_id"),
            ("window", json!(0), "settings.window"),
            ("max_connections", json!(65), "settings.max_connections"),
            ("tries", json!(0), "settings.tries"),
            ("colour", json!("red"), "colour"),
        ] {
            let mut s = base();
            s[key] = value;
            let err = parse(&s).unwrap_err();
            assert!(err.to_string().contains(named), "{key}: {err}");
        }
    }
}
