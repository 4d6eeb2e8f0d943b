//! An ISMG simulator: the CMPP 2.0 / 3.0 gateway (China Mobile's SMS gateway) an SP logs
//! in to, submits messages through and receives status reports and mobile-originated
//! messages from.
//!
//! Like the HTTP simulators it binds its listener in [`start`] and serves from a dedicated
//! OS thread with its own tokio runtime, so the daemon's demo configuration, integration
//! tests and the load-test harness can all embed it. Wire encoding is `umsd-cmpp`'s; this
//! module holds the gateway's behaviour only.
//!
//! What a connection sees:
//!
//! - **Login.** The first frame must be CONNECT (anything else closes the connection). The
//!   answer uses the layout of the client's Version byte (2.x or 3.x): status 4 for any
//!   other major version, 2 for an unknown account, 3 for a bad AuthenticatorSource, 5 when
//!   the account already has `max_connections` logged in, else 0 with AuthenticatorISMG.
//!   A refused connection is closed after the answer.
//! - **SUBMIT.** Answered with SUBMIT_RESP echoing the Sequence_Id and a fresh Msg_Id in
//!   the standard layout (time in China Standard Time, `gateway_id`, a wrapping 16-bit
//!   sequence); a SUBMIT to N recipients gets M and covers M…M+N−1. Result 8 (flow
//!   control) when the connection already has `window` SUBMITs waiting for their answer
//!   (only possible with `resp_delay_ms` > 0) or the account's token bucket
//!   (`rate_per_second`, counted per recipient) is empty. Accepted SUBMITs are kept in a
//!   ring ([`IsmgHandle::submits`]) and joined into whole messages
//!   ([`IsmgHandle::messages`]).
//! - **Status reports.** Each recipient of an accepted SUBMIT with Registered_Delivery = 1
//!   gets a report DELIVER after `report_delay_ms`, with a Stat drawn from `stats`, on the
//!   connection the SUBMIT came on or, if that one is gone, another logged-in connection
//!   of the account; with none, the report waits (bounded) for the next login. A report
//!   whose DELIVER was not acknowledged when its connection closed is queued again, as a
//!   real gateway resends: a client may see a report twice.
//! - **MO.** [`IsmgHandle::send_mo`] sends a DELIVER with Registered_Delivery = 0, split
//!   with a UDH when long.
//! - **Link.** ACTIVE_TEST is answered; with `heartbeat_seconds` the simulator probes an
//!   idle connection itself and closes it after three unanswered probes. TERMINATE is
//!   answered and the connection closed. A malformed frame is counted (a malformed SUBMIT
//!   answered with Result 1) and the connection kept; a framing error (Total_Length out of
//!   range) closes it, the stream being out of sync.
//!
//! Faults ([`IsmgFaults`]) can be changed at any time through [`IsmgHandle::set_faults`].
//!
//! The simulator keeps every collection bounded (rings, waiting reports, unfinished long
//! messages, per-connection bookkeeping) and never panics on network input.

mod clock;
mod received;
mod reports;
mod server;
mod session;
mod state;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use umsd_cmpp::{MsgFmt, MsgId, Version};

/// Largest gateway code that fits the Msg_Id's 22-bit ISMG field.
pub const MAX_GATEWAY_ID: u32 = 0x3F_FFFF;
/// Accepted SUBMITs kept by [`IsmgHandle::submits`].
pub const SUBMITS_CAP: usize = 100_000;
/// Whole messages kept by [`IsmgHandle::messages`].
pub const MESSAGES_CAP: usize = 100_000;

/// Configuration of the ISMG simulator. Every key has a default.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IsmgConfig {
    /// Listen address; port 0 picks a free one. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Worker threads of the simulator's own runtime. Default 1.
    pub threads: usize,
    /// SP accounts allowed to log in. Default: `900001` / `888888`.
    pub accounts: Vec<IsmgAccount>,
    /// ISMG code written into every Msg_Id (at most [`MAX_GATEWAY_ID`]). Default 1234567.
    pub gateway_id: u32,
    /// Connections one account may have logged in at once; beyond, CONNECT_RESP status 5.
    /// Default 8.
    pub max_connections: usize,
    /// SUBMITs of one connection that may wait for their SUBMIT_RESP; beyond, Result 8.
    /// Default 16.
    pub window: usize,
    /// Token bucket per account across its connections (burst = rate), counted per
    /// recipient; an empty bucket answers Result 8. `None` (default) = unlimited.
    pub rate_per_second: Option<u32>,
    /// Delay before each SUBMIT_RESP. Default 0.
    pub resp_delay_ms: u64,
    /// Delay from an accepted SUBMIT to its status report DELIVER. Default 200.
    pub report_delay_ms: u64,
    /// Weights of the Stat drawn for each report, e.g. `{"DELIVRD": 95, "UNDELIV": 5}`.
    /// Keys are at most 7 bytes. Default `{"DELIVRD": 100}`.
    pub stats: BTreeMap<String, u32>,
    /// Probe a connection with ACTIVE_TEST after it has been idle (nothing received) this
    /// long, and close it after three unanswered probes. 0 (default) = never.
    pub heartbeat_seconds: u64,
}

/// An SP account: Source_Addr (SP_Id, at most 6 bytes) and its shared secret.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IsmgAccount {
    pub account: String,
    pub password: String,
}

impl IsmgAccount {
    /// The account the default configuration accepts.
    pub fn default_account() -> IsmgAccount {
        IsmgAccount {
            account: "900001".to_owned(),
            password: "888888".to_owned(),
        }
    }
}

impl Default for IsmgConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            threads: 1,
            accounts: vec![IsmgAccount::default_account()],
            gateway_id: 1_234_567,
            max_connections: 8,
            window: 16,
            rate_per_second: None,
            resp_delay_ms: 0,
            report_delay_ms: 200,
            stats: BTreeMap::from([("DELIVRD".to_owned(), 100)]),
            heartbeat_seconds: 0,
        }
    }
}

impl IsmgConfig {
    /// Checks the values the protocol constrains.
    ///
    /// # Errors
    /// A message naming the first offending key: `gateway_id` over 22 bits, an account
    /// longer than 6 bytes (or listed twice), a Stat key longer than 7 bytes, or a zero
    /// `window`.
    pub fn validate(&self) -> Result<(), String> {
        if self.gateway_id > MAX_GATEWAY_ID {
            return Err(format!(
                "gateway_id {} does not fit the Msg_Id's 22 bits (max {MAX_GATEWAY_ID})",
                self.gateway_id
            ));
        }
        for (i, a) in self.accounts.iter().enumerate() {
            if a.account.is_empty() || a.account.len() > 6 {
                return Err(format!(
                    "account {:?}: Source_Addr must be 1 to 6 bytes",
                    a.account
                ));
            }
            if self.accounts[..i].iter().any(|b| b.account == a.account) {
                return Err(format!("account {:?} is listed twice", a.account));
            }
        }
        for stat in self.stats.keys() {
            if stat.is_empty() || stat.len() > 7 {
                return Err(format!("stats key {stat:?}: Stat must be 1 to 7 bytes"));
            }
        }
        if self.window == 0 {
            return Err("window must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// Injected faults. Replace them with [`IsmgHandle::set_faults`]; read what is left with
/// [`IsmgHandle::faults`]. `*_next` counters count down as SUBMITs consume them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IsmgFaults {
    /// While set, every CONNECT is answered with this status (and the connection closed).
    /// In 2.0 a status above 255 is sent as 255.
    pub refuse_logins: Option<u32>,
    /// One-shot: close every open connection now, without TERMINATE. Reads back `false`.
    pub drop_connections: bool,
    /// Arms every connection logged in at the time of the call: each is closed abruptly,
    /// without TERMINATE, right after its N-th further SUBMIT. That SUBMIT is answered if
    /// its answer is due at once; SUBMITs behind it in the stream and answers still
    /// waiting on `resp_delay_ms` are never sent. Connections logging in later are not
    /// armed; 0 disarms. Reads back the most SUBMITs any armed connection has left.
    pub drop_after_submits: u32,
    /// The next N SUBMITs (across all connections) get no SUBMIT_RESP at all. A SUBMIT
    /// resent with the same Sequence_Id on the same connection is then handled normally.
    pub stall_next: u32,
    /// The next N SUBMITs are answered with Result 8 (flow control).
    pub flow_control_next: u32,
    /// While set, the report DELIVERs of an accepted SUBMIT are written at once, before
    /// its SUBMIT_RESP, ignoring `report_delay_ms`.
    pub report_before_resp: bool,
    /// While set, nothing is read from any connection: a stalled gateway. Heartbeats from
    /// the client go unanswered and the simulator sends none; answers and reports already
    /// due are still written.
    pub stop_reading: bool,
}

/// Counters of one simulator, from its start. They keep counting when the rings wrap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct IsmgStats {
    /// TCP connections currently open (logged in or not).
    pub connections_open: u64,
    /// Connections currently logged in.
    pub connections_logged_in: u64,
    /// CONNECTs answered with status 0.
    pub logins_ok: u64,
    /// CONNECTs refused, by CONNECT_RESP status.
    pub logins_refused: BTreeMap<u32, u64>,
    /// SUBMITs received after login (well-formed ones, answered or not).
    pub submits: u64,
    /// SUBMIT_RESPs written, by Result.
    pub submit_resp: BTreeMap<u32, u64>,
    /// SUBMITs answered with Result 8 (window, rate or injected).
    pub flow_controlled: u64,
    /// SUBMITs left unanswered by `stall_next`.
    pub stalled: u64,
    /// Status report DELIVERs written (a resent report counts again).
    pub reports_sent: u64,
    /// Reports waiting: scheduled, or waiting for a logged-in connection.
    pub reports_pending: u64,
    /// Of `reports_pending`, those past their due time that no connection could take yet
    /// (none of the account's was logged in, or their queues were full), and those put
    /// back when their connection closed.
    pub reports_waiting: u64,
    /// Reports queued again because their connection closed before DELIVER_RESP.
    pub reports_requeued: u64,
    /// Reports dropped because the waiting queue was full or encoding failed.
    pub reports_dropped: u64,
    /// DELIVER_RESPs received.
    pub deliver_resps: u64,
    /// DELIVER_RESPs whose Msg_Id is not the header Msg_Id of the DELIVER with that
    /// Sequence_Id, or that answer no DELIVER this connection has outstanding.
    pub deliver_resp_mismatches: u64,
    /// MO messages queued by [`IsmgHandle::send_mo`] (one per message, not per segment).
    pub mo_sent: u64,
    /// ACTIVE_TESTs sent by the simulator (`heartbeat_seconds`).
    pub active_tests_sent: u64,
    /// ACTIVE_TEST_RESPs received.
    pub active_test_resps: u64,
    /// ACTIVE_TESTs received from clients (and answered).
    pub active_tests_received: u64,
    /// TERMINATEs received (and answered).
    pub terminates_received: u64,
    /// Frames whose body did not match their command's layout, plus framing errors.
    pub malformed: u64,
    /// Frames an SP should not send at that point: a second CONNECT, DELIVER, SUBMIT_RESP,
    /// TERMINATE_RESP, or a command the simulator does not serve (QUERY, CANCEL, …);
    /// ignored. Non-CONNECT first frames are counted here too.
    pub unexpected: u64,
    /// Connections closed by a fault (`drop_connections`, `drop_after_submits`) or by
    /// unanswered heartbeats.
    pub connections_dropped: u64,
}

/// One accepted SUBMIT, as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitRecord {
    pub account: String,
    /// The connection's id, as in [`ConnectionInfo::id`].
    pub connection: u64,
    pub sequence_id: u32,
    /// The Msg_Id answered; recipient `i` has `msg_id + i` (see [`SubmitRecord::msg_ids`]).
    pub msg_id: MsgId,
    pub dest_terminal_ids: Vec<String>,
    pub src_id: String,
    pub service_id: String,
    pub msg_fmt: MsgFmt,
    pub tp_udhi: u8,
    pub pk_total: u8,
    pub pk_number: u8,
    /// Msg_Content as received, UDH included.
    pub content: Vec<u8>,
    /// This segment's text (UDH stripped), if it decodes in its Msg_Fmt.
    pub text: Option<String>,
    pub registered_delivery: u8,
    /// Unix milliseconds.
    pub at_ms: u64,
}

impl SubmitRecord {
    /// The Msg_Id of each recipient, in Dest_terminal_Id order.
    pub fn msg_ids(&self) -> impl Iterator<Item = MsgId> + '_ {
        (0u64..)
            .zip(&self.dest_terminal_ids)
            .map(|(i, _)| MsgId(self.msg_id.0.wrapping_add(i)))
    }
}

/// A whole message as one recipient received it: the segments of a long message joined,
/// or a single-segment message by itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub account: String,
    /// The recipient.
    pub dest: String,
    /// Src_Id of the (first received) segment.
    pub src_id: String,
    pub msg_fmt: MsgFmt,
    /// The payloads of the segments joined in order, UDHs stripped.
    pub content: Vec<u8>,
    /// `content` decoded in `msg_fmt`, if it decodes.
    pub text: Option<String>,
    /// The Msg_Id of each part, in segment order.
    pub msg_ids: Vec<MsgId>,
    /// Number of segments.
    pub parts: u8,
    /// Unix milliseconds at which the last segment arrived.
    pub at_ms: u64,
}

/// A logged-in connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Unique within the simulator's run.
    pub id: u64,
    pub account: String,
    pub version: Version,
    pub peer: SocketAddr,
    /// Unix milliseconds.
    pub logged_in_at_ms: u64,
    /// SUBMITs received on it.
    pub submits: u64,
    /// SUBMITs waiting for their SUBMIT_RESP (`resp_delay_ms`).
    pub in_flight: usize,
}

/// A running ISMG simulator. Dropping it shuts it down too.
pub struct IsmgHandle {
    addr: SocketAddr,
    ismg: Arc<state::Ismg>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl IsmgHandle {
    /// The bound listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &IsmgConfig {
        &self.ismg.cfg
    }

    /// Current counters.
    pub fn stats(&self) -> IsmgStats {
        self.ismg.stats()
    }

    /// Accepted SUBMITs still in the ring (the last [`SUBMITS_CAP`]), oldest first.
    pub fn submits(&self) -> Vec<SubmitRecord> {
        self.ismg.received.submits()
    }

    /// Whole messages still in the ring (the last [`MESSAGES_CAP`]), oldest first.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.ismg.received.messages()
    }

    /// The logged-in connections, by id.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.ismg.connections()
    }

    /// Replace the injected faults (running `drop_connections` and arming
    /// `drop_after_submits` at once).
    pub fn set_faults(&self, faults: IsmgFaults) {
        self.ismg.set_faults(faults);
    }

    /// The faults still in force.
    pub fn faults(&self) -> IsmgFaults {
        self.ismg.faults()
    }

    /// Queue a mobile-originated message from `from` (a handset) to `to` (the SP's access
    /// number plus extension) on a logged-in connection of `account`: ASCII or UCS2, split
    /// with a UDH when long. Returns `false` when no connection of the account is logged
    /// in, its queue is full, a number is longer than 21 bytes or the text needs more
    /// than 255 segments.
    pub fn send_mo(&self, account: &str, from: &str, to: &str, text: &str) -> bool {
        self.ismg.send_mo(account, from, to, text)
    }

    /// Sends a status report with `stat` for the accepted SUBMIT recipient `msg_id` now (on
    /// a logged-in connection of its account), besides the one drawn for it. With a long
    /// `report_delay_ms` this lets a test decide which reports arrive and when. Returns
    /// `false` if no SUBMIT in the ring has that Msg_Id or `stat` is longer than 7 bytes.
    pub fn send_report(&self, msg_id: MsgId, stat: &str) -> bool {
        if stat.len() > 7 {
            return false;
        }
        let Some((record, dest)) = self.ismg.received.submits().into_iter().find_map(|s| {
            let i = s.msg_ids().position(|m| m == msg_id)?;
            let dest = s.dest_terminal_ids.get(i)?.clone();
            Some((s, dest))
        }) else {
            return false;
        };
        let report = reports::PendingReport {
            account: record.account.clone(),
            connection: record.connection,
            msg_id,
            dest: dest.as_str().into(),
            src_id: record.src_id.as_str().into(),
            service_id: record.service_id.as_str().into(),
            stat: stat.into(),
            submit_time: clock::Wall::now().yymmddhhmm().into(),
        };
        self.ismg.reports.requeue(vec![report]);
        true
    }

    /// Waits until `pred` holds for the counters, polling every 10 ms. Returns the
    /// counters that satisfied it, or the last ones read once `timeout` has passed.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&IsmgStats) -> bool,
    ) -> Result<IsmgStats, IsmgStats> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if pred(&stats) {
                return Ok(stats);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(stats);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stop the listener, close every connection and join the simulator's thread.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for IsmgHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl fmt::Debug for IsmgHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsmgHandle")
            .field("addr", &self.addr)
            .field("gateway_id", &self.ismg.cfg.gateway_id)
            .finish()
    }
}

/// Start the simulator: validate `cfg`, bind its listener now (so errors surface here) and
/// serve from a dedicated thread.
///
/// # Errors
/// `InvalidInput` for a configuration [`IsmgConfig::validate`] refuses; the bind error.
pub fn start(cfg: IsmgConfig) -> io::Result<IsmgHandle> {
    cfg.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    server::start(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_keys() {
        let cfg: IsmgConfig =
            serde_json::from_str(r#"{"window": 4, "stats": {"UNDELIV": 1}}"#).unwrap();
        assert_eq!(cfg.window, 4);
        assert_eq!(cfg.accounts, [IsmgAccount::default_account()]);
        assert_eq!(cfg.stats.len(), 1);
        assert_eq!(cfg.report_delay_ms, 200);
        assert!(cfg.validate().is_ok());
        assert!(serde_json::from_str::<IsmgConfig>(r#"{"port": 1}"#).is_err());
        let bad = IsmgConfig {
            gateway_id: MAX_GATEWAY_ID + 1,
            ..IsmgConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = IsmgConfig {
            stats: BTreeMap::from([("DELIVERED".to_owned(), 1)]),
            ..IsmgConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn record_msg_ids_cover_recipients() {
        let r = SubmitRecord {
            account: "900001".into(),
            connection: 1,
            sequence_id: 1,
            msg_id: MsgId(10),
            dest_terminal_ids: vec!["a".into(), "b".into(), "c".into()],
            src_id: String::new(),
            service_id: String::new(),
            msg_fmt: MsgFmt::ASCII,
            tp_udhi: 0,
            pk_total: 1,
            pk_number: 1,
            content: Vec::new(),
            text: None,
            registered_delivery: 0,
            at_ms: 0,
        };
        assert_eq!(
            r.msg_ids().collect::<Vec<_>>(),
            [MsgId(10), MsgId(11), MsgId(12)]
        );
    }
}
