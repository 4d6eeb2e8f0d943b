//! What an account's sessions share, all on the sender's arbiter (one thread): the queue
//! of segments waiting for a session, each session's state as shown to operators, the
//! submit times that give the submit → report latency, and MO storage. The account
//! fills the queue; sessions take from it and are kicked when work arrives.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use umsd_cmpp::{MsgId, Submit};

use super::settings::CmppConfig;
use crate::domain::ChannelCode;
use crate::metrics as m;
use crate::receipts::Receipts;
use crate::store::Store;

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

/// New segments are queued: take them if there is room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Kick;

/// Submit times kept for the submit → report latency (the oldest are forgotten first).
const SENT_TIMES: usize = 100_000;

/// One segment waiting for a session, or in a session's window.
pub struct Submission {
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
pub enum SubmitOutcome {
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
pub struct SessionView {
    pub state: State,
    pub window: usize,
    pub logins: u64,
    pub flow_controlled: u64,
    pub last_error: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

/// A mobile-originated message to store.
pub struct Mo {
    pub source: String,
    pub destination: String,
    pub service_id: String,
    pub content: String,
    pub gateway_id: String,
}

/// What an account's sessions share (all on one thread).
pub struct Shared {
    pub cfg: Rc<CmppConfig>,
    pub channel: ChannelCode,
    pub receipts: Addr<Receipts>,
    pub store: Store,
    pub queue: RefCell<VecDeque<Submission>>,
    pub sessions: RefCell<Vec<Recipient<Kick>>>,
    pub views: RefCell<Vec<SessionView>>,
    pub problem: RefCell<Option<String>>,
    pub sent: RefCell<(HashMap<u64, Instant>, VecDeque<u64>)>,
    pub next_kick: std::cell::Cell<usize>,
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

    pub fn any_ready(&self) -> bool {
        self.views.borrow().iter().any(|v| v.state == State::Ready)
    }

    pub fn take(&self) -> Option<Submission> {
        self.queue.borrow_mut().pop_front()
    }

    pub fn push(&self, subs: Vec<Submission>) {
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
