//! What `backlog` measured: the per-second samples, RSS at the drain's start, peak and
//! end, the memory rule, and their rendering as the printed summary and the chart's
//! panels.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cpu::CpuReport;
use crate::report::{opt, Line, Panel};
use crate::scenarios::deliver;

/// Bytes in a MiB, for the memory figures as printed and charted.
pub(super) const MIB: f64 = 1024.0 * 1024.0;
/// Allowed growth of RSS during the drain: × 1.25 + 64 MiB.
pub const RSS_FACTOR: f64 = 1.25;
pub const RSS_SLACK_BYTES: u64 = 64 * 1024 * 1024;

/// The highest peak RSS that still counts as flat for a drain that started at `start`.
pub fn rss_limit(start: u64) -> u64 {
    (start as f64 * RSS_FACTOR) as u64 + RSS_SLACK_BYTES
}

/// Memory stayed flat: the peak during the drain is within the limit.
pub fn memory_flat(start: u64, peak: u64) -> bool {
    peak <= rss_limit(start)
}

/// One sample.
#[derive(Debug, Clone, Serialize)]
pub struct BacklogSample {
    pub t_s: f64,
    /// `send` while messages are still being submitted, then `drain`.
    pub phase: &'static str,
    pub messages_accepted: u64,
    pub rss_bytes: u64,
    /// Deliveries in state `queued`.
    pub queued: i64,
    /// Rows in `dispatch_queue` ((channel, message) pairs with work left).
    pub dispatch_rows: i64,
    /// Recipients the simulator accepted since the start.
    pub delivered: u64,
    /// `umsd_channel_queue_depth` (deliveries the sender holds in memory).
    pub held: f64,
    /// `umsd_status_pending`.
    pub status_pending: f64,
    pub umsd_cores: Option<f64>,
    pub postgres_cores: f64,
}

/// Everything `backlog` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BacklogReport {
    pub users: usize,
    pub messages: usize,
    pub expected_deliveries: u64,
    pub pool_size: usize,
    pub channel_backlog: Option<usize>,
    pub send: Option<deliver::SendSummary>,
    /// Every delivery delivered and the queue empty within the deadline.
    pub complete: bool,
    pub rss_idle_bytes: u64,
    pub rss_drain_start_bytes: Option<u64>,
    pub rss_drain_peak_bytes: Option<u64>,
    pub rss_end_bytes: Option<u64>,
    pub rss_limit_bytes: Option<u64>,
    /// Peak during the drain ≤ start × 1.25 + 64 MiB.
    pub pass: Option<bool>,
    pub drain_start_s: Option<f64>,
    pub drain_end_s: Option<f64>,
    /// Deliveries between the drain's start and end, per second.
    pub drain_rate: Option<f64>,
    /// Deliveries / (last delivery − first accept), from the database.
    pub overall_rate: Option<f64>,
    pub delivered_db: i64,
    pub states: std::collections::BTreeMap<String, i64>,
    pub accept_to_submit: Option<deliver::SubmitLatency>,
    pub cpu: Option<CpuReport>,
    pub umsd_us_per_delivery: Option<f64>,
    pub postgres_us_per_delivery: Option<f64>,
    /// Cores the whole machine kept busy over the run, and of those what neither umsd, its
    /// PostgreSQL nor the harness used (other processes).
    pub machine_busy_cores: Option<f64>,
    pub other_cores: Option<f64>,
    pub status_batch_mean: Option<f64>,
    pub samples: Vec<BacklogSample>,
}

pub(super) fn mib(b: Option<u64>) -> String {
    b.map_or_else(
        || "n/a".to_owned(),
        |b| format!("{:.1} MiB", b as f64 / MIB),
    )
}

impl BacklogReport {
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "backlog: {} messages x {} users = {} deliveries on one WeCom channel (pool_size {})",
            self.messages, self.users, self.expected_deliveries, self.pool_size
        );
        if let Some(send) = &self.send {
            let _ = writeln!(
                s,
                "  sends: {} messages in {:.1} s ({:.1}/s, {} retries)",
                send.messages, send.elapsed_s, send.messages_per_second, send.retries
            );
        }
        let _ = writeln!(
            s,
            "  delivered {} of {} ({}); drain {} s .. {} s: {} deliveries/s; overall (first accept -> last delivery) {} deliveries/s",
            self.delivered_db,
            self.expected_deliveries,
            if self.complete { "queue empty" } else { "NOT complete" },
            opt(self.drain_start_s, 1),
            opt(self.drain_end_s, 1),
            opt(self.drain_rate, 0),
            opt(self.overall_rate, 0)
        );
        if let Some(l) = &self.accept_to_submit {
            let _ = writeln!(
                s,
                "  accept->submit p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
                opt(l.p50_ms, 0),
                opt(l.p90_ms, 0),
                opt(l.p99_ms, 0),
                opt(l.max_ms, 0)
            );
        }
        let _ = writeln!(
            s,
            "  CPU per delivery: umsd {} µs, PostgreSQL {} µs (umsd {} cores, PostgreSQL {} cores, other processes {} cores); status-write batch mean {}",
            opt(self.umsd_us_per_delivery, 1),
            opt(self.postgres_us_per_delivery, 1),
            opt(self.cpu.as_ref().and_then(|c| c.umsd_cores), 2),
            opt(self.cpu.as_ref().map(|c| c.postgres_cores), 2),
            opt(self.other_cores, 2),
            opt(self.status_batch_mean, 1)
        );
        let _ = writeln!(
            s,
            "  umsd RSS: idle {}, drain start {}, drain peak {}, end {} (limit {}): {}",
            mib(Some(self.rss_idle_bytes)),
            mib(self.rss_drain_start_bytes),
            mib(self.rss_drain_peak_bytes),
            mib(self.rss_end_bytes),
            mib(self.rss_limit_bytes),
            match self.pass {
                Some(true) => "PASS (memory flat)",
                Some(false) => "FAIL (memory grew)",
                None => "no drain observed",
            }
        );
        s
    }

    pub fn panels(&self) -> Vec<Panel> {
        let pts = |f: &dyn Fn(&BacklogSample) -> f64| -> Vec<(f64, f64)> {
            self.samples.iter().map(|p| (p.t_s, f(p))).collect()
        };
        let mut memory = vec![Line {
            label: "umsd RSS".into(),
            points: pts(&|p| p.rss_bytes as f64 / MIB),
        }];
        if let (Some(start), Some(t0), Some(t1)) = (
            self.rss_limit_bytes,
            self.drain_start_s,
            self.samples.last().map(|p| p.t_s),
        ) {
            memory.push(Line {
                label: "limit (drain start x 1.25 + 64 MiB)".into(),
                points: vec![(t0, start as f64 / MIB), (t1, start as f64 / MIB)],
            });
        }
        vec![
            Panel {
                caption: "umsd resident memory (VmRSS)".into(),
                y_desc: "MiB".into(),
                lines: memory,
            },
            Panel {
                caption: "deliveries".into(),
                y_desc: "deliveries".into(),
                lines: vec![
                    Line {
                        label: "queued (deliveries in state queued)".into(),
                        points: pts(&|p| p.queued as f64),
                    },
                    Line {
                        label: "delivered (simulator)".into(),
                        points: pts(&|p| p.delivered as f64),
                    },
                ],
            },
            Panel {
                caption: "CPU (cores)".into(),
                y_desc: "cores".into(),
                lines: vec![
                    Line {
                        label: "umsd".into(),
                        points: self
                            .samples
                            .iter()
                            .filter_map(|p| p.umsd_cores.map(|c| (p.t_s, c)))
                            .collect(),
                    },
                    Line {
                        label: "PostgreSQL".into(),
                        points: pts(&|p| p.postgres_cores),
                    },
                ],
            },
        ]
    }
}

/// RSS figures of the drain: (start, peak, end) over the samples from `drain_from` on.
pub fn drain_rss(samples: &[BacklogSample], drain_from: usize) -> Option<(u64, u64, u64)> {
    let drain = samples.get(drain_from..)?;
    let start = drain.first()?.rss_bytes;
    let peak = drain.iter().map(|s| s.rss_bytes).max()?;
    let end = drain.last()?.rss_bytes;
    Some((start, peak, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, rss_mib: u64, phase: &'static str) -> BacklogSample {
        BacklogSample {
            t_s: t,
            phase,
            messages_accepted: 0,
            rss_bytes: rss_mib * 1024 * 1024,
            queued: 0,
            dispatch_rows: 0,
            delivered: 0,
            held: 0.0,
            status_pending: 0.0,
            umsd_cores: None,
            postgres_cores: 0.0,
        }
    }

    #[test]
    fn memory_rule() {
        let mib = 1024 * 1024;
        assert_eq!(rss_limit(100 * mib), 125 * mib + 64 * mib);
        assert!(memory_flat(100 * mib, 189 * mib));
        assert!(!memory_flat(100 * mib, 189 * mib + 1));
        assert!(memory_flat(0, 64 * mib));
        // shrinking is flat too
        assert!(memory_flat(300 * mib, 200 * mib));
    }

    #[test]
    fn drain_figures_use_samples_from_the_drain_on() {
        let s = vec![
            sample(1.0, 400, "send"),
            sample(2.0, 100, "drain"),
            sample(3.0, 150, "drain"),
            sample(4.0, 120, "drain"),
        ];
        let mib = 1024 * 1024;
        assert_eq!(drain_rss(&s, 1), Some((100 * mib, 150 * mib, 120 * mib)));
        assert_eq!(drain_rss(&s, 4), None);
        assert_eq!(drain_rss(&[], 0), None);
    }
}
