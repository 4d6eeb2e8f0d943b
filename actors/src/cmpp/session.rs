//! `CmppSession`: one persistent TCP session to the gateway.
//!
//! Life: connect → CONNECT → (status 0) ready → … → lost → back off → connect again.
//! While ready it fills its window from the account's queue; every request it sends waits
//! `response_timeout` for its answer, is sent again up to `tries` times, and after that
//! the session is treated as broken and reconnected. A session never drops a segment: what
//! it had in flight when the link broke goes back to the front of the queue, still tied to
//! the delivery waiting for it.
//!
//! It must never hot-loop: a refused login (wrong credentials) backs off for minutes, any
//! other failure backs off exponentially with jitter.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::io::{FramedWrite, WriteHandler};
use actix::prelude::*;
use chrono::Utc;
use futures_util::StreamExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;
use umsd_cmpp::auth::{self, IsmgCheck};
use umsd_cmpp::reassembly::Reassembler;
use umsd_cmpp::{
    ActiveTestResp, CmppCodec, Connect, ConnectResp, Deliver, DeliverContent, DeliverResp, Frame,
    MsgId, Pdu, SubmitResp,
};

use super::account::{Shared, Submission, SubmitOutcome};
use crate::domain::DeliveryState;
use crate::metrics as m;
use crate::receipts::{Incoming, ReceiptEvent, ReceiptKey};

/// Most status reports handed to `Receipts` in one message.
const REPORT_BATCH: usize = 256;
/// How long reports wait to be handed over together.
const REPORT_FLUSH: Duration = Duration::from_millis(2);
/// The longest pause after consecutive Result 8 answers.
const MAX_FLOW_PAUSE: Duration = Duration::from_secs(2);
/// The first pause after a Result 8.
const FIRST_FLOW_PAUSE: Duration = Duration::from_millis(50);
/// The longest wait for TERMINATE_RESP when closing.
const TERMINATE_WAIT: Duration = Duration::from_secs(2);
/// The longest backoff after a refused login.
const MAX_REFUSED_BACKOFF: Duration = Duration::from_secs(900);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Connecting,
    LoggingIn,
    Ready,
    BackingOff,
    Closed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::LoggingIn => "logging_in",
            State::Ready => "ready",
            State::BackingOff => "backing_off",
            State::Closed => "closed",
        }
    }
}

/// How long to wait before the next connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backoff {
    /// A transport failure: exponential from `reconnect_min`.
    Normal,
    /// The gateway refused the account or the credentials: a configuration error.
    Refused,
}

/// A SUBMIT on the wire, waiting for its SUBMIT_RESP.
struct InFlight {
    sub: Submission,
    sent_at: Instant,
    first_sent: Instant,
}

/// A request of the session itself (CONNECT, ACTIVE_TEST, TERMINATE) waiting for its
/// answer.
#[derive(Debug, Clone, Copy)]
struct Pending {
    seq: u32,
    sent_at: Instant,
    tries: u32,
}

/// New segments are queued: take them if there is room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Kick;

/// Stop taking work, say TERMINATE, close. Answered when closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close(pub oneshot::Sender<()>);

/// Frames as read: a malformed frame (its bytes skipped, the stream still in sync) is an
/// item, not the end of the stream — `FramedRead` ends a stream at its first error.
#[derive(Clone, Copy)]
struct Lenient(CmppCodec);

impl tokio_util::codec::Decoder for Lenient {
    type Item = Result<Frame, umsd_cmpp::Error>;
    type Error = umsd_cmpp::Error;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        match self.0.decode(src) {
            Ok(frame) => Ok(frame.map(Ok)),
            Err(e) if e.is_recoverable() => Ok(Some(Err(e))),
            Err(e) => Err(e),
        }
    }
}

type Inbound = (
    u64,
    Result<Result<Frame, umsd_cmpp::Error>, umsd_cmpp::Error>,
);

pub struct CmppSession {
    id: usize,
    shared: Rc<Shared>,
    codec: CmppCodec,
    state: State,
    /// Bumped on every connection attempt; events of an older one are ignored.
    generation: u64,
    writer: Option<FramedWrite<Frame, OwnedWriteHalf, CmppCodec>>,
    reader: Option<SpawnHandle>,
    next_seq: u32,
    window: BTreeMap<u32, InFlight>,
    login: Option<(Pending, [u8; 16])>,
    heartbeat: Option<Pending>,
    terminate: Option<Pending>,
    last_rx: Instant,
    paused_until: Option<Instant>,
    flow_streak: u32,
    failures: u32,
    refusals: u32,
    closing: Vec<oneshot::Sender<()>>,
    reports: Vec<(u32, MsgId, ReceiptEvent)>,
    reports_flush: Option<SpawnHandle>,
    mo_parts: Reassembler<String>,
    warned_auth: bool,
}

impl CmppSession {
    pub fn new(id: usize, shared: Rc<Shared>) -> Self {
        let codec = CmppCodec::new(shared.cfg.version);
        Self {
            id,
            shared,
            codec,
            state: State::Connecting,
            generation: 0,
            writer: None,
            reader: None,
            next_seq: 0,
            window: BTreeMap::new(),
            login: None,
            heartbeat: None,
            terminate: None,
            last_rx: Instant::now(),
            paused_until: None,
            flow_streak: 0,
            failures: 0,
            refusals: 0,
            closing: Vec::new(),
            reports: Vec::new(),
            reports_flush: None,
            mo_parts: Reassembler::new(1024),
            warned_auth: false,
        }
    }

    fn channel(&self) -> String {
        self.shared.channel.to_string()
    }

    fn set_state(&mut self, state: State) {
        self.state = state;
        self.shared.set_view(self.id, |v| {
            v.state = state;
            v.window = 0;
        });
        self.publish_window();
    }

    fn publish_window(&self) {
        let n = self.window.len();
        self.shared.set_view(self.id, |v| v.window = n);
    }

    fn seq(&mut self) -> u32 {
        self.next_seq = self.next_seq.wrapping_add(1);
        if self.next_seq == 0 {
            self.next_seq = 1;
        }
        self.next_seq
    }

    fn write(&mut self, frame: Frame) -> bool {
        match &mut self.writer {
            Some(w) => {
                w.write(frame);
                true
            }
            None => false,
        }
    }

    // ---- connecting and logging in ----

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if !self.closing.is_empty() {
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        self.set_state(State::Connecting);
        let cfg = self.shared.cfg.clone();
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let timeout = cfg.connect_timeout;
        let fut = async move { tokio::time::timeout(timeout, TcpStream::connect(addr)).await };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(fut).map(move |res, act, ctx| {
                if act.generation != generation || act.state != State::Connecting {
                    return;
                }
                match res {
                    Ok(Ok(stream)) => act.connected(stream, ctx),
                    Ok(Err(e)) => act.lost(ctx, format!("cannot connect: {e}"), Backoff::Normal),
                    Err(_) => act.lost(ctx, "connecting timed out".into(), Backoff::Normal),
                }
            }),
        );
    }

    fn connected(&mut self, stream: TcpStream, ctx: &mut Context<Self>) {
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let generation = self.generation;
        let frames = FramedRead::new(read, Lenient(self.codec)).map(move |item| (generation, item));
        self.reader = Some(ctx.add_stream(frames));
        self.writer = Some(FramedWrite::new(write, self.codec, ctx));
        let cfg = self.shared.cfg.clone();
        let timestamp = auth::timestamp(&chrono::Local::now());
        let connect = match Connect::new(
            cfg.account.as_str(),
            cfg.password.as_bytes(),
            cfg.version,
            timestamp,
        ) {
            Ok(c) => c,
            Err(e) => {
                self.lost(ctx, format!("cannot build CONNECT: {e}"), Backoff::Refused);
                return;
            }
        };
        let seq = self.seq();
        let auth_source = connect.authenticator_source;
        self.login = Some((
            Pending {
                seq,
                sent_at: Instant::now(),
                tries: 1,
            },
            auth_source,
        ));
        self.last_rx = Instant::now();
        self.set_state(State::LoggingIn);
        self.write(Frame::new(seq, Pdu::Connect(connect)));
    }

    fn login_answered(&mut self, resp: ConnectResp, ctx: &mut Context<Self>) {
        let Some((_, auth_source)) = self.login.take() else {
            return;
        };
        let cfg = self.shared.cfg.clone();
        if resp.status != 0 {
            let status = resp.status;
            metrics::counter!(m::CMPP_LOGIN_FAILURES_TOTAL,
                "channel" => self.channel(), "status" => status.to_string())
            .increment(1);
            let (why, backoff) = match status {
                2 => ("illegal source address (account)", Backoff::Refused),
                3 => (
                    "authentication error (wrong account or password)",
                    Backoff::Refused,
                ),
                4 => ("protocol version too high", Backoff::Refused),
                1 => ("bad message structure", Backoff::Normal),
                5 => ("too many connections for the account", Backoff::Normal),
                _ => ("refused", Backoff::Normal),
            };
            let reason = format!("the gateway refused the login: status {status}, {why}");
            if backoff == Backoff::Refused {
                self.shared.set_problem(Some(reason.clone()));
            }
            self.lost(ctx, reason, backoff);
            return;
        }
        let check = auth::verify_authenticator_ismg(
            cfg.version,
            &resp,
            &auth_source,
            cfg.password.as_bytes(),
        );
        if !check.is_valid() {
            if cfg.verify_ismg_auth {
                metrics::counter!(m::CMPP_LOGIN_FAILURES_TOTAL,
                    "channel" => self.channel(), "status" => "authenticator")
                .increment(1);
                let reason = format!(
                    "the gateway's AuthenticatorISMG does not prove it knows the password ({})",
                    if check == IsmgCheck::Empty {
                        "empty"
                    } else {
                        "mismatch"
                    }
                );
                self.shared.set_problem(Some(reason.clone()));
                self.lost(ctx, reason, Backoff::Refused);
                return;
            }
            if !self.warned_auth {
                self.warned_auth = true;
                tracing::warn!(channel = %self.shared.channel, session = self.id, ?check,
                    "the gateway's AuthenticatorISMG is not the expected one (verify_ismg_auth is off)");
            }
        }
        self.failures = 0;
        self.refusals = 0;
        self.shared.set_problem(None);
        self.shared.set_view(self.id, |v| {
            v.logins += 1;
            v.last_error = None;
            v.since = Some(Utc::now());
        });
        tracing::info!(channel = %self.shared.channel, session = self.id, "CMPP session logged in");
        self.set_state(State::Ready);
        self.fill();
    }

    /// The session is gone: give back what was in flight, close, back off, try again.
    fn lost(&mut self, ctx: &mut Context<Self>, reason: String, backoff: Backoff) {
        if matches!(self.state, State::BackingOff | State::Closed) {
            return;
        }
        let was_ready = self.state == State::Ready;
        self.drop_link(ctx);
        self.requeue_window();
        self.flush_reports(ctx);
        if !self.closing.is_empty() {
            self.finish_close(ctx);
            return;
        }
        if was_ready {
            metrics::counter!(m::CMPP_RECONNECTS_TOTAL, "channel" => self.channel()).increment(1);
        }
        let cfg = self.shared.cfg.clone();
        let wait = match backoff {
            Backoff::Normal => {
                self.failures = self.failures.saturating_add(1);
                let exp = self.failures.saturating_sub(1).min(16);
                cfg.reconnect_min
                    .saturating_mul(1u32 << exp)
                    .min(cfg.reconnect_max)
            }
            Backoff::Refused => {
                self.refusals = self.refusals.saturating_add(1);
                let exp = self.refusals.saturating_sub(1).min(10);
                cfg.refused_backoff
                    .saturating_mul(1u32 << exp)
                    .min(MAX_REFUSED_BACKOFF)
            }
        };
        let wait = wait.mul_f64(rand::random_range(0.8..1.2));
        tracing::warn!(channel = %self.shared.channel, session = self.id, %reason,
            retry_in_ms = wait.as_millis() as u64, "CMPP session lost");
        self.shared
            .set_view(self.id, |v| v.last_error = Some(reason.clone()));
        self.set_state(State::BackingOff);
        let generation = self.generation;
        ctx.run_later(wait, move |act, ctx| {
            if act.generation == generation && act.state == State::BackingOff {
                act.connect(ctx);
            }
        });
        // Others may have room for what this one gave back.
        self.shared.kick_others(self.id);
    }

    fn drop_link(&mut self, ctx: &mut Context<Self>) {
        if let Some(r) = self.reader.take() {
            ctx.cancel_future(r);
        }
        if let Some(mut w) = self.writer.take() {
            w.close();
            ctx.cancel_future(w.handle());
        }
        self.login = None;
        self.heartbeat = None;
        self.terminate = None;
        self.paused_until = None;
    }

    /// Segments in flight go back to the front of the queue, oldest first.
    fn requeue_window(&mut self) {
        let window = std::mem::take(&mut self.window);
        let back: Vec<Submission> = window.into_values().map(|f| f.sub).collect();
        self.shared.requeue_front(back);
        self.publish_window();
    }

    // ---- sending ----

    /// Takes segments from the account's queue while the window has room.
    fn fill(&mut self) {
        if self.state != State::Ready || !self.closing.is_empty() {
            return;
        }
        let now = Instant::now();
        if let Some(until) = self.paused_until {
            if until > now {
                return;
            }
            self.paused_until = None;
        }
        let mut sent = false;
        while self.window.len() < self.shared.cfg.window {
            let Some(mut sub) = self.shared.take() else {
                break;
            };
            if sub.reply.as_ref().is_none_or(|r| r.is_closed()) {
                // Nobody waits for it any more (the sender gave up on the batch).
                continue;
            }
            let seq = self.seq();
            sub.tries += 1;
            let frame = Frame::new(seq, Pdu::Submit(sub.submit.clone()));
            if !self.write(frame) {
                self.shared.requeue_front(vec![sub]);
                break;
            }
            self.window.insert(
                seq,
                InFlight {
                    sub,
                    sent_at: now,
                    first_sent: now,
                },
            );
            sent = true;
        }
        if sent {
            self.publish_window();
        }
    }

    fn submit_answered(&mut self, seq: u32, resp: SubmitResp, ctx: &mut Context<Self>) {
        let Some(f) = self.window.remove(&seq) else {
            // A late answer to a SUBMIT already given up on, or a duplicate.
            return;
        };
        let now = Instant::now();
        metrics::histogram!(m::CMPP_SUBMIT_RESP_SECONDS, "channel" => self.channel())
            .record(now.duration_since(f.sent_at).as_secs_f64());
        let result = resp.result;
        metrics::counter!(m::CMPP_SUBMITS_TOTAL,
            "channel" => self.channel(), "result" => result_label(result))
        .increment(1);
        if resp.is_flow_control() {
            metrics::counter!(m::CMPP_FLOW_CONTROL_TOTAL, "channel" => self.channel()).increment(1);
            self.flow_streak = self.flow_streak.saturating_add(1);
            let pause = FIRST_FLOW_PAUSE
                .saturating_mul(1u32 << self.flow_streak.saturating_sub(1).min(10))
                .min(MAX_FLOW_PAUSE);
            let mut sub = f.sub;
            // Throttling is not a failed try.
            sub.tries = sub.tries.saturating_sub(1);
            self.shared.requeue_front(vec![sub]);
            self.paused_until = Some(now + pause);
            self.shared.set_view(self.id, |v| v.flow_controlled += 1);
            ctx.run_later(pause, |act, _| act.fill());
            self.publish_window();
            self.shared.kick_others(self.id);
            return;
        }
        self.flow_streak = 0;
        let outcome = if result == SubmitResp::OK {
            self.shared.note_submitted(resp.msg_id, f.first_sent);
            SubmitOutcome::Accepted(resp.msg_id)
        } else {
            SubmitOutcome::Refused(result)
        };
        if let Some(reply) = f.sub.reply {
            let _ = reply.send(outcome);
        }
        self.publish_window();
        self.fill();
    }

    // ---- receiving ----

    fn deliver(&mut self, seq: u32, d: Deliver, ctx: &mut Context<Self>) {
        match &d.content {
            DeliverContent::Report(report) => {
                metrics::counter!(m::CMPP_DELIVERS_TOTAL,
                    "channel" => self.channel(), "kind" => "report")
                .increment(1);
                if !report.is_final() {
                    // ACCEPTD is not an outcome: acknowledge it and wait for the real one.
                    self.write(Frame::new(seq, Pdu::DeliverResp(DeliverResp::ok(&d))));
                    return;
                }
                if let Some(sent) = self.shared.submitted_at(report.msg_id) {
                    metrics::histogram!(m::CMPP_SUBMIT_TO_REPORT_SECONDS, "channel" => self.channel())
                        .record(sent.elapsed().as_secs_f64());
                }
                let stat = report.stat.to_string_lossy().trim().to_owned();
                let delivered = report.is_delivered();
                let event = ReceiptEvent {
                    channel: self.channel(),
                    key: ReceiptKey::Provider(report.msg_id.0.to_string()),
                    state: if delivered {
                        DeliveryState::Delivered
                    } else {
                        DeliveryState::Undelivered
                    },
                    code: Some(stat.clone()),
                    reason: (!delivered).then(|| format!("status report {stat}")),
                    at: Utc::now(),
                };
                self.reports.push((seq, d.msg_id, event));
                if self.reports.len() >= REPORT_BATCH {
                    self.flush_reports(ctx);
                } else if self.reports_flush.is_none() {
                    self.reports_flush = Some(ctx.run_later(REPORT_FLUSH, |act, ctx| {
                        act.reports_flush = None;
                        act.flush_reports(ctx);
                    }));
                }
            }
            DeliverContent::InvalidReport(_) => {
                // Answered so the gateway does not resend it forever; nothing to match.
                tracing::warn!(channel = %self.shared.channel, session = self.id,
                    "a status report with a malformed body was ignored");
                self.write(Frame::new(seq, Pdu::DeliverResp(DeliverResp::ok(&d))));
            }
            DeliverContent::Message(bytes) => {
                metrics::counter!(m::CMPP_DELIVERS_TOTAL,
                    "channel" => self.channel(), "kind" => "mo")
                .increment(1);
                let source = d.src_terminal_id.to_string_lossy().into_owned();
                let text = match self.mo_text(&d, bytes, &source) {
                    Some(t) => t,
                    None => {
                        // A part of a longer message: kept until the rest arrives.
                        self.write(Frame::new(seq, Pdu::DeliverResp(DeliverResp::ok(&d))));
                        return;
                    }
                };
                let mo = super::account::Mo {
                    source,
                    destination: d.dest_id.to_string_lossy().into_owned(),
                    service_id: d.service_id.to_string_lossy().into_owned(),
                    content: text,
                    gateway_id: d.msg_id.0.to_string(),
                };
                let shared = self.shared.clone();
                let fut = async move { shared.store_mo(mo).await };
                let generation = self.generation;
                ctx.spawn(
                    actix::fut::wrap_future::<_, Self>(fut).map(move |stored, act, _| {
                        if act.generation != generation {
                            return;
                        }
                        // Not stored: the gateway is asked to send it again later.
                        let mut resp = DeliverResp::ok(&d);
                        if !stored {
                            resp.result = 9;
                        }
                        act.write(Frame::new(seq, Pdu::DeliverResp(resp)));
                    }),
                );
            }
        }
    }

    /// The text of an MO message, or `None` while parts of it are missing.
    fn mo_text(&mut self, d: &Deliver, bytes: &[u8], source: &str) -> Option<String> {
        match self
            .mo_parts
            .push_text(source.to_owned(), d.tp_udhi, bytes, d.msg_fmt)
        {
            Ok(text) => text,
            Err(_) => Some(lossy(d, bytes)),
        }
    }

    /// Hands the buffered reports to `Receipts`; each DELIVER is answered once they are
    /// taken (Result 8 when too many receipts are held, so the gateway sends it again).
    fn flush_reports(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.reports_flush.take() {
            ctx.cancel_future(h);
        }
        if self.reports.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.reports);
        let (answers, events): (Vec<(u32, MsgId)>, Vec<ReceiptEvent>) =
            batch.into_iter().map(|(s, id, e)| ((s, id), e)).unzip();
        let generation = self.generation;
        let receipts = self.shared.receipts.clone();
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(async move {
                receipts.send(Incoming(events)).await.unwrap_or(false)
            })
            .map(move |taken, act, _| {
                if act.generation != generation {
                    return;
                }
                let result = if taken { 0 } else { SubmitResp::FLOW_CONTROL };
                for (seq, msg_id) in answers {
                    act.write(Frame::new(
                        seq,
                        Pdu::DeliverResp(DeliverResp { msg_id, result }),
                    ));
                }
            }),
        );
    }

    // ---- timers ----

    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.shared.expire_queued();
        let now = Instant::now();
        let cfg = self.shared.cfg.clone();
        let t = cfg.response_timeout;
        if let Some((p, _)) = self.login {
            if now.duration_since(p.sent_at) >= t {
                self.lost(ctx, "no answer to CONNECT".into(), Backoff::Normal);
                return;
            }
        }
        if let Some(p) = self.terminate {
            if now.duration_since(p.sent_at) >= TERMINATE_WAIT.min(t) {
                self.terminate = None;
                self.finish_close(ctx);
                return;
            }
        }
        if self.state != State::Ready {
            return;
        }
        // SUBMITs without an answer: send again, up to `tries`; then the link is broken.
        let mut resend = Vec::new();
        let mut exhausted = false;
        for (seq, f) in self.window.iter_mut() {
            if now.duration_since(f.sent_at) < t {
                continue;
            }
            if f.sub.tries >= cfg.tries {
                exhausted = true;
                continue;
            }
            f.sub.tries += 1;
            f.sent_at = now;
            resend.push(Frame::new(*seq, Pdu::Submit(f.sub.submit.clone())));
        }
        if !resend.is_empty() {
            metrics::counter!(m::CMPP_RESENDS_TOTAL, "channel" => self.channel())
                .increment(resend.len() as u64);
            for frame in resend {
                self.write(frame);
            }
        }
        if exhausted {
            // The ones out of tries fail (the sender retries the delivery later); the rest
            // go back to the queue when the link is dropped.
            let out: Vec<u32> = self
                .window
                .iter()
                .filter(|(_, f)| f.sub.tries >= cfg.tries && now.duration_since(f.sent_at) >= t)
                .map(|(s, _)| *s)
                .collect();
            for seq in out {
                if let Some(f) = self.window.remove(&seq) {
                    metrics::counter!(m::CMPP_SUBMITS_TOTAL,
                        "channel" => self.channel(), "result" => "timeout")
                    .increment(1);
                    if let Some(reply) = f.sub.reply {
                        let _ = reply.send(SubmitOutcome::TimedOut);
                    }
                }
            }
            self.lost(
                ctx,
                format!("no SUBMIT_RESP after {} tries", cfg.tries),
                Backoff::Normal,
            );
            return;
        }
        // Heartbeat: an idle link is tested; an unanswered test is sent again, then the
        // link is given up.
        match self.heartbeat {
            Some(p) if now.duration_since(p.sent_at) >= t => {
                if p.tries >= cfg.tries {
                    self.lost(ctx, "no answer to ACTIVE_TEST".into(), Backoff::Normal);
                    return;
                }
                self.heartbeat = Some(Pending {
                    sent_at: now,
                    tries: p.tries + 1,
                    ..p
                });
                self.write(Frame::new(p.seq, Pdu::ActiveTest));
            }
            Some(_) => {}
            None if now.duration_since(self.last_rx) >= cfg.heartbeat => {
                let seq = self.seq();
                self.heartbeat = Some(Pending {
                    seq,
                    sent_at: now,
                    tries: 1,
                });
                self.write(Frame::new(seq, Pdu::ActiveTest));
            }
            None => {}
        }
    }

    // ---- closing ----

    fn start_close(&mut self, ctx: &mut Context<Self>) {
        if self.state == State::Ready && self.writer.is_some() {
            let seq = self.seq();
            self.terminate = Some(Pending {
                seq,
                sent_at: Instant::now(),
                tries: 1,
            });
            self.flush_reports(ctx);
            self.write(Frame::new(seq, Pdu::Terminate));
            // Fills nothing more; the tick closes if no answer comes.
            self.state = State::Closed;
            self.shared.set_view(self.id, |v| v.state = State::Closed);
        } else {
            self.finish_close(ctx);
        }
    }

    fn finish_close(&mut self, ctx: &mut Context<Self>) {
        self.drop_link(ctx);
        self.requeue_window();
        self.set_state(State::Closed);
        for w in self.closing.drain(..) {
            let _ = w.send(());
        }
        ctx.stop();
    }
}

fn lossy(d: &Deliver, bytes: &[u8]) -> String {
    umsd_cmpp::text::decode(bytes, d.msg_fmt)
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
}

/// A bounded label for a SUBMIT_RESP Result.
fn result_label(result: u32) -> &'static str {
    const LABELS: [&str; 14] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13",
    ];
    LABELS.get(result as usize).copied().unwrap_or("other")
}

impl Actor for CmppSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let t = self.shared.cfg.response_timeout;
        let tick = (t / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        ctx.run_interval(tick, |act, ctx| act.tick(ctx));
        self.connect(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // Whoever still waits learns that this session will not answer.
        for f in std::mem::take(&mut self.window).into_values() {
            if let Some(reply) = f.sub.reply {
                let _ = reply.send(SubmitOutcome::Closed);
            }
        }
        self.shared.set_view(self.id, |v| {
            v.state = State::Closed;
            v.window = 0;
        });
    }
}

impl StreamHandler<Inbound> for CmppSession {
    fn handle(&mut self, (generation, item): Inbound, ctx: &mut Self::Context) {
        if generation != self.generation {
            return;
        }
        let frame = match item.and_then(|f| f) {
            Ok(f) => f,
            Err(e) if e.is_recoverable() => {
                tracing::warn!(channel = %self.shared.channel, session = self.id, error = %e,
                    "malformed CMPP frame skipped");
                return;
            }
            Err(e) => {
                self.lost(ctx, format!("CMPP stream broken: {e}"), Backoff::Normal);
                return;
            }
        };
        self.last_rx = Instant::now();
        let seq = frame.sequence_id;
        match frame.pdu {
            Pdu::ConnectResp(resp) => {
                if self.login.is_some_and(|(p, _)| p.seq == seq) {
                    self.login_answered(resp, ctx);
                }
            }
            Pdu::SubmitResp(resp) => self.submit_answered(seq, resp, ctx),
            Pdu::Deliver(d) => self.deliver(seq, d, ctx),
            Pdu::ActiveTest => {
                self.write(Frame::new(
                    seq,
                    Pdu::ActiveTestResp(ActiveTestResp::default()),
                ));
            }
            Pdu::ActiveTestResp(_) => {
                if self.heartbeat.is_some_and(|p| p.seq == seq) {
                    self.heartbeat = None;
                }
            }
            Pdu::Terminate => {
                self.write(Frame::new(seq, Pdu::TerminateResp));
                self.lost(ctx, "the gateway ended the session".into(), Backoff::Normal);
            }
            Pdu::TerminateResp => {
                if self.terminate.is_some_and(|p| p.seq == seq) {
                    self.terminate = None;
                    self.finish_close(ctx);
                }
            }
            other => {
                tracing::debug!(channel = %self.shared.channel, session = self.id,
                    command = %other.command_id(), "unexpected CMPP command ignored");
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        if self.terminate.is_some() || self.state == State::Closed {
            self.finish_close(ctx);
        } else {
            self.lost(
                ctx,
                "the gateway closed the connection".into(),
                Backoff::Normal,
            );
        }
    }
}

impl WriteHandler<umsd_cmpp::Error> for CmppSession {
    fn error(&mut self, err: umsd_cmpp::Error, ctx: &mut Self::Context) -> Running {
        if err.is_recoverable() {
            // Nothing was written for this frame; its request times out and is retried.
            tracing::warn!(channel = %self.shared.channel, session = self.id, error = %err,
                "a CMPP frame could not be encoded");
            return Running::Continue;
        }
        // Not inline: the writer is being polled.
        let generation = self.generation;
        ctx.run_later(Duration::ZERO, move |act, ctx| {
            if act.generation == generation {
                act.lost(ctx, format!("write failed: {err}"), Backoff::Normal);
            }
        });
        Running::Stop
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Handler<Kick> for CmppSession {
    type Result = ();

    fn handle(&mut self, _: Kick, _: &mut Self::Context) {
        self.fill();
    }
}

impl Handler<Close> for CmppSession {
    type Result = ();

    fn handle(&mut self, msg: Close, ctx: &mut Self::Context) {
        let first = self.closing.is_empty();
        self.closing.push(msg.0);
        if first {
            self.start_close(ctx);
        }
    }
}
