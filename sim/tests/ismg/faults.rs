//! Injected faults: a gateway killed mid-stream, withheld and throttled answers, reports
//! ahead of their SUBMIT_RESP, dropped connections, a stalled reader.

use std::time::Duration;

use umsd_cmpp::{Pdu, SubmitResp, Version};
use umsd_sim::ismg::{IsmgConfig, IsmgFaults};

use crate::client::{sim, submit, Client, WAIT};

#[tokio::test]
async fn drop_after_submits_closes_the_connection_mid_stream() {
    let s = sim(IsmgConfig::default());
    let mut c = Client::login(s.addr(), Version::V30).await;
    s.set_faults(IsmgFaults {
        drop_after_submits: 3,
        ..IsmgFaults::default()
    });
    assert_eq!(s.faults().drop_after_submits, 3);
    let mut seqs = Vec::new();
    for i in 0..5 {
        let pdu = Pdu::Submit(submit(&["13800138000"], &format!("m{i}")));
        // The gateway may hang up before the 4th and 5th are written.
        seqs.push(if i < 3 {
            c.send(pdu).await
        } else {
            c.send_to_closing(pdu).await
        });
    }
    for expected in &seqs[..3] {
        let (seq, r) = c.recv_submit_resp().await;
        assert_eq!((seq, r.result), (*expected, 0));
    }
    assert!(c.closed().await, "closed without answering 4 and 5");
    let stats = s
        .wait_for(WAIT, |st| st.connections_open == 0)
        .await
        .unwrap();
    assert_eq!(stats.connections_dropped, 1);
    assert_eq!(stats.submit_resp.get(&0), Some(&3));
    assert_eq!(s.faults().drop_after_submits, 0);
    // A new connection is not armed.
    let mut c = Client::login(s.addr(), Version::V30).await;
    for _ in 0..4 {
        c.send(Pdu::Submit(submit(&["13800138000"], "x"))).await;
        assert_eq!(c.recv_submit_resp().await.1.result, 0);
    }
}

#[tokio::test]
async fn stalled_submit_gets_no_answer_until_resent() {
    let s = sim(IsmgConfig::default());
    let mut c = Client::login(s.addr(), Version::V30).await;
    s.set_faults(IsmgFaults {
        stall_next: 1,
        ..IsmgFaults::default()
    });
    let msg = submit(&["13800138000"], "stalled");
    c.send_as(10, Pdu::Submit(msg.clone())).await;
    assert!(c.recv_within(Duration::from_millis(400)).await.is_none());
    assert_eq!(s.faults().stall_next, 0);
    // Another SUBMIT goes through meanwhile; the resend of 10 is answered normally.
    c.send_as(11, Pdu::Submit(submit(&["13800138000"], "other")))
        .await;
    assert_eq!(c.recv_submit_resp().await.0, 11);
    c.send_as(10, Pdu::Submit(msg)).await;
    let (seq, r) = c.recv_submit_resp().await;
    assert_eq!((seq, r.result), (10, 0));
    let stats = s.stats();
    assert_eq!((stats.stalled, stats.submits), (1, 3));
    assert_eq!(s.submits().len(), 2, "the stalled copy was not accepted");
}

#[tokio::test]
async fn flow_control_next_answers_result_8() {
    let s = sim(IsmgConfig::default());
    let mut c = Client::login(s.addr(), Version::V20).await;
    s.set_faults(IsmgFaults {
        flow_control_next: 2,
        ..IsmgFaults::default()
    });
    let results: Vec<u32> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            c.send(Pdu::Submit(submit(&["13800138000"], "x"))).await;
            v.push(c.recv_submit_resp().await.1.result);
        }
        v
    };
    assert_eq!(
        results,
        [SubmitResp::FLOW_CONTROL, SubmitResp::FLOW_CONTROL, 0]
    );
    assert_eq!(s.stats().flow_controlled, 2);
}

#[tokio::test]
async fn report_before_resp_writes_the_report_first() {
    let s = sim(IsmgConfig {
        report_delay_ms: 5_000,
        ..IsmgConfig::default()
    });
    let mut c = Client::login(s.addr(), Version::V30).await;
    s.set_faults(IsmgFaults {
        report_before_resp: true,
        ..IsmgFaults::default()
    });
    let seq = c.send(Pdu::Submit(submit(&["13800138000"], "fast"))).await;
    let first = c.recv().await;
    let Pdu::Deliver(d) = first.pdu else {
        panic!("expected the report first, got {first:?}")
    };
    let second = c.recv().await;
    let Pdu::SubmitResp(resp) = second.pdu else {
        panic!("expected SUBMIT_RESP second, got {second:?}")
    };
    assert_eq!(second.sequence_id, seq);
    assert_eq!(d.report().unwrap().msg_id, resp.msg_id);
}

#[tokio::test]
async fn drop_connections_closes_every_connection() {
    let s = sim(IsmgConfig::default());
    let mut a = Client::login(s.addr(), Version::V30).await;
    let mut b = Client::login(s.addr(), Version::V20).await;
    s.wait_for(WAIT, |st| st.connections_logged_in == 2)
        .await
        .unwrap();
    s.set_faults(IsmgFaults {
        drop_connections: true,
        ..IsmgFaults::default()
    });
    assert!(a.closed().await && b.closed().await);
    let stats = s
        .wait_for(WAIT, |st| st.connections_open == 0)
        .await
        .unwrap();
    assert_eq!(stats.connections_dropped, 2);
    assert!(!s.faults().drop_connections, "one-shot");
    let _c = Client::login(s.addr(), Version::V30).await;
}

#[tokio::test]
async fn stop_reading_leaves_heartbeats_unanswered_until_cleared() {
    let s = sim(IsmgConfig::default());
    let mut c = Client::login(s.addr(), Version::V30).await;
    s.set_faults(IsmgFaults {
        stop_reading: true,
        ..IsmgFaults::default()
    });
    let seq = c.send(Pdu::ActiveTest).await;
    assert!(c.recv_within(Duration::from_millis(400)).await.is_none());
    s.set_faults(IsmgFaults::default());
    let f = c.recv().await;
    assert!(matches!(f.pdu, Pdu::ActiveTestResp(_)) && f.sequence_id == seq);
}
