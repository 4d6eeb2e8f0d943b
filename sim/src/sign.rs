//! Signatures the simulated providers check or produce, public so tests and clients can
//! build matching requests and verify pushed callbacks.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::state::hex;

type HmacSha256 = Hmac<Sha256>;

fn hmac_sha256_b64(key: &[u8], parts: &[&[u8]]) -> Option<String> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    for p in parts {
        mac.update(p);
    }
    Some(B64.encode(mac.finalize().into_bytes()))
}

/// DingTalk robot `sign` before URL-encoding: base64(HMAC-SHA256(key = secret,
/// msg = timestamp + "\n" + secret)).
pub fn dingtalk_robot(secret: &str, timestamp_ms: u64) -> String {
    let msg = format!("{timestamp_ms}\n{secret}");
    hmac_sha256_b64(secret.as_bytes(), &[msg.as_bytes()]).unwrap_or_default()
}

/// The HMAC key of a Standard Webhooks secret: the base64 after `whsec_`.
pub fn standard_webhooks_key(secret: &str) -> Option<Vec<u8>> {
    B64.decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()
}

/// One Standard Webhooks `webhook-signature` entry (`v1,<base64>`) over
/// `"{id}.{timestamp}.{body}"`; `None` if the secret is not valid base64.
pub fn standard_webhooks(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = standard_webhooks_key(secret)?;
    let prefix = format!("{id}.{timestamp}.");
    hmac_sha256_b64(&key, &[prefix.as_bytes(), body]).map(|s| format!("v1,{s}"))
}

/// JSMS callback `signature`: SHA-1 hex of
/// `appKey={k}&appMasterSecret={s}&nonce={n}&timestamp={t}`.
pub fn jsms_callback(app_key: &str, master_secret: &str, nonce: &str, timestamp: &str) -> String {
    let text = format!(
        "appKey={app_key}&appMasterSecret={master_secret}&nonce={nonce}&timestamp={timestamp}"
    );
    hex(&Sha1::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_spec_vector() {
        let sig = standard_webhooks(
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Some("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
        );
    }

    #[test]
    fn jsms_signature_is_sha1_hex() {
        let s = jsms_callback("k", "s", "1", "2");
        assert_eq!(s.len(), 40);
        assert!(s.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
