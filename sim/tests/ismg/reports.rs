//! Status reports: correlation, Stat mix, body size per version, routing to another
//! connection and waiting for a login.

use std::collections::BTreeMap;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio_util::codec::Decoder;
use umsd_cmpp::{CmppCodec, Frame, Pdu, Version};
use umsd_sim::ismg::IsmgConfig;

use crate::client::{sim, submit, Client, WAIT};

#[tokio::test]
async fn report_carries_the_submit_msg_id_and_a_stat_from_the_mix() {
    let s = sim(IsmgConfig {
        report_delay_ms: 50,
        stats: BTreeMap::from([("DELIVRD".into(), 1), ("UNDELIV".into(), 1)]),
        ..IsmgConfig::default()
    });
    let mut c = Client::login(s.addr(), Version::V30).await;
    let mut stats_seen = Vec::new();
    for _ in 0..4 {
        c.send(Pdu::Submit(submit(&["13800138000"], "hi"))).await;
        let (_, resp) = c.recv_submit_resp().await;
        let (seq, d) = c.recv_deliver().await;
        let report = d.report().expect("a status report").clone();
        assert_eq!(report.msg_id, resp.msg_id);
        assert_ne!(d.msg_id, resp.msg_id, "the header has its own Msg_Id");
        assert_eq!(report.dest_terminal_id, "13800138000");
        assert_eq!(d.dest_id, "10690001");
        assert_eq!(report.submit_time.len(), 10);
        assert_eq!(report.done_time.len(), 10);
        stats_seen.push(report.stat.to_string());
        c.ack(seq, &d).await;
    }
    assert!(stats_seen
        .iter()
        .all(|st| st == "DELIVRD" || st == "UNDELIV"));
    let stats = s.wait_for(WAIT, |st| st.deliver_resps == 4).await.unwrap();
    assert_eq!((stats.reports_sent, stats.deliver_resp_mismatches), (4, 0));
    assert_eq!(stats.reports_pending, 0);
}

#[tokio::test]
async fn deliver_resp_with_a_wrong_msg_id_is_a_mismatch() {
    let s = sim(IsmgConfig {
        report_delay_ms: 0,
        ..IsmgConfig::default()
    });
    let mut c = Client::login(s.addr(), Version::V20).await;
    c.send(Pdu::Submit(submit(&["13800138000"], "hi"))).await;
    let (seq, mut d) = c.recv_deliver().await;
    d.msg_id.0 ^= 1;
    c.ack(seq, &d).await;
    s.wait_for(WAIT, |st| st.deliver_resp_mismatches == 1)
        .await
        .unwrap();
}

/// Reads one raw frame off the client's socket.
async fn raw_frame(c: &mut Client) -> Vec<u8> {
    let stream = c.framed.get_mut();
    let mut header = [0u8; 12];
    tokio::time::timeout(WAIT, stream.read_exact(&mut header))
        .await
        .unwrap()
        .unwrap();
    let total = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let mut frame = header.to_vec();
    frame.resize(total, 0);
    tokio::time::timeout(WAIT, stream.read_exact(&mut frame[12..]))
        .await
        .unwrap()
        .unwrap();
    frame
}

#[tokio::test]
async fn report_body_is_60_bytes_in_2_0_and_71_in_3_0() {
    let s = sim(IsmgConfig {
        report_delay_ms: 300,
        ..IsmgConfig::default()
    });
    for (version, body, total) in [(Version::V20, 60, 85 + 60), (Version::V30, 71, 109 + 71)] {
        let mut c = Client::login(s.addr(), version).await;
        c.send(Pdu::Submit(submit(&["13800138000"], "hi"))).await;
        let (_, resp) = c.recv_submit_resp().await;
        assert!(c.framed.read_buffer().is_empty());
        let raw = raw_frame(&mut c).await;
        assert_eq!(raw.len(), total, "{version}");
        // Registered_Delivery and Msg_Length sit just before the content.
        let (reg, len) = (
            raw[total - body - 2 - version_link_len(version)],
            raw[total - body - 1 - version_link_len(version)],
        );
        assert_eq!((reg, usize::from(len)), (1, body), "{version}");
        let frame = CmppCodec::new(version)
            .decode(&mut BytesMut::from(&raw[..]))
            .unwrap()
            .unwrap();
        let Frame {
            pdu: Pdu::Deliver(d),
            ..
        } = frame
        else {
            panic!("not a DELIVER")
        };
        assert_eq!(d.report().unwrap().msg_id, resp.msg_id);
    }
}

fn version_link_len(v: Version) -> usize {
    match v {
        Version::V20 => 8,
        Version::V30 => 20,
    }
}

#[tokio::test]
async fn report_goes_to_another_connection_or_waits_for_a_login() {
    let s = sim(IsmgConfig {
        report_delay_ms: 200,
        ..IsmgConfig::default()
    });
    // The SUBMIT's connection terminates before the report is due; none other is open.
    let mut a = Client::login(s.addr(), Version::V30).await;
    a.send(Pdu::Submit(submit(&["13800138000"], "one"))).await;
    let (_, first) = a.recv_submit_resp().await;
    a.send(Pdu::Terminate).await;
    assert!(matches!(a.recv().await.pdu, Pdu::TerminateResp));
    assert!(a.closed().await);
    s.wait_for(WAIT, |st| {
        st.connections_open == 0 && st.reports_pending == 1
    })
    .await
    .unwrap();
    // Once due, the report was offered, found no connection and waits.
    s.wait_for(WAIT, |st| st.reports_waiting == 1)
        .await
        .unwrap();
    assert_eq!(s.stats().reports_sent, 0, "nobody to send it to");

    // It goes out on the next login of the account, in that connection's version.
    let mut b = Client::login(s.addr(), Version::V20).await;
    let (seq, d) = b.recv_deliver().await;
    assert_eq!(d.report().unwrap().msg_id, first.msg_id);
    b.ack(seq, &d).await;
    let stats = s.wait_for(WAIT, |st| st.deliver_resps == 1).await.unwrap();
    assert_eq!((stats.reports_pending, stats.terminates_received), (0, 1));
}

#[tokio::test]
async fn unacknowledged_report_is_sent_again_after_a_reconnect() {
    let s = sim(IsmgConfig {
        report_delay_ms: 0,
        ..IsmgConfig::default()
    });
    let mut a = Client::login(s.addr(), Version::V30).await;
    a.send(Pdu::Submit(submit(&["13800138000"], "one"))).await;
    let (_, d) = a.recv_deliver().await;
    drop(a);
    let mut b = Client::login(s.addr(), Version::V30).await;
    let (seq, again) = b.recv_deliver().await;
    assert_eq!(again.report(), d.report());
    b.ack(seq, &again).await;
    let stats = s.wait_for(WAIT, |st| st.deliver_resps == 1).await.unwrap();
    assert_eq!((stats.reports_sent, stats.reports_requeued), (2, 1));
}
