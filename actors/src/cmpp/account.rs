//! `CmppAccount`: the `sms_cmpp` channel's provider. It owns the account's sessions and the
//! queue they share, turns a delivery into SUBMIT segments and their answers into the
//! delivery's outcome.
//!
//! The sender paces deliveries by the channel's rate, counting one permit per segment
//! ([`Provider::cost`]), so the rate holds across all sessions of the account. Sessions take
//! segments from one queue, so a slow, throttled or reconnecting session never holds work
//! that another could send.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures_util::future::{join_all, LocalBoxFuture};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use umsd_cmpp::split::{self, SplitOptions};
use umsd_cmpp::{MsgId, OctetString, Submit, SubmitResp};

use super::session::{Close, CmppSession, Kick, State};
use super::settings::{self, CmppConfig, SignaturePlace};
use crate::channel::sender::SenderConfig;
use crate::channel::{Attempt, Batch, Provider, ProviderError};
use crate::metrics as m;
use crate::providers::ProviderDeps;
use crate::receipts::Receipts;
use crate::store::Store;

/// Submit times kept for the submit → report latency (the oldest are forgotten first).
const SENT_TIMES: usize = 100_000;

/// One segment waiting for a session, or in a session's window.
pub(crate) struct Submission {
    pub submit: Submit,
    /// Who waits for the answer; closed when the sender gave up on the batch.
    pub reply: Option<oneshot::Sender<SubmitOutcome>>,
    /// Sends so far that timed out (flow-control answers do not count).
    pub tries: u32,
    /// When it was (last) put in the queue.
    pub queued_at: Instant,
}

/// What became of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubmitOutcome {
    Accepted(MsgId),
    /// SUBMIT_RESP with this Result (never 8: flow control is handled by the session).
    Refused(u32),
    /// No answer after every try.
    TimedOut,
    /// The session stopped.
    Closed,
    /// No session was logged in to take it within the response timeout.
    NoSession,
}

/// A session as shown in `GET /admin/channels/{code}`.
#[derive(Debug, Clone)]
pub(crate) struct SessionView {
    pub state: State,
    pub window: usize,
    pub logins: u64,
    pub flow_controlled: u64,
    pub last_error: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

/// A mobile-originated message to store.
pub(crate) struct Mo {
    pub source: String,
    pub destination: String,
    pub service_id: String,
    pub content: String,
    pub gateway_id: String,
}

/// What an account's sessions share (all on one thread).
pub(crate) struct Shared {
    pub cfg: Rc<CmppConfig>,
    pub channel: Arc<str>,
    pub receipts: Addr<Receipts>,
    store: Store,
    queue: RefCell<VecDeque<Submission>>,
    sessions: RefCell<Vec<Addr<CmppSession>>>,
    views: RefCell<Vec<SessionView>>,
    problem: RefCell<Option<String>>,
    sent: RefCell<(HashMap<u64, Instant>, VecDeque<u64>)>,
    next_kick: std::cell::Cell<usize>,
}

impl Shared {
    pub fn set_view(&self, id: usize, f: impl FnOnce(&mut SessionView)) {
        if let Some(v) = self.views.borrow_mut().get_mut(id) {
            f(v);
        }
        self.gauges();
    }

    fn gauges(&self) {
        let views = self.views.borrow();
        for state in [
            State::Connecting,
            State::LoggingIn,
            State::Ready,
            State::BackingOff,
        ] {
            let n = views.iter().filter(|v| v.state == state).count();
            metrics::gauge!(m::CMPP_SESSIONS,
                "channel" => self.channel.to_string(), "state" => state.as_str())
            .set(n as f64);
        }
        let window: usize = views.iter().map(|v| v.window).sum();
        metrics::gauge!(m::CMPP_WINDOW_IN_FLIGHT, "channel" => self.channel.to_string())
            .set(window as f64);
    }

    pub fn set_problem(&self, problem: Option<String>) {
        let mut p = self.problem.borrow_mut();
        if *p != problem {
            metrics::gauge!(m::CHANNEL_PROBLEM, "channel" => self.channel.to_string())
                .set(if problem.is_some() { 1.0 } else { 0.0 });
            *p = problem;
        }
    }

    fn any_ready(&self) -> bool {
        self.views.borrow().iter().any(|v| v.state == State::Ready)
    }

    pub fn take(&self) -> Option<Submission> {
        self.queue.borrow_mut().pop_front()
    }

    fn push(&self, subs: Vec<Submission>) {
        let was_empty = {
            let mut q = self.queue.borrow_mut();
            let was_empty = q.is_empty();
            q.extend(subs);
            was_empty
        };
        if was_empty {
            self.kick_others(usize::MAX);
        }
    }

    /// Puts segments back in front, keeping their order.
    pub fn requeue_front(&self, subs: Vec<Submission>) {
        let now = Instant::now();
        let mut q = self.queue.borrow_mut();
        for mut s in subs.into_iter().rev() {
            s.queued_at = now;
            q.push_front(s);
        }
    }

    /// Tells every session but `except` that there may be work, starting with a
    /// different one each time so that light traffic is spread over the sessions too.
    pub fn kick_others(&self, except: usize) {
        if self.queue.borrow().is_empty() {
            return;
        }
        let sessions = self.sessions.borrow();
        let n = sessions.len();
        let first = self.next_kick.get();
        self.next_kick.set(first.wrapping_add(1));
        for k in 0..n {
            let i = (first + k) % n;
            if i != except {
                if let Some(s) = sessions.get(i) {
                    s.do_send(Kick);
                }
            }
        }
    }

    /// Segments that waited longer than the response timeout while no session was logged
    /// in are answered `NoSession` (the sender pauses the channel and tries later).
    pub fn expire_queued(&self) {
        if self.any_ready() {
            return;
        }
        let limit = self.cfg.response_timeout;
        let now = Instant::now();
        let mut q = self.queue.borrow_mut();
        while q
            .front()
            .is_some_and(|s| now.duration_since(s.queued_at) >= limit)
        {
            if let Some(s) = q.pop_front() {
                if let Some(reply) = s.reply {
                    let _ = reply.send(SubmitOutcome::NoSession);
                }
            }
        }
    }

    pub fn note_submitted(&self, id: MsgId, at: Instant) {
        let mut sent = self.sent.borrow_mut();
        let (map, order) = &mut *sent;
        if map.len() >= SENT_TIMES {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        if map.insert(id.0, at).is_none() {
            order.push_back(id.0);
        }
    }

    pub fn submitted_at(&self, id: MsgId) -> Option<Instant> {
        self.sent.borrow_mut().0.remove(&id.0)
    }

    /// Stores an MO message; `false` if it could not be (the gateway will send it again).
    pub async fn store_mo(&self, mo: Mo) -> bool {
        match self
            .store
            .insert_mo(
                &self.channel,
                &mo.source,
                &mo.destination,
                &mo.service_id,
                &mo.content,
                &mo.gateway_id,
            )
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(channel = %self.channel, error = %e, "cannot store an MO message");
                false
            }
        }
    }
}

pub struct CmppAccount {
    shared: Rc<Shared>,
    template: Submit,
    next_ref: std::cell::Cell<u8>,
}

impl CmppAccount {
    /// Starts the account's sessions on the current arbiter.
    pub fn new(config: &SenderConfig, deps: &ProviderDeps) -> Result<Self, String> {
        let cfg = Rc::new(settings::parse(&config.settings)?);
        let template = Submit {
            registered_delivery: u8::from(cfg.registered_delivery),
            service_id: OctetString::from(cfg.service_id.as_str()),
            // The SP pays (fee user type 2), free of charge ("01").
            fee_user_type: 2,
            fee_type: OctetString::from("01"),
            fee_code: OctetString::from("000000"),
            msg_src: OctetString::from(cfg.account.as_str()),
            src_id: OctetString::from(cfg.src_id.as_str()),
            ..Submit::default()
        };
        let sessions = cfg.max_connections;
        let shared = Rc::new(Shared {
            cfg,
            channel: config.code.clone(),
            receipts: deps.receipts.clone(),
            store: deps.store.clone(),
            queue: RefCell::new(VecDeque::new()),
            sessions: RefCell::new(Vec::new()),
            views: RefCell::new(
                (0..sessions)
                    .map(|_| SessionView {
                        state: State::Connecting,
                        window: 0,
                        logins: 0,
                        flow_controlled: 0,
                        last_error: None,
                        since: None,
                    })
                    .collect(),
            ),
            problem: RefCell::new(None),
            sent: RefCell::new((HashMap::new(), VecDeque::new())),
            next_kick: std::cell::Cell::new(0),
        });
        let addrs: Vec<Addr<CmppSession>> = (0..sessions)
            .map(|id| CmppSession::new(id, shared.clone()).start())
            .collect();
        *shared.sessions.borrow_mut() = addrs;
        Ok(Self {
            shared,
            template,
            next_ref: std::cell::Cell::new(0),
        })
    }

    fn signature(&self, content: &Value) -> SignaturePlace {
        match content.get("signature").and_then(Value::as_str) {
            Some(s) => match &self.shared.cfg.signature {
                SignaturePlace::Suffix(_) => SignaturePlace::Suffix(s.to_owned()),
                SignaturePlace::Gateway(_) => SignaturePlace::Gateway(s.to_owned()),
                _ => SignaturePlace::Prefix(s.to_owned()),
            },
            None => self.shared.cfg.signature.clone(),
        }
    }

    fn segments(&self, content: &Value, reference: u8) -> Result<Vec<split::Segment>, String> {
        let text = content
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| "the message has no text for this channel".to_owned())?;
        let signature = self.signature(content);
        let options = SplitOptions {
            signature: signature.as_split(),
            non_ascii: self.shared.cfg.non_ascii,
            reference,
        };
        split::split_message(text, &options).map_err(|e| e.to_string())
    }
}

/// A handset number as the gateway takes it: digits, an optional leading `+`.
fn terminal_id(address: &str, max: usize) -> Option<&str> {
    let digits = address.strip_prefix('+').unwrap_or(address);
    ((1..=max).contains(&address.len())
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit()))
    .then_some(address)
}

fn outcome_to_attempt(outcomes: Vec<SubmitOutcome>) -> Attempt {
    let mut ids = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        match o {
            SubmitOutcome::Accepted(id) => ids.push(id.0.to_string()),
            SubmitOutcome::Refused(result) => {
                let reason = match result {
                    SubmitResp::STRUCTURE_ERROR => "structure error",
                    SubmitResp::COMMAND_ID_ERROR => "command id error",
                    SubmitResp::DUPLICATE_SEQUENCE => "duplicate sequence",
                    SubmitResp::LENGTH_ERROR => "length error",
                    SubmitResp::FEE_CODE_ERROR => "fee code error",
                    SubmitResp::MESSAGE_TOO_LONG => "message too long",
                    SubmitResp::SERVICE_ID_ERROR => "service id error",
                    SubmitResp::NOT_SERVED => "the gateway does not serve this number",
                    SubmitResp::SRC_ID_ERROR => "Src_Id error",
                    SubmitResp::MSG_SRC_ERROR => "Msg_src error",
                    SubmitResp::FEE_TERMINAL_ID_ERROR => "Fee_terminal_Id error",
                    SubmitResp::DEST_TERMINAL_ID_ERROR => "Dest_terminal_Id error",
                    _ => "refused",
                };
                let code = result.to_string();
                let reason = format!("SUBMIT_RESP Result {result}: {reason}");
                // A duplicate sequence is the gateway's view of a resend: try again.
                return Attempt::Failed(if result == SubmitResp::DUPLICATE_SEQUENCE {
                    ProviderError::retryable(code, reason)
                } else {
                    ProviderError::permanent(code, reason)
                });
            }
            SubmitOutcome::TimedOut => {
                return Attempt::Failed(ProviderError::retryable(
                    "timeout",
                    "no SUBMIT_RESP after every try",
                ))
            }
            SubmitOutcome::Closed => {
                return Attempt::Failed(ProviderError::retryable(
                    "closed",
                    "the CMPP session closed",
                ))
            }
            SubmitOutcome::NoSession => {
                return Attempt::Failed(ProviderError::rate_limited(
                    "no_session",
                    "no CMPP session is logged in",
                    Some(Duration::from_secs(5)),
                ))
            }
        }
    }
    Attempt::submitted_in_parts(ids)
}

impl Provider for CmppAccount {
    fn send(&self, batch: Batch) -> LocalBoxFuture<'static, Vec<(i64, Attempt)>> {
        let reference = self.next_ref.get();
        let segments = self.segments(&batch.content, reference);
        let max_terminal = self.shared.cfg.version.terminal_id_len();
        let now = Instant::now();
        let mut waits = Vec::with_capacity(batch.targets.len());
        let mut out = Vec::new();
        for t in &batch.targets {
            let segments = match &segments {
                Ok(s) => s,
                Err(e) => {
                    out.push((
                        t.delivery_id,
                        Attempt::Failed(ProviderError::permanent("invalid_content", e.clone())),
                    ));
                    continue;
                }
            };
            let Some(number) = terminal_id(&t.address, max_terminal) else {
                out.push((
                    t.delivery_id,
                    Attempt::Failed(ProviderError::permanent(
                        "invalid_number",
                        format!("{:?} is not a handset number", t.address),
                    )),
                ));
                continue;
            };
            let mut subs = Vec::with_capacity(segments.len());
            let mut replies = Vec::with_capacity(segments.len());
            let base = Submit {
                dest_terminal_ids: vec![OctetString::from(number)],
                ..self.template.clone()
            };
            for seg in segments {
                let (tx, rx) = oneshot::channel();
                subs.push(Submission {
                    submit: base.with_segment(seg),
                    reply: Some(tx),
                    tries: 0,
                    queued_at: now,
                });
                replies.push(rx);
            }
            if segments.len() > 1 {
                self.next_ref.set(self.next_ref.get().wrapping_add(1));
            }
            self.shared.push(subs);
            waits.push((t.delivery_id, replies));
        }
        Box::pin(async move {
            for (id, replies) in waits {
                let outcomes = join_all(replies)
                    .await
                    .into_iter()
                    .map(|r| r.unwrap_or(SubmitOutcome::Closed))
                    .collect();
                out.push((id, outcome_to_attempt(outcomes)));
            }
            out
        })
    }

    fn cost(&self, content: &Value) -> u32 {
        self.segments(content, 0)
            .map_or(1, |s| u32::try_from(s.len()).unwrap_or(u32::MAX))
    }

    fn live(&self) -> Option<Value> {
        let views = self.shared.views.borrow();
        let sessions: Vec<Value> = views
            .iter()
            .map(|v| {
                json!({
                    "state": v.state.as_str(),
                    "window_in_flight": v.window,
                    "logins": v.logins,
                    "flow_controlled": v.flow_controlled,
                    "since": v.since,
                    "last_error": v.last_error,
                })
            })
            .collect();
        let up = views.iter().filter(|v| v.state == State::Ready).count();
        Some(json!({
            "sessions_up": up,
            "sessions": sessions,
            "queued_segments": self.shared.queue.borrow().len(),
        }))
    }

    fn problem(&self) -> Option<String> {
        self.shared.problem.borrow().clone()
    }

    fn close(&self) -> LocalBoxFuture<'static, ()> {
        let sessions = self.shared.sessions.borrow().clone();
        Box::pin(async move {
            let waits = sessions.into_iter().map(|s| async move {
                let (tx, rx) = oneshot::channel();
                if s.send(Close(tx)).await.is_ok() {
                    let _ = rx.await;
                }
            });
            join_all(waits).await;
        })
    }
}

impl Drop for CmppAccount {
    fn drop(&mut self) {
        // Sessions not closed politely (the sender failed) stop with their account.
        for s in self.shared.sessions.borrow().iter() {
            let (tx, _) = oneshot::channel();
            s.do_send(Close(tx));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ErrorClass;

    #[test]
    fn segments_answers_become_one_outcome() {
        let a = outcome_to_attempt(vec![SubmitOutcome::Accepted(MsgId(7))]);
        assert_eq!(a, Attempt::submitted("7".into()));
        let a = outcome_to_attempt(vec![
            SubmitOutcome::Accepted(MsgId(7)),
            SubmitOutcome::Accepted(MsgId(9)),
        ]);
        match a {
            Attempt::Accepted {
                provider_id,
                segments,
                receipts,
                delivered,
            } => {
                assert_eq!(provider_id.as_deref(), Some("7,9"));
                assert_eq!(segments, ["7", "9"]);
                assert!(receipts && !delivered);
            }
            other => panic!("{other:?}"),
        }
        let class = |o: Vec<SubmitOutcome>| match outcome_to_attempt(o) {
            Attempt::Failed(e) => (e.class, e.code),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            class(vec![
                SubmitOutcome::Accepted(MsgId(1)),
                SubmitOutcome::Refused(13)
            ]),
            (ErrorClass::Permanent, "13".into())
        );
        assert_eq!(
            class(vec![SubmitOutcome::TimedOut]),
            (ErrorClass::Retryable, "timeout".into())
        );
        assert_eq!(
            class(vec![SubmitOutcome::NoSession]),
            (ErrorClass::RateLimited, "no_session".into())
        );
    }

    #[test]
    fn handset_numbers_fit_the_version_s_field() {
        assert_eq!(terminal_id("+8613800138000", 21), Some("+8613800138000"));
        assert_eq!(terminal_id("13800138000", 21), Some("13800138000"));
        assert_eq!(terminal_id("1380013800x", 21), None);
        assert_eq!(terminal_id(&"1".repeat(22), 21), None);
        assert_eq!(
            terminal_id(&"1".repeat(22), 32),
            Some("1".repeat(22).as_str())
        );
        assert_eq!(terminal_id("+", 21), None);
    }
}
