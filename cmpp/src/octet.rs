//! [`OctetString`]: the protocol's fixed-width text fields (Source_Addr, Service_Id,
//! terminal ids, Stat, times, …) as the bytes they carry.
//!
//! On the wire a value is right-padded with NUL to its field's width; decoding keeps the
//! bytes before the first NUL. Encoding a value longer than its field is an error, never a
//! silent truncation. The bytes are kept as they are (not forced to UTF-8) so a gateway
//! sending an odd byte in, say, Service_Id does not make a DELIVER undecodable.

use std::borrow::Cow;
use std::fmt;

/// The content of a fixed-width Octet String field, without its NUL padding.
///
/// Build one from text with `From<&str>`. Bytes after an interior NUL do not survive a
/// round trip (decoding stops at the first NUL), so values should not contain NUL.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OctetString(Vec<u8>);

impl OctetString {
    /// Wraps raw bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> OctetString {
        OctetString(bytes.into())
    }

    /// The value read from a NUL-padded field: the bytes before the first NUL.
    pub fn from_padded(field: &[u8]) -> OctetString {
        let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        OctetString(field[..end].to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The value as text, if it is UTF-8 (the protocol's ids and codes are ASCII).
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The value as text, with invalid bytes replaced by U+FFFD.
    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl From<&str> for OctetString {
    fn from(s: &str) -> Self {
        OctetString(s.as_bytes().to_vec())
    }
}

impl From<String> for OctetString {
    fn from(s: String) -> Self {
        OctetString(s.into_bytes())
    }
}

impl From<&[u8]> for OctetString {
    fn from(b: &[u8]) -> Self {
        OctetString(b.to_vec())
    }
}

impl From<Vec<u8>> for OctetString {
    fn from(b: Vec<u8>) -> Self {
        OctetString(b)
    }
}

impl AsRef<[u8]> for OctetString {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<str> for OctetString {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for OctetString {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Display for OctetString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}

impl fmt::Debug for OctetString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_at_first_nul() {
        assert_eq!(OctetString::from_padded(b"9000\0\0"), "9000");
        assert_eq!(OctetString::from_padded(b"ab\0cd\0"), "ab");
        assert_eq!(OctetString::from_padded(b"123456"), "123456");
        assert!(OctetString::from_padded(b"\0\0\0").is_empty());
    }

    #[test]
    fn debug_escapes() {
        assert_eq!(
            format!("{:?}", OctetString::new(vec![b'a', 0xFF])),
            "\"a\\xff\""
        );
    }
}
