//! A minimal CMPP SP client over `Framed<TcpStream, CmppCodec>` for driving the simulator,
//! with every wait bounded.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use umsd_cmpp::auth::{verify_authenticator_ismg, IsmgCheck};
use umsd_cmpp::split::{split_message, SplitOptions};
use umsd_cmpp::{
    CmppCodec, Connect, ConnectResp, Deliver, DeliverResp, Frame, OctetString, Pdu, Submit,
    SubmitResp, Version,
};
use umsd_sim::ismg::{self, IsmgConfig, IsmgHandle};

pub const ACCOUNT: &str = "900001";
pub const PASSWORD: &str = "888888";
/// A CONNECT timestamp (MMDDHHMMSS); the simulator does not check the clock.
pub const TIMESTAMP: u32 = 1_121_230_825;
/// Longest any single expected event may take.
pub const WAIT: Duration = Duration::from_secs(5);

pub fn sim(cfg: IsmgConfig) -> IsmgHandle {
    ismg::start(cfg).unwrap()
}

pub struct Client {
    pub framed: Framed<TcpStream, CmppCodec>,
    next_sequence: u32,
    /// Frames read while looking for another kind, oldest first.
    backlog: VecDeque<Frame>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, version: Version) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        Client {
            framed: Framed::new(stream, CmppCodec::new(version)),
            next_sequence: 1,
            backlog: VecDeque::new(),
        }
    }

    /// Connects and sends CONNECT; returns the CONNECT_RESP and the CONNECT sent.
    pub async fn login_as(
        addr: SocketAddr,
        version: Version,
        account: &str,
        password: &str,
    ) -> (Client, ConnectResp, Connect) {
        let mut c = Client::connect(addr, version).await;
        let connect = Connect::new(account, password.as_bytes(), version, TIMESTAMP).unwrap();
        c.send(Pdu::Connect(connect.clone())).await;
        let resp = match c.recv().await.pdu {
            Pdu::ConnectResp(r) => r,
            other => panic!("expected CONNECT_RESP, got {other:?}"),
        };
        (c, resp, connect)
    }

    /// Logs in with the default account and checks status 0 and AuthenticatorISMG.
    pub async fn login(addr: SocketAddr, version: Version) -> Client {
        let (c, resp, connect) = Client::login_as(addr, version, ACCOUNT, PASSWORD).await;
        assert_eq!(resp.status, 0);
        assert_eq!(
            verify_authenticator_ismg(
                version,
                &resp,
                &connect.authenticator_source,
                PASSWORD.as_bytes()
            ),
            IsmgCheck::Valid
        );
        c
    }

    /// Sends a request with the next Sequence_Id; returns that id.
    pub async fn send(&mut self, pdu: Pdu) -> u32 {
        let seq = self.next_sequence;
        self.next_sequence += 1;
        self.send_as(seq, pdu).await;
        seq
    }

    /// Like [`Client::send`], for a request the peer may already have hung up on: a write
    /// error is not a failure.
    pub async fn send_to_closing(&mut self, pdu: Pdu) -> u32 {
        let seq = self.next_sequence;
        self.next_sequence += 1;
        let _ = self.framed.send(Frame::new(seq, pdu)).await;
        seq
    }

    pub async fn send_as(&mut self, sequence_id: u32, pdu: Pdu) {
        self.framed
            .send(Frame::new(sequence_id, pdu))
            .await
            .unwrap();
    }

    /// The next frame; panics on timeout, end of stream or a decoding error.
    pub async fn recv(&mut self) -> Frame {
        match self.recv_within(WAIT).await {
            Some(f) => f,
            None => panic!("no frame within {WAIT:?}"),
        }
    }

    /// The next frame, or `None` if none arrives within `d`; panics if the stream ends.
    pub async fn recv_within(&mut self, d: Duration) -> Option<Frame> {
        if let Some(f) = self.backlog.pop_front() {
            return Some(f);
        }
        match tokio::time::timeout(d, self.framed.next()).await {
            Ok(Some(Ok(f))) => Some(f),
            Ok(Some(Err(e))) => panic!("decoding error: {e}"),
            Ok(None) => panic!("connection closed"),
            Err(_) => None,
        }
    }

    /// The next frame matching `pred`; others are kept for later `recv`s.
    pub async fn recv_where(&mut self, pred: impl Fn(&Frame) -> bool) -> Frame {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i).unwrap();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let f = match tokio::time::timeout_at(deadline, self.framed.next()).await {
                Ok(Some(Ok(f))) => f,
                Ok(Some(Err(e))) => panic!("decoding error: {e}"),
                Ok(None) => panic!("connection closed"),
                Err(_) => panic!("no matching frame within {WAIT:?}"),
            };
            if pred(&f) {
                return f;
            }
            self.backlog.push_back(f);
        }
    }

    pub async fn recv_submit_resp(&mut self) -> (u32, SubmitResp) {
        let f = self
            .recv_where(|f| matches!(f.pdu, Pdu::SubmitResp(_)))
            .await;
        match f.pdu {
            Pdu::SubmitResp(r) => (f.sequence_id, r),
            _ => unreachable!(),
        }
    }

    pub async fn recv_deliver(&mut self) -> (u32, Deliver) {
        let f = self.recv_where(|f| matches!(f.pdu, Pdu::Deliver(_))).await;
        match f.pdu {
            Pdu::Deliver(d) => (f.sequence_id, d),
            _ => unreachable!(),
        }
    }

    /// Acknowledges a DELIVER as the spec wants: echoing its header Msg_Id.
    pub async fn ack(&mut self, sequence_id: u32, deliver: &Deliver) {
        self.send_as(sequence_id, Pdu::DeliverResp(DeliverResp::ok(deliver)))
            .await;
    }

    /// Whether the server closes the connection within `WAIT` (frames read meanwhile are
    /// discarded).
    pub async fn closed(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.framed.next()).await {
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {}
                Err(_) => return false,
            }
        }
    }
}

/// A single-segment SUBMIT to `dests` asking for a report.
pub fn submit(dests: &[&str], text: &str) -> Submit {
    let segment = split_message(text, &SplitOptions::default())
        .unwrap()
        .remove(0);
    Submit {
        msg_src: OctetString::from(ACCOUNT),
        src_id: OctetString::from("10690001"),
        service_id: OctetString::from("MUMSD"),
        dest_terminal_ids: dests.iter().map(|d| OctetString::from(*d)).collect(),
        ..Submit::default()
    }
    .with_segment(&segment)
}
