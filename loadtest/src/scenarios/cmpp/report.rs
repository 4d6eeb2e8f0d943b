//! What `cmpp` measured: the simulator alone, each channel through umsd, the rate check,
//! and their rendering as the printed summary and the chart's panels.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::buckets::BucketLatency;
use super::rates::RateCheck;
use crate::cpu::CpuReport;
use crate::openloop::LatencySummary;
use crate::report::{opt, Line, Panel};
use crate::scenarios::deliver;

/// The simulator driven by the harness's own client.
#[derive(Debug, Clone, Serialize)]
pub struct AloneResult {
    pub connections: usize,
    pub window: usize,
    pub elapsed_s: f64,
    /// SUBMIT_RESPs with Result 0.
    pub accepted: u64,
    /// SUBMIT_RESPs with another Result.
    pub refused: u64,
    /// Report DELIVERs answered.
    pub reports: u64,
    /// Accepted SUBMITs per second.
    pub rate: f64,
    /// Exact (HdrHistogram), ms.
    pub latency: LatencySummary,
    /// Interpolated from umsd's histogram buckets, as for umsd.
    pub latency_bucketed: BucketLatency,
    /// The harness process (client and simulator).
    pub harness_cpu_cores: f64,
    pub machine_busy_cores: Option<f64>,
}

/// One second of the umsd part.
#[derive(Debug, Clone, Serialize)]
pub struct CmppSample {
    /// Seconds since the umsd part began.
    pub t_s: f64,
    pub channel: &'static str,
    /// SUBMITs the channel's simulator has accepted so far.
    pub accepted: u64,
    pub umsd_cores: Option<f64>,
    pub postgres_cores: f64,
    pub harness_cores: f64,
}

/// One channel through umsd.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelRun {
    pub code: &'static str,
    pub sessions: usize,
    pub rate_per_second: Option<f64>,
    pub id_prefix: String,
    pub send: Option<deliver::SendSummary>,
    pub expected: u64,
    /// SUBMITs the simulator accepted.
    pub accepted: u64,
    /// Every SUBMIT accepted and every delivery final within the deadline.
    pub complete: bool,
    /// Seconds from the umsd part's start to this channel's first accepted SUBMIT.
    pub first_submit_s: Option<f64>,
    /// From the first to the last accepted SUBMIT.
    pub span_s: Option<f64>,
    /// Accepted SUBMITs per second between the first and the last.
    pub submits_per_second: Option<f64>,
    /// The simulator alone with as many connections (channels without a rate limit).
    pub alone_rate: Option<f64>,
    pub ratio: Option<f64>,
    /// From `umsd_cmpp_submit_resp_seconds{channel}`'s buckets.
    pub submit_resp: BucketLatency,
    /// The simulator alone's, interpolated from the same buckets.
    pub alone_submit_resp: Option<BucketLatency>,
    pub flow_controlled: f64,
    pub resends: f64,
    /// Deliveries by state.
    pub states: BTreeMap<String, i64>,
    /// CPU over the phase (`accepted` there = SUBMITs accepted).
    pub cpu: Option<CpuReport>,
    pub umsd_us_per_submit: Option<f64>,
    pub postgres_us_per_submit: Option<f64>,
    pub machine_busy_cores: Option<f64>,
    /// Accepted SUBMITs per second by the simulator's timestamps, in bins of `bin_ms`
    /// (seconds since the umsd part began).
    pub bin_ms: u64,
    pub series: Vec<(f64, f64)>,
}

/// Everything `cmpp` measured.
#[derive(Debug, Clone, Serialize)]
pub struct CmppReport {
    pub users: usize,
    pub messages: usize,
    pub window: usize,
    pub alone: Vec<AloneResult>,
    pub channels: Vec<ChannelRun>,
    pub rate_check: Option<RateCheck>,
    /// The rate rule (and every SUBMIT of every channel accepted).
    pub pass: Option<bool>,
    pub samples: Vec<CmppSample>,
}

pub(super) fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |e| format!("{:+.2} %", e * 100.0))
}

pub(super) fn latency_text(l: &BucketLatency) -> String {
    format!(
        "p50 {} ms, p90 {} ms, p99 {} ms",
        opt(l.p50_ms, 3),
        opt(l.p90_ms, 3),
        opt(l.p99_ms, 3)
    )
}

impl CmppReport {
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "cmpp: {} messages x {} users = {} SUBMITs per channel, window {}",
            self.messages,
            self.users,
            self.messages * self.users,
            self.window
        );
        for a in &self.alone {
            let _ = writeln!(
                s,
                "  simulator alone, {} connection(s): {:.0} SUBMITs/s ({} in {:.1} s, {} refused); submit->resp p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms (from umsd's buckets: {}); harness {:.2} cores, machine {} cores",
                a.connections,
                a.rate,
                a.accepted,
                a.elapsed_s,
                a.refused,
                a.latency.p50_ms,
                a.latency.p90_ms,
                a.latency.p99_ms,
                latency_text(&a.latency_bucketed),
                a.harness_cpu_cores,
                opt(a.machine_busy_cores, 2)
            );
        }
        for c in &self.channels {
            let _ = writeln!(
                s,
                "  {:<7} ({} session(s){}): {}/{} accepted{}, {} SUBMITs/s over {} s{}; submit->resp {} (bucket interpolation, {} observations); flow control {:.0}, resends {:.0}",
                c.code,
                c.sessions,
                c.rate_per_second
                    .map_or_else(String::new, |r| format!(", rate_per_second {r}")),
                c.accepted,
                c.expected,
                if c.complete { "" } else { " (NOT complete)" },
                opt(c.submits_per_second, 0),
                opt(c.span_s, 1),
                c.ratio
                    .map_or_else(String::new, |r| format!(" = {r:.3} of the simulator alone")),
                latency_text(&c.submit_resp),
                c.submit_resp.count,
                c.flow_controlled,
                c.resends
            );
            let _ = writeln!(
                s,
                "          CPU: umsd {} cores ({} µs/SUBMIT), PostgreSQL {} cores ({} µs/SUBMIT), machine {} cores; deliveries {:?}",
                opt(c.cpu.as_ref().and_then(|x| x.umsd_cores), 2),
                opt(c.umsd_us_per_submit, 1),
                opt(c.cpu.as_ref().map(|x| x.postgres_cores), 2),
                opt(c.postgres_us_per_submit, 1),
                opt(c.machine_busy_cores, 2),
                c.states
            );
        }
        if let Some(r) = &self.rate_check {
            let _ = writeln!(
                s,
                "rate limit: {} SUBMITs/s configured across {} sessions; measured {}/s over {:.0} s from {:.0} s after the first SUBMIT, error {} (rule ±{:.0} %): {}",
                r.configured,
                r.sessions,
                opt(r.measured, 1),
                r.window_s,
                r.skip_s,
                pct(r.error),
                r.tolerance * 100.0,
                if r.pass { "PASS" } else { "FAIL" }
            );
            let _ = writeln!(
                s,
                "  after the first second: {}/s to the last SUBMIT ({}); busiest {:.0} s window {}/s ({}); most in one second {}",
                opt(r.steady_rate, 1),
                pct(r.steady_error),
                r.window_s,
                opt(r.worst_window_rate, 1),
                pct(r.worst_window_error),
                r.peak_1s.map_or_else(|| "n/a".to_owned(), |n| n.to_string())
            );
        }
        s
    }

    /// Accepted SUBMITs per second per channel (unlimited, rated), and CPU, over the umsd
    /// part.
    pub fn panels(&self) -> Vec<Panel> {
        let (mut free, mut rated) = (Vec::new(), Vec::new());
        for c in &self.channels {
            let line = Line {
                label: format!("{} ({} sessions, {} ms bins)", c.code, c.sessions, c.bin_ms),
                points: c.series.clone(),
            };
            match (c.rate_per_second, c.first_submit_s, c.span_s) {
                (Some(r), Some(t0), Some(span)) => {
                    rated.push(line);
                    rated.push(Line {
                        label: format!("{} rate_per_second", c.code),
                        points: vec![(t0, r), (t0 + span, r)],
                    });
                }
                (Some(_), _, _) => rated.push(line),
                (None, _, _) => free.push(line),
            }
        }
        let series = |f: &dyn Fn(&CmppSample) -> Option<f64>| -> Vec<(f64, f64)> {
            self.samples
                .iter()
                .filter_map(|p| f(p).map(|v| (p.t_s, v)))
                .collect()
        };
        vec![
            Panel {
                caption: "SUBMITs accepted per second (simulator's timestamps), no rate limit"
                    .into(),
                y_desc: "SUBMITs/s".into(),
                lines: free,
            },
            Panel {
                caption: "SUBMITs accepted per second (simulator's timestamps), rate-limited"
                    .into(),
                y_desc: "SUBMITs/s".into(),
                lines: rated,
            },
            Panel {
                caption: "CPU (cores)".into(),
                y_desc: "cores".into(),
                lines: vec![
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
                ],
            },
        ]
    }
}
