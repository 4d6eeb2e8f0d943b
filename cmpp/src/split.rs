//! Choosing an encoding for a message and splitting it into SUBMIT segments.
//!
//! Limits (Msg_Content bytes; a long message's segments start with the 6-byte UDH
//! `05 00 03 ref total number` from [`udh::concat_header`]):
//!
//! | Msg_Fmt | single message | per segment of a long one |
//! |---|---|---|
//! | ASCII (0) | 159 bytes (Msg_Length < 160) | 134 bytes |
//! | UCS2 (8) | 70 UTF-16 units (140 bytes) | 67 units (134 bytes), 66 when a surrogate pair would straddle the cut |
//! | GBK (15) | 140 bytes (70 Hanzi) | 134 bytes (67 Hanzi) |
//!
//! A character is never cut: a UTF-16 surrogate pair (an emoji counts as two units) or a
//! two-byte GBK character always lands whole in one segment. The signature (e.g. "【umsd】") counts toward these limits;
//! where it goes is the caller's choice, see [`Signature`].

use crate::error::TextError;
use crate::text::{self, MsgFmt};
use crate::udh::{self, CONCAT_UDH_LEN};

/// Msg_Content limit of a single ASCII message (Msg_Length < 160).
pub const SINGLE_ASCII_MAX: usize = 159;
/// Msg_Content limit of a single UCS2 or GBK message.
pub const SINGLE_MAX: usize = 140;
/// Payload bytes per segment of a long message (140 minus the 6-byte UDH).
pub const SEGMENT_PAYLOAD_MAX: usize = SINGLE_MAX - CONCAT_UDH_LEN;

/// Where the message's signature goes. The protocol does not place it; carriers usually
/// require it, and some add it themselves to the first segment, which then overflows if the
/// SP did not leave room (so it is counted in every case).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Signature<'a> {
    #[default]
    None,
    /// Put before the text (the common placement for "【签名】").
    Prefix(&'a str),
    /// Put after the text.
    Suffix(&'a str),
    /// Not sent: the gateway prepends it to the first segment. Its length is reserved there
    /// and counted when deciding whether the message fits a single SUBMIT.
    AddedByGateway(&'a str),
}

/// How to split a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitOptions<'a> {
    pub signature: Signature<'a>,
    /// Encoding for text that is not pure ASCII: [`MsgFmt::UCS2`] (default) or
    /// [`MsgFmt::GBK`].
    pub non_ascii: MsgFmt,
    /// The UDH reference shared by this message's segments; keep a per-session counter so
    /// concurrent long messages to one handset get different references.
    pub reference: u8,
}

impl Default for SplitOptions<'_> {
    fn default() -> Self {
        SplitOptions {
            signature: Signature::None,
            non_ascii: MsgFmt::UCS2,
            reference: 0,
        }
    }
}

/// One SUBMIT's worth of a message; apply it with
/// [`Submit::with_segment`](crate::Submit::with_segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub msg_fmt: MsgFmt,
    /// 1 if `content` starts with a UDH, else 0.
    pub tp_udhi: u8,
    pub pk_total: u8,
    pub pk_number: u8,
    /// Msg_Content: the UDH (for a long message) followed by this segment's text bytes.
    pub content: Vec<u8>,
}

/// The Msg_Fmt for `text`: ASCII if every character is ASCII, else `non_ascii`.
pub fn choose_fmt(text: &str, non_ascii: MsgFmt) -> MsgFmt {
    if text.is_ascii() {
        MsgFmt::ASCII
    } else {
        non_ascii
    }
}

/// Encodes `text` with its signature and splits it into segments.
///
/// The encoding is chosen from the whole sent text, signature included (a gateway-added
/// signature too, since the gateway cannot put Hanzi into an ASCII message).
///
/// # Errors
/// [`TextError::NotInGbk`] if GBK was chosen and a character has no GBK code;
/// [`TextError::TooManySegments`] beyond 255 segments; [`TextError::SignatureTooLong`] if a
/// gateway-added signature leaves no room in the first segment;
/// [`TextError::UnsupportedFormat`] if `non_ascii` is not UCS2 or GBK.
pub fn split_message(text: &str, options: &SplitOptions<'_>) -> Result<Vec<Segment>, TextError> {
    let (sent, reserved_text) = match options.signature {
        Signature::None => (text.to_owned(), ""),
        Signature::Prefix(sig) => (format!("{sig}{text}"), ""),
        Signature::Suffix(sig) => (format!("{text}{sig}"), ""),
        Signature::AddedByGateway(sig) => (text.to_owned(), sig),
    };
    let fmt = if sent.is_ascii() && reserved_text.is_ascii() {
        MsgFmt::ASCII
    } else {
        options.non_ascii
    };
    let bytes = text::encode(&sent, fmt)?;
    let reserved = text::encode(reserved_text, fmt)?.len();
    let single_max = if fmt == MsgFmt::ASCII {
        SINGLE_ASCII_MAX
    } else {
        SINGLE_MAX
    };

    if bytes.len() + reserved <= single_max {
        return Ok(vec![Segment {
            msg_fmt: fmt,
            tp_udhi: 0,
            pk_total: 1,
            pk_number: 1,
            content: bytes,
        }]);
    }

    // Room for at least the largest indivisible character (a 4-byte surrogate pair).
    if reserved + 4 > SEGMENT_PAYLOAD_MAX {
        return Err(TextError::SignatureTooLong(reserved));
    }
    let chunks = pack(
        &bytes,
        &char_lengths(&bytes, fmt),
        SEGMENT_PAYLOAD_MAX - reserved,
    );
    let total = u8::try_from(chunks.len()).map_err(|_| TextError::TooManySegments(chunks.len()))?;
    Ok((1..=total)
        .zip(chunks)
        .map(|(number, chunk)| {
            let mut content = Vec::with_capacity(CONCAT_UDH_LEN + chunk.len());
            content.extend_from_slice(&udh::concat_header(options.reference, total, number));
            content.extend_from_slice(chunk);
            Segment {
                msg_fmt: fmt,
                tp_udhi: 1,
                pk_total: total,
                pk_number: number,
                content,
            }
        })
        .collect())
}

/// Byte lengths of the indivisible characters of encoded text, in order.
fn char_lengths(bytes: &[u8], fmt: MsgFmt) -> Vec<usize> {
    let mut lengths = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(&first) = rest.first() {
        let len = match fmt {
            // A high surrogate (D800–DBFF) followed by its low surrogate is one character.
            MsgFmt::UCS2 if (0xD8..=0xDB).contains(&first) && rest.len() >= 4 => 4,
            MsgFmt::UCS2 => 2,
            // The GBK encoder writes 0x81–0xFE as the lead byte of a two-byte code.
            MsgFmt::GBK if (0x81..=0xFE).contains(&first) => 2,
            _ => 1,
        };
        let len = len.min(rest.len());
        lengths.push(len);
        rest = &rest[len..];
    }
    lengths
}

/// Greedily packs whole characters into chunks of at most `SEGMENT_PAYLOAD_MAX` bytes; the
/// first chunk gets at most `first_max`.
fn pack<'a>(bytes: &'a [u8], lengths: &[usize], first_max: usize) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let (mut start, mut len, mut max) = (0, 0, first_max);
    for &char_len in lengths {
        if len + char_len > max {
            chunks.push(&bytes[start..start + len]);
            start += len;
            len = 0;
            max = SEGMENT_PAYLOAD_MAX;
        }
        len += char_len;
    }
    chunks.push(&bytes[start..start + len]);
    chunks
}
