//! SUBMIT: Msg_Ids, the received ring, group sends, window and rate flow control,
//! long-message reassembly and malformed input.

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::io::AsyncWriteExt;
use umsd_cmpp::split::{split_message, SplitOptions};
use umsd_cmpp::{MsgFmt, Pdu, SubmitResp, Version};
use umsd_sim::ismg::IsmgConfig;

use crate::client::{sim, submit, Client, ACCOUNT, WAIT};

#[tokio::test]
async fn submit_resp_carries_a_fresh_msg_id_with_the_gateway_code() {
    let s = sim(IsmgConfig {
        gateway_id: 654_321,
        ..IsmgConfig::default()
    });
    let mut c = Client::login(s.addr(), Version::V30).await;
    let seq = c.send(Pdu::Submit(submit(&["13800138000"], "hello"))).await;
    let (resp_seq, resp) = c.recv_submit_resp().await;
    assert_eq!(resp_seq, seq);
    assert_eq!(resp.result, 0);
    assert_eq!(resp.msg_id.gateway(), 654_321);
    assert!((1..=12).contains(&resp.msg_id.month()));

    c.send(Pdu::Submit(submit(&["13800138000"], "again"))).await;
    let (_, second) = c.recv_submit_resp().await;
    assert_ne!(second.msg_id, resp.msg_id);

    let records = s.submits();
    assert_eq!(records.len(), 2);
    let r = &records[0];
    assert_eq!(
        (r.account.as_str(), r.sequence_id, r.msg_id),
        (ACCOUNT, seq, resp.msg_id)
    );
    assert_eq!(r.dest_terminal_ids, ["13800138000"]);
    assert_eq!(
        (r.src_id.as_str(), r.service_id.as_str()),
        ("10690001", "MUMSD")
    );
    assert_eq!(r.text.as_deref(), Some("hello"));
    assert_eq!((r.pk_total, r.pk_number, r.registered_delivery), (1, 1, 1));
    assert_eq!(r.connection, s.connections()[0].id);
    // Single-segment messages appear among the whole messages too.
    let msgs = s.messages();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].text.as_deref(), Some("hello"));
    assert_eq!(msgs[0].msg_ids, [resp.msg_id]);
    let stats = s.stats();
    assert_eq!((stats.submits, stats.submit_resp.get(&0)), (2, Some(&2)));
}

#[tokio::test]
async fn group_submit_covers_consecutive_msg_ids() {
    let s = sim(IsmgConfig {
        report_delay_ms: 20,
        ..IsmgConfig::default()
    });
    let mut c = Client::login(s.addr(), Version::V20).await;
    let dests = ["13800000001", "13800000002", "13800000003"];
    c.send(Pdu::Submit(submit(&dests, "group"))).await;
    let (_, resp) = c.recv_submit_resp().await;
    let ids: Vec<_> = s.submits()[0].msg_ids().collect();
    assert_eq!(ids[0], resp.msg_id);
    assert_eq!(ids[2].0, resp.msg_id.0 + 2);
    let mut reported = Vec::new();
    for _ in 0..3 {
        let (seq, d) = c.recv_deliver().await;
        let report = d.report().unwrap().clone();
        assert_eq!(report.dest_terminal_id, d.src_terminal_id);
        reported.push((report.msg_id, report.dest_terminal_id.to_string()));
        c.ack(seq, &d).await;
    }
    reported.sort();
    let expected: Vec<_> = ids.into_iter().zip(dests.map(String::from)).collect();
    assert_eq!(reported, expected);
    assert_eq!(s.messages().len(), 3, "one message per recipient");
}

#[tokio::test]
async fn window_exceeded_with_resp_delay_answers_result_8() {
    let s = sim(IsmgConfig {
        window: 4,
        resp_delay_ms: 400,
        ..IsmgConfig::default()
    });
    let mut c = Client::login(s.addr(), Version::V30).await;
    let mut seqs = Vec::new();
    for i in 0..6 {
        seqs.push(
            c.send(Pdu::Submit(submit(&["13800138000"], &format!("m{i}"))))
                .await,
        );
    }
    // The two beyond the window are answered at once, before the delayed ones.
    for expected in &seqs[4..] {
        let (seq, r) = c.recv_submit_resp().await;
        assert_eq!((seq, r.result), (*expected, SubmitResp::FLOW_CONTROL));
    }
    assert_eq!(s.connections()[0].in_flight, 4);
    let started = Instant::now();
    for expected in &seqs[..4] {
        let (seq, r) = c.recv_submit_resp().await;
        assert_eq!((seq, r.result), (*expected, 0));
    }
    assert!(started.elapsed() >= Duration::from_millis(250));
    let stats = s.stats();
    assert_eq!(stats.flow_controlled, 2);
    assert_eq!(stats.submit_resp.get(&8), Some(&2));
    assert_eq!(s.submits().len(), 4);
}

#[tokio::test]
async fn rate_limit_answers_result_8_and_holds_the_rate() {
    const RATE: u32 = 200;
    let s = sim(IsmgConfig {
        rate_per_second: Some(RATE),
        report_delay_ms: 0,
        ..IsmgConfig::default()
    });
    let mut c = Client::login(s.addr(), Version::V30).await;
    let mut template = submit(&["13800138000"], "r");
    template.registered_delivery = 0;

    // Drain the burst: pipelined, so the bucket has no time to refill much.
    let n = RATE as usize + 50;
    for _ in 0..n {
        c.send(Pdu::Submit(template.clone())).await;
    }
    let mut throttled = 0;
    for _ in 0..n {
        let (_, r) = c.recv_submit_resp().await;
        throttled += usize::from(r.result == SubmitResp::FLOW_CONTROL);
    }
    assert!(
        throttled >= 40,
        "the burst is the rate: {throttled} throttled"
    );

    // Offer about twice the rate for two seconds; the bucket admits the rate.
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(2_500));
    let (mut ok, mut sent) = (0u32, 0u32);
    while started.elapsed() < Duration::from_secs(2) {
        tick.tick().await;
        c.send(Pdu::Submit(template.clone())).await;
        sent += 1;
        let (_, r) = c.recv_submit_resp().await;
        ok += u32::from(r.result == 0);
    }
    let secs = started.elapsed().as_secs_f64();
    let measured = f64::from(ok) / secs;
    assert!(
        (measured - f64::from(RATE)).abs() <= f64::from(RATE) * 0.05,
        "accepted {ok} of {sent} in {secs:.2}s = {measured:.1}/s"
    );
    assert!(sent > ok + 100, "the offer exceeded the rate");
}

#[tokio::test]
async fn long_ucs2_message_reassembles_with_its_parts() {
    let s = sim(IsmgConfig::default());
    let mut c = Client::login(s.addr(), Version::V30).await;
    // 66 characters, then a surrogate pair straddling the 67-unit cut, then more.
    let text = format!("{}😀{}", "长".repeat(66), "信息abc".repeat(20));
    let segments = split_message(
        &text,
        &SplitOptions {
            reference: 42,
            ..SplitOptions::default()
        },
    )
    .unwrap();
    assert_eq!(segments.len(), 3);
    let template = submit(&["13800138000"], "x");
    let mut ids = Vec::new();
    for segment in &segments {
        c.send(Pdu::Submit(template.with_segment(segment))).await;
        ids.push(c.recv_submit_resp().await.1.msg_id);
    }
    let msgs = s.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.text.as_deref(), Some(text.as_str()));
    assert_eq!((m.parts, m.msg_fmt), (3, MsgFmt::UCS2));
    assert_eq!(m.msg_ids, ids);
    assert_eq!(m.dest, "13800138000");
    let records = s.submits();
    assert_eq!(records.len(), 3);
    assert_eq!(
        records
            .iter()
            .map(|r| (r.pk_total, r.pk_number, r.tp_udhi))
            .collect::<Vec<_>>(),
        [(3, 1, 1), (3, 2, 1), (3, 3, 1)]
    );
    // Each segment's own text is decoded without its UDH; the pair is whole in one.
    let joined: String = records.iter().map(|r| r.text.clone().unwrap()).collect();
    assert_eq!(joined, text);
}

#[tokio::test]
async fn malformed_frame_is_answered_and_a_framing_error_closes() {
    let s = sim(IsmgConfig::default());
    let mut c = Client::login(s.addr(), Version::V30).await;
    // A SUBMIT whose body is far too short for its layout, Total_Length consistent.
    let mut raw = BytesMut::new();
    raw.put_u32(12 + 10);
    raw.put_u32(0x0000_0004);
    raw.put_u32(77);
    raw.put_slice(&[0; 10]);
    c.framed.get_mut().write_all(&raw).await.unwrap();
    let (seq, r) = c.recv_submit_resp().await;
    assert_eq!((seq, r.result), (77, SubmitResp::STRUCTURE_ERROR));
    // The stream is still in sync.
    let at = c.send(Pdu::ActiveTest).await;
    let f = c.recv().await;
    assert!(matches!(f.pdu, Pdu::ActiveTestResp(_)) && f.sequence_id == at);
    // Total_Length below the header: out of sync, closed.
    let mut raw = BytesMut::new();
    raw.put_u32(5);
    raw.put_u32(0x0000_0008);
    raw.put_u32(1);
    c.framed.get_mut().write_all(&raw).await.unwrap();
    assert!(c.closed().await);
    let stats = s
        .wait_for(WAIT, |st| st.connections_open == 0)
        .await
        .unwrap();
    assert_eq!(stats.malformed, 2);
}

/// Drives one connection with a window of 16: every SUBMIT answered, every report acked.
async fn pump(mut c: Client, n: usize) -> Vec<umsd_cmpp::MsgId> {
    let (mut sent, mut in_flight, mut reports) = (0, 0, 0);
    let mut ids = Vec::new();
    while ids.len() < n || reports < n {
        while in_flight < 16 && sent < n {
            c.send(Pdu::Submit(submit(
                &["13800138000"],
                &format!("load {sent}"),
            )))
            .await;
            sent += 1;
            in_flight += 1;
        }
        let f = c.recv().await;
        match &f.pdu {
            Pdu::SubmitResp(r) => {
                assert_eq!(r.result, 0);
                ids.push(r.msg_id);
                in_flight -= 1;
            }
            Pdu::Deliver(d) => {
                reports += 1;
                c.ack(f.sequence_id, d).await;
            }
            other => panic!("{other:?}"),
        }
    }
    ids
}

#[tokio::test]
async fn sustained_traffic_on_two_connections_is_answered_and_reported() {
    const N: usize = 1000;
    let s = sim(IsmgConfig {
        report_delay_ms: 0,
        threads: 2,
        ..IsmgConfig::default()
    });
    let a = Client::login(s.addr(), Version::V30).await;
    let b = Client::login(s.addr(), Version::V20).await;
    let (ids_a, ids_b) = tokio::join!(pump(a, N), pump(b, N));
    let mut all: Vec<_> = ids_a.into_iter().chain(ids_b).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 2 * N, "Msg_Ids are unique");
    let stats = s
        .wait_for(WAIT, |st| st.deliver_resps == 2 * N as u64)
        .await
        .unwrap();
    assert_eq!(stats.submits, 2 * N as u64);
    assert_eq!(stats.reports_sent, 2 * N as u64);
    assert_eq!(stats.deliver_resp_mismatches, 0);
    assert_eq!(s.messages().len(), 2 * N);
}
