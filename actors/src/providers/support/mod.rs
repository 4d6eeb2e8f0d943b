//! What several providers share: the HTTP client and answer shapes, TLS roots, access
//! tokens cached per credential, and receipt polling.

pub mod http;
pub mod poll;
pub mod recall;
pub mod tls;
pub mod token;

/// Lowercase hex of a SHA-1 digest (JSMS and WeChat sign with it).
pub fn sha1_hex(s: &str) -> String {
    use sha1::{Digest, Sha1};
    Sha1::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
