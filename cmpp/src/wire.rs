//! Field-level reading and writing shared by the PDU layouts.
//!
//! The reader never indexes past its slice: a short body is a [`BodyProblem::Truncated`]
//! value, so no input can panic a decode.

use bytes::{BufMut, BytesMut};

use crate::error::{BodyProblem, Error};
use crate::octet::OctetString;
use crate::version::Version;

/// Writes `value` NUL-padded to `width` bytes.
pub(crate) fn put_octets(
    dst: &mut BytesMut,
    field: &'static str,
    value: &OctetString,
    width: usize,
) -> Result<(), Error> {
    let bytes = value.as_bytes();
    if bytes.len() > width {
        return Err(Error::FieldTooLong {
            field,
            len: bytes.len(),
            width,
        });
    }
    dst.put_slice(bytes);
    dst.put_bytes(0, width - bytes.len());
    Ok(())
}

/// Writes a response status: one byte in 2.0, four in 3.0.
pub(crate) fn put_status(
    dst: &mut BytesMut,
    field: &'static str,
    value: u32,
    version: Version,
) -> Result<(), Error> {
    match version {
        Version::V20 => {
            let byte = u8::try_from(value).map_err(|_| Error::ValueOutOfRange {
                field,
                value,
                max: u8::MAX.into(),
            })?;
            dst.put_u8(byte);
        }
        Version::V30 => dst.put_u32(value),
    }
    Ok(())
}

/// A cursor over one frame's body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], BodyProblem> {
        if self.buf.len() < n {
            return Err(BodyProblem::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], BodyProblem> {
        let bytes = self.bytes(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, BodyProblem> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, BodyProblem> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, BodyProblem> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn octets(&mut self, width: usize) -> Result<OctetString, BodyProblem> {
        Ok(OctetString::from_padded(self.bytes(width)?))
    }

    pub(crate) fn status(&mut self, version: Version) -> Result<u32, BodyProblem> {
        match version {
            Version::V20 => self.u8().map(u32::from),
            Version::V30 => self.u32(),
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Succeeds only if every byte of the body was read.
    pub(crate) fn finish(self) -> Result<(), BodyProblem> {
        match self.buf.len() {
            0 => Ok(()),
            extra => Err(BodyProblem::TrailingBytes(extra)),
        }
    }
}
