//! CONNECT (39 bytes in both versions) and CONNECT_RESP (30 bytes in 2.0, 33 in 3.0).

use bytes::{BufMut, BytesMut};

use crate::auth::{self, SOURCE_ADDR_LEN};
use crate::error::{BodyProblem, Error};
use crate::octet::OctetString;
use crate::version::Version;
use crate::wire::{put_octets, put_status, Reader};

/// CONNECT: the SP logs in. Its layout is the same in 2.0 and 3.0, so a server can decode
/// it before it knows which version the client speaks (see [`Version::from_wire`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connect {
    /// SP_Id (the account), at most 6 bytes.
    pub source_addr: OctetString,
    pub authenticator_source: [u8; 16],
    /// The client's version byte: `0x20`, `0x30` (some clients send `0x21`).
    pub version: u8,
    /// MMDDHHMMSS as a decimal number, see [`auth::timestamp`].
    pub timestamp: u32,
}

impl Connect {
    /// A CONNECT with its AuthenticatorSource computed from `secret` and `timestamp`.
    ///
    /// # Errors
    /// [`Error::FieldTooLong`] if `source_addr` is longer than 6 bytes.
    pub fn new(
        source_addr: impl Into<OctetString>,
        secret: &[u8],
        version: Version,
        timestamp: u32,
    ) -> Result<Connect, Error> {
        let source_addr = source_addr.into();
        let authenticator_source = auth::authenticator_source(&source_addr, secret, timestamp)?;
        Ok(Connect {
            source_addr,
            authenticator_source,
            version: version.wire(),
            timestamp,
        })
    }

    /// Server side: whether AuthenticatorSource was made with `secret`.
    pub fn verify(&self, secret: &[u8]) -> bool {
        auth::authenticator_source(&self.source_addr, secret, self.timestamp)
            .is_ok_and(|expected| expected == self.authenticator_source)
    }

    pub(crate) fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        put_octets(dst, "Source_Addr", &self.source_addr, SOURCE_ADDR_LEN)?;
        dst.put_slice(&self.authenticator_source);
        dst.put_u8(self.version);
        dst.put_u32(self.timestamp);
        Ok(())
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Connect, BodyProblem> {
        Ok(Connect {
            source_addr: r.octets(SOURCE_ADDR_LEN)?,
            authenticator_source: r.array()?,
            version: r.u8()?,
            timestamp: r.u32()?,
        })
    }
}

/// CONNECT_RESP. Status is one byte in 2.0 and four in 3.0; it is held as a `u32` and
/// encoding a value above 255 in 2.0 is an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectResp {
    /// 0 OK, 1 bad structure, 2 illegal source address, 3 authentication error,
    /// 4 version too high, 5 and above other errors (e.g. too many connections).
    pub status: u32,
    /// `MD5(Status ‖ AuthenticatorSource ‖ secret)`; all zeros on a failed login.
    pub authenticator_ismg: [u8; 16],
    /// The highest version the gateway supports.
    pub version: u8,
}

impl ConnectResp {
    pub const OK: u32 = 0;
    pub const BAD_STRUCTURE: u32 = 1;
    pub const ILLEGAL_SOURCE_ADDR: u32 = 2;
    pub const AUTHENTICATION_FAILED: u32 = 3;
    pub const VERSION_TOO_HIGH: u32 = 4;
    /// Used by gateways for "other", e.g. more connections than the account allows.
    pub const OTHER: u32 = 5;

    /// Server side: a successful login answer to `connect`, authenticated with `secret`.
    pub fn accept(version: Version, connect: &Connect, secret: &[u8]) -> ConnectResp {
        ConnectResp {
            status: Self::OK,
            authenticator_ismg: auth::authenticator_ismg(
                version,
                Self::OK,
                &connect.authenticator_source,
                secret,
            ),
            version: version.wire(),
        }
    }

    /// Server side: a refused login; the authenticator is left empty.
    pub fn reject(version: Version, status: u32) -> ConnectResp {
        ConnectResp {
            status,
            authenticator_ismg: [0; 16],
            version: version.wire(),
        }
    }

    pub(crate) fn encode(&self, version: Version, dst: &mut BytesMut) -> Result<(), Error> {
        put_status(dst, "Status", self.status, version)?;
        dst.put_slice(&self.authenticator_ismg);
        dst.put_u8(self.version);
        Ok(())
    }

    pub(crate) fn decode(version: Version, r: &mut Reader<'_>) -> Result<ConnectResp, BodyProblem> {
        Ok(ConnectResp {
            status: r.status(version)?,
            authenticator_ismg: r.array()?,
            version: r.u8()?,
        })
    }
}
