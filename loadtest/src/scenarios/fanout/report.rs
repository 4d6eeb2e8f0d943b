//! What `fanout` measured: per round and channel, the rule on the median round, and their
//! rendering as the printed summary and the chart's panels.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::cpu::CpuReport;
use crate::report::{opt, Line, Panel};
use crate::scenarios::deliver;
use crate::sims::SimAlone;

/// A channel as configured.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelPlan {
    pub code: String,
    pub channel_type: String,
    pub pool_size: Option<usize>,
}

/// One channel's (or the total's) result in one round.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelResult {
    /// `None`: every channel together.
    pub channel: Option<String>,
    pub expected: u64,
    pub delivered: i64,
    /// Deliveries per second from the first accept to this channel's last delivery.
    pub rate: Option<f64>,
    pub last_delivery_after_first_accept_s: Option<f64>,
    /// The simulator alone, where measured.
    pub sim_alone_rate: Option<f64>,
    /// `rate / sim_alone_rate`.
    pub ratio: Option<f64>,
    pub accept_to_submit: deliver::SubmitLatency,
    /// Deliveries by state.
    pub states: BTreeMap<String, i64>,
}

/// One second of a round's delivery phase.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutSample {
    pub t_s: f64,
    pub messages_accepted: u64,
    /// `umsd_delivery_outcomes_total{outcome="delivered"}` per channel, since the round
    /// began.
    pub delivered: BTreeMap<String, f64>,
    /// `umsd_channel_in_flight` per channel.
    pub in_flight: BTreeMap<String, f64>,
    /// `umsd_channel_queue_depth` per channel (held in memory).
    pub held: BTreeMap<String, f64>,
    /// `umsd_status_pending`.
    pub status_pending: f64,
    /// Average cores over the second before.
    pub umsd_cores: Option<f64>,
    pub postgres_cores: f64,
    pub harness_cores: f64,
}

/// One round: the simulators alone, then the messages through umsd.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutRound {
    pub round: usize,
    pub sims_alone: Vec<SimAlone>,
    pub id_prefix: String,
    pub send: Option<deliver::SendSummary>,
    pub accepts: Option<deliver::Accepts>,
    /// Every delivery reached a final state within the deadline.
    pub complete: bool,
    /// From the first send until every delivery was written (or the deadline).
    pub wait_s: f64,
    pub per_channel: Vec<ChannelResult>,
    pub total: Option<ChannelResult>,
    /// The webhook simulator alone.
    pub r_sim: Option<f64>,
    /// The webhook channel through umsd.
    pub r_umsd: Option<f64>,
    pub ratio: Option<f64>,
    /// CPU over the delivery phase; `accepted` there is the number of deliveries.
    pub cpu: Option<CpuReport>,
    pub umsd_us_per_delivery: Option<f64>,
    pub postgres_us_per_delivery: Option<f64>,
    pub harness_cpu_cores: f64,
    /// Cores the whole machine kept busy over the delivery phase.
    pub machine_busy_cores: Option<f64>,
    /// Of those, what neither umsd, its PostgreSQL nor the harness used (other processes).
    pub other_cores: Option<f64>,
    /// Means over the samples in which something was in flight or pending.
    pub mean_in_flight: BTreeMap<String, f64>,
    /// Status changes per status-write transaction in this round.
    pub status_batch_mean: Option<f64>,
    /// One provider call in this round, mean per channel, ms.
    pub provider_call_mean_ms: BTreeMap<String, f64>,
    /// Selected `/metrics` series at the end of the round (cumulative since umsd started).
    pub metrics_end: BTreeMap<String, f64>,
    pub samples: Vec<FanoutSample>,
}

/// Everything `fanout` measured.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    pub mixed: bool,
    pub users: usize,
    pub messages: usize,
    pub connections: usize,
    pub channels: Vec<ChannelPlan>,
    /// Per round.
    pub expected_deliveries: u64,
    pub rounds: Vec<FanoutRound>,
    /// Index into `rounds` of the round with the median ratio: the result.
    pub median_round: usize,
    pub r_sim: Option<f64>,
    pub r_umsd: Option<f64>,
    pub ratio: Option<f64>,
    pub min_ratio: f64,
    /// The rule (single-channel run only): in the median round, ratio ≥ min_ratio and
    /// every delivery delivered.
    pub pass: Option<bool>,
}

/// `R_umsd / R_sim` and whether it meets the rule (with every delivery delivered).
pub fn verdict(
    r_umsd: Option<f64>,
    r_sim: Option<f64>,
    min_ratio: f64,
    complete: bool,
) -> (Option<f64>, bool) {
    let ratio = match (r_umsd, r_sim) {
        (Some(u), Some(s)) if s > 0.0 && u.is_finite() => Some(u / s),
        _ => None,
    };
    (ratio, complete && ratio.is_some_and(|r| r >= min_ratio))
}

impl FanoutReport {
    /// Lines for the printed summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "fanout{}: {} messages x {} users on {} = {} deliveries per round; pool_size {}",
            if self.mixed { " --mixed" } else { "" },
            self.messages,
            self.users,
            self.channels
                .iter()
                .map(|c| c.code.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            self.expected_deliveries,
            self.connections
        );
        for r in &self.rounds {
            let _ = writeln!(
                s,
                "  round {}: R_sim {}/s (machine {} cores busy), R_umsd {}/s (other processes {} cores), ratio {}, total {} deliveries/s{}{}",
                r.round,
                opt(r.r_sim, 0),
                opt(r.sims_alone.first().and_then(|a| a.machine_busy_cores), 2),
                opt(r.r_umsd, 0),
                opt(r.other_cores, 2),
                opt(r.ratio, 3),
                opt(r.total.as_ref().and_then(|t| t.rate), 0),
                if r.complete { "" } else { " (NOT complete)" },
                if self.rounds.get(self.median_round).map(|m| m.round) == Some(r.round)
                    && self.rounds.len() > 1
                {
                    "  <- median"
                } else {
                    ""
                }
            );
        }
        let Some(r) = self.rounds.get(self.median_round) else {
            return s;
        };
        let _ = writeln!(s, "round {} in detail:", r.round);
        for a in &r.sims_alone {
            let _ = writeln!(
                s,
                "  {} simulator alone: {:.0} recipients/s ({} connections, {:.1} s; harness {:.2} cores, whole machine {} cores)",
                a.kind,
                a.rate,
                a.connections,
                a.elapsed_s,
                a.harness_cpu_cores,
                opt(a.machine_busy_cores, 2)
            );
        }
        if let Some(send) = &r.send {
            let _ = writeln!(
                s,
                "  sends: {} messages in {:.2} s ({:.1}/s, {} retries)",
                send.messages, send.elapsed_s, send.messages_per_second, send.retries
            );
        }
        for c in r.per_channel.iter().chain(r.total.iter()) {
            let l = &c.accept_to_submit;
            let _ = writeln!(
                s,
                "  {:<7} {:>7}/{:<7} delivered, {:>6} deliveries/s{}; accept->submit p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
                c.channel.as_deref().unwrap_or("total"),
                c.delivered,
                c.expected,
                opt(c.rate, 0),
                c.ratio
                    .map_or_else(String::new, |x| format!(" ({x:.3} of the simulator alone)")),
                opt(l.p50_ms, 0),
                opt(l.p90_ms, 0),
                opt(l.p99_ms, 0),
                opt(l.max_ms, 0),
            );
        }
        let _ = writeln!(
            s,
            "  CPU per delivery: umsd {} µs, PostgreSQL {} µs (umsd {} cores, PostgreSQL {} cores, harness {:.2} cores, other processes {} cores)",
            opt(r.umsd_us_per_delivery, 1),
            opt(r.postgres_us_per_delivery, 1),
            opt(r.cpu.as_ref().and_then(|c| c.umsd_cores), 2),
            opt(r.cpu.as_ref().map(|c| c.postgres_cores), 2),
            r.harness_cpu_cores,
            opt(r.other_cores, 2)
        );
        let _ = writeln!(
            s,
            "  mean calls in flight: {}; provider call mean {}; status-write batch mean {}",
            r.mean_in_flight
                .iter()
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            r.provider_call_mean_ms
                .iter()
                .map(|(k, v)| format!("{k} {v:.1} ms"))
                .collect::<Vec<_>>()
                .join(", "),
            opt(r.status_batch_mean, 1)
        );
        match self.pass {
            Some(pass) => {
                let _ = writeln!(
                    s,
                    "R_sim = {}/s, R_umsd = {}/s, ratio = {} (rule: ratio >= {} and every delivery delivered{}): {}",
                    opt(self.r_sim, 0),
                    opt(self.r_umsd, 0),
                    opt(self.ratio, 3),
                    self.min_ratio,
                    if r.complete { "" } else { " -- NOT all delivered" },
                    if pass { "PASS" } else { "FAIL" }
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "webhook: R_sim = {}/s, R_umsd = {}/s, ratio = {} (informational: four channels share the cores)",
                    opt(self.r_sim, 0),
                    opt(self.r_umsd, 0),
                    opt(self.ratio, 3)
                );
            }
        }
        s
    }

    /// The chart of the median round: deliveries per second per channel, CPU, calls in
    /// flight.
    pub fn panels(&self) -> Vec<Panel> {
        let Some(r) = self.rounds.get(self.median_round) else {
            return Vec::new();
        };
        let mut rate_lines = Vec::new();
        let mut flight_lines = Vec::new();
        for ch in self.channels.iter().map(|c| c.code.as_str()) {
            let mut pts = Vec::new();
            for w in r.samples.windows(2) {
                let dt = w[1].t_s - w[0].t_s;
                let d = w[1].delivered.get(ch).copied().unwrap_or(0.0)
                    - w[0].delivered.get(ch).copied().unwrap_or(0.0);
                if dt > 0.0 {
                    pts.push((w[1].t_s, d / dt));
                }
            }
            rate_lines.push(Line {
                label: format!("{ch} delivered/s"),
                points: pts,
            });
            flight_lines.push(Line {
                label: format!("{ch} in flight"),
                points: r
                    .samples
                    .iter()
                    .map(|p| (p.t_s, p.in_flight.get(ch).copied().unwrap_or(0.0)))
                    .collect(),
            });
        }
        let series = |f: &dyn Fn(&FanoutSample) -> Option<f64>| -> Vec<(f64, f64)> {
            r.samples
                .iter()
                .filter_map(|p| f(p).map(|v| (p.t_s, v)))
                .collect()
        };
        let cores = vec![
            Line {
                label: "umsd".into(),
                points: series(&|p| p.umsd_cores),
            },
            Line {
                label: "PostgreSQL".into(),
                points: series(&|p| Some(p.postgres_cores)),
            },
            Line {
                label: "harness (simulators, client)".into(),
                points: series(&|p| Some(p.harness_cores)),
            },
        ];
        vec![
            Panel {
                caption: format!(
                    "round {}: deliveries per second (umsd_delivery_outcomes_total, delivered)",
                    r.round
                ),
                y_desc: "deliveries/s".into(),
                lines: rate_lines,
            },
            Panel {
                caption: "CPU (cores)".into(),
                y_desc: "cores".into(),
                lines: cores,
            },
            Panel {
                caption: "provider calls in flight (umsd_channel_in_flight)".into(),
                y_desc: "calls".into(),
                lines: flight_lines,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_rule() {
        assert_eq!(
            verdict(Some(500.0), Some(1000.0), 0.5, true),
            (Some(0.5), true)
        );
        let (r, pass) = verdict(Some(499.0), Some(1000.0), 0.5, true);
        assert!(!pass && (r.unwrap() - 0.499).abs() < 1e-9);
        // a fast but incomplete run does not pass
        assert_eq!(
            verdict(Some(900.0), Some(1000.0), 0.5, false),
            (Some(0.9), false)
        );
        assert_eq!(verdict(None, Some(1000.0), 0.5, true), (None, false));
        assert_eq!(verdict(Some(10.0), Some(0.0), 0.5, true), (None, false));
        // umsd faster than the simulator alone is fine
        assert_eq!(
            verdict(Some(2000.0), Some(1000.0), 0.5, true),
            (Some(2.0), true)
        );
    }
}
