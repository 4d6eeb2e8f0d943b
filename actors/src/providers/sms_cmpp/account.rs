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
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::{join_all, LocalBoxFuture};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use umsd_cmpp::split::{self, SplitOptions};
use umsd_cmpp::{OctetString, Submit, SubmitResp};

use super::session::{Close, CmppSession};
use super::settings::{CmppConfig, SignaturePlace};
use super::shared::{SessionView, Shared, State, Submission, SubmitOutcome};
use crate::providers::context::ProviderContext;
use crate::providers::contract::{Attempt, Batch, Provider, ProviderError};

pub struct CmppAccount {
    shared: Rc<Shared>,
    /// The sessions, to close them.
    sessions: Vec<Addr<CmppSession>>,
    template: Submit,
    next_ref: std::cell::Cell<u8>,
}

impl CmppAccount {
    /// Starts the account's sessions on the current arbiter.
    pub fn new(ctx: &ProviderContext, cfg: CmppConfig) -> Self {
        let cfg = Rc::new(cfg);
        let template = submit_template(
            &cfg.account,
            &cfg.src_id,
            &cfg.service_id,
            cfg.registered_delivery,
        );
        let sessions = cfg.max_connections;
        let shared = Rc::new(Shared {
            cfg,
            channel: ctx.code.clone(),
            receipts: ctx.receipts.clone(),
            store: ctx.store.clone(),
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
        *shared.sessions.borrow_mut() = addrs.iter().map(|a| a.clone().recipient()).collect();
        Self {
            shared,
            sessions: addrs,
            template,
            next_ref: std::cell::Cell::new(0),
        }
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

    fn segments(
        &self,
        content: &Value,
        reference: u8,
    ) -> Result<Vec<split::Segment>, ContentError> {
        let text = content
            .get("text")
            .and_then(Value::as_str)
            .ok_or(ContentError::NoText)?;
        let signature = self.signature(content);
        let options = SplitOptions {
            signature: signature.as_split(),
            non_ascii: self.shared.cfg.non_ascii,
            reference,
        };
        Ok(split::split_message(text, &options)?)
    }
}

/// Why a message's content cannot go out as SMS.
#[derive(Debug, thiserror::Error)]
enum ContentError {
    #[error("the message has no text for this channel")]
    NoText,
    #[error(transparent)]
    Split(#[from] umsd_cmpp::TextError),
}

/// What every SUBMIT of an account carries before its recipient and text: the SP pays (fee
/// user type 2), free of charge (fee type "01", fee code "000000"); the account as
/// Msg_src, its access number as Src_Id.
pub fn submit_template(
    account: &str,
    src_id: &str,
    service_id: &str,
    registered_delivery: bool,
) -> Submit {
    Submit {
        registered_delivery: u8::from(registered_delivery),
        service_id: OctetString::from(service_id),
        fee_user_type: 2,
        fee_type: OctetString::from("01"),
        fee_code: OctetString::from("000000"),
        msg_src: OctetString::from(account),
        src_id: OctetString::from(src_id),
        ..Submit::default()
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
                        Attempt::Failed(ProviderError::permanent("invalid_content", e.to_string())),
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
        let sessions = self.sessions.clone();
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
        for s in &self.sessions {
            let (tx, _) = oneshot::channel();
            s.do_send(Close(tx));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::contract::ErrorClass;
    use umsd_cmpp::MsgId;

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
