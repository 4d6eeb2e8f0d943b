//! One SP connection, from CONNECT to close, served by a single task.
//!
//! The task owns the socket and drives [`CmppCodec`] by hand rather than through
//! `Framed`: a malformed frame must not end the stream, and reading must be pausable
//! (`stop_reading`). Each turn of the loop waits for whichever comes first — a close
//! request, a fault change, a report or MO handed over by the rest of the simulator, a
//! delayed SUBMIT_RESP falling due, the heartbeat timer, or bytes from the client — and
//! answers into one write buffer that is flushed before the next turn. So answers leave
//! in the order they were decided, and a client that stops reading stops the session
//! from reading too (TCP back-pressure) instead of growing a buffer.
//!
//! Everything the session keeps per connection is bounded: SUBMIT_RESPs waiting on
//! `resp_delay_ms` by the window, DELIVERs awaiting DELIVER_RESP and stalled Sequence_Ids
//! by fixed caps (oldest forgotten), the handover queue by its capacity.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::codec::{Decoder, Encoder};
use umsd_cmpp::split::Segment;
use umsd_cmpp::{
    ActiveTestResp, CmppCodec, CommandId, Connect, ConnectResp, Deliver, DeliverContent,
    DeliverResp, Error, Frame, MsgFmt, MsgId, OctetString, Pdu, StatusReport, Submit, SubmitResp,
    Version,
};

use super::clock::Wall;
use super::reports::PendingReport;
use super::state::{ConnShared, Ismg};

/// Time a new connection has to send CONNECT.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Reports and MO messages queued for one connection.
const HANDOVER_QUEUE: usize = 1024;
/// Handed-over items written per turn, so reading is not starved.
const HANDOVER_BATCH: usize = 256;
/// DELIVERs remembered while awaiting their DELIVER_RESP.
const OUTSTANDING_CAP: usize = 8192;
/// Sequence_Ids of stalled SUBMITs remembered for their resend.
const STALLED_CAP: usize = 4096;
/// Unanswered ACTIVE_TESTs after which the connection is closed (the spec's N).
const MAX_PROBES: u32 = 3;
/// Read buffer headroom per read.
const READ_CHUNK: usize = 16 * 1024;

/// What the rest of the simulator hands a logged-in connection to send.
pub(crate) enum Out {
    Report(PendingReport),
    Mo(MoMessage),
}

/// A mobile-originated message, already split into segments.
pub(crate) struct MoMessage {
    pub from: OctetString,
    pub to: OctetString,
    pub segments: Vec<Segment>,
}

/// A DELIVER written and not yet acknowledged.
struct Outstanding {
    msg_id: MsgId,
    /// Queued again if the connection closes before the DELIVER_RESP.
    report: Option<PendingReport>,
}

/// A SUBMIT_RESP waiting on `resp_delay_ms`.
struct Delayed {
    due: Instant,
    sequence_id: u32,
    msg_id: MsgId,
}

/// How a turn of the loop ended.
enum Step {
    Continue,
    /// Flush what is written, then close (TERMINATE, `drop_after_submits`).
    Close,
    /// Close at once, discarding unwritten output (`drop_connections`, peer gone).
    Abort,
}

pub(crate) async fn serve(ismg: Arc<Ismg>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (id, shared) = ismg.open_connection(peer);
    let mut s = Session {
        codec: CmppCodec::new(Version::V30),
        ismg,
        id,
        shared,
        stream,
        rbuf: BytesMut::with_capacity(READ_CHUNK),
        wbuf: BytesMut::new(),
        account: String::new(),
        rx: None,
        next_sequence: 1,
        delayed: VecDeque::new(),
        stalled: BTreeSet::new(),
        outstanding: BTreeMap::new(),
        last_heard: Instant::now(),
        last_probe: Instant::now(),
        probes_unanswered: 0,
    };
    if s.login().await {
        s.serve_logged_in().await;
    }
    s.finish();
}

struct Session {
    ismg: Arc<Ismg>,
    id: u64,
    shared: Arc<ConnShared>,
    stream: TcpStream,
    codec: CmppCodec,
    rbuf: BytesMut,
    wbuf: BytesMut,
    account: String,
    /// Reports and MO handed over; present once logged in.
    rx: Option<mpsc::Receiver<Out>>,
    /// Sequence_Id of the next request the simulator sends (DELIVER, ACTIVE_TEST).
    next_sequence: u32,
    delayed: VecDeque<Delayed>,
    stalled: BTreeSet<u32>,
    outstanding: BTreeMap<u32, Outstanding>,
    last_heard: Instant,
    last_probe: Instant,
    probes_unanswered: u32,
}

impl Session {
    // ---- login -------------------------------------------------------------------------

    /// Reads and answers CONNECT. Returns whether the connection is logged in.
    async fn login(&mut self) -> bool {
        let deadline = Instant::now() + LOGIN_TIMEOUT;
        let mut fault_changes = self.ismg.fault_changes();
        loop {
            // CONNECT has the same layout in both versions, so the initial codec reads it.
            match self.codec.decode(&mut self.rbuf) {
                Ok(Some(Frame {
                    sequence_id,
                    pdu: Pdu::Connect(c),
                })) => return self.answer_connect(sequence_id, &c).await,
                Ok(Some(other)) => {
                    tracing::debug!(command = %other.command_id(), "first frame is not CONNECT");
                    self.ismg.counters.unexpected.inc();
                    return false;
                }
                Ok(None) => {}
                Err(Error::Malformed {
                    command_id: CommandId::CONNECT,
                    sequence_id,
                    ..
                }) => {
                    self.ismg.counters.malformed.inc();
                    self.refuse(sequence_id, Version::V30, ConnectResp::BAD_STRUCTURE);
                    self.flush().await;
                    return false;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "unreadable first frame");
                    self.ismg.counters.malformed.inc();
                    return false;
                }
            }
            let stop_reading = self.ismg.stop_reading();
            self.rbuf.reserve(READ_CHUNK);
            tokio::select! {
                biased;
                _ = self.shared.close.notified() => return false,
                _ = sleep_until(deadline) => return false,
                _ = fault_changes.changed() => {}
                r = self.stream.read_buf(&mut self.rbuf), if !stop_reading => match r {
                    Ok(0) | Err(_) => return false,
                    Ok(_) => {}
                },
            }
        }
    }

    async fn answer_connect(&mut self, sequence_id: u32, c: &Connect) -> bool {
        let version = Version::from_wire(c.version);
        // An unsupported version is answered in the nearer layout we know.
        let reply_version = version.unwrap_or(if c.version >= 0x30 {
            Version::V30
        } else {
            Version::V20
        });
        self.codec.version = reply_version;
        let (tx, rx) = mpsc::channel(HANDOVER_QUEUE);
        match self.ismg.log_in(self.id, c, version, tx) {
            Ok((account, secret)) => {
                let resp = ConnectResp::accept(reply_version, c, &secret);
                self.put(Frame::new(sequence_id, Pdu::ConnectResp(resp)));
                self.ismg.counters.logins_ok.inc();
                tracing::debug!(account, version = %reply_version, "logged in");
                self.account = account;
                self.rx = Some(rx);
                self.flush().await
            }
            Err(status) => {
                self.refuse(sequence_id, reply_version, status);
                self.flush().await;
                false
            }
        }
    }

    fn refuse(&mut self, sequence_id: u32, version: Version, status: u32) {
        self.ismg.counters.logins_refused.inc(status);
        let status = match version {
            Version::V20 => status.min(u32::from(u8::MAX)),
            Version::V30 => status,
        };
        let resp = ConnectResp::reject(version, status);
        self.codec.version = version;
        self.put(Frame::new(sequence_id, Pdu::ConnectResp(resp)));
    }

    // ---- the logged-in loop ------------------------------------------------------------

    async fn serve_logged_in(&mut self) {
        let heartbeat = Duration::from_secs(self.ismg.cfg.heartbeat_seconds);
        let mut fault_changes = self.ismg.fault_changes();
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        self.last_heard = Instant::now();
        self.last_probe = self.last_heard;
        loop {
            let stop_reading = self.ismg.stop_reading();
            // Far enough never to fire; select! evaluates disabled branches too.
            let never = Instant::now() + Duration::from_secs(86_400);
            let probe_at = (!heartbeat.is_zero() && !stop_reading)
                .then(|| self.last_heard.max(self.last_probe) + heartbeat);
            let resp_at = self.delayed.front().map(|d| d.due);
            self.rbuf.reserve(READ_CHUNK);
            // Unbiased: a steady flow of reports must not starve reading, nor the reverse.
            let step = tokio::select! {
                _ = self.shared.close.notified() => {
                    self.ismg.counters.connections_dropped.inc();
                    Step::Abort
                }
                // Frames read just before `stop_reading` was set wait in the buffer.
                _ = fault_changes.changed() => if self.ismg.stop_reading() {
                    Step::Continue
                } else {
                    self.on_readable()
                },
                out = rx.recv() => match out {
                    Some(out) => {
                        self.on_handover(out);
                        for _ in 1..HANDOVER_BATCH {
                            match rx.try_recv() {
                                Ok(out) => self.on_handover(out),
                                Err(_) => break,
                            }
                        }
                        Step::Continue
                    }
                    // Only when the registry dropped the sender: treat as closed.
                    None => Step::Abort,
                },
                _ = sleep_until(resp_at.unwrap_or(never)), if resp_at.is_some() => {
                    self.release_due_resps();
                    Step::Continue
                }
                _ = sleep_until(probe_at.unwrap_or(never)), if probe_at.is_some() => self.probe(),
                r = self.stream.read_buf(&mut self.rbuf), if !stop_reading => match r {
                    Ok(0) | Err(_) => Step::Abort,
                    // Set while this read was under way: the bytes wait for it to clear.
                    Ok(_) if self.ismg.stop_reading() => Step::Continue,
                    Ok(_) => self.on_readable(),
                },
            };
            match step {
                Step::Continue => {
                    if !self.flush().await {
                        break;
                    }
                }
                Step::Close => {
                    self.flush().await;
                    break;
                }
                Step::Abort => break,
            }
        }
        self.rx = Some(rx);
    }

    /// Handles every whole frame buffered.
    fn on_readable(&mut self) -> Step {
        loop {
            match self.codec.decode(&mut self.rbuf) {
                Ok(Some(frame)) => {
                    self.last_heard = Instant::now();
                    match self.on_frame(frame) {
                        Step::Continue => {}
                        other => return other,
                    }
                }
                Ok(None) => return Step::Continue,
                Err(Error::Malformed {
                    command_id,
                    sequence_id,
                    problem,
                }) => {
                    self.last_heard = Instant::now();
                    tracing::debug!(%command_id, sequence_id, %problem, "malformed frame");
                    self.ismg.counters.malformed.inc();
                    if command_id == CommandId::SUBMIT {
                        self.put_submit_resp(sequence_id, MsgId::ZERO, SubmitResp::STRUCTURE_ERROR);
                    }
                }
                Err(e) => {
                    // Total_Length out of range: the stream is out of sync.
                    tracing::debug!(error = %e, "framing error, closing");
                    self.ismg.counters.malformed.inc();
                    return Step::Close;
                }
            }
        }
    }

    fn on_frame(&mut self, frame: Frame) -> Step {
        let ismg = Arc::clone(&self.ismg);
        let c = &ismg.counters;
        let sequence_id = frame.sequence_id;
        match frame.pdu {
            Pdu::Submit(submit) => return self.on_submit(sequence_id, &submit),
            Pdu::DeliverResp(resp) => self.on_deliver_resp(sequence_id, resp),
            Pdu::ActiveTest => {
                c.active_tests_received.inc();
                let resp = ActiveTestResp { reserved: 0 };
                self.put(Frame::new(sequence_id, Pdu::ActiveTestResp(resp)));
            }
            Pdu::ActiveTestResp(_) => {
                c.active_test_resps.inc();
                self.probes_unanswered = 0;
            }
            Pdu::Terminate => {
                c.terminates_received.inc();
                self.put(Frame::new(sequence_id, Pdu::TerminateResp));
                return Step::Close;
            }
            other => {
                tracing::debug!(command = %other.command_id(), "ignoring unexpected frame");
                c.unexpected.inc();
            }
        }
        Step::Continue
    }

    // ---- SUBMIT ------------------------------------------------------------------------

    fn on_submit(&mut self, sequence_id: u32, submit: &Submit) -> Step {
        let ismg = Arc::clone(&self.ismg);
        let c = &ismg.counters;
        c.submits.inc();
        self.shared.submits.fetch_add(1, Ordering::Relaxed);
        let drop_now =
            self.shared
                .drop_after
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                == Ok(1);
        let resend_of_stalled = self.stalled.remove(&sequence_id);
        // DestUsr_tl is one byte, so this fits.
        let recipients = u16::try_from(submit.dest_terminal_ids.len()).unwrap_or(u16::MAX);

        if recipients == 0 {
            self.put_submit_resp(sequence_id, MsgId::ZERO, SubmitResp::STRUCTURE_ERROR);
        } else if !resend_of_stalled && ismg.take_stall() {
            c.stalled.inc();
            if self.stalled.len() >= STALLED_CAP {
                self.stalled.pop_first();
            }
            self.stalled.insert(sequence_id);
        } else if ismg.take_flow_control()
            || self.delayed.len() >= ismg.cfg.window
            || !ismg.take_tokens(&self.account, u32::from(recipients))
        {
            c.flow_controlled.inc();
            self.put_submit_resp(sequence_id, MsgId::ZERO, SubmitResp::FLOW_CONTROL);
        } else {
            self.accept(sequence_id, submit, recipients);
        }

        if drop_now {
            tracing::debug!(id = self.id, "drop_after_submits reached, closing");
            c.connections_dropped.inc();
            return Step::Close;
        }
        Step::Continue
    }

    fn accept(&mut self, sequence_id: u32, submit: &Submit, recipients: u16) {
        let ismg = Arc::clone(&self.ismg);
        let msg_id = ismg.ids.next_block(recipients);
        ismg.received
            .record(&self.account, self.id, sequence_id, submit, msg_id);

        if submit.registered_delivery == 1 {
            let submit_time = OctetString::from(Wall::now().yymmddhhmm());
            let before_resp = ismg.report_before_resp();
            let due = Instant::now() + Duration::from_millis(ismg.cfg.report_delay_ms);
            for (dest, offset) in submit.dest_terminal_ids.iter().zip(0u64..) {
                let report = PendingReport {
                    account: self.account.clone(),
                    connection: self.id,
                    msg_id: MsgId(msg_id.0.wrapping_add(offset)),
                    dest: dest.clone(),
                    src_id: submit.src_id.clone(),
                    service_id: submit.service_id.clone(),
                    stat: ismg.draw_stat(),
                    submit_time: submit_time.clone(),
                };
                if before_resp {
                    self.put_report(report);
                } else if ismg.reports.schedule(due, report) {
                    ismg.counters.reports_dropped.inc();
                }
            }
        }

        if ismg.cfg.resp_delay_ms == 0 {
            self.put_submit_resp(sequence_id, msg_id, SubmitResp::OK);
        } else {
            self.delayed.push_back(Delayed {
                due: Instant::now() + Duration::from_millis(ismg.cfg.resp_delay_ms),
                sequence_id,
                msg_id,
            });
            self.shared
                .in_flight
                .store(self.delayed.len(), Ordering::Relaxed);
        }
    }

    fn release_due_resps(&mut self) {
        let now = Instant::now();
        while let Some(d) = self.delayed.front() {
            if d.due > now {
                break;
            }
            let (sequence_id, msg_id) = (d.sequence_id, d.msg_id);
            self.delayed.pop_front();
            self.put_submit_resp(sequence_id, msg_id, SubmitResp::OK);
        }
        self.shared
            .in_flight
            .store(self.delayed.len(), Ordering::Relaxed);
    }

    fn put_submit_resp(&mut self, sequence_id: u32, msg_id: MsgId, result: u32) {
        self.ismg.counters.submit_resp.inc(result);
        let resp = SubmitResp { msg_id, result };
        self.put(Frame::new(sequence_id, Pdu::SubmitResp(resp)));
    }

    // ---- DELIVER -----------------------------------------------------------------------

    fn on_handover(&mut self, out: Out) {
        match out {
            Out::Report(r) => self.put_report(r),
            Out::Mo(mo) => self.put_mo(mo),
        }
    }

    fn put_report(&mut self, r: PendingReport) {
        let report = StatusReport {
            msg_id: r.msg_id,
            stat: r.stat.clone(),
            submit_time: r.submit_time.clone(),
            done_time: OctetString::from(Wall::now().yymmddhhmm()),
            dest_terminal_id: r.dest.clone(),
            // Truncation intended: an SMSC-side counter only needs to vary.
            smsc_sequence: r.msg_id.0 as u32,
        };
        let deliver = Deliver {
            msg_id: self.ismg.ids.next_block(1),
            dest_id: r.src_id.clone(),
            service_id: r.service_id.clone(),
            msg_fmt: MsgFmt::ASCII,
            src_terminal_id: r.dest.clone(),
            content: DeliverContent::Report(report),
            ..Deliver::default()
        };
        if self.put_deliver(deliver, Some(r)) {
            self.ismg.counters.reports_sent.inc();
        } else {
            self.ismg.counters.reports_dropped.inc();
        }
    }

    fn put_mo(&mut self, mo: MoMessage) {
        for segment in mo.segments {
            let deliver = Deliver {
                msg_id: self.ismg.ids.next_block(1),
                dest_id: mo.to.clone(),
                tp_udhi: segment.tp_udhi,
                msg_fmt: segment.msg_fmt,
                src_terminal_id: mo.from.clone(),
                content: DeliverContent::Message(segment.content),
                ..Deliver::default()
            };
            self.put_deliver(deliver, None);
        }
    }

    /// Writes a DELIVER and remembers it until its DELIVER_RESP. Returns whether it could
    /// be encoded.
    fn put_deliver(&mut self, deliver: Deliver, report: Option<PendingReport>) -> bool {
        let msg_id = deliver.msg_id;
        let sequence_id = self.next_sequence();
        if !self.put(Frame::new(sequence_id, Pdu::Deliver(deliver))) {
            return false;
        }
        if self.outstanding.len() >= OUTSTANDING_CAP {
            self.outstanding.pop_first();
        }
        self.outstanding
            .insert(sequence_id, Outstanding { msg_id, report });
        true
    }

    fn on_deliver_resp(&mut self, sequence_id: u32, resp: DeliverResp) {
        let c = &self.ismg.counters;
        c.deliver_resps.inc();
        match self.outstanding.remove(&sequence_id) {
            Some(o) if o.msg_id == resp.msg_id => {}
            _ => c.deliver_resp_mismatches.inc(),
        }
    }

    // ---- link --------------------------------------------------------------------------

    fn probe(&mut self) -> Step {
        if self.probes_unanswered >= MAX_PROBES {
            tracing::debug!(id = self.id, "heartbeats unanswered, closing");
            self.ismg.counters.connections_dropped.inc();
            return Step::Abort;
        }
        self.probes_unanswered += 1;
        self.last_probe = Instant::now();
        self.ismg.counters.active_tests_sent.inc();
        let sequence_id = self.next_sequence();
        self.put(Frame::new(sequence_id, Pdu::ActiveTest));
        Step::Continue
    }

    fn next_sequence(&mut self) -> u32 {
        let s = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1).max(1);
        s
    }

    /// Encodes a frame into the write buffer. Returns `false` (and logs) if a value does
    /// not fit the connection's version, e.g. a 3.0 number too long for a 2.0 field.
    fn put(&mut self, frame: Frame) -> bool {
        match self.codec.encode(&frame, &mut self.wbuf) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, command = %frame.command_id(), "cannot encode");
                false
            }
        }
    }

    /// Writes the buffer out. Returns `false` if the connection failed or was closed by a
    /// fault meanwhile.
    async fn flush(&mut self) -> bool {
        if self.wbuf.is_empty() {
            return true;
        }
        tokio::select! {
            biased;
            _ = self.shared.close.notified() => {
                self.ismg.counters.connections_dropped.inc();
                false
            }
            r = self.stream.write_all_buf(&mut self.wbuf) => r.is_ok(),
        }
    }

    /// Leaves the registry and gives back every report this connection did not see
    /// acknowledged.
    fn finish(mut self) {
        self.ismg.close_connection(self.id);
        let mut requeue: Vec<PendingReport> = std::mem::take(&mut self.outstanding)
            .into_values()
            .filter_map(|o| o.report)
            .collect();
        if let Some(mut rx) = self.rx.take() {
            // Closing first makes late handovers fail (and wait) instead of vanishing.
            rx.close();
            while let Ok(out) = rx.try_recv() {
                if let Out::Report(r) = out {
                    requeue.push(r);
                }
            }
        }
        let c = &self.ismg.counters;
        c.reports_requeued.add(requeue.len() as u64);
        let dropped = self.ismg.reports.requeue(requeue);
        c.reports_dropped.add(dropped as u64);
    }
}
