//! What `strategy` measured: the per-second samples, the counts and the per-target
//! lateness from the database, the lateness histogram from `/metrics`, RSS per phase, the
//! wall times; the exact checks, the pass rules, and their rendering as the printed
//! summary and the chart's panels.

use std::fmt::Write as _;

use serde::Serialize;

use crate::report::{opt, Line, Panel};
use crate::scenarios::deliver::SendSummary;

/// Bytes in a MiB.
pub(super) const MIB: f64 = 1024.0 * 1024.0;

/// One sample.
#[derive(Debug, Clone, Serialize)]
pub struct StrategySample {
    /// Seconds since the send was accepted (the harness's clock).
    pub t_s: f64,
    /// `pending` until the first deadline, then `firing`.
    pub phase: &'static str,
    pub rss_bytes: u64,
    /// `umsd_strategy_timers_pending` (umsd counts it every 5 s).
    pub timers_pending: f64,
    /// The message's rows in `strategy_timers`.
    pub timer_rows: i64,
    /// Step 1 is still being planned (the message's `message_queue` row is there).
    pub planning: bool,
    /// Recipients the webhook simulator accepted since the send (step-1 deliveries).
    pub hook_delivered: u64,
    /// `umsd_strategy_fallbacks_total`, `umsd_strategy_settled_total`,
    /// `umsd_strategy_timers_fired_total`.
    pub fallbacks: f64,
    pub settled: f64,
    pub timers_fired: f64,
    pub umsd_cores: Option<f64>,
    pub postgres_cores: f64,
    /// Cores busy with anything but umsd, its PostgreSQL and the harness (the machine is
    /// shared when this is not near 0).
    pub other_cores: Option<f64>,
}

/// The message's deliveries, counted in the database at the end.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Step-1 deliveries (one per target), and the distinct users among them.
    pub targets: i64,
    pub target_users: i64,
    /// Step 1 lost at planning for want of an address.
    pub no_address: i64,
    /// Step 1 with an address (the bound users).
    pub addressed: i64,
    /// Step 1 delivered and not fallen back.
    pub settled: i64,
    /// Step 1 with `fell_back_at` set.
    pub held: i64,
    /// Addressed step-1 deliveries not delivered (`sent_at`) by their deadline.
    pub bound_late: i64,
    /// Step 1 delivered in time but fallen back anyway (the status write came after the
    /// decision), and delivered late but settled (before the decision).
    pub delivered_but_held: i64,
    pub late_but_settled: i64,
    /// Step-2 deliveries, those delivered, those still pending, those not on the inbox.
    pub fired: i64,
    pub fired_delivered: i64,
    pub fired_pending: i64,
    pub fired_elsewhere: i64,
    /// Users with more than one step-2 (step-1) delivery.
    pub duplicates: i64,
    pub step1_duplicates: i64,
    /// The message's rows left in `strategy_timers`.
    pub timers_left: i64,
}

/// One exact check: `left` must equal `right`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub left: i64,
    pub right: i64,
    pub ok: bool,
}

impl Check {
    pub fn new(what: &str, left: i64, right: i64) -> Self {
        Check {
            what: what.to_owned(),
            left,
            right,
            ok: left == right,
        }
    }
}

/// Per-target lateness: each step-2 delivery's `created_at` minus its target's deadline
/// (step 1's `created_at` + within), from the database.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Lateness {
    pub count: i64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Negative: a step went out before its deadline.
    pub min_ms: Option<f64>,
}

/// umsd's own strategy figures at the end, from `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MetricFigures {
    pub timers_fired: f64,
    pub fallbacks: f64,
    pub settled: f64,
    /// `umsd_strategy_timer_lateness_seconds` (one observation per deadline row decided).
    pub lateness_count: f64,
    pub lateness_sum_s: f64,
    pub lateness_mean_ms: Option<f64>,
}

/// Wall times in seconds from the accept (`messages.created_at`), from the database.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WallTimes {
    /// The last step-1 delivery planned.
    pub step1_planned_s: Option<f64>,
    /// The last step-1 delivery delivered (the simulator's answer).
    pub step1_delivered_s: Option<f64>,
    /// The first and the last target's deadline.
    pub first_deadline_s: Option<f64>,
    pub last_deadline_s: Option<f64>,
    /// The first and the last step-2 delivery planned, and the last delivered.
    pub step2_first_s: Option<f64>,
    pub step2_planned_s: Option<f64>,
    pub step2_delivered_s: Option<f64>,
    /// When the harness saw no deadline row left, and everything final (its clock).
    pub timers_empty_s: Option<f64>,
    pub done_s: Option<f64>,
}

/// RSS over one phase, and the mean cores other processes kept busy meanwhile.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseRss {
    pub max_bytes: Option<u64>,
    pub end_bytes: Option<u64>,
    pub other_cores: Option<f64>,
}

/// Everything `strategy` measured.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyReport {
    pub users: usize,
    pub bound_users: usize,
    pub unbound_users: usize,
    pub delivered_share: f64,
    pub within_s: u32,
    pub channel_rate: f64,
    pub pool_size: usize,
    pub users_created_s: f64,
    pub send: Option<SendSummary>,
    /// Step 1 planned for every target within `--plan-wait-s`.
    pub planned: bool,
    /// No deadline left and every step-2 delivery final within `--fire-wait-s`.
    pub complete: bool,
    pub counts: Counts,
    pub checks: Vec<Check>,
    pub lateness: Lateness,
    pub metrics: MetricFigures,
    pub times: WallTimes,
    pub rss_idle_bytes: u64,
    pub rss_max_bytes: Option<u64>,
    pub pending: PhaseRss,
    pub firing: PhaseRss,
    /// Highest `umsd_strategy_timers_pending` and deadline rows seen.
    pub max_timers_pending: f64,
    pub max_timer_rows: i64,
    pub max_rss_mb: f64,
    pub max_p99_ms: f64,
    pub pass: Option<bool>,
    pub reasons: Vec<String>,
    pub samples: Vec<StrategySample>,
}

/// The rules: every exact check holds, the run completed, the RSS peak is at most
/// `max_rss_mb` and the lateness p99 at most `max_p99_ms`. Answers the reasons it failed
/// (empty: PASS).
pub fn verdict(
    checks: &[Check],
    complete: bool,
    rss_max: Option<u64>,
    max_rss_mb: f64,
    p99_ms: Option<f64>,
    max_p99_ms: f64,
) -> Vec<String> {
    let mut why: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {} != {}", c.what, c.left, c.right))
        .collect();
    if !complete {
        why.push("the deadlines and step 2 did not finish within the waits".to_owned());
    }
    match rss_max {
        Some(b) if b as f64 / MIB > max_rss_mb => why.push(format!(
            "RSS peak {:.1} MiB > {max_rss_mb:.0} MiB",
            b as f64 / MIB
        )),
        Some(_) => {}
        None => why.push("no RSS sample".to_owned()),
    }
    match p99_ms {
        Some(p) if p > max_p99_ms => {
            why.push(format!("lateness p99 {p:.0} ms > {max_p99_ms:.0} ms"))
        }
        Some(_) => {}
        None => why.push("no step-2 delivery to measure lateness on".to_owned()),
    }
    why
}

/// (max, last) RSS of the samples of one phase.
pub fn phase_rss(samples: &[StrategySample], phase: &str) -> PhaseRss {
    let of = || samples.iter().filter(|s| s.phase == phase);
    let other: Vec<f64> = of().filter_map(|s| s.other_cores).collect();
    PhaseRss {
        max_bytes: of().map(|s| s.rss_bytes).max(),
        end_bytes: of().next_back().map(|s| s.rss_bytes),
        other_cores: (!other.is_empty()).then(|| other.iter().sum::<f64>() / other.len() as f64),
    }
}

pub(super) fn mib(b: Option<u64>) -> String {
    b.map_or_else(
        || "n/a".to_owned(),
        |b| format!("{:.1} MiB", b as f64 / MIB),
    )
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} s"))
}

impl StrategyReport {
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let c = &self.counts;
        let _ = writeln!(
            s,
            "strategy: one broadcast to {} users, step 1 webhook `hook` (rate_per_second {}, \
             pool_size {}), step 2 inbox when not delivered within {} s; {} bound ({:.0} %), \
             {} without a binding; users created in {:.1} s",
            self.users,
            self.channel_rate,
            self.pool_size,
            self.within_s,
            self.bound_users,
            self.delivered_share * 100.0,
            self.unbound_users,
            self.users_created_s
        );
        let t = &self.times;
        let _ = writeln!(
            s,
            "  from the accept: step 1 planned {}, delivered {}; deadlines {} .. {}; step 2 \
             planned {} .. {}, delivered {}{}",
            secs(t.step1_planned_s),
            secs(t.step1_delivered_s),
            secs(t.first_deadline_s),
            secs(t.last_deadline_s),
            secs(t.step2_first_s),
            secs(t.step2_planned_s),
            secs(t.step2_delivered_s),
            if self.complete {
                ""
            } else if self.planned {
                " (NOT complete)"
            } else {
                " (step 1 NOT planned in full)"
            }
        );
        let _ = writeln!(
            s,
            "  targets {}: settled {}, held {} (no address {}, bound late {}), fired {} \
             ({} delivered, {} pending), duplicates {}; deadline rows max {} (gauge max {:.0}), \
             {} left",
            c.targets,
            c.settled,
            c.held,
            c.no_address,
            c.bound_late,
            c.fired,
            c.fired_delivered,
            c.fired_pending,
            c.duplicates,
            self.max_timer_rows,
            self.max_timers_pending,
            c.timers_left
        );
        for ch in &self.checks {
            let _ = writeln!(
                s,
                "  check {}: {} = {}: {}",
                ch.what,
                ch.left,
                ch.right,
                if ch.ok { "OK" } else { "MISMATCH" }
            );
        }
        let l = &self.lateness;
        let m = &self.metrics;
        let _ = writeln!(
            s,
            "  lateness per target: p50 {} ms, p99 {} ms, max {} ms, min {} ms ({}); \
             histogram per deadline row: {:.0} observations, sum {:.3} s, mean {} ms",
            opt(l.p50_ms, 1),
            opt(l.p99_ms, 1),
            opt(l.max_ms, 1),
            opt(l.min_ms, 1),
            l.count,
            m.lateness_count,
            m.lateness_sum_s,
            opt(m.lateness_mean_ms, 1)
        );
        let _ = writeln!(
            s,
            "  metrics: {:.0} deadline rows fired, {:.0} fallbacks, {:.0} settled",
            m.timers_fired, m.fallbacks, m.settled
        );
        let _ = writeln!(
            s,
            "  umsd RSS: idle {}, peak {}; pending: max {}, end {}; firing: max {}, end {} \
             (other processes busy {} cores pending, {} firing)",
            mib(Some(self.rss_idle_bytes)),
            mib(self.rss_max_bytes),
            mib(self.pending.max_bytes),
            mib(self.pending.end_bytes),
            mib(self.firing.max_bytes),
            mib(self.firing.end_bytes),
            opt(self.pending.other_cores, 2),
            opt(self.firing.other_cores, 2)
        );
        let _ = writeln!(
            s,
            "  {}",
            match self.pass {
                Some(true) => format!(
                    "PASS (exact counts, RSS peak <= {:.0} MiB, lateness p99 <= {:.0} ms)",
                    self.max_rss_mb, self.max_p99_ms
                ),
                Some(false) => format!("FAIL ({})", self.reasons.join("; ")),
                None => "no verdict".to_owned(),
            }
        );
        s
    }

    pub fn panels(&self) -> Vec<Panel> {
        let pts = |f: &dyn Fn(&StrategySample) -> f64| -> Vec<(f64, f64)> {
            self.samples.iter().map(|p| (p.t_s, f(p))).collect()
        };
        vec![
            Panel {
                caption: "umsd resident memory (VmRSS)".into(),
                y_desc: "MiB".into(),
                lines: vec![Line {
                    label: "umsd RSS".into(),
                    points: pts(&|p| p.rss_bytes as f64 / MIB),
                }],
            },
            Panel {
                caption: "deadlines".into(),
                y_desc: "rows".into(),
                lines: vec![
                    Line {
                        label: "strategy_timers rows of the message".into(),
                        points: pts(&|p| p.timer_rows as f64),
                    },
                    Line {
                        label: "umsd_strategy_timers_pending".into(),
                        points: pts(&|p| p.timers_pending),
                    },
                ],
            },
            Panel {
                caption: "targets".into(),
                y_desc: "targets".into(),
                lines: vec![
                    Line {
                        label: "step 1 delivered (simulator)".into(),
                        points: pts(&|p| p.hook_delivered as f64),
                    },
                    Line {
                        label: "fallbacks (step 2 planned)".into(),
                        points: pts(&|p| p.fallbacks),
                    },
                    Line {
                        label: "settled".into(),
                        points: pts(&|p| p.settled),
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
                    Line {
                        label: "other processes".into(),
                        points: self
                            .samples
                            .iter()
                            .filter_map(|p| p.other_cores.map(|c| (p.t_s, c)))
                            .collect(),
                    },
                ],
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, rss_mib: u64, phase: &'static str) -> StrategySample {
        StrategySample {
            t_s: t,
            phase,
            rss_bytes: rss_mib * 1024 * 1024,
            timers_pending: 0.0,
            timer_rows: 0,
            planning: false,
            hook_delivered: 0,
            fallbacks: 0.0,
            settled: 0.0,
            timers_fired: 0.0,
            umsd_cores: None,
            postgres_cores: 0.0,
            other_cores: None,
        }
    }

    #[test]
    fn the_rules() {
        let ok = [Check::new("fired = held", 8, 8)];
        let bad = [Check::new("fired = held", 8, 7), Check::new("dups", 0, 0)];
        let mib = 1024 * 1024;
        // (checks, complete, rss MiB, p99, failing reasons)
        type Row<'a> = (&'a [Check], bool, Option<u64>, Option<f64>, usize);
        let table: [Row; 7] = [
            (&ok, true, Some(200), Some(50.0), 0),
            (&ok, true, Some(300), Some(100.0), 0),
            (&ok, true, Some(301), Some(50.0), 1),
            (&ok, true, Some(200), Some(100.5), 1),
            (&bad, true, Some(200), Some(50.0), 1),
            (&bad, false, None, None, 4),
            (&ok, false, Some(200), Some(50.0), 1),
        ];
        for (checks, complete, rss, p99, n) in table {
            let why = verdict(checks, complete, rss.map(|r| r * mib), 300.0, p99, 100.0);
            assert_eq!(why.len(), n, "{rss:?} {p99:?}: {why:?}");
        }
    }

    #[test]
    fn rss_per_phase() {
        let s = vec![
            sample(1.0, 100, "pending"),
            sample(2.0, 180, "pending"),
            sample(3.0, 150, "pending"),
            sample(4.0, 220, "firing"),
            sample(5.0, 160, "firing"),
        ];
        let mib = 1024 * 1024;
        let p = phase_rss(&s, "pending");
        assert_eq!(
            (p.max_bytes, p.end_bytes),
            (Some(180 * mib), Some(150 * mib))
        );
        let f = phase_rss(&s, "firing");
        assert_eq!(
            (f.max_bytes, f.end_bytes),
            (Some(220 * mib), Some(160 * mib))
        );
        assert!(phase_rss(&s, "other").max_bytes.is_none());
    }
}
