//! The 12-byte header every CMPP frame starts with, the Command_Id values, and the
//! "is a whole frame buffered?" check that comes before any parsing.
//!
//! Total_Length is untrusted input: [`check`] bounds it before anyone reserves memory for it.

use std::fmt;

use bytes::BufMut;

use crate::error::Error;

/// Length of the header: Total_Length, Command_Id, Sequence_Id, each a big-endian u32.
pub const HEADER_LEN: usize = 12;

/// A Command_Id. Known values are associated constants; any other u32 is representable so
/// unknown commands can be carried and skipped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandId(pub u32);

impl CommandId {
    /// Bit set in every response's Command_Id.
    pub const RESPONSE_BIT: u32 = 0x8000_0000;

    pub const CONNECT: CommandId = CommandId(0x0000_0001);
    pub const CONNECT_RESP: CommandId = CommandId(0x8000_0001);
    pub const TERMINATE: CommandId = CommandId(0x0000_0002);
    pub const TERMINATE_RESP: CommandId = CommandId(0x8000_0002);
    pub const SUBMIT: CommandId = CommandId(0x0000_0004);
    pub const SUBMIT_RESP: CommandId = CommandId(0x8000_0004);
    pub const DELIVER: CommandId = CommandId(0x0000_0005);
    pub const DELIVER_RESP: CommandId = CommandId(0x8000_0005);
    pub const QUERY: CommandId = CommandId(0x0000_0006);
    pub const QUERY_RESP: CommandId = CommandId(0x8000_0006);
    pub const CANCEL: CommandId = CommandId(0x0000_0007);
    pub const CANCEL_RESP: CommandId = CommandId(0x8000_0007);
    pub const ACTIVE_TEST: CommandId = CommandId(0x0000_0008);
    pub const ACTIVE_TEST_RESP: CommandId = CommandId(0x8000_0008);

    /// Whether this is a response (high bit set).
    pub const fn is_response(self) -> bool {
        self.0 & Self::RESPONSE_BIT != 0
    }

    /// The response's Command_Id for a request's.
    pub const fn response(self) -> CommandId {
        CommandId(self.0 | Self::RESPONSE_BIT)
    }

    /// The spec's name for a known command, e.g. `"SUBMIT_RESP"`.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0000_0001 => "CONNECT",
            0x8000_0001 => "CONNECT_RESP",
            0x0000_0002 => "TERMINATE",
            0x8000_0002 => "TERMINATE_RESP",
            0x0000_0004 => "SUBMIT",
            0x8000_0004 => "SUBMIT_RESP",
            0x0000_0005 => "DELIVER",
            0x8000_0005 => "DELIVER_RESP",
            0x0000_0006 => "QUERY",
            0x8000_0006 => "QUERY_RESP",
            0x0000_0007 => "CANCEL",
            0x8000_0007 => "CANCEL_RESP",
            0x0000_0008 => "ACTIVE_TEST",
            0x8000_0008 => "ACTIVE_TEST_RESP",
            0x0000_0009 => "FWD",
            0x8000_0009 => "FWD_RESP",
            _ => return None,
        })
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "0x{:08X}", self.0),
        }
    }
}

impl fmt::Debug for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandId({self})")
    }
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Length of the whole frame, header included.
    pub total_length: u32,
    pub command_id: CommandId,
    /// Request sequence number; a response echoes its request's.
    pub sequence_id: u32,
}

impl Header {
    /// Reads a header from the start of `buf`, or `None` if fewer than 12 bytes are there.
    /// Does not validate Total_Length; [`check`] does.
    pub fn peek(buf: &[u8]) -> Option<Header> {
        let bytes: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        let word =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Some(Header {
            total_length: word(0),
            command_id: CommandId(word(4)),
            sequence_id: word(8),
        })
    }

    /// Appends the header's 12 bytes.
    pub fn put(&self, dst: &mut impl BufMut) {
        dst.put_u32(self.total_length);
        dst.put_u32(self.command_id.0);
        dst.put_u32(self.sequence_id);
    }
}

/// What [`check`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffered {
    /// Not a whole frame yet: an expected state, read more bytes. The frame is at least
    /// `at_least` bytes (its Total_Length once the first 4 bytes are in, 12 before).
    Incomplete { at_least: usize },
    /// A whole frame of `header.total_length` bytes is buffered.
    Complete(Header),
}

/// Checks whether `buf` starts with a whole frame, validating Total_Length against
/// `12..=max_frame` as soon as its 4 bytes are present.
///
/// # Errors
/// [`Error::LengthTooSmall`] or [`Error::LengthTooLarge`]; the stream is then out of sync.
pub fn check(buf: &[u8], max_frame: usize) -> Result<Buffered, Error> {
    let Some(len_bytes) = buf.get(..4) else {
        return Ok(Buffered::Incomplete {
            at_least: HEADER_LEN,
        });
    };
    let total_length = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    let frame_len = usize::try_from(total_length).unwrap_or(usize::MAX);
    if frame_len < HEADER_LEN {
        return Err(Error::LengthTooSmall(total_length));
    }
    if frame_len > max_frame {
        return Err(Error::LengthTooLarge {
            length: total_length,
            max: max_frame,
        });
    }
    if buf.len() < frame_len {
        return Ok(Buffered::Incomplete {
            at_least: frame_len,
        });
    }
    match Header::peek(buf) {
        Some(header) => Ok(Buffered::Complete(header)),
        // Unreachable: frame_len >= HEADER_LEN bytes are buffered.
        None => Ok(Buffered::Incomplete {
            at_least: frame_len,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_id_names_and_response_bit() {
        assert_eq!(CommandId::SUBMIT.response(), CommandId::SUBMIT_RESP);
        assert!(CommandId::SUBMIT_RESP.is_response());
        assert_eq!(CommandId::DELIVER.to_string(), "DELIVER");
        assert_eq!(CommandId(0x10).to_string(), "0x00000010");
    }

    #[test]
    fn check_states() {
        assert_eq!(
            check(&[], 100).ok(),
            Some(Buffered::Incomplete { at_least: 12 })
        );
        assert_eq!(
            check(&[0, 0, 0, 20, 0], 100).ok(),
            Some(Buffered::Incomplete { at_least: 20 })
        );
        assert!(matches!(
            check(&[0, 0, 0, 11], 100),
            Err(Error::LengthTooSmall(11))
        ));
        assert!(matches!(
            check(&[0xFF, 0xFF, 0xFF, 0xFF], 100),
            Err(Error::LengthTooLarge { .. })
        ));
        let frame = [0, 0, 0, 12, 0, 0, 0, 8, 0, 0, 0, 7];
        assert_eq!(
            check(&frame, 100).ok(),
            Some(Buffered::Complete(Header {
                total_length: 12,
                command_id: CommandId::ACTIVE_TEST,
                sequence_id: 7
            }))
        );
    }
}
