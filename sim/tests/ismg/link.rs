//! MO messages and link maintenance: ACTIVE_TEST both ways, TERMINATE.

use umsd_cmpp::reassembly::Reassembler;
use umsd_cmpp::{text, DeliverContent, MsgFmt, Pdu, Version};
use umsd_sim::ismg::IsmgConfig;

use crate::client::{sim, Client, ACCOUNT, WAIT};

#[tokio::test]
async fn mo_arrives_as_a_decodable_deliver() {
    let s = sim(IsmgConfig::default());
    assert!(!s.send_mo(ACCOUNT, "13800138000", "10690001", "nobody logged in"));
    let mut c = Client::login(s.addr(), Version::V20).await;
    s.wait_for(WAIT, |st| st.connections_logged_in == 1)
        .await
        .unwrap();
    assert!(!s.send_mo("999999", "13800138000", "10690001", "unknown account"));

    assert!(s.send_mo(ACCOUNT, "13800138000", "1069000188", "退订 TD"));
    let (seq, d) = c.recv_deliver().await;
    assert_eq!(
        (d.src_terminal_id.to_string(), d.dest_id.to_string()),
        ("13800138000".into(), "1069000188".into())
    );
    assert_eq!(d.msg_fmt, MsgFmt::UCS2);
    let DeliverContent::Message(content) = &d.content else {
        panic!("an MO, not a report")
    };
    assert_eq!(text::decode(content, d.msg_fmt).unwrap(), "退订 TD");
    c.ack(seq, &d).await;

    // A long MO comes in segments with a UDH.
    let long = "回复内容".repeat(40);
    assert!(s.send_mo(ACCOUNT, "13800138000", "10690001", &long));
    let mut joiner = Reassembler::<String>::default();
    let mut whole = None;
    while whole.is_none() {
        let (seq, d) = c.recv_deliver().await;
        let DeliverContent::Message(content) = &d.content else {
            panic!("an MO")
        };
        whole = joiner
            .push_text("mo".into(), d.tp_udhi, content, d.msg_fmt)
            .unwrap();
        c.ack(seq, &d).await;
    }
    assert_eq!(whole.as_deref(), Some(long.as_str()));
    let stats = s.wait_for(WAIT, |st| st.deliver_resps >= 4).await.unwrap();
    assert_eq!((stats.mo_sent, stats.deliver_resp_mismatches), (2, 0));
}

#[tokio::test]
async fn simulator_probes_an_idle_connection_with_active_test() {
    let s = sim(IsmgConfig {
        heartbeat_seconds: 1,
        ..IsmgConfig::default()
    });
    let mut c = Client::login(s.addr(), Version::V30).await;
    let f = c.recv().await;
    assert!(matches!(f.pdu, Pdu::ActiveTest), "{f:?}");
    c.send_as(
        f.sequence_id,
        Pdu::ActiveTestResp(umsd_cmpp::ActiveTestResp { reserved: 0 }),
    )
    .await;
    let stats = s
        .wait_for(WAIT, |st| st.active_test_resps == 1)
        .await
        .unwrap();
    assert_eq!(stats.active_tests_sent, 1);
}

#[tokio::test]
async fn unanswered_probes_close_the_connection() {
    let s = sim(IsmgConfig {
        heartbeat_seconds: 1,
        ..IsmgConfig::default()
    });
    let mut c = Client::login(s.addr(), Version::V30).await;
    // Three probes one second apart, then the close.
    assert!(c.closed().await);
    let stats = s.stats();
    assert_eq!((stats.active_tests_sent, stats.connections_dropped), (3, 1));
}

#[tokio::test]
async fn active_test_and_terminate_from_the_client_are_answered() {
    let s = sim(IsmgConfig::default());
    let mut c = Client::login(s.addr(), Version::V20).await;
    let seq = c.send(Pdu::ActiveTest).await;
    let f = c.recv().await;
    assert_eq!(f.sequence_id, seq);
    assert!(matches!(f.pdu, Pdu::ActiveTestResp(_)));
    let seq = c.send(Pdu::Terminate).await;
    let f = c.recv().await;
    assert_eq!(f.sequence_id, seq);
    assert!(matches!(f.pdu, Pdu::TerminateResp));
    assert!(c.closed().await);
    let stats = s
        .wait_for(WAIT, |st| st.connections_open == 0)
        .await
        .unwrap();
    assert_eq!(
        (stats.active_tests_received, stats.terminates_received),
        (1, 1)
    );
}

#[tokio::test]
async fn shutdown_closes_connections_and_the_listener() {
    let s = sim(IsmgConfig::default());
    let mut c = Client::login(s.addr(), Version::V30).await;
    let addr = s.addr();
    s.shutdown();
    assert!(c.closed().await);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
