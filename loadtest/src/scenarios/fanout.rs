//! The `fanout` scenario: one message → U users on one HTTP channel, compared in the same
//! run with the provider simulator alone.
//!
//! 1. **Simulator alone** (before umsd starts): `C` keep-alive connections in a closed
//!    loop post requests shaped like umsd's webhook calls (signed Standard Webhooks
//!    events of the same size) to the in-process webhook simulator for `--sim-seconds`.
//!    `R_sim` = recipients it accepted per second.
//! 2. **Through umsd**: a fresh umsd whose app is granted one webhook channel (`pool_size`
//!    = C, no rate limit) pointing at the same simulator; U users bound to
//!    `{sim}/hooks/{user}`; M messages, each to all U users, sent as fast as the API takes
//!    them; then a bounded wait until every delivery is delivered and written.
//!    `R_umsd` = deliveries / (last delivery − first accept), both from the database.
//! 3. `ratio = R_umsd / R_sim`; the rule is `ratio ≥ --min-ratio` (0.5: umsd is not the
//!    bottleneck by more than 2×) with every delivery delivered.
//!
//! A shared machine's speed drifts, so the pair is measured `--rounds` times back to back
//! (default 3; later rounds measure the simulator alone while umsd idles, and send new
//! messages to the same users) and the round with the median ratio is the result.
//!
//! Also measured: accept → submit latency per delivery (its `submitted` event minus its
//! message's `created_at`), CPU of umsd and of PostgreSQL per delivery, and a per-second
//! series from `/metrics` (deliveries, calls in flight, status writes pending, CPU).
//!
//! `--mixed`: four channels at once — webhook, WeCom and Feishu (each on its own
//! simulator) and the inbox — every user bound on each and every message sent on all
//! four; deliveries per second per channel and in total, and the webhook and Feishu
//! simulators alone for comparison (WeCom takes 1000 recipients per call, so its
//! simulator alone is not a meaningful limit; the inbox has none).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;
use umsd_sim::{Kind, SimHandle};

use super::deliver::{self, Api, ChannelDef, Setting};
use super::Ctx;
use crate::cpu::{self, CpuReport, Probe};
use crate::metrics::{self, Scrape};
use crate::report::{Line, Panel};
use crate::sims::{self, SimAlone};
use crate::{db, seconds, TargetArgs};

#[derive(Debug, Clone, Args, Serialize)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// U: users; every message goes to all of them (at most 1000, the audience limit of
    /// one send).
    #[arg(long, default_value_t = 1000, help_heading = "Fan-out")]
    pub users: usize,
    /// M: messages, each to all U users.
    #[arg(long, default_value_t = 50, help_heading = "Fan-out")]
    pub messages: usize,
    /// C: keep-alive connections of the simulator-alone phase, and the `pool_size`
    /// (provider calls in flight) of umsd's HTTP channels.
    #[arg(long, default_value_t = 32, help_heading = "Fan-out")]
    pub connections: usize,
    /// Length of each simulator-alone phase.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5.0,
        help_heading = "Fan-out"
    )]
    pub sim_seconds: f64,
    /// Worker threads of each simulator (the same in both phases).
    #[arg(long, default_value_t = 2, help_heading = "Fan-out")]
    pub sim_threads: usize,
    /// Four channels at once: webhook, WeCom, Feishu and the inbox.
    #[arg(long, help_heading = "Fan-out")]
    pub mixed: bool,
    /// Send requests in flight while submitting the messages.
    #[arg(long, default_value_t = 4, help_heading = "Fan-out")]
    pub send_concurrency: usize,
    /// Longest wait, from the first send, for every delivery to be delivered and written.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 300,
        help_heading = "Fan-out"
    )]
    pub deadline_s: u64,
    /// Pass rule: R_umsd / R_sim must be at least this.
    #[arg(long, default_value_t = 0.5, help_heading = "Fan-out")]
    pub min_ratio: f64,
    /// Rounds of (simulator alone, through umsd); the round with the median ratio is the
    /// result.
    #[arg(long, default_value_t = 3, help_heading = "Fan-out")]
    pub rounds: usize,
}

/// Channel codes of the written config.
const HOOK: &str = "hook";
const WECOM: &str = "wecom";
const FEISHU: &str = "feishu";
const INBOX: &str = "inbox";
/// `pool_size` of the channels that batch (WeCom) or write locally (inbox): umsd's
/// default.
const BATCH_POOL: usize = 8;

/// What is set up before umsd starts: the simulators, their figures alone, the config.
pub struct Setup {
    sims: Vec<(&'static str, SimHandle)>,
    sims_alone: Vec<SimAlone>,
    channels: Vec<ChannelDef>,
    pub config: String,
}

fn check_args(a: &FanoutArgs) -> Result<()> {
    if !(1..=1000).contains(&a.users) {
        bail!("--users must be 1..=1000 (every message goes to all of them in one send)");
    }
    if a.messages == 0 || a.connections == 0 || a.send_concurrency == 0 || a.rounds == 0 {
        bail!("--messages, --connections, --send-concurrency and --rounds must be at least 1");
    }
    if !(a.min_ratio.is_finite() && a.min_ratio > 0.0) {
        bail!("--min-ratio must be positive");
    }
    seconds(a.sim_seconds, "--sim-seconds")?;
    Ok(())
}

/// Starts the simulators, measures them alone and writes the daemon's config.
pub async fn prepare(a: &FanoutArgs) -> Result<Setup> {
    check_args(a)?;
    deliver::require_started_daemon(&a.target, "fanout")?;
    let mut sims: Vec<(&'static str, SimHandle)> =
        vec![(HOOK, sims::start(Kind::Webhook, a.sim_threads)?)];
    if a.mixed {
        sims.push((WECOM, sims::start(Kind::Wecom, a.sim_threads)?));
        sims.push((FEISHU, sims::start(Kind::Feishu, a.sim_threads)?));
    }
    let sims_alone = measure_alone(a, &sims, 1, None).await?;
    let mut channels = Vec::new();
    for (code, sim) in &sims {
        let cfg = sim.config();
        channels.push(match sim.kind() {
            Kind::Webhook => ChannelDef {
                code: (*code).to_owned(),
                channel_type: "webhook",
                pool_size: Some(a.connections),
                rate_per_second: None,
                settings: vec![("secret", Setting::Str(cfg.app_secret))],
            },
            Kind::Wecom => ChannelDef {
                code: (*code).to_owned(),
                channel_type: "wecom",
                pool_size: Some(BATCH_POOL),
                rate_per_second: None,
                settings: vec![
                    ("base_url", Setting::Str(sim.url())),
                    ("corpid", Setting::Str(cfg.app_key)),
                    ("corpsecret", Setting::Str(cfg.app_secret)),
                    ("agentid", Setting::Int(1)),
                ],
            },
            Kind::Feishu => ChannelDef {
                code: (*code).to_owned(),
                channel_type: "feishu",
                pool_size: Some(a.connections),
                rate_per_second: None,
                settings: vec![
                    ("base_url", Setting::Str(sim.url())),
                    ("app_id", Setting::Str(cfg.app_key)),
                    ("app_secret", Setting::Str(cfg.app_secret)),
                ],
            },
            other => bail!("no channel for the {other} simulator"),
        });
    }
    if a.mixed {
        channels.push(ChannelDef {
            code: INBOX.to_owned(),
            channel_type: "inbox",
            pool_size: Some(BATCH_POOL),
            rate_per_second: None,
            settings: vec![],
        });
    }
    let config = deliver::config_text(&a.target.app_key, &a.target.app_secret, &channels);
    Ok(Setup {
        sims,
        sims_alone,
        channels,
        config,
    })
}

/// Every simulator that has a simulator-alone measurement, alone, one after the other.
async fn measure_alone(
    a: &FanoutArgs,
    sims: &[(&'static str, SimHandle)],
    round: usize,
    probe: Option<&Probe>,
) -> Result<Vec<SimAlone>> {
    let duration = seconds(a.sim_seconds, "--sim-seconds")?;
    let mut out = Vec::new();
    for (code, sim) in sims {
        if !sims::measurable_alone(sim.kind()) {
            continue;
        }
        eprintln!(
            "== round {round}: simulator alone: {} ({code}), {} connections, closed loop for {:.0} s ==",
            sim.kind(),
            a.connections,
            a.sim_seconds
        );
        let before = probe.map(Probe::snapshot);
        let t = Instant::now();
        let mut r = sims::alone(sim, a.users, a.connections, duration).await?;
        if let (Some(probe), Some(before)) = (probe, before) {
            let c = cpu::report(
                probe,
                &before,
                &probe.snapshot(),
                t.elapsed().as_secs_f64(),
                0,
            );
            r.umsd_cores = c.umsd_cores;
            r.postgres_cores = Some(c.postgres_cores);
        }
        eprintln!(
            "[{} alone] {:.0} recipients/s ({} ok, {} non-2xx, {} errors; harness {:.2} cores, \
             whole machine {} cores{})",
            r.kind,
            r.rate,
            r.requests_ok,
            r.non_2xx,
            r.errors,
            r.harness_cpu_cores,
            opt(r.machine_busy_cores, 2),
            match (r.umsd_cores, r.postgres_cores) {
                (Some(u), Some(p)) => format!(", idle umsd {u:.2}, PostgreSQL {p:.2}"),
                _ => String::new(),
            }
        );
        if r.requests_ok == 0 {
            bail!(
                "the {} simulator accepted nothing alone: {:?}",
                r.kind,
                r.notes
            );
        }
        out.push(r);
    }
    Ok(out)
}

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

/// The index of the round with the median ratio (rounds without a ratio sort first; of an
/// even number, the upper middle).
pub fn median_round(ratios: &[Option<f64>]) -> usize {
    let mut order: Vec<usize> = (0..ratios.len()).collect();
    order.sort_by(|&x, &y| {
        ratios[x]
            .unwrap_or(-1.0)
            .total_cmp(&ratios[y].unwrap_or(-1.0))
    });
    order.get(ratios.len() / 2).copied().unwrap_or(0)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
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

/// The `/metrics` series kept at the end of each round.
const KEPT_METRICS: [&str; 10] = [
    "umsd_delivery_outcomes_total",
    "umsd_delivery_retries_total",
    "umsd_status_writes_total",
    "umsd_status_batch_size_sum",
    "umsd_status_batch_size_count",
    "umsd_accept_to_submit_seconds_sum",
    "umsd_accept_to_submit_seconds_count",
    "umsd_provider_request_duration_seconds_sum",
    "umsd_provider_request_duration_seconds_count",
    "umsd_planner_",
];

/// Per-channel values of one gauge or counter.
fn per_channel(scrape: &Scrape, name: &str, extra: &[(&str, &str)]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in scrape.matching(name, extra) {
        if let Some(ch) = s.labels.get("channel") {
            *out.entry(ch.clone()).or_insert(0.0) += s.value;
        }
    }
    out
}

/// Mean of a histogram's observations between two scrapes.
fn mean_between(start: &Scrape, end: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (sum, count) = (format!("{name}_sum"), format!("{name}_count"));
    let n = end.sum(&count, labels) - start.sum(&count, labels);
    (n > 0.0).then(|| (end.sum(&sum, labels) - start.sum(&sum, labels)) / n)
}

/// Below this many cores (umsd and PostgreSQL together, over a second) the daemon idles.
const IDLE_CORES: f64 = 0.05;
/// Longest wait for it to idle between rounds.
const IDLE_WAIT: Duration = Duration::from_secs(60);

/// Waits until umsd and its PostgreSQL idle (at most `max`); answers the cores they used
/// in the last second.
async fn wait_idle(probe: &Probe, max: Duration) -> f64 {
    let t0 = Instant::now();
    loop {
        let before = probe.snapshot();
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let c = cpu::report(
            probe,
            &before,
            &probe.snapshot(),
            t.elapsed().as_secs_f64(),
            0,
        );
        let busy = c.umsd_cores.unwrap_or(0.0) + c.postgres_cores;
        if busy < IDLE_CORES || t0.elapsed() >= max {
            if t0.elapsed() > Duration::from_secs(2) {
                eprintln!(
                    "[fanout] waited {:.0} s for umsd and PostgreSQL to idle ({busy:.2} cores)",
                    t0.elapsed().as_secs_f64()
                );
            }
            return busy;
        }
    }
}

/// What every round shares.
struct Env {
    api: Api,
    db: tokio_postgres::Client,
    app_id: i32,
    http: reqwest::Client,
    users: Vec<String>,
    codes: Vec<String>,
    content: Value,
    sims: Vec<(&'static str, SimHandle)>,
}

pub async fn run(ctx: &mut Ctx, a: &FanoutArgs, setup: Setup) -> Result<()> {
    let Setup {
        sims,
        sims_alone,
        channels,
        config: _,
    } = setup;
    let db_target = ctx
        .db
        .clone()
        .ok_or_else(|| anyhow!("fanout needs the daemon's database"))?;
    let api = Api::new(&ctx.base_url, &ctx.app_key, &ctx.app_secret)?;
    let codes: Vec<String> = channels.iter().map(|c| c.code.clone()).collect();

    // users, bound on every channel
    let hook_base = sims
        .iter()
        .find(|(c, _)| *c == HOOK)
        .map(|(_, s)| s.url())
        .ok_or_else(|| anyhow!("no webhook simulator"))?;
    let users: Vec<String> = (0..a.users).map(sims::user_id).collect();
    let rows: Vec<Value> = users
        .iter()
        .map(|u| {
            let mut bindings =
                vec![json!({"type": "webhook", "value": sims::hook_url(&hook_base, u)})];
            if a.mixed {
                bindings.push(json!({"type": "wecom", "value": u}));
                bindings.push(json!({"type": "feishu", "value": u}));
            }
            json!({"user_id": u, "bindings": bindings})
        })
        .collect();
    eprintln!("== fanout: creating {} users ==", users.len());
    api.put_users(rows).await?;

    let db = db::connect(&db_target).await?;
    let app_id = db::app_id(&db, &ctx.app_key).await?;
    let mut content = serde_json::Map::new();
    content.insert(HOOK.into(), json!({"body": sims::webhook_body()}));
    if a.mixed {
        content.insert(WECOM.into(), json!({"text": sims::IM_TEXT}));
        content.insert(FEISHU.into(), json!({"text": sims::IM_TEXT}));
        content.insert(
            INBOX.into(),
            json!({"title": "Order shipped", "body": sims::IM_TEXT}),
        );
    }
    let env = Env {
        api,
        db,
        app_id,
        http: crate::http_builder()
            .timeout(Duration::from_secs(5))
            .build()?,
        users,
        codes,
        content: Value::Object(content),
        sims,
    };

    let mut rounds = Vec::new();
    let mut alone = Some(sims_alone);
    for round in 1..=a.rounds {
        let sims_alone = match alone.take() {
            Some(s) => s,
            None => {
                // what the last round left behind (autovacuum, say) must not share the
                // cores with the simulator alone
                let probe = ctx.probe.clone();
                let busy = wait_idle(&probe, IDLE_WAIT).await;
                if busy > IDLE_CORES {
                    ctx.report.problems.push(format!(
                        "fanout round {round}: umsd and PostgreSQL still used {busy:.2} cores \
                         after {} s; the simulator-alone phase shares the machine with them",
                        IDLE_WAIT.as_secs()
                    ));
                }
                measure_alone(a, &env.sims, round, Some(&probe)).await?
            }
        };
        let r = one_round(ctx, a, &env, round, sims_alone).await?;
        eprintln!(
            "[round {round}] R_sim {}/s, R_umsd {}/s, ratio {}",
            opt(r.r_sim, 0),
            opt(r.r_umsd, 0),
            opt(r.ratio, 3)
        );
        let complete = r.complete;
        rounds.push(r);
        if !complete {
            // its leftovers would slow the next round down
            break;
        }
    }
    let ratios: Vec<Option<f64>> = rounds.iter().map(|r| r.ratio).collect();
    let median = median_round(&ratios);
    let (r_sim, r_umsd, ratio, complete) =
        rounds.get(median).map_or((None, None, None, false), |r| {
            (r.r_sim, r.r_umsd, r.ratio, r.complete)
        });
    let (_, pass) = verdict(r_umsd, r_sim, a.min_ratio, complete);
    let all_complete = rounds.len() == a.rounds && rounds.iter().all(|r| r.complete);
    let pass = (!a.mixed).then_some(pass && all_complete);
    if pass == Some(false) {
        ctx.report.problems.push(format!(
            "fanout rule failed: median ratio {} (rule >= {}) or not every delivery delivered",
            opt(ratio, 3),
            a.min_ratio
        ));
    }
    if rounds.len() > 1 {
        eprintln!(
            "== rounds: ratios {}; reporting round {} (the median) ==",
            ratios
                .iter()
                .map(|r| opt(*r, 3))
                .collect::<Vec<_>>()
                .join(", "),
            median + 1
        );
    }
    ctx.report.fanout = Some(FanoutReport {
        mixed: a.mixed,
        users: a.users,
        messages: a.messages,
        connections: a.connections,
        channels: channels
            .iter()
            .map(|c| ChannelPlan {
                code: c.code.clone(),
                channel_type: c.channel_type.to_owned(),
                pool_size: c.pool_size,
            })
            .collect(),
        expected_deliveries: (a.users * a.messages * env.codes.len()) as u64,
        rounds,
        median_round: median,
        r_sim,
        r_umsd,
        ratio,
        min_ratio: a.min_ratio,
        pass,
    });
    Ok(())
}

/// One round through umsd: M messages to every user on every channel, then a bounded wait
/// until every delivery is delivered and written; the figures from the database.
async fn one_round(
    ctx: &mut Ctx,
    a: &FanoutArgs,
    env: &Env,
    round: usize,
    sims_alone: Vec<SimAlone>,
) -> Result<FanoutRound> {
    let per_channel_expected = (a.users * a.messages) as u64;
    let expected = per_channel_expected * env.codes.len() as u64;
    let prefix = ctx.prefix(&format!("f{round}"));
    let make: deliver::MakeBody = {
        let (users, prefix, codes, content) = (
            env.users.clone(),
            prefix.clone(),
            env.codes.clone(),
            env.content.clone(),
        );
        Arc::new(move |i| {
            let chans: Vec<&str> = codes.iter().map(String::as_str).collect();
            deliver::message_body(&format!("{prefix}{i}"), &users, &chans, &content)
        })
    };
    let base_scrape = metrics::scrape(&env.http, &ctx.base_url).await?;
    let base_delivered = per_channel(
        &base_scrape,
        "umsd_delivery_outcomes_total",
        &[("outcome", "delivered")],
    );
    let sim_base: Vec<(u64, &SimHandle)> = env
        .sims
        .iter()
        .map(|(_, s)| (s.stats().recipients_accepted, s))
        .collect();
    let sims_done = || {
        sim_base
            .iter()
            .all(|(b, s)| s.stats().recipients_accepted.saturating_sub(*b) >= per_channel_expected)
    };

    eprintln!(
        "== round {round}: {} messages x {} users on {} ({} deliveries) ==",
        a.messages,
        a.users,
        env.codes.join(", "),
        expected
    );
    let probe = ctx.probe.clone();
    let before = probe.snapshot();
    let cpu0 = cpu::own_cpu_time();
    let machine0 = cpu::machine_ticks();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(a.deadline_s.max(1));
    let accepted = Arc::new(AtomicU64::new(0));
    let mut sender = Some(tokio::spawn(deliver::send_messages(
        env.api.clone(),
        a.messages,
        a.send_concurrency,
        make,
        accepted.clone(),
    )));
    let mut send_summary = None;
    let mut samples = Vec::new();
    let mut last = (t0, before.clone(), cpu0);
    let mut next_sample = t0 + Duration::from_secs(1);
    let mut next_db_check = t0;
    let mut complete = false;
    let hz = cpu::clock_ticks_per_second() as f64;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Instant::now();
        if sender.as_ref().is_some_and(|h| h.is_finished()) {
            if let Some(h) = sender.take() {
                let s = h.await.map_err(|e| anyhow!("send task: {e}"))??;
                eprintln!(
                    "[fanout] {} messages accepted in {:.2} s ({} retries)",
                    s.messages, s.elapsed_s, s.retries
                );
                send_summary = Some(s);
            }
        }
        if now >= next_sample {
            next_sample += Duration::from_secs(1);
            let snap = probe.snapshot();
            let cpu = cpu::own_cpu_time();
            let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
            let scrape = metrics::scrape(&env.http, &ctx.base_url)
                .await
                .unwrap_or_default();
            let mut delivered = per_channel(
                &scrape,
                "umsd_delivery_outcomes_total",
                &[("outcome", "delivered")],
            );
            for (k, v) in delivered.iter_mut() {
                *v -= base_delivered.get(k).copied().unwrap_or(0.0);
            }
            let sample = FanoutSample {
                t_s: now.duration_since(t0).as_secs_f64(),
                messages_accepted: accepted.load(Ordering::Relaxed),
                delivered,
                in_flight: per_channel(&scrape, "umsd_channel_in_flight", &[]),
                held: per_channel(&scrape, "umsd_channel_queue_depth", &[]),
                status_pending: scrape.sum("umsd_status_pending", &[]),
                umsd_cores: match (last.1.umsd, snap.umsd) {
                    (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / hz / dt),
                    _ => None,
                },
                postgres_cores: cpu::postgres_delta(&last.1, &snap) as f64 / hz / dt,
                harness_cores: cpu.saturating_sub(last.2).as_secs_f64() / dt,
            };
            let total: f64 = sample.delivered.values().sum();
            eprintln!(
                "[fanout] {:>5.1} s: {} messages accepted, {:.0} delivered, in flight {:?}, status pending {:.0}, umsd {} cores, PostgreSQL {:.2} cores",
                sample.t_s,
                sample.messages_accepted,
                total,
                sample.in_flight,
                sample.status_pending,
                opt(sample.umsd_cores, 2),
                sample.postgres_cores
            );
            samples.push(sample);
            last = (now, snap, cpu);
        }
        if send_summary.is_some() && sims_done() && now >= next_db_check {
            // every simulator has its recipients: wait for the inbox (if any) and for the
            // outcomes to be written
            let states = deliver::state_counts(&env.db, env.app_id, &prefix).await?;
            if deliver::final_count(&states) >= expected {
                complete = true;
                break;
            }
            next_db_check = now + Duration::from_millis(500);
        }
        if now >= deadline {
            if let Some(h) = sender.take() {
                h.abort();
            }
            break;
        }
    }
    let wait = t0.elapsed().as_secs_f64();
    let after = probe.snapshot();
    let harness_cpu = cpu::own_cpu_time().saturating_sub(cpu0).as_secs_f64();
    let machine = cpu::machine_busy_cores(
        machine0,
        cpu::machine_ticks(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    if !complete {
        let msg = format!(
            "fanout round {round}: not every delivery was delivered and written within \
             --deadline-s {} (simulators: {})",
            a.deadline_s,
            sim_base
                .iter()
                .map(|(b, s)| format!(
                    "{} {}",
                    s.kind(),
                    s.stats().recipients_accepted.saturating_sub(*b)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        eprintln!("\n!!! {msg} !!!\n");
        ctx.report.problems.push(msg);
    }
    let end_scrape = metrics::scrape(&env.http, &ctx.base_url)
        .await
        .unwrap_or_default();
    let states = deliver::state_counts(&env.db, env.app_id, &prefix).await?;
    let accepts = deliver::accepts(&env.db, env.app_id, &prefix).await?;
    let events = deliver::channel_events(&env.db, env.app_id, &prefix).await?;
    let sim_rate = |code: &str| -> Option<f64> {
        let kind = env.sims.iter().find(|(c, _)| *c == code)?.1.kind();
        sims_alone
            .iter()
            .find(|s| s.kind == kind.as_str())
            .map(|s| s.rate)
    };
    let result_of = |ev: &deliver::ChannelEvents| -> ChannelResult {
        let rate = match (accepts.first, ev.last_delivered) {
            (Some(f), Some(l)) => deliver::rate(u64::try_from(ev.delivered).unwrap_or(0), f, l),
            _ => None,
        };
        let sim_alone_rate = ev.channel.as_deref().and_then(sim_rate);
        let st = match &ev.channel {
            Some(c) => states.get(c).cloned().unwrap_or_default(),
            None => {
                let mut all = BTreeMap::new();
                for m in states.values() {
                    for (k, v) in m {
                        *all.entry(k.clone()).or_insert(0) += v;
                    }
                }
                all
            }
        };
        ChannelResult {
            channel: ev.channel.clone(),
            expected: if ev.channel.is_some() {
                per_channel_expected
            } else {
                expected
            },
            delivered: ev.delivered,
            rate,
            last_delivery_after_first_accept_s: match (accepts.first, ev.last_delivered) {
                (Some(f), Some(l)) => (l - f).num_microseconds().map(|us| us as f64 / 1e6),
                _ => None,
            },
            sim_alone_rate,
            ratio: match (rate, sim_alone_rate) {
                (Some(r), Some(s)) if s > 0.0 => Some(r / s),
                _ => None,
            },
            accept_to_submit: ev.accept_to_submit.clone(),
            states: st,
        }
    };
    let per_channel_results: Vec<ChannelResult> = events
        .iter()
        .filter(|e| e.channel.is_some())
        .map(result_of)
        .collect();
    let total = events.iter().find(|e| e.channel.is_none()).map(result_of);
    for ch in &env.codes {
        let Some(c) = per_channel_results
            .iter()
            .find(|c| c.channel.as_deref() == Some(ch.as_str()))
        else {
            ctx.report.problems.push(format!(
                "fanout round {round}: no delivery events for channel {ch}"
            ));
            continue;
        };
        if u64::try_from(c.delivered).unwrap_or(0) != c.expected {
            ctx.report.problems.push(format!(
                "fanout round {round}: channel {ch} has {} of {} deliveries delivered (states {:?})",
                c.delivered, c.expected, c.states
            ));
        }
    }
    let delivered_total = total
        .as_ref()
        .map_or(0, |t| u64::try_from(t.delivered).unwrap_or(0));
    let cpu_report = cpu::report(&probe, &before, &after, wait, delivered_total);
    let r_sim = sim_rate(HOOK);
    let r_umsd = per_channel_results
        .iter()
        .find(|c| c.channel.as_deref() == Some(HOOK))
        .and_then(|c| c.rate);
    let (ratio, _) = verdict(r_umsd, r_sim, a.min_ratio, complete);
    let busy: Vec<&FanoutSample> = samples
        .iter()
        .filter(|s| s.in_flight.values().any(|v| *v > 0.0) || s.status_pending > 0.0)
        .collect();
    let mut mean_in_flight = BTreeMap::new();
    let mut provider_call_mean_ms = BTreeMap::new();
    for ch in &env.codes {
        if !busy.is_empty() {
            let sum: f64 = busy
                .iter()
                .map(|s| s.in_flight.get(ch.as_str()).copied().unwrap_or(0.0))
                .sum();
            mean_in_flight.insert(ch.clone(), sum / busy.len() as f64);
        }
        if let Some(m) = mean_between(
            &base_scrape,
            &end_scrape,
            "umsd_provider_request_duration_seconds",
            &[("channel", ch.as_str())],
        ) {
            provider_call_mean_ms.insert(ch.clone(), m * 1000.0);
        }
    }
    let per_delivery = |s: f64| (delivered_total > 0).then(|| s * 1e6 / delivered_total as f64);
    let harness_cores = if wait > 0.0 { harness_cpu / wait } else { 0.0 };
    let (umsd_cores, postgres_cores) = (cpu_report.umsd_cores, cpu_report.postgres_cores);
    Ok(FanoutRound {
        round,
        sims_alone: sims_alone.clone(),
        id_prefix: prefix,
        send: send_summary,
        accepts: Some(accepts),
        complete,
        wait_s: wait,
        per_channel: per_channel_results,
        total,
        r_sim,
        r_umsd,
        ratio,
        umsd_us_per_delivery: cpu_report.umsd_cpu_s.and_then(per_delivery),
        postgres_us_per_delivery: per_delivery(cpu_report.postgres_cpu_s),
        cpu: Some(cpu_report),
        machine_busy_cores: machine,
        other_cores: machine
            .map(|m| (m - umsd_cores.unwrap_or(0.0) - postgres_cores - harness_cores).max(0.0)),
        harness_cpu_cores: harness_cores,
        mean_in_flight,
        status_batch_mean: mean_between(&base_scrape, &end_scrape, "umsd_status_batch_size", &[]),
        provider_call_mean_ms,
        metrics_end: end_scrape
            .select(&KEPT_METRICS)
            .into_iter()
            .filter(|(k, _)| !k.contains("_bucket"))
            .collect(),
        samples,
    })
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

    #[test]
    fn median_round_is_the_middle_ratio() {
        assert_eq!(median_round(&[Some(0.3), Some(0.6), Some(0.4)]), 2);
        assert_eq!(median_round(&[Some(0.5)]), 0);
        assert_eq!(median_round(&[None, Some(0.2)]), 1);
        assert_eq!(median_round(&[Some(0.9), None, Some(0.1)]), 2);
        assert_eq!(median_round(&[]), 0);
    }

    #[test]
    fn means_between_scrapes() {
        let a = Scrape::parse("umsd_status_batch_size_sum 1000\numsd_status_batch_size_count 10\n");
        let b = Scrape::parse("umsd_status_batch_size_sum 5000\numsd_status_batch_size_count 12\n");
        assert_eq!(
            mean_between(&a, &b, "umsd_status_batch_size", &[]),
            Some(2000.0)
        );
        assert_eq!(mean_between(&b, &b, "umsd_status_batch_size", &[]), None);
    }

    #[test]
    fn per_channel_reads_labels() {
        let s = Scrape::parse(
            "umsd_channel_in_flight{channel=\"hook\"} 31\n\
             umsd_delivery_outcomes_total{channel=\"hook\",type=\"webhook\",outcome=\"delivered\"} 7\n\
             umsd_delivery_outcomes_total{channel=\"hook\",type=\"webhook\",outcome=\"retryable\"} 2\n",
        );
        assert_eq!(per_channel(&s, "umsd_channel_in_flight", &[])["hook"], 31.0);
        assert_eq!(
            per_channel(
                &s,
                "umsd_delivery_outcomes_total",
                &[("outcome", "delivered")]
            )["hook"],
            7.0
        );
    }

    #[test]
    fn defaults_match_the_brief() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: FanoutArgs,
        }
        let t = T::try_parse_from(["t"]).unwrap();
        assert_eq!(t.a.users, 1000);
        assert_eq!(t.a.messages, 50);
        assert_eq!(t.a.connections, 32);
        assert_eq!(t.a.sim_seconds, 5.0);
        assert_eq!(t.a.min_ratio, 0.5);
        assert_eq!(t.a.rounds, 3);
        assert!(!t.a.mixed);
        assert!(check_args(&t.a).is_ok());
        let bad = T::try_parse_from(["t", "--users", "1001"]).unwrap();
        assert!(check_args(&bad.a).is_err());
    }
}
