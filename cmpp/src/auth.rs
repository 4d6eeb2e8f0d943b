//! Login authenticators: AuthenticatorSource (sent by the SP in CONNECT) and
//! AuthenticatorISMG (returned by the gateway in CONNECT_RESP), plus the MMDDHHMMSS
//! timestamp both sides hash.
//!
//! ```text
//! AuthenticatorSource = MD5(Source_Addr (6 bytes, NUL-padded) ‖ 9 × 0x00 ‖ secret ‖ timestamp as 10 ASCII digits)
//! AuthenticatorISMG   = MD5(Status ‖ AuthenticatorSource ‖ secret)
//! ```
//!
//! Gateways disagree on AuthenticatorISMG in 2.0 (a 1-byte or a 4-byte status, or all zeros
//! from lax gateways), so [`verify_authenticator_ismg`] reports which form matched instead of
//! a bare yes/no: the session decides whether to warn or fail.

use chrono::{Datelike, Timelike};
use md5::{Digest, Md5};

use crate::error::Error;
use crate::octet::OctetString;
use crate::pdu::ConnectResp;
use crate::version::Version;

/// Width of Source_Addr, also the width it is padded to inside the MD5 input.
pub const SOURCE_ADDR_LEN: usize = 6;

/// The CONNECT Timestamp: the decimal number MMDDHHMMSS (e.g. 1121230825 for
/// 21 Nov 23:08:25). Which time zone to take `time` in is the operator's convention
/// (China Standard Time in practice); the caller decides.
pub fn timestamp<T: Datelike + Timelike>(time: &T) -> u32 {
    // At most 1231235959, below u32::MAX.
    time.month() * 100_000_000
        + time.day() * 1_000_000
        + time.hour() * 10_000
        + time.minute() * 100
        + time.second().min(59)
}

/// The timestamp as it enters the MD5: ten zero-padded ASCII digits ("0105093000").
pub fn timestamp_digits(timestamp: u32) -> [u8; 10] {
    let mut digits = [b'0'; 10];
    let mut rest = timestamp;
    for slot in digits.iter_mut().rev() {
        // `rest % 10` is a single digit, so the narrowing is exact.
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    digits
}

/// AuthenticatorSource for CONNECT. A Source_Addr shorter than 6 bytes is NUL-padded in the
/// hash exactly as in the field.
///
/// # Errors
/// [`Error::FieldTooLong`] if `source_addr` is longer than 6 bytes.
pub fn authenticator_source(
    source_addr: &OctetString,
    secret: &[u8],
    timestamp: u32,
) -> Result<[u8; 16], Error> {
    let addr = source_addr.as_bytes();
    if addr.len() > SOURCE_ADDR_LEN {
        return Err(Error::FieldTooLong {
            field: "Source_Addr",
            len: addr.len(),
            width: SOURCE_ADDR_LEN,
        });
    }
    let mut padded = [0u8; SOURCE_ADDR_LEN];
    padded[..addr.len()].copy_from_slice(addr);
    let mut md5 = Md5::new();
    md5.update(padded);
    md5.update([0u8; 9]);
    md5.update(secret);
    md5.update(timestamp_digits(timestamp));
    Ok(md5.finalize().into())
}

/// AuthenticatorISMG as the spec defines it for `version`: the status is hashed with its
/// field width (1 byte in 2.0, 4 bytes big-endian in 3.0). In 2.0 only the low byte of
/// `status` exists on the wire, so only it is hashed.
pub fn authenticator_ismg(
    version: Version,
    status: u32,
    authenticator_source: &[u8; 16],
    secret: &[u8],
) -> [u8; 16] {
    let status = status.to_be_bytes();
    let status: &[u8] = match version {
        Version::V20 => &status[3..],
        Version::V30 => &status,
    };
    ismg_digest(status, authenticator_source, secret)
}

fn ismg_digest(status: &[u8], authenticator_source: &[u8; 16], secret: &[u8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(status);
    md5.update(authenticator_source);
    md5.update(secret);
    md5.finalize().into()
}

/// How a CONNECT_RESP's AuthenticatorISMG compares with what the SP expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsmgCheck {
    /// Matches the spec's form for the version.
    Valid,
    /// 2.0 only: matches a hash over a 4-byte status (some servers do this in 2.0 too).
    ValidWideStatus,
    /// All zeros: the gateway did not compute one (normal on a failed login, and some lax
    /// gateways never do).
    Empty,
    /// Matches none of the known forms.
    Mismatch,
}

impl IsmgCheck {
    /// Whether the authenticator proves the gateway knows the secret.
    pub fn is_valid(self) -> bool {
        matches!(self, IsmgCheck::Valid | IsmgCheck::ValidWideStatus)
    }
}

/// Checks `resp.authenticator_ismg` against the AuthenticatorSource the SP sent.
pub fn verify_authenticator_ismg(
    version: Version,
    resp: &ConnectResp,
    authenticator_source: &[u8; 16],
    secret: &[u8],
) -> IsmgCheck {
    let got = resp.authenticator_ismg;
    if got == authenticator_ismg(version, resp.status, authenticator_source, secret) {
        IsmgCheck::Valid
    } else if version == Version::V20
        && got == ismg_digest(&resp.status.to_be_bytes(), authenticator_source, secret)
    {
        IsmgCheck::ValidWideStatus
    } else if got == [0u8; 16] {
        IsmgCheck::Empty
    } else {
        IsmgCheck::Mismatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_is_mmddhhmmss() {
        let t = chrono::NaiveDate::from_ymd_opt(2024, 1, 5)
            .and_then(|d| d.and_hms_opt(9, 30, 0))
            .unwrap();
        assert_eq!(timestamp(&t), 105_093_000);
        assert_eq!(&timestamp_digits(105_093_000), b"0105093000");
        assert_eq!(&timestamp_digits(u32::MAX), b"4294967295");
    }

    #[test]
    fn ismg_forms() {
        let src = [7u8; 16];
        let ok = ConnectResp {
            status: 0,
            authenticator_ismg: authenticator_ismg(Version::V20, 0, &src, b"s"),
            version: 0x20,
        };
        assert_eq!(
            verify_authenticator_ismg(Version::V20, &ok, &src, b"s"),
            IsmgCheck::Valid
        );
        let wide = ConnectResp {
            authenticator_ismg: authenticator_ismg(Version::V30, 0, &src, b"s"),
            ..ok
        };
        assert_eq!(
            verify_authenticator_ismg(Version::V20, &wide, &src, b"s"),
            IsmgCheck::ValidWideStatus
        );
        assert_eq!(
            verify_authenticator_ismg(Version::V30, &wide, &src, b"s"),
            IsmgCheck::Valid
        );
        let empty = ConnectResp {
            authenticator_ismg: [0; 16],
            ..ok
        };
        assert_eq!(
            verify_authenticator_ismg(Version::V30, &empty, &src, b"s"),
            IsmgCheck::Empty
        );
        assert_eq!(
            verify_authenticator_ismg(Version::V30, &ok, &src, b"x"),
            IsmgCheck::Mismatch
        );
    }
}
