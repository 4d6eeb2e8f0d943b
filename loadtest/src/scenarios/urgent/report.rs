//! What `urgent` measured, its rule, and the printed summary.

use std::fmt::Write as _;

use serde::Serialize;

use crate::report::{opt, percentiles};
use crate::scenarios::deliver::SendSummary;
use crate::scenarios::pipeline::Pipeline;

/// Everything `urgent` measured.
#[derive(Debug, Clone, Serialize)]
pub struct UrgentReport {
    pub users: usize,
    pub backlog_messages: usize,
    pub backlog_deliveries: u64,
    pub channel_rate: f64,
    pub pool_size: usize,
    pub backlog_send: Option<SendSummary>,
    /// From the end of the backlog's sends until it was planned and being submitted.
    pub backlog_ready_s: f64,
    /// `false`: `--ready-wait-s` ran out first.
    pub backlog_ready: bool,
    /// Deliveries in state `queued` when the stream began, and when it ended.
    pub queued_at_start: i64,
    pub queued_at_end: i64,
    pub stream_rate: f64,
    pub high_every_ms: u64,
    pub seconds: f64,
    /// Indices into the report's phases.
    pub stream_phase: usize,
    pub high_phase: usize,
    /// 2xx answers of each.
    pub stream_accepted: u64,
    pub high_accepted: u64,
    /// The high messages: accept → submitted is `pipeline.accept_to_delivered`.
    pub high: Pipeline,
    /// From the end of the stream until every high message was submitted (or the wait
    /// ended).
    pub high_wait_s: f64,
    /// The normal stream's messages (those that got through by the end).
    pub normal: Pipeline,
    /// Backlog deliveries whose first outcome fell within the stream, and per second.
    pub backlog_sent_during_stream: i64,
    pub backlog_drain_rate: Option<f64>,
    /// Recipients the simulator accepted per second during the stream (all traffic).
    pub sim_rate_during_stream: Option<f64>,
    pub max_p99_ms: f64,
    pub pass: Option<bool>,
    pub reasons: Vec<String>,
}

/// The rule: every high message accepted was submitted, and their accept → submitted p99
/// is at most `max_p99_ms`. Answers the reasons it failed (empty: PASS).
pub fn verdict(
    accepted: u64,
    submitted: u64,
    stored: u64,
    p99_ms: Option<f64>,
    max_p99_ms: f64,
) -> Vec<String> {
    let mut why = Vec::new();
    let expected = accepted.max(stored);
    if expected == 0 {
        why.push("no high-priority message was accepted".to_owned());
        return why;
    }
    if submitted < expected {
        why.push(format!(
            "{} of {expected} high-priority messages not submitted",
            expected - submitted
        ));
    }
    match p99_ms {
        Some(p) if p > max_p99_ms => why.push(format!(
            "high-priority accept->submitted p99 {p:.0} ms > {max_p99_ms:.0} ms"
        )),
        Some(_) => {}
        None => why.push("no high-priority message submitted".to_owned()),
    }
    why
}

impl UrgentReport {
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "urgent: backlog of {} messages x {} users = {} deliveries on one webhook channel \
             (rate_per_second {}, pool_size {})",
            self.backlog_messages,
            self.users,
            self.backlog_deliveries,
            self.channel_rate,
            self.pool_size
        );
        let _ = writeln!(
            s,
            "  backlog {} {:.1} s after its sends; {} queued when the stream began, {} at its end; \
             backlog drained at {} deliveries/s during the stream (simulator {} recipients/s)",
            if self.backlog_ready {
                "in hand"
            } else {
                "NOT planned in full"
            },
            self.backlog_ready_s,
            self.queued_at_start,
            self.queued_at_end,
            opt(self.backlog_drain_rate, 0),
            opt(self.sim_rate_during_stream, 0)
        );
        let _ = writeln!(
            s,
            "  stream: {:.0}/s normal for {:.0} s ({} accepted), one high every {} ms ({} accepted)",
            self.stream_rate,
            self.seconds,
            self.stream_accepted,
            self.high_every_ms,
            self.high_accepted
        );
        let _ = writeln!(
            s,
            "  high   accept->submitted: {}; {} of {} submitted",
            percentiles(self.high.accept_to_delivered.as_ref()),
            self.high.delivered,
            self.high_accepted.max(self.high.messages)
        );
        let _ = writeln!(
            s,
            "  normal accept->submitted: {}; {} of {} submitted by the end",
            percentiles(self.normal.accept_to_delivered.as_ref()),
            self.normal.delivered,
            self.stream_accepted.max(self.normal.messages)
        );
        let _ = writeln!(
            s,
            "  {}",
            match self.pass {
                Some(true) => format!(
                    "PASS (every high message submitted, p99 <= {:.0} ms)",
                    self.max_p99_ms
                ),
                Some(false) => format!("FAIL ({})", self.reasons.join("; ")),
                None => "no verdict".to_owned(),
            }
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        // (accepted, submitted, stored, p99, failing reasons)
        let table = [
            (120, 120, 120, Some(300.0), 0),
            (120, 120, 120, Some(1000.0), 0),
            (120, 120, 120, Some(1001.0), 1),
            (120, 119, 120, Some(300.0), 1),
            (120, 119, 121, Some(3000.0), 2),
            (120, 120, 121, Some(10.0), 1),
            (120, 0, 120, None, 2),
            (0, 0, 0, None, 1),
        ];
        for (accepted, submitted, stored, p99, n) in table {
            let why = verdict(accepted, submitted, stored, p99, 1000.0);
            assert_eq!(
                why.len(),
                n,
                "{accepted} {submitted} {stored} {p99:?}: {why:?}"
            );
        }
    }
}
