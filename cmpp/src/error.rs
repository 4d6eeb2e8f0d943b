//! Error types: [`Error`] for the wire (framing, PDU bodies, encoding limits) and
//! [`TextError`] for message text (encodings, splitting, UDH, reassembly).
//!
//! Every decoding failure is a value here; nothing in this crate panics on input.

use std::io;

use crate::header::CommandId;
use crate::text::MsgFmt;

/// A wire-level failure: framing, a malformed body, or a value that cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Total_Length is below the 12-byte header. The stream is out of sync: close it.
    #[error("Total_Length {0} is shorter than the 12-byte header")]
    LengthTooSmall(u32),
    /// Total_Length is above the codec's frame limit. Nothing was buffered for it; the stream
    /// is out of sync: close it.
    #[error("Total_Length {length} exceeds the frame limit of {max} bytes")]
    LengthTooLarge { length: u32, max: usize },
    /// A known command's body does not match its layout. The frame's bytes were consumed, so
    /// the stream is still in sync and the next frame can be read; the header is kept so a
    /// server can answer with a structure-error result.
    #[error("malformed {command_id} body (Sequence_Id {sequence_id}): {problem}")]
    Malformed {
        command_id: CommandId,
        sequence_id: u32,
        problem: BodyProblem,
    },
    /// Encoding: a value is longer than its fixed-width field (never silently truncated).
    #[error("{field} is {len} bytes, longer than its {width}-byte field")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        width: usize,
    },
    /// Encoding: an integer does not fit its field in this version (e.g. a 2.0 status > 255).
    #[error("{field} = {value} does not fit its field (max {max})")]
    ValueOutOfRange {
        field: &'static str,
        value: u32,
        max: u32,
    },
    /// Encoding: DestUsr_tl must be 1 to 99.
    #[error("SUBMIT has {0} recipients; DestUsr_tl allows 1 to 99")]
    RecipientCount(usize),
    /// Encoding: Msg_Content is over the limit for its Msg_Fmt (159 bytes for ASCII, 140
    /// otherwise).
    #[error("Msg_Content is {len} bytes; Msg_Fmt {msg_fmt} allows at most {max}")]
    ContentTooLong { len: usize, max: usize, msg_fmt: u8 },
    /// Encoding: the whole frame would exceed the codec's frame limit. Nothing was written.
    #[error("encoded frame is {length} bytes, over the frame limit of {max}")]
    FrameTooLarge { length: usize, max: usize },
    /// The transport failed (only produced through `tokio_util`'s framed streams).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// Whether the byte stream is still usable after this error.
    ///
    /// `true` for a malformed frame (its bytes were skipped) and for every encoding error
    /// (nothing was written); `false` for framing and I/O errors, after which the connection
    /// must be closed.
    pub fn is_recoverable(&self) -> bool {
        !matches!(
            self,
            Error::LengthTooSmall(_) | Error::LengthTooLarge { .. } | Error::Io(_)
        )
    }
}

/// How a body failed to match its command's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyProblem {
    /// Total_Length ends before the fields do.
    #[error("body ends before its fields do")]
    Truncated,
    /// Total_Length covers this many bytes after the last field.
    #[error("{0} bytes after the last field")]
    TrailingBytes(usize),
    /// Content that should be a status report is not 60 or 71 bytes
    /// ([`StatusReport::from_bytes`](crate::StatusReport::from_bytes); inside a DELIVER this
    /// becomes [`DeliverContent::InvalidReport`](crate::DeliverContent::InvalidReport)).
    #[error("status report is {0} bytes, expected 60 (2.0) or 71 (3.0)")]
    ReportLength(usize),
}

/// A failure converting message text to or from Msg_Content bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Msg_Fmt 0 was asked for but the text has a non-ASCII character (or byte, decoding).
    #[error("not ASCII at byte {0}")]
    NotAscii(usize),
    /// GBK has no code for this character.
    #[error("{0:?} cannot be encoded in GBK")]
    NotInGbk(char),
    /// The bytes are not valid GBK.
    #[error("invalid GBK")]
    InvalidGbk,
    /// UCS2 content has an odd number of bytes.
    #[error("UCS2 content has an odd length ({0} bytes)")]
    OddUcs2Length(usize),
    /// UCS2 content has an unpaired surrogate.
    #[error("UCS2 content has an unpaired surrogate")]
    InvalidUcs2,
    /// This Msg_Fmt is not a text encoding this crate handles (binary, SIM write, …).
    #[error("Msg_Fmt {0:?} is not a supported text encoding")]
    UnsupportedFormat(MsgFmt),
    /// The message needs more than 255 segments (Pk_total is one byte).
    #[error("message needs {0} segments; at most 255 fit")]
    TooManySegments(usize),
    /// The signature leaves no room for text in the first segment.
    #[error("the signature alone ({0} bytes) fills a whole segment")]
    SignatureTooLong(usize),
    /// A User Data Header is cut short or its lengths do not add up.
    #[error("malformed user data header")]
    MalformedUdh,
    /// The User Data Header has no concatenation element (IEI 0x00 or 0x08).
    #[error("user data header has no concatenation element")]
    NoConcatenation,
    /// A segment claims total 0, number 0, or a number above its total.
    #[error("segment {number} of {total} is not a valid position")]
    InvalidSegment { total: u8, number: u8 },
}
