//! CONNECT: accepted in both versions, refused with the spec's statuses, faults.

use umsd_cmpp::{Connect, Pdu, Version};
use umsd_sim::ismg::{IsmgAccount, IsmgConfig, IsmgFaults};

use crate::client::{sim, Client, ACCOUNT, PASSWORD, TIMESTAMP};

#[tokio::test]
async fn login_ok_in_2_0_and_3_0_with_a_verified_authenticator() {
    let s = sim(IsmgConfig::default());
    let _v2 = Client::login(s.addr(), Version::V20).await;
    let _v3 = Client::login(s.addr(), Version::V30).await;
    let stats = s
        .wait_for(crate::client::WAIT, |st| st.connections_logged_in == 2)
        .await
        .unwrap();
    assert_eq!(stats.logins_ok, 2);
    let versions: Vec<Version> = s.connections().iter().map(|c| c.version).collect();
    assert_eq!(versions, [Version::V20, Version::V30]);
    assert!(s.connections().iter().all(|c| c.account == ACCOUNT));
}

#[tokio::test]
async fn bad_password_is_3_and_unknown_account_is_2() {
    let s = sim(IsmgConfig::default());
    let (mut c, resp, _) = Client::login_as(s.addr(), Version::V30, ACCOUNT, "wrong").await;
    assert_eq!(resp.status, 3);
    assert_eq!(resp.authenticator_ismg, [0; 16]);
    assert!(c.closed().await, "a refused connection is closed");
    let (_, resp, _) = Client::login_as(s.addr(), Version::V20, "123456", PASSWORD).await;
    assert_eq!(resp.status, 2);
    let stats = s.stats();
    assert_eq!(stats.logins_refused.get(&3), Some(&1));
    assert_eq!(stats.logins_refused.get(&2), Some(&1));
    assert_eq!(stats.logins_ok, 0);
}

#[tokio::test]
async fn connections_beyond_the_account_limit_get_5() {
    let s = sim(IsmgConfig {
        max_connections: 2,
        accounts: vec![
            IsmgAccount::default_account(),
            IsmgAccount {
                account: "900002".into(),
                password: "pw2".into(),
            },
        ],
        ..IsmgConfig::default()
    });
    let _a = Client::login(s.addr(), Version::V30).await;
    let _b = Client::login(s.addr(), Version::V30).await;
    let (_, resp, _) = Client::login_as(s.addr(), Version::V30, ACCOUNT, PASSWORD).await;
    assert_eq!(resp.status, 5);
    // The limit is per account.
    let (_other, resp, _) = Client::login_as(s.addr(), Version::V30, "900002", "pw2").await;
    assert_eq!(resp.status, 0);
    // A closed connection frees its place.
    drop(_a);
    s.wait_for(crate::client::WAIT, |st| st.connections_logged_in == 2)
        .await
        .unwrap();
    let (_, resp, _) = Client::login_as(s.addr(), Version::V30, ACCOUNT, PASSWORD).await;
    assert_eq!(resp.status, 0);
}

#[tokio::test]
async fn refuse_logins_answers_its_status_while_set() {
    let s = sim(IsmgConfig::default());
    s.set_faults(IsmgFaults {
        refuse_logins: Some(7),
        ..IsmgFaults::default()
    });
    let (_, resp, _) = Client::login_as(s.addr(), Version::V20, ACCOUNT, PASSWORD).await;
    assert_eq!(resp.status, 7);
    assert_eq!(s.faults().refuse_logins, Some(7), "stays set");
    s.set_faults(IsmgFaults::default());
    let _c = Client::login(s.addr(), Version::V20).await;
    assert_eq!(s.stats().logins_refused.get(&7), Some(&1));
}

#[tokio::test]
async fn unsupported_version_is_4_and_a_first_frame_other_than_connect_closes() {
    let s = sim(IsmgConfig::default());
    let mut c = Client::connect(s.addr(), Version::V20).await;
    let mut connect = Connect::new(ACCOUNT, PASSWORD.as_bytes(), Version::V20, TIMESTAMP).unwrap();
    connect.version = 0x10;
    c.send(Pdu::Connect(connect)).await;
    match c.recv().await.pdu {
        Pdu::ConnectResp(r) => assert_eq!(r.status, 4),
        other => panic!("{other:?}"),
    }

    let mut c = Client::connect(s.addr(), Version::V30).await;
    c.send(Pdu::ActiveTest).await;
    assert!(c.closed().await);
    assert_eq!(s.stats().unexpected, 1);
}
