//! The framing decoder on hostile and partial input: truncated bodies, bad Total_Length,
//! unknown commands, and the stream staying in sync afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};
use umsd_cmpp::{BodyProblem, CmppCodec, CommandId, Error, Frame, MsgId, Pdu, SubmitResp, Version};

fn active_test(seq: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[3] = 12;
    b[7] = 8;
    b[8..].copy_from_slice(&seq.to_be_bytes());
    b
}

fn codec() -> CmppCodec {
    CmppCodec::new(Version::V30)
}

#[test]
fn partial_frames_wait_for_more_bytes() {
    let mut codec = codec();
    let whole = active_test(9);
    let mut buf = BytesMut::new();
    for (i, &byte) in whole.iter().enumerate() {
        assert!(codec.decode(&mut buf).unwrap().is_none(), "after {i} bytes");
        buf.put_u8(byte);
    }
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Frame::new(9, Pdu::ActiveTest))
    );
    assert!(buf.is_empty());
}

#[test]
fn a_body_shorter_than_its_fields_is_malformed_and_skipped() {
    let mut codec = codec();
    // SUBMIT_RESP in 3.0 needs 12 body bytes; this one has Total_Length 20 (8 body bytes).
    let mut buf = BytesMut::new();
    buf.put_u32(20);
    buf.put_u32(CommandId::SUBMIT_RESP.0);
    buf.put_u32(77);
    buf.put_u64(1);
    buf.extend_from_slice(&active_test(78));
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Malformed {
                command_id: CommandId::SUBMIT_RESP,
                sequence_id: 77,
                problem: BodyProblem::Truncated
            }
        ),
        "{err:?}"
    );
    assert!(err.is_recoverable());
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Frame::new(78, Pdu::ActiveTest))
    );
}

#[test]
fn a_body_longer_than_its_fields_is_malformed_and_skipped() {
    let mut codec = CmppCodec::new(Version::V20);
    // SUBMIT_RESP in 2.0 is 21 bytes; this one says 24 (the 3.0 size).
    let mut buf = BytesMut::new();
    buf.put_u32(24);
    buf.put_u32(CommandId::SUBMIT_RESP.0);
    buf.put_u32(5);
    buf.put_u64(1);
    buf.put_u32(0);
    buf.extend_from_slice(&active_test(6));
    assert!(matches!(
        codec.decode(&mut buf),
        Err(Error::Malformed {
            problem: BodyProblem::TrailingBytes(3),
            ..
        })
    ));
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Frame::new(6, Pdu::ActiveTest))
    );
}

#[test]
fn total_length_below_the_header_is_fatal() {
    let mut codec = codec();
    for length in [0u32, 1, 11] {
        let mut buf = BytesMut::new();
        buf.put_u32(length);
        buf.put_u32(8);
        buf.put_u32(1);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, Error::LengthTooSmall(l) if l == length));
        assert!(!err.is_recoverable());
    }
}

#[test]
fn oversized_total_length_is_rejected_before_buffering() {
    let mut codec = codec();
    let mut buf = BytesMut::new();
    buf.put_u32(u32::MAX);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        Error::LengthTooLarge {
            length: u32::MAX,
            max: 4096
        }
    ));
    assert!(!err.is_recoverable());
    assert!(
        buf.capacity() < 4096,
        "no memory reserved for the claimed length"
    );

    let mut small = CmppCodec::new(Version::V20).with_max_frame(100);
    let mut buf = BytesMut::new();
    buf.put_u32(101);
    assert!(matches!(
        small.decode(&mut buf),
        Err(Error::LengthTooLarge {
            length: 101,
            max: 100
        })
    ));
    let mut buf = BytesMut::new();
    buf.put_u32(100);
    assert!(
        small.decode(&mut buf).unwrap().is_none(),
        "at the limit: wait for the rest"
    );
}

#[test]
fn unknown_commands_are_values_and_the_stream_stays_in_sync() {
    let mut codec = codec();
    let mut buf = BytesMut::new();
    // QUERY (not modelled) with a 27-byte body, then a vendor command with an empty body.
    buf.put_u32(12 + 27);
    buf.put_u32(CommandId::QUERY.0);
    buf.put_u32(1);
    buf.put_bytes(b'q', 27);
    buf.put_u32(12);
    buf.put_u32(0x1234_5678);
    buf.put_u32(2);
    buf.extend_from_slice(&active_test(3));

    let Some(Frame {
        sequence_id: 1,
        pdu: Pdu::Unknown { command_id, body },
    }) = codec.decode(&mut buf).unwrap()
    else {
        panic!("expected an unknown QUERY");
    };
    assert_eq!(command_id, CommandId::QUERY);
    assert_eq!(&body[..], &[b'q'; 27]);
    assert!(matches!(
        codec.decode(&mut buf).unwrap(),
        Some(Frame {
            sequence_id: 2,
            pdu: Pdu::Unknown {
                command_id: CommandId(0x1234_5678),
                ..
            }
        })
    ));
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Frame::new(3, Pdu::ActiveTest))
    );
    assert!(codec.decode(&mut buf).unwrap().is_none());
}

#[test]
fn unknown_frames_re_encode_verbatim() {
    let frame = Frame::new(
        4,
        Pdu::Unknown {
            command_id: CommandId::CANCEL,
            body: bytes::Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8]),
        },
    );
    let mut buf = BytesMut::new();
    codec().encode(&frame, &mut buf).unwrap();
    assert_eq!(&buf[..12], &[0, 0, 0, 20, 0, 0, 0, 7, 0, 0, 0, 4]);
    assert_eq!(codec().decode(&mut buf).unwrap(), Some(frame));
}

#[test]
fn encoding_over_the_frame_limit_writes_nothing() {
    let mut codec = CmppCodec::new(Version::V30).with_max_frame(20);
    let mut buf = BytesMut::from(&b"already queued"[..]);
    let resp = Frame::new(
        1,
        Pdu::SubmitResp(SubmitResp {
            msg_id: MsgId(1),
            result: 0,
        }),
    );
    assert!(matches!(
        codec.encode(&resp, &mut buf),
        Err(Error::FrameTooLarge {
            length: 24,
            max: 20
        })
    ));
    assert_eq!(&buf[..], b"already queued");
}

#[test]
fn bytes_left_at_end_of_stream_are_an_error() {
    let mut codec = codec();
    let mut buf = BytesMut::from(&active_test(1)[..7]);
    assert!(matches!(codec.decode_eof(&mut buf), Err(Error::Io(_))));
}

#[test]
fn a_server_switches_version_after_connect() {
    // CONNECT decodes the same under either layout; the Version byte picks the session's.
    let connect = umsd_cmpp::Connect::new("900001", b"pw", Version::V20, 1_010_000).unwrap();
    let mut buf = BytesMut::new();
    CmppCodec::new(Version::V20)
        .encode(Frame::new(1, Pdu::Connect(connect)), &mut buf)
        .unwrap();
    let mut server = CmppCodec::new(Version::V30);
    let Some(Frame {
        pdu: Pdu::Connect(received),
        ..
    }) = server.decode(&mut buf).unwrap()
    else {
        panic!("expected CONNECT");
    };
    server.version = Version::from_wire(received.version).unwrap();
    assert_eq!(server.version, Version::V20);
    assert!(received.verify(b"pw"));
}
