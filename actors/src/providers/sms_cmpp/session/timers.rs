//! The session's clock, one tick at a time: response timeouts and resends, heartbeats
//! (ACTIVE_TEST) on an idle link, the end of a flow-control pause, and segments no
//! session could take in time.

use super::*;

impl CmppSession {
    pub(super) fn tick(&mut self, ctx: &mut Context<Self>) {
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
}
