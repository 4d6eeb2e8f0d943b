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

mod inbound;
mod timers;
mod window;

use super::shared::{Kick, Mo, Shared, State, Submission, SubmitOutcome};
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

    // ---- sending ----

    // ---- receiving ----

    // ---- timers ----

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
