//! The session's SUBMIT window: filling it from the account's queue while it has room,
//! matching each SUBMIT_RESP to its segment by Sequence_Id, and putting what was in
//! flight back in front of the queue when the link breaks.

use super::*;

impl CmppSession {
    /// Segments in flight go back to the front of the queue, oldest first.
    pub(super) fn requeue_window(&mut self) {
        let window = std::mem::take(&mut self.window);
        let back: Vec<Submission> = window.into_values().map(|f| f.sub).collect();
        self.shared.requeue_front(back);
        self.publish_window();
    }

    /// Takes segments from the account's queue while the window has room.
    pub(super) fn fill(&mut self) {
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

    pub(super) fn submit_answered(&mut self, seq: u32, resp: SubmitResp, ctx: &mut Context<Self>) {
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
}
