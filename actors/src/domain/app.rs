//! Apps: their keys and how their secrets are kept (salted SHA-256, compared in constant
//! time).

use sha2::{Digest, Sha256};

/// An app key: 1–64 of `[A-Za-z0-9_-]`.
pub fn is_valid_app_key(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// sha256(salt || secret).
pub fn hash_secret(salt: &[u8], secret: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(secret.as_bytes());
    h.finalize().into()
}

/// Whether `secret` is the one whose salted hash is `hash`, compared in constant time.
pub fn secret_matches(salt: &[u8], hash: &[u8], secret: &str) -> bool {
    let presented = hash_secret(salt, secret);
    presented.len() == hash.len()
        && presented
            .iter()
            .zip(hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}
