//! The `cmpp` scenario: umsd's `sms_cmpp` channel against the ISMG simulator, compared in
//! the same run with the simulator driven by a minimal client loop, and the accuracy of
//! the channel's rate limit across sessions.
//!
//! 1. **Simulator alone** (before umsd starts): a minimal CMPP 3.0 client in the harness
//!    (`Framed<TcpStream, CmppCodec>`) logs in, keeps `--window` SUBMITs outstanding per
//!    connection, reads the SUBMIT_RESPs and answers the report DELIVERs, for
//!    `--sim-seconds`, with 1 and with 4 connections, each against a fresh simulator (no
//!    rate limit). Figures: SUBMITs accepted per second and SUBMIT → SUBMIT_RESP latency
//!    (exact, and interpolated from umsd's histogram buckets for a like-for-like
//!    comparison).
//! 2. **Through umsd**: three channels, each on its own simulator so their counts stay
//!    apart: `sms1` (1 session), `sms4` (4 sessions), both without a rate limit, and
//!    `smsrate` (4 sessions, `rate_per_second` = `--rate`). U users bound to a phone number
//!    each; M messages, each to all of them, first on `sms1` until the simulator has
//!    accepted every SUBMIT and every delivery is final in the database, then on `sms4`,
//!    then on `smsrate`. Figures per channel: SUBMITs per second between the simulator's
//!    first and last accepted SUBMIT, its ratio to the simulator alone with as many
//!    connections, SUBMIT → SUBMIT_RESP percentiles interpolated from the buckets of
//!    `umsd_cmpp_submit_resp_seconds{channel}` on `/metrics`, and CPU per SUBMIT.
//! 3. **Rate limit**: on `smsrate`, the SUBMITs the simulator accepted in a window of
//!    `--rate-window-s` (10 s) starting one second after the first (the limiter's burst
//!    comes first), divided by the window; PASS when within ±5 % of `--rate`. Also: the
//!    rate from there to the last SUBMIT, the busiest such window and the busiest second,
//!    which show a burst in mid-run that the rule's window may miss.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use umsd_cmpp::{
    auth, split, ActiveTestResp, CmppCodec, Connect, ConnectResp, DeliverResp, Frame, OctetString,
    Pdu, Submit, Version,
};
use umsd_sim::ismg::{self, IsmgAccount, IsmgConfig, IsmgHandle};

use super::deliver::{self, Api, ChannelDef, Setting};
use super::Ctx;
use crate::cpu::{self, CpuReport};
use crate::metrics::{self, Scrape};
use crate::openloop::{self, LatencySummary};
use crate::report::{Line, Panel};
use crate::sims;
use crate::{db, seconds, TargetArgs};

#[derive(Debug, Clone, Args, Serialize)]
pub struct CmppArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// U: users, each bound to a phone number; every message goes to all of them (at most
    /// 1000).
    #[arg(long, default_value_t = 1000, help_heading = "CMPP")]
    pub users: usize,
    /// M: messages per channel, each to all U users (one SUBMIT per user).
    #[arg(long, default_value_t = 20, help_heading = "CMPP")]
    pub messages: usize,
    /// SUBMITs outstanding per connection, for the client loop and umsd's sessions.
    #[arg(long, default_value_t = 16, help_heading = "CMPP")]
    pub window: usize,
    /// Length of each simulator-alone phase.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5.0,
        help_heading = "CMPP"
    )]
    pub sim_seconds: f64,
    /// `rate_per_second` of the `smsrate` channel.
    #[arg(long, default_value_t = 500.0, help_heading = "CMPP")]
    pub rate: f64,
    /// Length of the window the rate is measured over (it starts one second after the
    /// first SUBMIT).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10.0,
        help_heading = "CMPP"
    )]
    pub rate_window_s: f64,
    /// Worker threads of each simulator (the same in both phases).
    #[arg(long, default_value_t = 1, help_heading = "CMPP")]
    pub sim_threads: usize,
    /// Send requests in flight while submitting the messages.
    #[arg(long, default_value_t = 4, help_heading = "CMPP")]
    pub send_concurrency: usize,
    /// Longest wait per channel, from its first send, for every SUBMIT to be accepted and
    /// every delivery to be final.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 120,
        help_heading = "CMPP"
    )]
    pub deadline_s: u64,
}

/// Allowed error of the measured rate against `--rate`.
pub const RATE_TOLERANCE: f64 = 0.05;
/// The burst the rate window skips.
const RATE_SKIP_MS: u64 = 1000;
/// Longest wait for a login, an answer, or the channel's sessions to log in.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
const LOGIN_WAIT: Duration = Duration::from_secs(30);
/// umsd's `LATENCY_BUCKETS` (`umsd_actors::metrics`), the buckets of
/// `umsd_cmpp_submit_resp_seconds`; checked against them in the tests.
pub const UMSD_LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const SUBMIT_RESP_METRIC: &str = "umsd_cmpp_submit_resp_seconds_bucket";
const SRC_ID: &str = "10690001";

/// One channel of the written config.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelPlan {
    pub code: &'static str,
    pub sessions: usize,
    pub rate_per_second: Option<f64>,
}

/// What is set up before umsd starts.
pub struct Setup {
    channels: Vec<(ChannelPlan, IsmgHandle)>,
    alone: Vec<AloneResult>,
    pub config: String,
}

fn check_args(a: &CmppArgs) -> Result<()> {
    if !(1..=1000).contains(&a.users) {
        bail!("--users must be 1..=1000 (every message goes to all of them in one send)");
    }
    if a.messages == 0 || a.window == 0 || a.send_concurrency == 0 || a.sim_threads == 0 {
        bail!("--messages, --window, --send-concurrency and --sim-threads must be at least 1");
    }
    if !(a.rate.is_finite() && a.rate >= 1.0) {
        bail!("--rate must be at least 1");
    }
    seconds(a.sim_seconds, "--sim-seconds")?;
    seconds(a.rate_window_s, "--rate-window-s")?;
    Ok(())
}

/// The simulator both phases use: default account, no rate limit, no SUBMIT_RESP delay,
/// reports after 200 ms.
fn sim_config(a: &CmppArgs) -> IsmgConfig {
    IsmgConfig {
        threads: a.sim_threads,
        window: a.window,
        ..IsmgConfig::default()
    }
}

fn start_sim(a: &CmppArgs) -> Result<IsmgHandle> {
    ismg::start(sim_config(a)).context("starting the ISMG simulator")
}

/// Measures the simulator alone, starts the simulators umsd will use and writes its
/// config.
pub async fn prepare(a: &CmppArgs) -> Result<Setup> {
    check_args(a)?;
    deliver::require_started_daemon(&a.target, "cmpp")?;
    let mut alone = Vec::new();
    for connections in [1, 4] {
        eprintln!(
            "== simulator alone: {connections} connection(s), window {}, closed loop for {:.0} s ==",
            a.window, a.sim_seconds
        );
        let sim = start_sim(a)?;
        let r = measure_alone(&sim, connections, a.window, seconds(a.sim_seconds, "")?).await;
        // (joining the simulator's thread blocks)
        tokio::task::spawn_blocking(move || sim.shutdown()).await?;
        let r = r?;
        eprintln!(
            "[alone x{connections}] {:.0} SUBMITs/s, submit->resp p50 {:.3} ms, p99 {:.3} ms; harness {:.2} cores, machine {} cores",
            r.rate,
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.harness_cpu_cores,
            opt(r.machine_busy_cores, 2)
        );
        alone.push(r);
    }
    let plans = [
        ChannelPlan {
            code: "sms1",
            sessions: 1,
            rate_per_second: None,
        },
        ChannelPlan {
            code: "sms4",
            sessions: 4,
            rate_per_second: None,
        },
        ChannelPlan {
            code: "smsrate",
            sessions: 4,
            rate_per_second: Some(a.rate),
        },
    ];
    let mut channels = Vec::new();
    let mut defs = Vec::new();
    for plan in plans {
        let sim = start_sim(a)?;
        let account = IsmgAccount::default_account();
        defs.push(ChannelDef {
            code: plan.code.to_owned(),
            channel_type: "sms_cmpp",
            pool_size: None,
            rate_per_second: plan.rate_per_second,
            settings: vec![
                ("host", Setting::Str(sim.addr().ip().to_string())),
                ("port", Setting::Int(i64::from(sim.addr().port()))),
                ("account", Setting::Str(account.account)),
                ("password", Setting::Str(account.password)),
                ("version", Setting::Str("3.0".into())),
                ("src_id", Setting::Str(SRC_ID.into())),
                (
                    "max_connections",
                    Setting::Int(i64::try_from(plan.sessions)?),
                ),
                ("window", Setting::Int(i64::try_from(a.window)?)),
            ],
        });
        channels.push((plan, sim));
    }
    let config = deliver::config_text(&a.target.app_key, &a.target.app_secret, &defs);
    Ok(Setup {
        channels,
        alone,
        config,
    })
}

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

/// What one client connection saw.
struct ConnCounts {
    accepted: u64,
    refused: u64,
    reports: u64,
    hist: Histogram<u64>,
}

/// A SUBMIT like the ones umsd sends: one recipient, the message text as one segment.
fn submit_template(account: &str, dest: &str) -> Result<Submit> {
    let segments = split::split_message(sims::IM_TEXT, &split::SplitOptions::default())
        .map_err(|e| anyhow!("splitting the message: {e}"))?;
    let segment = segments
        .first()
        .ok_or_else(|| anyhow!("the message has no segment"))?;
    Ok(Submit {
        fee_user_type: 2,
        fee_type: OctetString::from("01"),
        fee_code: OctetString::from("000000"),
        msg_src: OctetString::from(account),
        src_id: OctetString::from(SRC_ID),
        dest_terminal_ids: vec![OctetString::from(dest)],
        ..Submit::default()
    }
    .with_segment(segment))
}

/// One connection of the client loop: log in, keep `window` SUBMITs outstanding until
/// `until`, then wait for the last answers.
async fn client_loop(addr: SocketAddr, window: usize, until: Instant) -> Result<ConnCounts> {
    let account = IsmgAccount::default_account();
    let stream = tokio::time::timeout(ANSWER_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connecting to {addr} timed out"))??;
    stream.set_nodelay(true)?;
    let mut framed = Framed::new(stream, CmppCodec::new(Version::V30));
    let ts = auth::timestamp(&chrono::Utc::now());
    let connect = Connect::new(
        account.account.as_str(),
        account.password.as_bytes(),
        Version::V30,
        ts,
    )?;
    framed.send(Frame::new(1, Pdu::Connect(connect))).await?;
    match tokio::time::timeout(ANSWER_TIMEOUT, framed.next()).await {
        Ok(Some(Ok(Frame {
            pdu: Pdu::ConnectResp(r),
            ..
        }))) if r.status == ConnectResp::OK => {}
        Ok(Some(Ok(f))) => bail!("login refused or unexpected answer: {:?}", f.pdu),
        Ok(Some(Err(e))) => bail!("login: {e}"),
        Ok(None) => bail!("login: connection closed"),
        Err(_) => bail!("login: no answer within {ANSWER_TIMEOUT:?}"),
    }
    let template = submit_template(&account.account, "+8613900000000")?;
    let mut c = ConnCounts {
        accepted: 0,
        refused: 0,
        reports: 0,
        hist: openloop::new_histogram()?,
    };
    let mut outstanding: HashMap<u32, Instant> = HashMap::with_capacity(window);
    let mut seq = 1u32;
    loop {
        if Instant::now() < until {
            while outstanding.len() < window {
                seq = seq.wrapping_add(1).max(2);
                framed
                    .feed(Frame::new(seq, Pdu::Submit(template.clone())))
                    .await?;
                outstanding.insert(seq, Instant::now());
            }
        } else if outstanding.is_empty() {
            break;
        }
        SinkExt::<Frame>::flush(&mut framed).await?;
        let frame = match tokio::time::timeout(ANSWER_TIMEOUT, framed.next()).await {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) if e.is_recoverable() => continue,
            Ok(Some(Err(e))) => bail!("reading: {e}"),
            Ok(None) => bail!("the simulator closed the connection"),
            Err(_) => bail!(
                "no frame within {ANSWER_TIMEOUT:?} ({} SUBMITs outstanding)",
                outstanding.len()
            ),
        };
        match frame.pdu {
            Pdu::SubmitResp(r) => {
                if let Some(sent) = outstanding.remove(&frame.sequence_id) {
                    let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    c.hist.saturating_record(us.max(1));
                    if r.result == 0 {
                        c.accepted += 1;
                    } else {
                        c.refused += 1;
                    }
                }
            }
            Pdu::Deliver(d) => {
                c.reports += 1;
                let resp = Pdu::DeliverResp(DeliverResp::ok(&d));
                framed.feed(Frame::new(frame.sequence_id, resp)).await?;
            }
            Pdu::ActiveTest => {
                let resp = Pdu::ActiveTestResp(ActiveTestResp::default());
                framed.feed(Frame::new(frame.sequence_id, resp)).await?;
            }
            Pdu::Terminate => bail!("the simulator ended the session"),
            _ => {}
        }
    }
    Ok(c)
}

/// `connections` client loops against `sim` for `duration`.
async fn measure_alone(
    sim: &IsmgHandle,
    connections: usize,
    window: usize,
    duration: Duration,
) -> Result<AloneResult> {
    let cpu0 = cpu::own_cpu_time();
    let machine0 = cpu::machine_ticks();
    let t0 = Instant::now();
    let until = t0 + duration;
    let mut set = JoinSet::new();
    for _ in 0..connections {
        set.spawn(client_loop(sim.addr(), window, until));
    }
    let mut hist = openloop::new_histogram()?;
    let (mut accepted, mut refused, mut reports) = (0, 0, 0);
    while let Some(r) = set.join_next().await {
        let c = r.context("client task")?.context("CMPP client loop")?;
        accepted += c.accepted;
        refused += c.refused;
        reports += c.reports;
        hist.add(&c.hist)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))?;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sim_accepted = sim.stats().submit_resp.get(&0).copied().unwrap_or(0);
    if sim_accepted != accepted {
        bail!("the client counted {accepted} accepted SUBMITs, the simulator {sim_accepted}");
    }
    if accepted == 0 {
        bail!("the simulator accepted nothing alone");
    }
    Ok(AloneResult {
        connections,
        window,
        elapsed_s: elapsed,
        accepted,
        refused,
        reports,
        rate: accepted as f64 / elapsed,
        latency: LatencySummary::of(&hist),
        latency_bucketed: BucketLatency::of(&hdr_buckets(&hist, &UMSD_LATENCY_BUCKETS)),
        harness_cpu_cores: cpu::own_cpu_time().saturating_sub(cpu0).as_secs_f64() / elapsed,
        machine_busy_cores: cpu::machine_busy_cores(machine0, cpu::machine_ticks(), cores),
    })
}

/// Percentiles interpolated within cumulative histogram buckets, ms.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BucketLatency {
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl BucketLatency {
    pub fn of(buckets: &[(f64, f64)]) -> Self {
        let ms = |q| bucket_quantile(buckets, q).map(|s| s * 1000.0);
        Self {
            count: buckets.last().map_or(0, |b| b.1.max(0.0) as u64),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
        }
    }
}

/// The `q` quantile of cumulative buckets `(upper bound, observations ≤ it)` sorted by
/// bound, the last one `+Inf`: as Prometheus's `histogram_quantile`, linear within the
/// bucket the rank falls in (the first bucket starts at 0); a rank in the `+Inf` bucket
/// gives the highest finite bound.
pub fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if !(total > 0.0 && (0.0..=1.0).contains(&q)) {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, cum) in buckets {
        if cum >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = cum - below;
            let frac = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (le - lower) * frac);
        }
        (lower, below) = (le, cum);
    }
    Some(lower)
}

/// The cumulative buckets of one histogram in a scrape, sorted by bound.
pub fn scrape_buckets(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = scrape
        .matching(name, labels)
        .filter_map(|s| {
            let le = match s.labels.get("le")?.as_str() {
                "+Inf" => f64::INFINITY,
                v => v.parse().ok()?,
            };
            Some((le, s.value))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// An HdrHistogram of µs as cumulative buckets with the given bounds (seconds) and `+Inf`.
fn hdr_buckets(h: &Histogram<u64>, bounds_s: &[f64]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = bounds_s
        .iter()
        .map(|&b| {
            let us = (b * 1e6).round() as u64;
            (b, h.count_between(0, us) as f64)
        })
        .collect();
    out.push((f64::INFINITY, h.len() as f64));
    out
}

/// Times per second between the first and the last of `times_ms` (ascending):
/// `(n − 1) / (last − first)`.
pub fn span_rate(times_ms: &[u64]) -> Option<f64> {
    let (first, last) = (*times_ms.first()?, *times_ms.last()?);
    (last > first).then(|| (times_ms.len() - 1) as f64 * 1000.0 / (last - first) as f64)
}

/// Times per second in `[start, start + len)`; `None` when the times end before the window
/// does (the window is not covered).
pub fn window_rate(times_ms: &[u64], start_ms: u64, len_ms: u64) -> Option<f64> {
    let end = start_ms.checked_add(len_ms)?;
    if len_ms == 0 || times_ms.last().is_none_or(|&l| l < end) {
        return None;
    }
    let n = times_ms
        .iter()
        .filter(|&&t| t >= start_ms && t < end)
        .count();
    Some(n as f64 * 1000.0 / len_ms as f64)
}

/// The most times in any window `[t, t + len)` starting at a time `t ≥ from_ms` and
/// ending by the last time (so the times cover it); `None` if there is no such window.
pub fn max_window_count(times_ms: &[u64], from_ms: u64, len_ms: u64) -> Option<usize> {
    let last = *times_ms.last()?;
    let start = times_ms.partition_point(|&t| t < from_ms);
    let mut best = None;
    let mut j = start;
    for (i, &t) in times_ms.iter().enumerate().skip(start) {
        let end = t.checked_add(len_ms)?;
        if end > last.saturating_add(1) {
            break;
        }
        j = j.max(i);
        while j < times_ms.len() && times_ms[j] < end {
            j += 1;
        }
        best = best.max(Some(j - i));
    }
    best
}

/// Times per second in bins of `bin_ms` from `origin_ms` on, as points `(seconds since
/// origin at the middle of the bin, count per second)`, empty bins between included.
pub fn rate_series(times_ms: &[u64], origin_ms: u64, bin_ms: u64) -> Vec<(f64, f64)> {
    let bin_ms = bin_ms.max(1);
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for &t in times_ms.iter().filter(|&&t| t >= origin_ms) {
        *counts.entry((t - origin_ms) / bin_ms).or_insert(0) += 1;
    }
    let (Some(&first), Some(&last)) = (counts.keys().next(), counts.keys().next_back()) else {
        return Vec::new();
    };
    let per_s = 1000.0 / bin_ms as f64;
    (first..=last)
        .map(|b| {
            let mid = (b as f64 + 0.5) * bin_ms as f64 / 1000.0;
            (mid, counts.get(&b).copied().unwrap_or(0) as f64 * per_s)
        })
        .collect()
}

/// `measured / configured − 1` and whether it is within [`RATE_TOLERANCE`].
pub fn rate_verdict(measured: f64, configured: f64) -> (f64, bool) {
    let err = measured / configured - 1.0;
    // (a hair of slack so that exactly ±5 % passes despite rounding)
    (err, err.abs() <= RATE_TOLERANCE + 1e-12)
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

/// The rate limit's accuracy on `smsrate`.
#[derive(Debug, Clone, Serialize)]
pub struct RateCheck {
    pub configured: f64,
    pub sessions: usize,
    /// The window starts this long after the first accepted SUBMIT.
    pub skip_s: f64,
    pub window_s: f64,
    /// The rule's figure: SUBMITs per second in the window.
    pub measured: Option<f64>,
    /// `measured / configured − 1`.
    pub error: Option<f64>,
    pub tolerance: f64,
    /// `error` within `tolerance`.
    pub pass: bool,
    /// Everything after the skipped start: from `skip_s` after the first SUBMIT to the
    /// last, per second.
    pub steady_rate: Option<f64>,
    pub steady_error: Option<f64>,
    /// The busiest window of `window_s` after the skipped start (fully covered by the
    /// SUBMITs), per second, and its error: a burst the limiter allows in mid-run shows
    /// here even when the rule's window misses it.
    pub worst_window_rate: Option<f64>,
    pub worst_window_error: Option<f64>,
    /// The most SUBMITs in any one second after the skipped start.
    pub peak_1s: Option<usize>,
}

/// The rate figures of one rate-limited channel from its accepted SUBMITs' times
/// (ascending); `None` without SUBMITs.
pub fn rate_check(
    times_ms: &[u64],
    configured: f64,
    sessions: usize,
    skip_ms: u64,
    window_ms: u64,
) -> Option<RateCheck> {
    let from = times_ms.first()?.checked_add(skip_ms)?;
    let measured = window_rate(times_ms, from, window_ms);
    let error = |r: Option<f64>| r.map(|m| rate_verdict(m, configured).0);
    let steady = &times_ms[times_ms.partition_point(|&t| t < from)..];
    let steady_rate = span_rate(steady);
    let worst_window_rate =
        max_window_count(times_ms, from, window_ms).map(|n| n as f64 * 1000.0 / window_ms as f64);
    Some(RateCheck {
        configured,
        sessions,
        skip_s: skip_ms as f64 / 1000.0,
        window_s: window_ms as f64 / 1000.0,
        measured,
        error: error(measured),
        tolerance: RATE_TOLERANCE,
        pass: measured.is_some_and(|m| rate_verdict(m, configured).1),
        steady_rate,
        steady_error: error(steady_rate),
        worst_window_rate,
        worst_window_error: error(worst_window_rate),
        peak_1s: max_window_count(times_ms, from, 1000),
    })
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

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |e| format!("{:+.2} %", e * 100.0))
}

fn latency_text(l: &BucketLatency) -> String {
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

/// What every channel's phase shares.
struct Env {
    api: Api,
    db: tokio_postgres::Client,
    app_id: i32,
    http: reqwest::Client,
    users: Vec<String>,
    t0: Instant,
    t0_unix_ms: u64,
}

pub async fn run(ctx: &mut Ctx, a: &CmppArgs, setup: Setup) -> Result<()> {
    let Setup {
        channels,
        alone,
        config: _,
    } = setup;
    let db_target = ctx
        .db
        .clone()
        .ok_or_else(|| anyhow!("cmpp needs the daemon's database"))?;
    let api = Api::new(&ctx.base_url, &ctx.app_key, &ctx.app_secret)?;
    let users: Vec<String> = (0..a.users).map(sims::user_id).collect();
    let rows = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            json!({"user_id": u, "bindings": [{"type": "phone", "value": format!("+86139{i:08}")}]})
        })
        .collect();
    eprintln!("== cmpp: creating {} users ==", users.len());
    api.put_users(rows).await?;
    let db = db::connect(&db_target).await?;
    let app_id = db::app_id(&db, &ctx.app_key).await?;
    let env = Env {
        api,
        db,
        app_id,
        http: crate::http_builder()
            .timeout(Duration::from_secs(5))
            .build()?,
        users,
        t0: Instant::now(),
        t0_unix_ms: unix_ms(),
    };
    let mut samples = Vec::new();
    let mut runs = Vec::new();
    for (plan, sim) in &channels {
        let logged_in = sim
            .wait_for(LOGIN_WAIT, |s| {
                s.connections_logged_in >= plan.sessions as u64
            })
            .await
            .unwrap_or_else(|s| s)
            .connections_logged_in;
        if logged_in < plan.sessions as u64 {
            ctx.report.problems.push(format!(
                "cmpp {}: {logged_in} of {} sessions logged in after {} s",
                plan.code,
                plan.sessions,
                LOGIN_WAIT.as_secs()
            ));
        }
        let alone_of = alone.iter().find(|r| r.connections == plan.sessions);
        let r = one_channel(ctx, a, &env, plan, sim, alone_of, &mut samples).await?;
        eprintln!(
            "[{}] {}/{} accepted, {} SUBMITs/s ({} of the simulator alone), submit->resp {}",
            r.code,
            r.accepted,
            r.expected,
            opt(r.submits_per_second, 0),
            opt(r.ratio, 3),
            latency_text(&r.submit_resp)
        );
        runs.push(r);
    }
    let rate_check = channels
        .iter()
        .find(|(p, _)| p.rate_per_second.is_some())
        .and_then(|(plan, sim)| {
            rate_check(
                &accepted_times(sim),
                plan.rate_per_second?,
                plan.sessions,
                RATE_SKIP_MS,
                (a.rate_window_s * 1000.0).round() as u64,
            )
        });
    match &rate_check {
        Some(r) if r.measured.is_none() => ctx.report.problems.push(format!(
            "cmpp rate check: the SUBMITs ended before the {:.0} s window did (raise --messages)",
            r.window_s
        )),
        Some(r) if !r.pass => ctx.report.problems.push(format!(
            "cmpp rate rule failed: {}/s measured against {}/s configured",
            opt(r.measured, 1),
            r.configured
        )),
        None => ctx
            .report
            .problems
            .push("cmpp rate check: no SUBMIT accepted on the rated channel".into()),
        _ => {}
    }
    if let Some(r) = &rate_check {
        if r.worst_window_error
            .is_some_and(|e| e.abs() > RATE_TOLERANCE)
        {
            ctx.report.problems.push(format!(
                "cmpp rate: the busiest {:.0} s window after the first second carried {}/s \
                 ({}); the most in one second: {} SUBMITs",
                r.window_s,
                opt(r.worst_window_rate, 1),
                pct(r.worst_window_error),
                r.peak_1s.unwrap_or(0)
            ));
        }
    }
    let all_complete = runs.iter().all(|r| r.complete);
    let pass = Some(all_complete && rate_check.as_ref().is_some_and(|r| r.pass));
    // (the simulators' threads are joined off the runtime)
    tokio::task::spawn_blocking(move || drop(channels)).await?;
    ctx.report.cmpp = Some(CmppReport {
        users: a.users,
        messages: a.messages,
        window: a.window,
        alone,
        channels: runs,
        rate_check,
        pass,
        samples,
    });
    Ok(())
}

fn unix_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// The simulator's accepted SUBMITs' timestamps, ascending.
fn accepted_times(sim: &IsmgHandle) -> Vec<u64> {
    let mut t: Vec<u64> = sim.submits().iter().map(|s| s.at_ms).collect();
    t.sort_unstable();
    t
}

/// One channel through umsd: M messages to every user, then a bounded wait until the
/// simulator has accepted every SUBMIT and every delivery is final.
async fn one_channel(
    ctx: &mut Ctx,
    a: &CmppArgs,
    env: &Env,
    plan: &ChannelPlan,
    sim: &IsmgHandle,
    alone: Option<&AloneResult>,
    samples: &mut Vec<CmppSample>,
) -> Result<ChannelRun> {
    let code = plan.code;
    let expected = (a.users * a.messages) as u64;
    let prefix = ctx.prefix(code);
    let content = json!({ code: {"text": sims::IM_TEXT} });
    let make: deliver::MakeBody = {
        let (users, prefix) = (env.users.clone(), prefix.clone());
        Arc::new(move |i| deliver::message_body(&format!("{prefix}{i}"), &users, &[code], &content))
    };
    let accepted_now = || sim.stats().submit_resp.get(&0).copied().unwrap_or(0);
    let base = accepted_now();
    eprintln!(
        "== cmpp {code}: {} messages x {} users = {expected} SUBMITs, {} session(s){} ==",
        a.messages,
        a.users,
        plan.sessions,
        plan.rate_per_second
            .map_or_else(String::new, |r| format!(", rate_per_second {r}"))
    );
    let probe = ctx.probe.clone();
    let before = probe.snapshot();
    let machine0 = cpu::machine_ticks();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(a.deadline_s.max(1));
    let mut sender = Some(tokio::spawn(deliver::send_messages(
        env.api.clone(),
        a.messages,
        a.send_concurrency,
        make,
        Arc::new(AtomicU64::new(0)),
    )));
    let mut send = None;
    let mut complete = false;
    let hz = cpu::clock_ticks_per_second() as f64;
    let mut last = (t0, before.clone(), cpu::own_cpu_time());
    let mut next_sample = t0 + Duration::from_secs(1);
    let mut next_db_check = t0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Instant::now();
        if sender.as_ref().is_some_and(|h| h.is_finished()) {
            if let Some(h) = sender.take() {
                send = Some(h.await.map_err(|e| anyhow!("send task: {e}"))??);
            }
        }
        let accepted = accepted_now().saturating_sub(base);
        if now >= next_sample {
            next_sample += Duration::from_secs(1);
            let snap = probe.snapshot();
            let own = cpu::own_cpu_time();
            let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
            let sample = CmppSample {
                t_s: now.duration_since(env.t0).as_secs_f64(),
                channel: code,
                accepted,
                umsd_cores: match (last.1.umsd, snap.umsd) {
                    (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / hz / dt),
                    _ => None,
                },
                postgres_cores: cpu::postgres_delta(&last.1, &snap) as f64 / hz / dt,
                harness_cores: own.saturating_sub(last.2).as_secs_f64() / dt,
            };
            eprintln!(
                "[{code}] {:>5.1} s: {accepted} SUBMITs accepted, umsd {} cores, PostgreSQL {:.2} cores",
                now.duration_since(t0).as_secs_f64(),
                opt(sample.umsd_cores, 2),
                sample.postgres_cores
            );
            samples.push(sample);
            last = (now, snap, own);
        }
        if send.is_some() && accepted >= expected && now >= next_db_check {
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
    let elapsed = t0.elapsed().as_secs_f64();
    let after = probe.snapshot();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let machine = cpu::machine_busy_cores(machine0, cpu::machine_ticks(), cores);
    let accepted = accepted_now().saturating_sub(base);
    if !complete {
        let msg = format!(
            "cmpp {code}: {accepted} of {expected} SUBMITs accepted or deliveries not final \
             within --deadline-s {}",
            a.deadline_s
        );
        eprintln!("\n!!! {msg} !!!\n");
        ctx.report.problems.push(msg);
    }
    let times = accepted_times(sim);
    let submits_per_second = span_rate(&times);
    // (the unlimited channels are done within a second or two)
    let bin_ms = if plan.rate_per_second.is_some() {
        1000
    } else {
        100
    };
    let scrape = metrics::scrape(&env.http, &ctx.base_url)
        .await
        .unwrap_or_default();
    let labels = [("channel", code)];
    let states = deliver::state_counts(&env.db, env.app_id, &prefix)
        .await?
        .remove(code)
        .unwrap_or_default();
    let delivered = states.get("delivered").copied().unwrap_or(0);
    if u64::try_from(delivered).unwrap_or(0) != expected {
        ctx.report.problems.push(format!(
            "cmpp {code}: {delivered} of {expected} deliveries delivered (states {states:?})"
        ));
    }
    let cpu_report = cpu::report(&probe, &before, &after, elapsed, accepted);
    let per_submit = |s: f64| (accepted > 0).then(|| s * 1e6 / accepted as f64);
    // (a rate-limited channel is not compared with the simulator alone)
    let alone_rate = alone
        .filter(|_| plan.rate_per_second.is_none())
        .map(|r| r.rate);
    Ok(ChannelRun {
        code,
        sessions: plan.sessions,
        rate_per_second: plan.rate_per_second,
        id_prefix: prefix,
        send,
        expected,
        accepted,
        complete,
        first_submit_s: times
            .first()
            .map(|&f| f.saturating_sub(env.t0_unix_ms) as f64 / 1000.0),
        span_s: match (times.first(), times.last()) {
            (Some(f), Some(l)) => Some(l.saturating_sub(*f) as f64 / 1000.0),
            _ => None,
        },
        submits_per_second,
        alone_rate,
        ratio: match (submits_per_second, alone_rate) {
            (Some(u), Some(s)) if s > 0.0 => Some(u / s),
            _ => None,
        },
        submit_resp: BucketLatency::of(&scrape_buckets(&scrape, SUBMIT_RESP_METRIC, &labels)),
        alone_submit_resp: alone.map(|r| r.latency_bucketed.clone()),
        // (+ 0.0: a counter never incremented is absent, and an empty sum is -0.0)
        flow_controlled: scrape.sum("umsd_cmpp_flow_control_total", &labels) + 0.0,
        resends: scrape.sum("umsd_cmpp_resends_total", &labels) + 0.0,
        states,
        umsd_us_per_submit: cpu_report.umsd_cpu_s.and_then(per_submit),
        postgres_us_per_submit: per_submit(cpu_report.postgres_cpu_s),
        cpu: Some(cpu_report),
        machine_busy_cores: machine,
        bin_ms,
        series: rate_series(&times, env.t0_unix_ms, bin_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_from_buckets() {
        // 100 observations: 10 ≤ 1 ms, 50 in (1, 2] ms, 30 in (2, 4] ms, 10 above 4 ms
        let b = [
            (0.001, 10.0),
            (0.002, 60.0),
            (0.004, 90.0),
            (f64::INFINITY, 100.0),
        ];
        let q = |x| bucket_quantile(&b, x).unwrap();
        assert!((q(0.05) - 0.0005).abs() < 1e-12); // half-way into the first bucket, from 0
        assert!((q(0.5) - 0.0018).abs() < 1e-12); // 40 of 50 into (1, 2]
        assert!((q(0.9) - 0.004).abs() < 1e-12); // the top of (2, 4]
        assert_eq!(q(0.99), 0.004); // in +Inf: the highest finite bound
        assert_eq!(
            bucket_quantile(&[(0.001, 0.0), (f64::INFINITY, 0.0)], 0.5),
            None
        );
        assert_eq!(bucket_quantile(&[], 0.5), None);
        assert_eq!(bucket_quantile(&b, 1.5), None);
        let l = BucketLatency::of(&b);
        assert_eq!(l.count, 100);
        assert!((l.p50_ms.unwrap() - 1.8).abs() < 1e-9);
    }

    #[test]
    fn buckets_from_a_scrape_and_from_hdr() {
        let s = Scrape::parse(
            "umsd_cmpp_submit_resp_seconds_bucket{channel=\"sms1\",le=\"+Inf\"} 4\n\
             umsd_cmpp_submit_resp_seconds_bucket{channel=\"sms1\",le=\"0.001\"} 3\n\
             umsd_cmpp_submit_resp_seconds_bucket{channel=\"sms1\",le=\"0.0005\"} 1\n\
             umsd_cmpp_submit_resp_seconds_bucket{channel=\"sms4\",le=\"0.0005\"} 9\n",
        );
        let b = scrape_buckets(&s, SUBMIT_RESP_METRIC, &[("channel", "sms1")]);
        assert_eq!(b, vec![(0.0005, 1.0), (0.001, 3.0), (f64::INFINITY, 4.0)]);
        let mut h = openloop::new_histogram().unwrap();
        for us in [50, 200, 200, 700, 30_000] {
            h.record(us).unwrap();
        }
        let b = hdr_buckets(&h, &[0.0001, 0.00025, 0.001]);
        assert_eq!(
            b,
            vec![
                (0.0001, 1.0),
                (0.00025, 3.0),
                (0.001, 4.0),
                (f64::INFINITY, 5.0)
            ]
        );
    }

    #[test]
    fn buckets_are_umsds() {
        assert_eq!(
            UMSD_LATENCY_BUCKETS.as_slice(),
            umsd_actors::metrics::LATENCY_BUCKETS
        );
    }

    #[test]
    fn rates_from_timestamps() {
        // 11 SUBMITs 100 ms apart: 10 gaps in 1 s
        let t: Vec<u64> = (0..11).map(|i| 5_000 + i * 100).collect();
        assert_eq!(span_rate(&t), Some(10.0));
        assert_eq!(span_rate(&[7]), None);
        assert_eq!(span_rate(&[]), None);
        // a burst of 50 in the first second, then 500/s for 12 s
        let mut t: Vec<u64> = (0..50).map(|i| 1_000 + i).collect();
        t.extend((0..6000).map(|i| 2_000 + i * 2));
        assert_eq!(window_rate(&t, 2_000, 10_000), Some(500.0));
        // from the first SUBMIT: the burst of 50 and 9 s at 500/s
        assert_eq!(window_rate(&t, 1_000, 10_000), Some(455.0));
        // a window the SUBMITs do not cover
        assert_eq!(window_rate(&t, 2_000, 20_000), None);
        assert_eq!(window_rate(&t, 2_000, 0), None);
        let (err, pass) = rate_verdict(524.0, 500.0);
        assert!((err - 0.048).abs() < 1e-12 && pass);
        assert!(!rate_verdict(474.0, 500.0).1);
        assert!(rate_verdict(475.0, 500.0).1);
    }

    #[test]
    fn rate_checks_see_a_mid_run_burst() {
        // 10 per second for 30 s after a burst of 30, and 10 extra in second 20
        let mut t: Vec<u64> = (0..30).map(|i| i * 10).collect();
        t.extend((0..300).map(|i| 1_000 + i * 100));
        t.extend((0..10).map(|i| 20_000 + i * 10));
        t.sort_unstable();
        assert_eq!(max_window_count(&t, 1_000, 1_000), Some(20));
        assert_eq!(max_window_count(&t, 1_000, 10_000), Some(110));
        // the burst at the start is skipped
        assert_eq!(max_window_count(&t, 0, 1_000), Some(30));
        // no window of 40 s fits
        assert_eq!(max_window_count(&t, 1_000, 40_000), None);
        assert_eq!(max_window_count(&[], 0, 1_000), None);
        let r = rate_check(&t, 10.0, 4, 1_000, 10_000).unwrap();
        // the rule's window (1 s to 11 s) misses the extra ten
        assert_eq!(r.measured, Some(10.0));
        assert!(r.pass);
        assert_eq!(r.worst_window_rate, Some(11.0));
        assert!((r.worst_window_error.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(r.peak_1s, Some(20));
        // 310 SUBMITs from 1.0 s to 30.9 s
        let steady = r.steady_rate.unwrap();
        assert!((steady - 309.0 / 29.9).abs() < 1e-9, "{steady}");
        assert!(rate_check(&[], 10.0, 4, 1_000, 10_000).is_none());
    }

    #[test]
    fn rate_series_bins() {
        let t = [1_000, 1_200, 1_999, 3_500, 900];
        assert_eq!(
            rate_series(&t, 1_000, 1000),
            vec![(0.5, 3.0), (1.5, 0.0), (2.5, 1.0)]
        );
        // 100 ms bins: counts x 10 per second, starting at the first non-empty bin
        assert_eq!(
            rate_series(&[1_250, 1_260, 1_450], 1_000, 100),
            vec![(0.25, 20.0), (0.35, 0.0), (0.45, 10.0)]
        );
        assert!(rate_series(&[], 0, 100).is_empty());
    }

    #[test]
    fn submits_look_like_umsds() {
        let s = submit_template("900001", "+8613900000001").unwrap();
        assert_eq!(s.pk_total, 1);
        assert_eq!(s.registered_delivery, 1);
        assert_eq!(s.msg_content, sims::IM_TEXT.as_bytes());
        let mut codec = CmppCodec::new(Version::V30);
        let mut wire = bytes::BytesMut::new();
        tokio_util::codec::Encoder::encode(
            &mut codec,
            Frame::new(2, Pdu::Submit(s.clone())),
            &mut wire,
        )
        .unwrap();
        let back = tokio_util::codec::Decoder::decode(&mut codec, &mut wire)
            .unwrap()
            .unwrap();
        assert_eq!(back.pdu, Pdu::Submit(s));
    }

    #[tokio::test]
    async fn client_loop_against_the_simulator() {
        let a = CmppArgs {
            target: crate::TargetArgs {
                target: None,
                umsd_bin: "x".into(),
                umsd_config: None,
                data_dir: None,
                keep: false,
                port: None,
                ready_timeout_s: 1,
                stop_timeout_s: 1,
                database_url: None,
                umsd_pid: None,
                app_key: "demo".into(),
                app_secret: "s".into(),
                out: None,
                threads: 1,
                max_total_s: 10,
            },
            users: 10,
            messages: 1,
            window: 4,
            sim_seconds: 0.3,
            rate: 500.0,
            rate_window_s: 10.0,
            sim_threads: 1,
            send_concurrency: 1,
            deadline_s: 10,
        };
        assert!(check_args(&a).is_ok());
        let sim = IsmgConfig {
            report_delay_ms: 10,
            ..sim_config(&a)
        };
        let sim = ismg::start(sim).unwrap();
        let r = measure_alone(&sim, 2, a.window, Duration::from_millis(300))
            .await
            .unwrap();
        assert!(r.accepted > 0 && r.refused == 0, "{r:?}");
        assert!(r.reports > 0, "{r:?}");
        assert_eq!(r.latency.count, r.accepted);
        assert_eq!(r.latency_bucketed.count, r.accepted);
        assert!(sim.stats().deliver_resps > 0);
        assert_eq!(sim.stats().malformed, 0);
        tokio::task::spawn_blocking(move || sim.shutdown())
            .await
            .unwrap();
    }

    #[test]
    fn defaults_match_the_brief() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: CmppArgs,
        }
        let t = T::try_parse_from(["t"]).unwrap();
        assert_eq!((t.a.users, t.a.messages, t.a.window), (1000, 20, 16));
        assert_eq!(t.a.sim_seconds, 5.0);
        assert_eq!(t.a.rate, 500.0);
        assert_eq!(t.a.rate_window_s, 10.0);
        assert!(check_args(&t.a).is_ok());
        let bad = T::try_parse_from(["t", "--window", "0"]).unwrap();
        assert!(check_args(&bad.a).is_err());
        let bad = T::try_parse_from(["t", "--rate", "0"]).unwrap();
        assert!(check_args(&bad.a).is_err());
    }
}
