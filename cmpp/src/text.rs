//! Message text ⇄ Msg_Content bytes for the text encodings of Msg_Fmt: ASCII (0),
//! UCS2 (8, UTF-16 big-endian, surrogate pairs allowed) and GBK (15).
//!
//! Both directions are strict: text that the encoding cannot hold, or bytes that are not
//! valid in it, are a [`TextError`] rather than a silently substituted character.

use std::fmt;

use encoding_rs::{EncoderResult, GBK};

use crate::error::TextError;

/// A Msg_Fmt value. Any byte is representable; the known codes are constants.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgFmt(pub u8);

impl MsgFmt {
    pub const ASCII: MsgFmt = MsgFmt(0);
    /// Write to the SIM card.
    pub const SIM_WRITE: MsgFmt = MsgFmt(3);
    pub const BINARY: MsgFmt = MsgFmt(4);
    /// UTF-16 big-endian.
    pub const UCS2: MsgFmt = MsgFmt(8);
    pub const GBK: MsgFmt = MsgFmt(15);

    /// The name of a known code.
    pub const fn name(self) -> Option<&'static str> {
        match self.0 {
            0 => Some("ASCII"),
            3 => Some("SIM write"),
            4 => Some("binary"),
            8 => Some("UCS2"),
            15 => Some("GBK"),
            _ => None,
        }
    }
}

impl fmt::Debug for MsgFmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "MsgFmt({} {name})", self.0),
            None => write!(f, "MsgFmt({})", self.0),
        }
    }
}

/// Encodes `text` as Msg_Content bytes in `fmt`.
///
/// # Errors
/// [`TextError::NotAscii`] / [`TextError::NotInGbk`] when a character has no code in
/// `fmt`; [`TextError::UnsupportedFormat`] for a Msg_Fmt that is not ASCII, UCS2 or GBK.
pub fn encode(text: &str, fmt: MsgFmt) -> Result<Vec<u8>, TextError> {
    match fmt {
        MsgFmt::ASCII => match text.bytes().position(|b| !b.is_ascii()) {
            Some(at) => Err(TextError::NotAscii(at)),
            None => Ok(text.as_bytes().to_vec()),
        },
        MsgFmt::UCS2 => Ok(text.encode_utf16().flat_map(u16::to_be_bytes).collect()),
        MsgFmt::GBK => encode_gbk(text),
        other => Err(TextError::UnsupportedFormat(other)),
    }
}

fn encode_gbk(text: &str) -> Result<Vec<u8>, TextError> {
    let mut encoder = GBK.new_encoder();
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    let mut chunk = [0u8; 128];
    loop {
        let (result, read, written) =
            encoder.encode_from_utf8_without_replacement(rest, &mut chunk, true);
        out.extend_from_slice(&chunk[..written]);
        rest = &rest[read..];
        match result {
            EncoderResult::InputEmpty => return Ok(out),
            EncoderResult::OutputFull => {}
            EncoderResult::Unmappable(c) => return Err(TextError::NotInGbk(c)),
        }
    }
}

/// Decodes Msg_Content bytes in `fmt` to text.
///
/// # Errors
/// [`TextError::NotAscii`], [`TextError::OddUcs2Length`], [`TextError::InvalidUcs2`] or
/// [`TextError::InvalidGbk`] for bytes invalid in `fmt`; [`TextError::UnsupportedFormat`]
/// for a Msg_Fmt that is not ASCII, UCS2 or GBK.
pub fn decode(content: &[u8], fmt: MsgFmt) -> Result<String, TextError> {
    match fmt {
        MsgFmt::ASCII => match content.iter().position(|b| !b.is_ascii()) {
            Some(at) => Err(TextError::NotAscii(at)),
            None => Ok(content.iter().map(|&b| char::from(b)).collect()),
        },
        MsgFmt::UCS2 => {
            if content.len() % 2 != 0 {
                return Err(TextError::OddUcs2Length(content.len()));
            }
            let units = content
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .map_err(|_| TextError::InvalidUcs2)
        }
        MsgFmt::GBK => GBK
            .decode_without_bom_handling_and_without_replacement(content)
            .map(std::borrow::Cow::into_owned)
            .ok_or(TextError::InvalidGbk),
        other => Err(TextError::UnsupportedFormat(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_bytes() {
        assert_eq!(
            encode("A你", MsgFmt::UCS2).unwrap(),
            [0x00, 0x41, 0x4F, 0x60]
        );
        assert_eq!(
            encode("你好", MsgFmt::GBK).unwrap(),
            [0xC4, 0xE3, 0xBA, 0xC3]
        );
        assert_eq!(
            encode("😀", MsgFmt::UCS2).unwrap(),
            [0xD8, 0x3D, 0xDE, 0x00]
        );
        assert_eq!(encode("é", MsgFmt::ASCII), Err(TextError::NotAscii(0)));
        assert_eq!(encode("😀", MsgFmt::GBK), Err(TextError::NotInGbk('😀')));
        assert_eq!(
            decode(&[0xD8, 0x3D], MsgFmt::UCS2),
            Err(TextError::InvalidUcs2)
        );
        assert_eq!(
            decode(&[0x00], MsgFmt::UCS2),
            Err(TextError::OddUcs2Length(1))
        );
        assert_eq!(
            decode(b"x", MsgFmt::BINARY),
            Err(TextError::UnsupportedFormat(MsgFmt::BINARY))
        );
    }
}
