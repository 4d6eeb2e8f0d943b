//! Message text: encodings, splitting into segments (signature counted, characters never
//! cut), and reassembly on the receiving side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use umsd_cmpp::reassembly::Reassembler;
use umsd_cmpp::split::{choose_fmt, split_message, Segment, Signature, SplitOptions};
use umsd_cmpp::text::{decode, encode};
use umsd_cmpp::udh::{self, Concat};
use umsd_cmpp::{MsgFmt, Submit, TextError};

const SIG: &str = "【umsd】"; // 6 characters, all in the BMP

fn han(n: usize) -> String {
    "汉".repeat(n)
}

fn opts(signature: Signature<'_>) -> SplitOptions<'_> {
    SplitOptions {
        signature,
        reference: 0x2A,
        ..SplitOptions::default()
    }
}

/// The text bytes of a segment, UDH stripped.
fn payload(segment: &Segment) -> &[u8] {
    if segment.tp_udhi == 1 {
        &segment.content[6..]
    } else {
        &segment.content
    }
}

fn units(segment: &Segment) -> usize {
    payload(segment).len() / 2
}

/// Joins segments back to text, checking each segment decodes on its own (so no character
/// was cut).
fn rejoin(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|s| decode(payload(s), s.msg_fmt).unwrap())
        .collect()
}

#[test]
fn encodings_round_trip() {
    for (text, fmt) in [
        ("Hello, CMPP 2.0/3.0!", MsgFmt::ASCII),
        ("验证码 123456，5 分钟内有效 😀", MsgFmt::UCS2),
        ("验证码 123456，5 分钟内有效。€", MsgFmt::GBK),
    ] {
        assert_eq!(decode(&encode(text, fmt).unwrap(), fmt).unwrap(), text);
    }
}

#[test]
fn encoding_choice() {
    assert_eq!(choose_fmt("code 1234", MsgFmt::UCS2), MsgFmt::ASCII);
    assert_eq!(choose_fmt("验证码", MsgFmt::UCS2), MsgFmt::UCS2);
    assert_eq!(choose_fmt("验证码", MsgFmt::GBK), MsgFmt::GBK);
    // The signature decides too: an ASCII text with a Chinese signature is UCS2.
    let segments = split_message("code 1234", &opts(Signature::Prefix(SIG))).unwrap();
    assert_eq!(segments[0].msg_fmt, MsgFmt::UCS2);
    let gbk = SplitOptions {
        non_ascii: MsgFmt::GBK,
        ..opts(Signature::Prefix(SIG))
    };
    assert_eq!(split_message("code", &gbk).unwrap()[0].msg_fmt, MsgFmt::GBK);
}

#[test]
fn seventy_ucs2_characters_fit_one_message_signature_included() {
    let single = split_message(&han(64), &opts(Signature::Prefix(SIG))).unwrap();
    assert_eq!(single.len(), 1);
    assert_eq!(
        (single[0].tp_udhi, single[0].pk_total, single[0].pk_number),
        (0, 1, 1)
    );
    assert_eq!(single[0].content.len(), 140);
    assert_eq!(rejoin(&single), format!("{SIG}{}", han(64)));

    // One more character, and the message is long: 67 + 4 characters.
    let long = split_message(&han(65), &opts(Signature::Prefix(SIG))).unwrap();
    assert_eq!(long.len(), 2);
    assert_eq!((units(&long[0]), units(&long[1])), (67, 4));
    assert!(long.iter().all(|s| s.content.len() <= 140));
    assert_eq!(rejoin(&long), format!("{SIG}{}", han(65)));
}

#[test]
fn long_message_segments_carry_the_udh_and_pk_fields() {
    let segments = split_message(&han(67 * 2 + 1), &opts(Signature::None)).unwrap();
    assert_eq!(segments.len(), 3);
    for (i, segment) in segments.iter().enumerate() {
        let number = i as u8 + 1;
        assert_eq!(&segment.content[..6], &[0x05, 0x00, 0x03, 0x2A, 3, number]);
        let submit = Submit::default().with_segment(segment);
        assert_eq!(
            (
                submit.tp_udhi,
                submit.pk_total,
                submit.pk_number,
                submit.msg_fmt
            ),
            (1, 3, number, MsgFmt::UCS2)
        );
        assert_eq!(submit.msg_content, segment.content);
    }
}

#[test]
fn suffix_signature_lands_in_the_last_segment() {
    let segments = split_message(&han(70), &opts(Signature::Suffix(SIG))).unwrap();
    assert_eq!(segments.len(), 2);
    assert_eq!((units(&segments[0]), units(&segments[1])), (67, 9));
    assert!(rejoin(&segments).ends_with(SIG));
}

#[test]
fn a_gateway_added_signature_is_reserved_in_the_first_segment() {
    let single = split_message(&han(64), &opts(Signature::AddedByGateway(SIG))).unwrap();
    assert_eq!(single.len(), 1);
    assert_eq!(rejoin(&single), han(64), "the signature itself is not sent");

    let long = split_message(&han(65), &opts(Signature::AddedByGateway(SIG))).unwrap();
    assert_eq!((units(&long[0]), units(&long[1])), (61, 4));
    assert_eq!(rejoin(&long), han(65));
}

#[test]
fn a_surrogate_pair_at_the_cut_moves_whole_to_the_next_segment() {
    // 66 Hanzi then an emoji: the emoji's two code units would be units 67 and 68.
    let text = format!("{}😀{}", han(66), han(10));
    let segments = split_message(&text, &opts(Signature::None)).unwrap();
    assert_eq!(units(&segments[0]), 66);
    assert_eq!(&payload(&segments[1])[..4], &[0xD8, 0x3D, 0xDE, 0x00]);
    assert_eq!(rejoin(&segments), text);

    // With the pair inside the first 67 units, the cut stays at 67.
    let text = format!("{}😀{}", han(65), han(10));
    let segments = split_message(&text, &opts(Signature::None)).unwrap();
    assert_eq!(units(&segments[0]), 67);
    assert_eq!(rejoin(&segments), text);
}

#[test]
fn ascii_limits_are_159_single_and_134_per_segment() {
    let single = split_message(&"a".repeat(159), &opts(Signature::None)).unwrap();
    assert_eq!(
        (single.len(), single[0].msg_fmt, single[0].content.len()),
        (1, MsgFmt::ASCII, 159)
    );
    let long = split_message(&"a".repeat(160), &opts(Signature::None)).unwrap();
    assert_eq!(
        long.iter().map(|s| payload(s).len()).collect::<Vec<_>>(),
        [134, 26]
    );
}

#[test]
fn gbk_limits_are_70_hanzi_single_and_67_per_segment() {
    let gbk = |n| {
        split_message(
            &han(n),
            &SplitOptions {
                non_ascii: MsgFmt::GBK,
                ..opts(Signature::None)
            },
        )
        .unwrap()
    };
    assert_eq!(gbk(70).len(), 1);
    let long = gbk(71);
    assert_eq!(
        long.iter().map(|s| payload(s).len()).collect::<Vec<_>>(),
        [134, 8]
    );
    // A two-byte character is never cut: one ASCII byte first shifts the cut.
    let mixed = split_message(
        &format!("a{}", han(80)),
        &SplitOptions {
            non_ascii: MsgFmt::GBK,
            ..opts(Signature::None)
        },
    )
    .unwrap();
    assert_eq!(payload(&mixed[0]).len(), 133);
    assert_eq!(rejoin(&mixed), format!("a{}", han(80)));
}

#[test]
fn splitting_errors() {
    assert!(matches!(
        split_message(&han(67 * 255 + 1), &opts(Signature::None)),
        Err(TextError::TooManySegments(256))
    ));
    assert_eq!(
        split_message(&han(67 * 255), &opts(Signature::None))
            .unwrap()
            .len(),
        255
    );
    let gbk = SplitOptions {
        non_ascii: MsgFmt::GBK,
        ..opts(Signature::None)
    };
    assert!(matches!(
        split_message("😀", &gbk),
        Err(TextError::NotInGbk('😀'))
    ));
    let huge_sig = han(70);
    assert!(matches!(
        split_message(&han(10), &opts(Signature::AddedByGateway(&huge_sig))),
        Err(TextError::SignatureTooLong(140))
    ));
}

#[test]
fn reassembly_out_of_order() {
    let text = format!("{SIG}{}😀{}", han(66), han(80));
    let segments = split_message(&text, &opts(Signature::None)).unwrap();
    assert_eq!(segments.len(), 3);
    let mut reassembler = Reassembler::default();
    let order = [2, 0, 1];
    let mut done = None;
    for (step, &i) in order.iter().enumerate() {
        let s = &segments[i];
        let out = reassembler
            .push_text("13800138000", s.tp_udhi, &s.content, s.msg_fmt)
            .unwrap();
        if step < 2 {
            assert!(out.is_none());
            assert_eq!(reassembler.pending(), 1);
        }
        done = out;
    }
    assert_eq!(done.as_deref(), Some(text.as_str()));
    assert_eq!(reassembler.pending(), 0);
}

#[test]
fn reassembly_keeps_senders_apart_and_ignores_duplicates() {
    let c = |number| Concat {
        reference: 7,
        total: 2,
        number,
    };
    let mut r = Reassembler::new(16);
    assert_eq!(r.push("a", c(1), b"A1").unwrap(), None);
    assert_eq!(r.push("b", c(2), b"B2").unwrap(), None);
    assert_eq!(
        r.push("a", c(1), b"XX").unwrap(),
        None,
        "a duplicate is ignored"
    );
    assert_eq!(r.push("a", c(2), b"A2").unwrap(), Some(b"A1A2".to_vec()));
    assert_eq!(r.push("b", c(1), b"B1").unwrap(), Some(b"B1B2".to_vec()));
    assert!(matches!(
        r.push(
            "a",
            Concat {
                reference: 1,
                total: 2,
                number: 3
            },
            b""
        ),
        Err(TextError::InvalidSegment {
            total: 2,
            number: 3
        })
    ));
    assert!(r
        .push(
            "a",
            Concat {
                reference: 1,
                total: 0,
                number: 0
            },
            b""
        )
        .is_err());
    // Without a UDH the content is a whole message; the 0x40 form of TP_udhi counts.
    assert_eq!(r.push_content("a", 0, b"hi").unwrap(), Some(b"hi".to_vec()));
    let seg = [&udh::concat_header(9, 1, 1)[..], b"one"].concat();
    assert_eq!(
        r.push_content("a", 0x40, &seg).unwrap(),
        Some(b"one".to_vec())
    );
}

#[test]
fn reassembly_memory_is_bounded() {
    let mut r = Reassembler::new(2);
    for reference in 0..3u16 {
        let first = Concat {
            reference,
            total: 2,
            number: 1,
        };
        r.push("x", first, b"1").unwrap();
    }
    assert_eq!(r.pending(), 2);
    // The oldest (reference 0) was dropped; its second half no longer completes anything.
    let second = |reference| Concat {
        reference,
        total: 2,
        number: 2,
    };
    assert_eq!(r.push("x", second(0), b"2").unwrap(), None);
    assert_eq!(r.push("x", second(2), b"2").unwrap(), Some(b"12".to_vec()));
}

proptest! {
    #[test]
    fn ucs2_round_trips_any_text(text in any::<String>()) {
        prop_assert_eq!(decode(&encode(&text, MsgFmt::UCS2).unwrap(), MsgFmt::UCS2).unwrap(), text);
    }

    #[test]
    fn gbk_round_trips_chinese_text(text in "[a-zA-Z0-9 ,.!?\u{4e00}-\u{9fa5}\u{3000}-\u{3002}\u{ff01}-\u{ff5e}]{0,200}") {
        prop_assert_eq!(decode(&encode(&text, MsgFmt::GBK).unwrap(), MsgFmt::GBK).unwrap(), text);
    }

    #[test]
    fn ascii_round_trips(text in "[\\x00-\\x7f]{0,300}") {
        prop_assert_eq!(decode(&encode(&text, MsgFmt::ASCII).unwrap(), MsgFmt::ASCII).unwrap(), text);
    }

    #[test]
    fn split_then_reassemble_gives_the_text_back(
        text in "(.|😀|汉){0,400}",
        prefix in any::<bool>(),
        reference in any::<u8>(),
    ) {
        let signature = if prefix { Signature::Prefix(SIG) } else { Signature::Suffix(SIG) };
        let options = SplitOptions { signature, reference, ..SplitOptions::default() };
        let segments = split_message(&text, &options).unwrap();
        let expected = if prefix { format!("{SIG}{text}") } else { format!("{text}{SIG}") };
        let mut r = Reassembler::default();
        let mut out = None;
        for s in segments.iter().rev() {
            prop_assert!(s.content.len() <= 140);
            // Every segment decodes alone: no character was cut.
            prop_assert!(decode(payload(s), s.msg_fmt).is_ok());
            out = r.push_text(0u8, s.tp_udhi, &s.content, s.msg_fmt).unwrap();
        }
        prop_assert_eq!(out, Some(expected));
    }
}
