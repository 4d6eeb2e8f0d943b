//! The User Data Header that marks a segment of a long message, and the TP_udhi test.
//!
//! Two concatenation elements exist: `05 00 03 ref total seq` (8-bit reference, the one
//! [`split`](crate::split) writes) and `06 08 04 refH refL total seq` (16-bit reference).
//! Parsing accepts both, and skips any other information elements in the header.

use crate::error::TextError;

/// Length of the 6-byte concatenation header written by this crate.
pub const CONCAT_UDH_LEN: usize = 6;

/// A segment's place in a long message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Concat {
    /// Same for all segments of one message (8-bit references are widened).
    pub reference: u16,
    /// Number of segments, from 1.
    pub total: u8,
    /// This segment's position, from 1.
    pub number: u8,
}

/// Whether TP_udhi says Msg_Content starts with a UDH. Gateways send either 1 or the SMPP
/// esm_class bit 0x40, so both count.
pub const fn has_udhi(tp_udhi: u8) -> bool {
    tp_udhi & 0x41 != 0
}

/// The 6-byte header `05 00 03 ref total number`.
pub const fn concat_header(reference: u8, total: u8, number: u8) -> [u8; CONCAT_UDH_LEN] {
    [0x05, 0x00, 0x03, reference, total, number]
}

/// Splits Msg_Content that starts with a UDH into the concatenation element (if the header
/// has one) and the payload after the header.
///
/// # Errors
/// [`TextError::MalformedUdh`] if the header or one of its elements runs past its length.
pub fn parse(content: &[u8]) -> Result<(Option<Concat>, &[u8]), TextError> {
    let (&udhl, rest) = content.split_first().ok_or(TextError::MalformedUdh)?;
    let udhl = usize::from(udhl);
    if rest.len() < udhl {
        return Err(TextError::MalformedUdh);
    }
    let (mut elements, payload) = rest.split_at(udhl);
    let mut concat = None;
    while let [iei, len, tail @ ..] = elements {
        let len = usize::from(*len);
        if tail.len() < len {
            return Err(TextError::MalformedUdh);
        }
        let (data, next) = tail.split_at(len);
        match (*iei, data) {
            (0x00, &[reference, total, number]) => {
                concat = Some(Concat {
                    reference: reference.into(),
                    total,
                    number,
                });
            }
            (0x08, &[high, low, total, number]) => {
                concat = Some(Concat {
                    reference: u16::from_be_bytes([high, low]),
                    total,
                    number,
                });
            }
            _ => {}
        }
        elements = next;
    }
    if !elements.is_empty() {
        // A single stray byte cannot be an element (each has IEI and length).
        return Err(TextError::MalformedUdh);
    }
    Ok((concat, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_skips_others() {
        let six = [0x05, 0x00, 0x03, 0x2A, 0x03, 0x02, b'h', b'i'];
        assert_eq!(
            parse(&six),
            Ok((
                Some(Concat {
                    reference: 0x2A,
                    total: 3,
                    number: 2
                }),
                &b"hi"[..]
            ))
        );
        let seven = [0x06, 0x08, 0x04, 0x12, 0x34, 0x02, 0x01, b'x'];
        assert_eq!(
            parse(&seven),
            Ok((
                Some(Concat {
                    reference: 0x1234,
                    total: 2,
                    number: 1
                }),
                &b"x"[..]
            ))
        );
        // A port-addressing element (IEI 0x05) before the concatenation element.
        let mixed = [0x0B, 0x05, 0x04, 0, 1, 0, 2, 0x00, 0x03, 7, 2, 2, b'z'];
        assert_eq!(
            parse(&mixed).map(|(c, p)| (c.map(|c| c.reference), p)),
            Ok((Some(7), &b"z"[..]))
        );
        assert_eq!(parse(&[0x05, 0x00, 0x03]), Err(TextError::MalformedUdh));
        assert_eq!(
            parse(&[0x03, 0x00, 0x05, 0x01]),
            Err(TextError::MalformedUdh)
        );
        assert_eq!(parse(&[]), Err(TextError::MalformedUdh));
        assert!(has_udhi(1) && has_udhi(0x40) && !has_udhi(0));
    }
}
