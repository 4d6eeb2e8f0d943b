//! Golden byte vectors written field by field from the spec's tables (cmpp.md §1.3–§1.7),
//! checked in both directions: the bytes decode to the expected PDU, and the PDU encodes to
//! the bytes. Frame lengths are checked against the spec's formulas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use umsd_cmpp::{
    auth, ActiveTestResp, Connect, ConnectResp, Deliver, DeliverContent, DeliverResp, Frame,
    MsgFmt, MsgId, OctetString, Pdu, StatusReport, Submit, SubmitResp, Version,
};

/// Concatenates the fields of a hand-written frame.
fn frame(fields: &[&[u8]]) -> Vec<u8> {
    fields.concat()
}

/// A text field NUL-padded to its width, as the spec's Octet String rule says.
fn padded(text: &str, width: usize) -> Vec<u8> {
    let mut field = text.as_bytes().to_vec();
    assert!(field.len() <= width, "test vector field too long");
    field.resize(width, 0);
    field
}

/// Checks bytes → PDU and PDU → bytes.
fn assert_golden(version: Version, bytes: &[u8], expected: &Frame) {
    let decoded = Frame::decode(version, bytes).unwrap();
    assert_eq!(&decoded, expected);
    let mut encoded = BytesMut::new();
    expected.encode(version, &mut encoded).unwrap();
    assert_eq!(&encoded[..], bytes);
    assert_eq!(
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize,
        bytes.len(),
        "Total_Length must equal the frame length"
    );
}

/// `md5(b"900001" + b"\0"*9 + b"888888" + b"1121230825")`, the value seen on the wire.
const AUTH_SOURCE: [u8; 16] = [
    0xbd, 0xfc, 0x38, 0x1a, 0x9d, 0x6d, 0xea, 0x3f, 0x4d, 0x3b, 0x18, 0xe5, 0xe2, 0x1e, 0xb5, 0xc9,
];

#[test]
fn connect_with_authenticator_source_example() {
    // 11-21 23:08:25 → 1121230825 = 0x42D49FE9.
    let connect = Connect::new("900001", b"888888", Version::V30, 1_121_230_825).unwrap();
    assert_eq!(connect.authenticator_source, AUTH_SOURCE);
    assert!(connect.verify(b"888888"));
    assert!(!connect.verify(b"888889"));

    let bytes = frame(&[
        &[0x00, 0x00, 0x00, 0x27], // Total_Length 39
        &[0x00, 0x00, 0x00, 0x01], // CONNECT
        &[0x00, 0x00, 0x00, 0x01], // Sequence_Id
        b"900001",                 // Source_Addr (6)
        &AUTH_SOURCE,              // AuthenticatorSource (16)
        &[0x30],                   // Version 3.0
        &[0x42, 0xD4, 0x9F, 0xE9], // Timestamp
    ]);
    assert_eq!(bytes.len(), 39);
    // CONNECT's layout is the same in both versions.
    for version in [Version::V20, Version::V30] {
        assert_golden(
            version,
            &bytes,
            &Frame::new(1, Pdu::Connect(connect.clone())),
        );
    }
}

#[test]
fn connect_pads_a_short_source_addr_in_field_and_hash() {
    let connect = Connect::new("9001", b"s", Version::V20, 105_093_000).unwrap();
    // md5(b"9001\0\0" + b"\0"*9 + b"s" + b"0105093000"): the short Source_Addr is
    // NUL-padded to 6 bytes inside the hash too.
    let expected: [u8; 16] = [
        0x2f, 0x4a, 0x96, 0x93, 0x71, 0x79, 0x3c, 0xf5, 0xff, 0x97, 0x59, 0xa1, 0x4c, 0xdd, 0xf8,
        0x13,
    ];
    assert_eq!(connect.authenticator_source, expected);
    let bytes = frame(&[
        &[0, 0, 0, 39, 0, 0, 0, 1, 0, 0, 0, 2],
        b"9001\0\0",
        &expected,
        &[0x20],
        &105_093_000u32.to_be_bytes(),
    ]);
    assert_golden(Version::V20, &bytes, &Frame::new(2, Pdu::Connect(connect)));
    assert!(Connect::new("1234567", b"s", Version::V20, 0).is_err());
}

#[test]
fn connect_resp_v20_is_30_bytes_with_u8_status() {
    // md5(0x00 ‖ AuthenticatorSource ‖ "888888")
    let ismg: [u8; 16] = [
        0xa8, 0xfa, 0x70, 0xb1, 0x98, 0x82, 0x8d, 0x11, 0x58, 0x20, 0x10, 0x5a, 0x6d, 0x9a, 0xd0,
        0x40,
    ];
    let bytes = frame(&[
        &[0x00, 0x00, 0x00, 0x1E], // 30
        &[0x80, 0x00, 0x00, 0x01], // CONNECT_RESP
        &[0x00, 0x00, 0x00, 0x01],
        &[0x00], // Status u8
        &ismg,
        &[0x20],
    ]);
    assert_eq!(bytes.len(), 30);
    let connect = Connect::new("900001", b"888888", Version::V20, 1_121_230_825).unwrap();
    let resp = ConnectResp::accept(Version::V20, &connect, b"888888");
    assert_eq!(resp.authenticator_ismg, ismg);
    assert_eq!(
        auth::verify_authenticator_ismg(Version::V20, &resp, &AUTH_SOURCE, b"888888"),
        auth::IsmgCheck::Valid
    );
    assert_golden(Version::V20, &bytes, &Frame::new(1, Pdu::ConnectResp(resp)));
}

#[test]
fn connect_resp_v30_is_33_bytes_with_u32_status() {
    // md5(00 00 00 00 ‖ AuthenticatorSource ‖ "888888")
    let ismg: [u8; 16] = [
        0x8d, 0xff, 0x9f, 0xe0, 0xe1, 0x15, 0x30, 0x49, 0x2b, 0x18, 0x01, 0xe8, 0xbb, 0xc5, 0x81,
        0xf1,
    ];
    let bytes = frame(&[
        &[0x00, 0x00, 0x00, 0x21], // 33
        &[0x80, 0x00, 0x00, 0x01],
        &[0x00, 0x00, 0x00, 0x01],
        &[0x00, 0x00, 0x00, 0x00], // Status u32
        &ismg,
        &[0x30],
    ]);
    assert_eq!(bytes.len(), 33);
    let connect = Connect::new("900001", b"888888", Version::V30, 1_121_230_825).unwrap();
    let resp = ConnectResp::accept(Version::V30, &connect, b"888888");
    assert_eq!(resp.authenticator_ismg, ismg);
    assert_golden(Version::V30, &bytes, &Frame::new(1, Pdu::ConnectResp(resp)));

    // A refused login: Status 3, empty authenticator.
    let refused = frame(&[
        &[0, 0, 0, 33, 0x80, 0, 0, 1, 0, 0, 0, 9],
        &[0, 0, 0, 3],
        &[0; 16],
        &[0x30],
    ]);
    assert_golden(
        Version::V30,
        &refused,
        &Frame::new(9, Pdu::ConnectResp(ConnectResp::reject(Version::V30, 3))),
    );
}

#[test]
fn connect_resp_status_over_255_does_not_fit_v20() {
    let resp = ConnectResp::reject(Version::V20, 256);
    let mut buf = BytesMut::from(&b"keep"[..]);
    let err = Frame::new(1, Pdu::ConnectResp(resp)).encode(Version::V20, &mut buf);
    assert!(matches!(err, Err(umsd_cmpp::Error::ValueOutOfRange { .. })));
    assert_eq!(
        &buf[..],
        b"keep",
        "a failed encode leaves the buffer as it was"
    );
}

const MSG_ID: u64 = 0xb9c1_cc92_d687_002a;

#[test]
fn submit_resp_v20_is_21_bytes() {
    let bytes = frame(&[
        &[0x00, 0x00, 0x00, 0x15], // 21
        &[0x80, 0x00, 0x00, 0x04], // SUBMIT_RESP
        &[0x00, 0x00, 0x01, 0x00], // Sequence_Id 256
        &[0xb9, 0xc1, 0xcc, 0x92, 0xd6, 0x87, 0x00, 0x2a],
        &[0x08], // Result u8: flow control
    ]);
    assert_eq!(bytes.len(), 21);
    let resp = SubmitResp {
        msg_id: MsgId(MSG_ID),
        result: SubmitResp::FLOW_CONTROL,
    };
    assert!(resp.is_flow_control());
    assert_golden(
        Version::V20,
        &bytes,
        &Frame::new(256, Pdu::SubmitResp(resp)),
    );
}

#[test]
fn submit_resp_v30_is_24_bytes() {
    let bytes = frame(&[
        &[0x00, 0x00, 0x00, 0x18], // 24
        &[0x80, 0x00, 0x00, 0x04],
        &[0xFF, 0xFF, 0xFF, 0xFF], // Sequence_Id wraps at u32::MAX
        &[0xb9, 0xc1, 0xcc, 0x92, 0xd6, 0x87, 0x00, 0x2a],
        &[0x00, 0x00, 0x00, 0x00], // Result u32
    ]);
    assert_eq!(bytes.len(), 24);
    let resp = SubmitResp {
        msg_id: MsgId(MSG_ID),
        result: 0,
    };
    assert_golden(
        Version::V30,
        &bytes,
        &Frame::new(u32::MAX, Pdu::SubmitResp(resp)),
    );
}

#[test]
fn deliver_resp_both_versions() {
    let resp = DeliverResp {
        msg_id: MsgId(7),
        result: 0,
    };
    let v20 = frame(&[
        &[0, 0, 0, 21, 0x80, 0, 0, 5, 0, 0, 0, 3],
        &7u64.to_be_bytes(),
        &[0],
    ]);
    let v30 = frame(&[
        &[0, 0, 0, 24, 0x80, 0, 0, 5, 0, 0, 0, 3],
        &7u64.to_be_bytes(),
        &[0, 0, 0, 0],
    ]);
    assert_golden(Version::V20, &v20, &Frame::new(3, Pdu::DeliverResp(resp)));
    assert_golden(Version::V30, &v30, &Frame::new(3, Pdu::DeliverResp(resp)));
}

fn sample_submit() -> Submit {
    Submit {
        msg_id: MsgId::ZERO,
        pk_total: 1,
        pk_number: 1,
        registered_delivery: 1,
        msg_level: 1,
        service_id: "MJS0019901".into(),
        fee_user_type: 2,
        fee_terminal_id: OctetString::default(),
        fee_terminal_type: 0,
        tp_pid: 0,
        tp_udhi: 0,
        msg_fmt: MsgFmt::UCS2,
        msg_src: "900001".into(),
        fee_type: "02".into(),
        fee_code: "000010".into(),
        valid_time: OctetString::default(),
        at_time: OctetString::default(),
        src_id: "10690001".into(),
        dest_terminal_ids: vec!["8613800138000".into()],
        dest_terminal_type: 0,
        msg_content: vec![0x4F, 0x60, 0x59, 0x7D], // "你好" in UCS2
        link_id: OctetString::default(),
    }
}

#[test]
fn submit_v30_is_163_plus_32n_plus_l() {
    let head = frame(&[
        &[0x00, 0x00, 0x00, 0xC7], // 199 = 163 + 32·1 + 4
        &[0x00, 0x00, 0x00, 0x04], // SUBMIT
        &[0x00, 0x00, 0x00, 0x05],
    ]);
    let body = frame(&[
        &[0; 8],                      // Msg_Id
        &[1, 1],                      // Pk_total, Pk_number
        &[1],                         // Registered_Delivery
        &[1],                         // Msg_level
        b"MJS0019901",                // Service_Id (10)
        &[2],                         // Fee_UserType
        &[0; 32],                     // Fee_terminal_Id (32)
        &[0],                         // Fee_terminal_type
        &[0, 0],                      // TP_pId, TP_udhi
        &[8],                         // Msg_Fmt UCS2
        b"900001",                    // Msg_src (6)
        b"02",                        // FeeType (2)
        b"000010",                    // FeeCode (6)
        &[0; 17],                     // ValId_Time
        &[0; 17],                     // At_Time
        &padded("10690001", 21),      // Src_Id
        &[1],                         // DestUsr_tl
        &padded("8613800138000", 32), // Dest_terminal_Id (32)
        &[0],                         // Dest_terminal_type
        &[4],                         // Msg_Length
        &[0x4F, 0x60, 0x59, 0x7D],    // Msg_Content
        &[0; 20],                     // LinkID (20)
    ]);
    let bytes = [head, body].concat();
    assert_eq!(bytes.len(), 163 + 32 + 4);
    assert_golden(
        Version::V30,
        &bytes,
        &Frame::new(5, Pdu::Submit(sample_submit())),
    );
}

#[test]
fn submit_v20_is_138_plus_21n_plus_l() {
    let mut submit = sample_submit();
    submit.dest_terminal_ids.push("13900139000".into());
    submit.fee_terminal_type = 0; // 3.0-only fields stay 0 in 2.0
    let bytes = frame(&[
        &[0x00, 0x00, 0x00, 0xB8], // 184 = 138 + 21·2 + 4
        &[0x00, 0x00, 0x00, 0x04],
        &[0x00, 0x00, 0x00, 0x06],
        &[0; 8],                      // Msg_Id
        &[1, 1, 1, 1],                // Pk_total, Pk_number, Registered_Delivery, Msg_level
        b"MJS0019901",                // Service_Id (10)
        &[2],                         // Fee_UserType
        &[0; 21],                     // Fee_terminal_Id (21), no type byte in 2.0
        &[0, 0, 8],                   // TP_pId, TP_udhi, Msg_Fmt
        b"900001",                    // Msg_src
        b"02",                        // FeeType
        b"000010",                    // FeeCode
        &[0; 17],                     // ValId_Time
        &[0; 17],                     // At_Time
        &padded("10690001", 21),      // Src_Id
        &[2],                         // DestUsr_tl
        &padded("8613800138000", 21), // Dest_terminal_Id (21)
        &padded("13900139000", 21),   // no Dest_terminal_type in 2.0
        &[4],                         // Msg_Length
        &[0x4F, 0x60, 0x59, 0x7D],    // Msg_Content
        &[0; 8],                      // Reserve (8)
    ]);
    assert_eq!(bytes.len(), 138 + 21 * 2 + 4);
    assert_golden(Version::V20, &bytes, &Frame::new(6, Pdu::Submit(submit)));
}

#[test]
fn submit_rejects_values_that_do_not_fit() {
    let mut long_id = sample_submit();
    long_id.dest_terminal_ids = vec!["8613800138000123456789".into()]; // 22 bytes
    let mut buf = BytesMut::new();
    assert!(Frame::new(1, Pdu::Submit(long_id.clone()))
        .encode(Version::V20, &mut buf)
        .is_err());
    assert!(Frame::new(1, Pdu::Submit(long_id))
        .encode(Version::V30, &mut buf)
        .is_ok());

    let mut none = sample_submit();
    none.dest_terminal_ids.clear();
    let mut buf = BytesMut::new();
    assert!(matches!(
        Frame::new(1, Pdu::Submit(none)).encode(Version::V30, &mut buf),
        Err(umsd_cmpp::Error::RecipientCount(0))
    ));
    let mut too_long = sample_submit();
    too_long.msg_content = vec![0; 141];
    assert!(matches!(
        Frame::new(1, Pdu::Submit(too_long)).encode(Version::V30, &mut buf),
        Err(umsd_cmpp::Error::ContentTooLong {
            len: 141,
            max: 140,
            ..
        })
    ));
    assert!(buf.is_empty());
}

fn report_frame(version: Version, id_width: usize) -> (Vec<u8>, Frame) {
    let report_body = frame(&[
        &[0xb9, 0xc1, 0xcc, 0x92, 0xd6, 0x87, 0x00, 0x2a], // Msg_Id of the SUBMIT_RESP
        b"DELIVRD",                                        // Stat (7)
        b"2411191628",                                     // Submit_time (10)
        b"2411191629",                                     // Done_time (10)
        &padded("8613800138000", id_width),                // Dest_terminal_Id
        &[0x00, 0x00, 0x30, 0x39],                         // SMSC_sequence 12345
    ]);
    assert_eq!(report_body.len(), version.report_len());
    let v30 = version == Version::V30;
    let total = if v30 { 109 + 71 } else { 85 + 60 };
    let total_bytes = u32::to_be_bytes(total);
    let bytes = frame(&[
        &total_bytes,
        &[0x00, 0x00, 0x00, 0x05], // DELIVER
        &[0x00, 0x00, 0x00, 0x2A],
        &[0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08], // Msg_Id (the DELIVER's own)
        &padded("10690001", 21),                           // Dest_Id
        &padded("MJS0019901", 10),                         // Service_Id
        &[0, 0, 0],                                        // TP_pid, TP_udhi, Msg_Fmt
        &padded("8613800138000", id_width),                // Src_terminal_Id
        if v30 { &[0][..] } else { &[][..] },              // Src_terminal_type (3.0)
        &[1],                                              // Registered_Delivery: report
        &[version.report_len() as u8],                     // Msg_Length
        &report_body,
        &vec![0; version.link_id_len()], // Reserved (8) / LinkID (20)
    ]);
    assert_eq!(bytes.len(), total as usize);
    let deliver = Deliver {
        msg_id: MsgId(0x0102_0304_0506_0708),
        dest_id: "10690001".into(),
        service_id: "MJS0019901".into(),
        tp_pid: 0,
        tp_udhi: 0,
        msg_fmt: MsgFmt::ASCII,
        src_terminal_id: "8613800138000".into(),
        src_terminal_type: 0,
        content: DeliverContent::Report(StatusReport {
            msg_id: MsgId(MSG_ID),
            stat: "DELIVRD".into(),
            submit_time: "2411191628".into(),
            done_time: "2411191629".into(),
            dest_terminal_id: "8613800138000".into(),
            smsc_sequence: 12345,
        }),
        link_id: OctetString::default(),
    };
    (bytes, Frame::new(42, Pdu::Deliver(deliver)))
}

#[test]
fn deliver_status_report_v30_is_109_plus_71() {
    let (bytes, expected) = report_frame(Version::V30, 32);
    assert_eq!(bytes.len(), 180);
    assert_golden(Version::V30, &bytes, &expected);
    let Pdu::Deliver(deliver) = &expected.pdu else {
        unreachable!()
    };
    let report = deliver.report().unwrap();
    assert!(report.is_delivered() && report.is_final());
    assert_eq!(report.msg_id, MsgId(MSG_ID));
    assert_eq!(DeliverResp::ok(deliver).msg_id, deliver.msg_id);
}

#[test]
fn deliver_status_report_v20_is_85_plus_60() {
    let (bytes, expected) = report_frame(Version::V20, 21);
    assert_eq!(bytes.len(), 145);
    assert_golden(Version::V20, &bytes, &expected);
}

#[test]
fn a_60_byte_report_inside_a_v30_deliver_is_accepted() {
    // Some 3.0 gateways send the 2.0 report layout; the length tells them apart.
    let (v20_bytes, expected) = report_frame(Version::V20, 21);
    let report = &v20_bytes[12 + 8 + 21 + 10 + 3 + 21 + 2..][..60];
    let mut bytes = frame(&[
        &(109u32 + 60).to_be_bytes(),
        &[0, 0, 0, 5, 0, 0, 0, 0x2A],
        &[1, 2, 3, 4, 5, 6, 7, 8],
        &padded("10690001", 21),
        &padded("MJS0019901", 10),
        &[0, 0, 0],
        &padded("8613800138000", 32),
        &[0, 1, 60],
        report,
        &[0; 20],
    ]);
    assert_eq!(Frame::decode(Version::V30, &bytes).unwrap(), expected);
    // Any other length is kept raw, so the DELIVER can still be acknowledged.
    bytes[0..4].copy_from_slice(&(109u32 + 59).to_be_bytes());
    bytes[12 + 8 + 21 + 10 + 3 + 32 + 2] = 59;
    bytes.remove(12 + 8 + 21 + 10 + 3 + 32 + 3);
    let Pdu::Deliver(odd) = Frame::decode(Version::V30, &bytes).unwrap().pdu else {
        panic!("expected DELIVER");
    };
    assert_eq!(
        odd.content,
        DeliverContent::InvalidReport(report[1..].to_vec())
    );
    assert_eq!(odd.report(), None);
    assert_eq!(DeliverResp::ok(&odd).msg_id, MsgId(0x0102_0304_0506_0708));
}

#[test]
fn deliver_mo_message_v20() {
    let bytes = frame(&[
        &(85u32 + 4).to_be_bytes(),
        &[0, 0, 0, 5, 0, 0, 0, 1],
        &[0; 8],
        &padded("10690001", 21),
        &padded("", 10),
        &[0, 0, 15], // Msg_Fmt GBK
        &padded("13800138000", 21),
        &[0, 4],                   // Registered_Delivery 0, Msg_Length 4
        &[0xC4, 0xE3, 0xBA, 0xC3], // "你好" in GBK
        &[0; 8],
    ]);
    let deliver = Deliver {
        dest_id: "10690001".into(),
        msg_fmt: MsgFmt::GBK,
        src_terminal_id: "13800138000".into(),
        content: DeliverContent::Message(vec![0xC4, 0xE3, 0xBA, 0xC3]),
        ..Deliver::default()
    };
    assert_golden(Version::V20, &bytes, &Frame::new(1, Pdu::Deliver(deliver)));
}

#[test]
fn active_test_terminate_and_their_responses() {
    let cases = [
        (vec![0, 0, 0, 12, 0, 0, 0, 8, 0, 0, 0, 1], Pdu::ActiveTest),
        (
            vec![0, 0, 0, 13, 0x80, 0, 0, 8, 0, 0, 0, 1, 0],
            Pdu::ActiveTestResp(ActiveTestResp { reserved: 0 }),
        ),
        (vec![0, 0, 0, 12, 0, 0, 0, 2, 0, 0, 0, 1], Pdu::Terminate),
        (
            vec![0, 0, 0, 12, 0x80, 0, 0, 2, 0, 0, 0, 1],
            Pdu::TerminateResp,
        ),
    ];
    for version in [Version::V20, Version::V30] {
        for (bytes, pdu) in &cases {
            assert_golden(version, bytes, &Frame::new(1, pdu.clone()));
        }
    }
    // A 12-byte ACTIVE_TEST_RESP (no Reserved byte) is still a heartbeat answer.
    let short = [0, 0, 0, 12, 0x80, 0, 0, 8, 0, 0, 0, 1];
    assert_eq!(
        Frame::decode(Version::V20, &short).unwrap().pdu,
        Pdu::ActiveTestResp(ActiveTestResp::default())
    );
}
