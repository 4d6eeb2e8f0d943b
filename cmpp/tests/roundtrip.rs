//! Property tests: every PDU survives encode → decode in both versions, a stream of frames
//! cut at arbitrary points decodes to the same frames, and arbitrary bytes never panic the
//! decoder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};
use umsd_cmpp::{
    pdu::max_content_len, ActiveTestResp, CmppCodec, CommandId, Connect, ConnectResp, Deliver,
    DeliverContent, DeliverResp, Frame, MsgFmt, MsgId, OctetString, Pdu, StatusReport, Submit,
    SubmitResp, Version,
};

/// A field value of at most `max` bytes, without NUL (NUL ends a value on the wire).
fn octets(max: usize) -> impl Strategy<Value = OctetString> {
    vec(1u8..=255, 0..=max).prop_map(OctetString::new)
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V20), Just(Version::V30)]
}

fn status(v: Version) -> BoxedStrategy<u32> {
    match v {
        Version::V20 => any::<u8>().prop_map(u32::from).boxed(),
        Version::V30 => any::<u32>().boxed(),
    }
}

/// A byte that is 0 in 2.0, where the 3.0-only terminal type fields do not exist.
fn v30_only(v: Version) -> BoxedStrategy<u8> {
    match v {
        Version::V20 => Just(0).boxed(),
        Version::V30 => any::<u8>().boxed(),
    }
}

fn fmt_and_content() -> impl Strategy<Value = (MsgFmt, Vec<u8>)> {
    any::<u8>().prop_flat_map(|fmt| {
        let fmt = MsgFmt(fmt);
        (Just(fmt), vec(any::<u8>(), 0..=max_content_len(fmt)))
    })
}

fn connect() -> impl Strategy<Value = Connect> {
    (octets(6), any::<[u8; 16]>(), any::<u8>(), any::<u32>()).prop_map(
        |(source_addr, authenticator_source, version, timestamp)| Connect {
            source_addr,
            authenticator_source,
            version,
            timestamp,
        },
    )
}

fn submit(v: Version) -> impl Strategy<Value = Submit> {
    let t = v.terminal_id_len();
    let head = (
        any::<u64>(),
        any::<[u8; 4]>(),
        octets(10),
        any::<u8>(),
        octets(t),
        v30_only(v),
        any::<[u8; 2]>(),
        fmt_and_content(),
    );
    let tail = (
        octets(6),
        octets(2),
        octets(6),
        octets(17),
        octets(17),
        octets(21),
        vec(octets(t), 1..=99),
        v30_only(v),
        octets(v.link_id_len()),
    );
    (head, tail).prop_map(
        |(
            (
                msg_id,
                [pk_total, pk_number, registered_delivery, msg_level],
                service_id,
                fee_user_type,
                fee_terminal_id,
                fee_terminal_type,
                [tp_pid, tp_udhi],
                (msg_fmt, msg_content),
            ),
            (
                msg_src,
                fee_type,
                fee_code,
                valid_time,
                at_time,
                src_id,
                dest_terminal_ids,
                dest_terminal_type,
                link_id,
            ),
        )| Submit {
            msg_id: MsgId(msg_id),
            pk_total,
            pk_number,
            registered_delivery,
            msg_level,
            service_id,
            fee_user_type,
            fee_terminal_id,
            fee_terminal_type,
            tp_pid,
            tp_udhi,
            msg_fmt,
            msg_src,
            fee_type,
            fee_code,
            valid_time,
            at_time,
            src_id,
            dest_terminal_ids,
            dest_terminal_type,
            msg_content,
            link_id,
        },
    )
}

fn report(v: Version) -> impl Strategy<Value = StatusReport> {
    (
        any::<u64>(),
        octets(7),
        octets(10),
        octets(10),
        octets(v.terminal_id_len()),
        any::<u32>(),
    )
        .prop_map(
            |(msg_id, stat, submit_time, done_time, dest_terminal_id, smsc_sequence)| {
                StatusReport {
                    msg_id: MsgId(msg_id),
                    stat,
                    submit_time,
                    done_time,
                    dest_terminal_id,
                    smsc_sequence,
                }
            },
        )
}

fn deliver(v: Version) -> impl Strategy<Value = Deliver> {
    let content = prop_oneof![
        fmt_and_content().prop_map(|(fmt, bytes)| (fmt, DeliverContent::Message(bytes))),
        (any::<u8>(), report(v)).prop_map(|(fmt, r)| (MsgFmt(fmt), DeliverContent::Report(r))),
        fmt_and_content()
            .prop_filter("not a report's length", |(_, c)| c.len() != 60
                && c.len() != 71)
            .prop_map(|(fmt, bytes)| (fmt, DeliverContent::InvalidReport(bytes))),
    ];
    (
        any::<u64>(),
        octets(21),
        octets(10),
        any::<[u8; 2]>(),
        octets(v.terminal_id_len()),
        v30_only(v),
        content,
        octets(v.link_id_len()),
    )
        .prop_map(
            |(
                msg_id,
                dest_id,
                service_id,
                [tp_pid, tp_udhi],
                src_terminal_id,
                src_terminal_type,
                (msg_fmt, content),
                link_id,
            )| {
                Deliver {
                    msg_id: MsgId(msg_id),
                    dest_id,
                    service_id,
                    tp_pid,
                    tp_udhi,
                    msg_fmt,
                    src_terminal_id,
                    src_terminal_type,
                    content,
                    link_id,
                }
            },
        )
}

const MODELLED: [CommandId; 10] = [
    CommandId::CONNECT,
    CommandId::CONNECT_RESP,
    CommandId::SUBMIT,
    CommandId::SUBMIT_RESP,
    CommandId::DELIVER,
    CommandId::DELIVER_RESP,
    CommandId::ACTIVE_TEST,
    CommandId::ACTIVE_TEST_RESP,
    CommandId::TERMINATE,
    CommandId::TERMINATE_RESP,
];

fn pdu(v: Version) -> impl Strategy<Value = Pdu> {
    prop_oneof![
        connect().prop_map(Pdu::Connect),
        (status(v), any::<[u8; 16]>(), any::<u8>()).prop_map(
            |(status, authenticator_ismg, version)| {
                Pdu::ConnectResp(ConnectResp {
                    status,
                    authenticator_ismg,
                    version,
                })
            }
        ),
        submit(v).prop_map(Pdu::Submit),
        (any::<u64>(), status(v)).prop_map(|(id, result)| Pdu::SubmitResp(SubmitResp {
            msg_id: MsgId(id),
            result
        })),
        deliver(v).prop_map(Pdu::Deliver),
        (any::<u64>(), status(v)).prop_map(|(id, result)| Pdu::DeliverResp(DeliverResp {
            msg_id: MsgId(id),
            result
        })),
        Just(Pdu::ActiveTest),
        any::<u8>().prop_map(|reserved| Pdu::ActiveTestResp(ActiveTestResp { reserved })),
        Just(Pdu::Terminate),
        Just(Pdu::TerminateResp),
        (
            any::<u32>().prop_filter("not a modelled command", |id| !MODELLED
                .contains(&CommandId(*id))),
            vec(any::<u8>(), 0..64),
        )
            .prop_map(|(id, body)| Pdu::Unknown {
                command_id: CommandId(id),
                body: Bytes::from(body),
            }),
    ]
}

fn frames(v: Version, max: usize) -> impl Strategy<Value = Vec<Frame>> {
    vec(
        (any::<u32>(), pdu(v)).prop_map(|(seq, pdu)| Frame::new(seq, pdu)),
        1..=max,
    )
}

fn versioned_frames(max: usize) -> impl Strategy<Value = (Version, Vec<Frame>)> {
    version().prop_flat_map(move |v| (Just(v), frames(v, max)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_pdu_round_trips((v, frames) in versioned_frames(1)) {
        let mut codec = CmppCodec::new(v);
        for frame in frames {
            let mut buf = BytesMut::new();
            codec.encode(&frame, &mut buf).unwrap();
            let declared = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            prop_assert_eq!(declared, buf.len());
            prop_assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame));
            prop_assert!(buf.is_empty());
        }
    }

    #[test]
    fn a_stream_cut_anywhere_decodes_to_the_same_frames(
        (v, frames) in versioned_frames(6),
        cuts in vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut codec = CmppCodec::new(v);
        let mut wire = BytesMut::new();
        for frame in &frames {
            codec.encode(frame, &mut wire).unwrap();
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();

        let mut received = BytesMut::new();
        let mut decoded = Vec::new();
        let mut from = 0;
        for to in points {
            received.extend_from_slice(&wire[from..to]);
            from = to;
            while let Some(frame) = codec.decode(&mut received).unwrap() {
                decoded.push(frame);
            }
        }
        prop_assert!(received.is_empty());
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..2048),
        v in version(),
        max_frame in prop_oneof![Just(4096usize), 0usize..64],
    ) {
        let mut codec = CmppCodec::new(v).with_max_frame(max_frame);
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(_)) => prop_assert!(buf.len() < before),
                Ok(None) => break,
                // A malformed frame is consumed; anything else stops the stream.
                Err(e) if e.is_recoverable() => prop_assert!(buf.len() < before),
                Err(_) => break,
            }
        }
        let _ = codec.decode_eof(&mut buf);
    }

    #[test]
    fn frames_with_a_valid_header_and_random_body_never_panic(
        v in version(),
        command in prop::sample::select(MODELLED.to_vec()),
        body in vec(any::<u8>(), 0..400),
    ) {
        // Random bodies behind well-formed headers reach every body parser.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&((12 + body.len()) as u32).to_be_bytes());
        buf.extend_from_slice(&command.0.to_be_bytes());
        buf.extend_from_slice(&1u32.to_be_bytes());
        buf.extend_from_slice(&body);
        match CmppCodec::new(v).decode(&mut buf) {
            Ok(Some(frame)) => prop_assert_eq!(frame.command_id(), command),
            Ok(None) => prop_assert!(false, "a whole frame was buffered"),
            Err(e) => prop_assert!(e.is_recoverable(), "{e}"),
        }
        prop_assert!(buf.is_empty());
    }
}
