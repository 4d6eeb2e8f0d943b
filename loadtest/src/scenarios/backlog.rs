//! The `backlog` scenario: umsd's memory while a large backlog drains.
//!
//! U users (default 1000) bound on a WeCom channel whose simulator takes 1000 recipients
//! per call, so the provider is cheap and the drain measures umsd and PostgreSQL; M
//! messages (default 1000), each to all U users → U × M deliveries (default 1 000 000).
//! The messages are sent with bounded concurrency; from the first send on, every second:
//! umsd's RSS (`VmRSS`), the queue depth (`SELECT count(*) FROM deliveries WHERE state =
//! 2`, deliveries still queued, and the `dispatch_queue` rows), the recipients the
//! simulator accepted (delivered), and a few `/metrics` gauges — until nothing is queued
//! and every delivery is delivered, or the deadline.
//!
//! Figures: RSS at the start of the drain (the first sample after the last message was
//! accepted), its peak during the drain and at the end; the drain rate; CPU per delivery.
//! Rule: the peak during the drain stays within start × 1.25 + 64 MiB (memory flat).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;
use umsd_sim::{Kind, SimHandle};

use super::deliver::{self, Api, ChannelDef, Setting};
use super::Ctx;
use crate::cpu::{self, CpuReport};
use crate::metrics;
use crate::report::{Line, Panel};
use crate::sims;
use crate::{db, TargetArgs};

#[derive(Debug, Clone, Args, Serialize)]
pub struct BacklogArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// U: users; every message goes to all of them (at most 1000).
    #[arg(long, default_value_t = 1000, help_heading = "Backlog")]
    pub users: usize,
    /// M: messages, each to all U users.
    #[arg(long, default_value_t = 1000, help_heading = "Backlog")]
    pub messages: usize,
    /// Send requests in flight while submitting the messages.
    #[arg(long, default_value_t = 4, help_heading = "Backlog")]
    pub send_concurrency: usize,
    /// `pool_size` of the WeCom channel (provider calls in flight).
    #[arg(long, default_value_t = 8, help_heading = "Backlog")]
    pub pool_size: usize,
    /// The channel's `backlog` setting (deliveries a sender holds in memory); default:
    /// umsd's (10000).
    #[arg(long, help_heading = "Backlog")]
    pub channel_backlog: Option<usize>,
    /// Worker threads of the simulator.
    #[arg(long, default_value_t = 2, help_heading = "Backlog")]
    pub sim_threads: usize,
    /// Longest wait, from the first send, for the queue to drain.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 900,
        help_heading = "Backlog"
    )]
    pub deadline_s: u64,
    /// Sampling interval.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 1000,
        help_heading = "Backlog"
    )]
    pub sample_ms: u64,
}

const CHANNEL: &str = "wecom";
const MIB: f64 = 1024.0 * 1024.0;
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

/// What is set up before umsd starts.
pub struct Setup {
    sim: SimHandle,
    pub config: String,
}

fn check_args(a: &BacklogArgs) -> Result<()> {
    if !(1..=1000).contains(&a.users) {
        bail!("--users must be 1..=1000 (every message goes to all of them in one send)");
    }
    if a.messages == 0 || a.send_concurrency == 0 || a.pool_size == 0 || a.sample_ms == 0 {
        bail!("--messages, --send-concurrency, --pool-size and --sample-ms must be at least 1");
    }
    Ok(())
}

pub fn prepare(a: &BacklogArgs) -> Result<Setup> {
    check_args(a)?;
    deliver::require_started_daemon(&a.target, "backlog")?;
    let sim = sims::start(Kind::Wecom, a.sim_threads)?;
    let cfg = sim.config();
    let mut settings = vec![
        ("base_url", Setting::Str(sim.url())),
        ("corpid", Setting::Str(cfg.app_key)),
        ("corpsecret", Setting::Str(cfg.app_secret)),
        ("agentid", Setting::Int(1)),
    ];
    if let Some(b) = a.channel_backlog {
        settings.push(("backlog", Setting::Int(i64::try_from(b)?)));
    }
    let channels = [ChannelDef {
        code: CHANNEL.to_owned(),
        channel_type: "wecom",
        pool_size: Some(a.pool_size),
        rate_per_second: None,
        settings,
    }];
    let config = deliver::config_text(&a.target.app_key, &a.target.app_secret, &channels);
    Ok(Setup { sim, config })
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

fn mib(b: Option<u64>) -> String {
    b.map_or_else(
        || "n/a".to_owned(),
        |b| format!("{:.1} MiB", b as f64 / MIB),
    )
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
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

pub async fn run(ctx: &mut Ctx, a: &BacklogArgs, setup: Setup) -> Result<()> {
    let sim = setup.sim;
    let db_target = ctx
        .db
        .clone()
        .ok_or_else(|| anyhow!("backlog needs the daemon's database"))?;
    let pid = ctx
        .probe
        .umsd_pid
        .ok_or_else(|| anyhow!("backlog needs umsd's pid"))?;
    let api = Api::new(&ctx.base_url, &ctx.app_key, &ctx.app_secret)?;
    let expected = (a.users * a.messages) as u64;
    let users: Vec<String> = (0..a.users).map(sims::user_id).collect();
    let rows = users
        .iter()
        .map(|u| json!({"user_id": u, "bindings": [{"type": "wecom", "value": u}]}))
        .collect();
    eprintln!("== backlog: creating {} users ==", users.len());
    api.put_users(rows).await?;
    let db = db::connect(&db_target).await?;
    let app_id = db::app_id(&db, &ctx.app_key).await?;
    let prefix = ctx.prefix("b");
    let content = json!({ CHANNEL: {"text": sims::IM_TEXT} });
    let make: deliver::MakeBody = {
        let (users, prefix) = (users.clone(), prefix.clone());
        Arc::new(move |i| {
            deliver::message_body(&format!("{prefix}{i}"), &users, &[CHANNEL], &content)
        })
    };
    let http = crate::http_builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let rss_idle = cpu::read_rss_bytes(pid)?;
    let sim_base = sim.stats().recipients_accepted;

    eprintln!(
        "== backlog: {} messages x {} users = {} deliveries on {CHANNEL}, sampling every {} ms ==",
        a.messages, a.users, expected, a.sample_ms
    );
    let probe = ctx.probe.clone();
    let before = probe.snapshot();
    let machine0 = cpu::machine_ticks();
    let harness0 = crate::cpu::own_cpu_time();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(a.deadline_s.max(1));
    let interval = Duration::from_millis(a.sample_ms);
    let accepted = Arc::new(AtomicU64::new(0));
    let mut sender = Some(tokio::spawn(deliver::send_messages(
        api.clone(),
        a.messages,
        a.send_concurrency,
        make,
        accepted.clone(),
    )));
    let mut send_summary = None;
    let mut samples: Vec<BacklogSample> = Vec::new();
    let mut drain_from: Option<usize> = None;
    let mut last_snap = before.clone();
    let mut last_t = t0;
    let mut next = t0;
    let mut complete = false;
    let hz = cpu::clock_ticks_per_second() as f64;
    loop {
        next += interval;
        tokio::time::sleep_until(next).await;
        if sender.as_ref().is_some_and(|h| h.is_finished()) {
            if let Some(h) = sender.take() {
                let s = h.await.map_err(|e| anyhow!("send task: {e}"))??;
                eprintln!(
                    "[backlog] {} messages accepted in {:.1} s ({} retries): the drain begins",
                    s.messages, s.elapsed_s, s.retries
                );
                send_summary = Some(s);
            }
        }
        let now = Instant::now();
        let rss = cpu::read_rss_bytes(pid)?;
        let queued = deliver::queued_deliveries(&db).await?;
        let dispatch_rows = deliver::dispatch_rows(&db).await?;
        let delivered = sim.stats().recipients_accepted.saturating_sub(sim_base);
        let scrape = metrics::scrape(&http, &ctx.base_url)
            .await
            .unwrap_or_default();
        let snap = probe.snapshot();
        let dt = now.duration_since(last_t).as_secs_f64().max(1e-3);
        let draining = send_summary.is_some();
        if draining && drain_from.is_none() {
            drain_from = Some(samples.len());
        }
        let sample = BacklogSample {
            t_s: now.duration_since(t0).as_secs_f64(),
            phase: if draining { "drain" } else { "send" },
            messages_accepted: accepted.load(Ordering::Relaxed),
            rss_bytes: rss,
            queued,
            dispatch_rows,
            delivered,
            held: scrape.sum("umsd_channel_queue_depth", &[]),
            status_pending: scrape.sum("umsd_status_pending", &[]),
            umsd_cores: match (last_snap.umsd, snap.umsd) {
                (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / hz / dt),
                _ => None,
            },
            postgres_cores: cpu::postgres_delta(&last_snap, &snap) as f64 / hz / dt,
        };
        if samples.len() % 10 == 0 || draining && queued == 0 {
            eprintln!(
                "[backlog] {:>6.1} s {}: {} messages accepted, {} queued ({} dispatch rows), {} delivered, RSS {:.1} MiB, umsd {} cores, PostgreSQL {:.2} cores",
                sample.t_s,
                sample.phase,
                sample.messages_accepted,
                sample.queued,
                sample.dispatch_rows,
                sample.delivered,
                rss as f64 / MIB,
                opt(sample.umsd_cores, 2),
                sample.postgres_cores
            );
        }
        samples.push(sample);
        last_snap = snap;
        last_t = now;
        if draining && queued == 0 && delivered >= expected {
            complete = true;
            break;
        }
        if now >= deadline {
            if let Some(h) = sender.take() {
                h.abort();
            }
            break;
        }
    }
    let window = t0.elapsed().as_secs_f64();
    let after = probe.snapshot();
    let machine = cpu::machine_busy_cores(
        machine0,
        cpu::machine_ticks(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let harness_cores = crate::cpu::own_cpu_time()
        .saturating_sub(harness0)
        .as_secs_f64()
        / window.max(1e-3);
    if !complete {
        let msg = format!(
            "backlog: the queue did not drain within --deadline-s {} ({} of {} delivered, {} \
             queued at the end)",
            a.deadline_s,
            samples.last().map_or(0, |s| s.delivered),
            expected,
            samples.last().map_or(0, |s| s.queued)
        );
        eprintln!("\n!!! {msg} !!!\n");
        ctx.report.problems.push(msg);
    }
    eprintln!("== backlog: reading the outcome from the database ==");
    let end_scrape = metrics::scrape(&http, &ctx.base_url)
        .await
        .unwrap_or_default();
    let states = deliver::state_counts(&db, app_id, &prefix)
        .await?
        .remove(CHANNEL)
        .unwrap_or_default();
    let accepts = deliver::accepts(&db, app_id, &prefix).await?;
    let events = deliver::channel_events(&db, app_id, &prefix).await?;
    let total = events.iter().find(|e| e.channel.is_none());
    let delivered_db = total.map_or(0, |t| t.delivered);
    let overall_rate = match (accepts.first, total.and_then(|t| t.last_delivered)) {
        (Some(f), Some(l)) => deliver::rate(u64::try_from(delivered_db).unwrap_or(0), f, l),
        _ => None,
    };
    let drain = drain_from.and_then(|i| drain_rss(&samples, i));
    let (drain_start_s, drain_end_s, drain_rate) = match drain_from {
        Some(i) => {
            let first = &samples[i];
            let last = samples.last().unwrap_or(first);
            let dt = last.t_s - first.t_s;
            let rate =
                (dt > 0.0).then(|| last.delivered.saturating_sub(first.delivered) as f64 / dt);
            (Some(first.t_s), Some(last.t_s), rate)
        }
        None => (None, None, None),
    };
    let delivered_n = u64::try_from(delivered_db).unwrap_or(0);
    if delivered_n != expected {
        ctx.report.problems.push(format!(
            "backlog: {delivered_db} of {expected} deliveries delivered (states {states:?})"
        ));
    }
    let cpu_report = cpu::report(&probe, &before, &after, window, delivered_n);
    let per_delivery = |s: f64| (delivered_n > 0).then(|| s * 1e6 / delivered_n as f64);
    let pass = drain.map(|(start, peak, _)| memory_flat(start, peak));
    let report = BacklogReport {
        users: a.users,
        messages: a.messages,
        expected_deliveries: expected,
        pool_size: a.pool_size,
        channel_backlog: a.channel_backlog,
        send: send_summary,
        complete,
        rss_idle_bytes: rss_idle,
        rss_drain_start_bytes: drain.map(|d| d.0),
        rss_drain_peak_bytes: drain.map(|d| d.1),
        rss_end_bytes: drain.map(|d| d.2),
        rss_limit_bytes: drain.map(|d| rss_limit(d.0)),
        pass,
        drain_start_s,
        drain_end_s,
        drain_rate,
        overall_rate,
        delivered_db,
        states,
        accept_to_submit: total.map(|t| t.accept_to_submit.clone()),
        umsd_us_per_delivery: cpu_report.umsd_cpu_s.and_then(per_delivery),
        machine_busy_cores: machine,
        other_cores: machine.map(|m| {
            (m - cpu_report.umsd_cores.unwrap_or(0.0) - cpu_report.postgres_cores - harness_cores)
                .max(0.0)
        }),
        postgres_us_per_delivery: per_delivery(cpu_report.postgres_cpu_s),
        cpu: Some(cpu_report),
        status_batch_mean: end_scrape.mean("umsd_status_batch_size", &[]),
        samples,
    };
    if report.pass == Some(false) {
        ctx.report.problems.push(format!(
            "backlog rule failed: RSS peak {} during the drain above the limit {}",
            mib(report.rss_drain_peak_bytes),
            mib(report.rss_limit_bytes)
        ));
    }
    ctx.report.backlog = Some(report);
    Ok(())
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

    #[test]
    fn defaults_match_the_brief() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: BacklogArgs,
        }
        let t = T::try_parse_from(["t"]).unwrap();
        assert_eq!(t.a.users, 1000);
        assert_eq!(t.a.messages, 1000);
        assert_eq!(t.a.deadline_s, 900);
        assert_eq!(t.a.sample_ms, 1000);
        assert!(check_args(&t.a).is_ok());
    }
}
