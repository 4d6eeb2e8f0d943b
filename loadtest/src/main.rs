//! `umsd-loadtest`: open-loop load tests for umsd.
//!
//! Subcommands: `bench` (R_http, R_copy and R_daemon side by side, their ratio, a steady
//! run with CPU per accepted message), `run` (one fixed rate for a fixed time),
//! `find-max` (the maximum sustainable rate of one route), `fanout` (one message to many
//! users through provider simulators, compared with the simulators alone), `backlog`
//! (umsd's memory while a large backlog of deliveries drains) and `cmpp` (SMS over CMPP
//! against the ISMG simulator, compared with the simulator alone; the rate limit's
//! accuracy), `urgent` (high-priority messages behind a backlog of a million
//! deliveries) and `strategy` (a fallback strategy over a million-user broadcast: its
//! deadlines' lateness per target, exact counts, umsd's memory). Without `--target` the
//! harness starts its own umsd on a fresh data directory and stops it at the end; every
//! run is bounded in time and requests, and only loopback targets are accepted. Results
//! go to `--out` (default `loadtest/results/<run id>/`): `result.json` and `chart.svg`.

mod copy;
mod cpu;
mod daemon;
mod db;
mod metrics;
mod openloop;
mod report;
mod scenarios;
mod search;
mod sims;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use scenarios::backlog::BacklogArgs;
use scenarios::bench::BenchArgs;
use scenarios::cmpp::CmppArgs;
use scenarios::fanout::FanoutArgs;
use scenarios::simple::{FindMaxArgs, RunArgs};
use scenarios::strategy::StrategyArgs;
use scenarios::urgent::UrgentArgs;

#[derive(Debug, Parser)]
#[command(
    name = "umsd-loadtest",
    version,
    about = "Open-loop load tests for umsd (loopback targets only)",
    long_about = "Open-loop load tests for umsd. Requests are sent at a fixed arrival rate over \
                  a fixed set of keep-alive HTTP/1.1 connections; latency is measured from each \
                  request's intended send time (coordinated omission corrected). Without \
                  --target a umsd is started on a fresh temporary data directory and stopped \
                  with SIGTERM at the end. Results: <out>/result.json and <out>/chart.svg."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// R_http (null route), R_copy (binary COPY) and R_daemon (durable sends) side by side,
    /// ratio = R_daemon / (1 / (1/R_http + 1/R_copy)), a count check against the database,
    /// R_e2e (accepted and delivered) on the inbox and a webhook channel, and a steady run
    /// at a fraction of R_e2e_inbox with accept → delivered latency and CPU-µs per
    /// delivered message. Every phase starts on a quiet daemon.
    Bench(BenchArgs),
    /// One fixed rate for a fixed time against one route.
    Run(RunArgs),
    /// The maximum sustainable rate of one route.
    FindMax(FindMaxArgs),
    /// One message → U users on one webhook channel (or, with --mixed, on webhook, WeCom,
    /// Feishu and the inbox at once) through provider simulators, compared with the
    /// webhook simulator alone in the same run: R_umsd / R_sim, accept→submit latency,
    /// CPU per delivery.
    Fanout(FanoutArgs),
    /// umsd's memory while a backlog of U × M deliveries (default 1 000 000) on a WeCom
    /// channel drains: RSS, queue depth and deliveries sampled every second.
    Backlog(BacklogArgs),
    /// SMS over CMPP: SUBMITs/s and SUBMIT → SUBMIT_RESP latency of `sms_cmpp` channels
    /// with 1 and 4 sessions against the ISMG simulator, side by side with the simulator
    /// driven by a minimal client loop; the channel rate limit's accuracy (±5 %).
    Cmpp(CmppArgs),
    /// High-priority messages behind a backlog (default 1 000 000 deliveries on a
    /// rate-limited webhook channel): their accept → submitted latency while a normal
    /// stream runs on the same channel; PASS when every one was submitted with p99 within
    /// --max-p99-ms.
    Urgent(UrgentArgs),
    /// A fallback strategy at scale: one broadcast to U users (default 1 000 000), step 1
    /// on a webhook channel that a share of them (--delivered-share, 0.2) are bound to,
    /// step 2 on the inbox for every target not delivered within --within-s (180).
    /// Exact counts (fired = held, fired + settled = U, no duplicates), each target's
    /// step-2 lateness from the database, umsd's RSS while the deadlines are pending and
    /// while they fire; PASS when the counts hold, RSS peak <= --max-rss-mb and lateness
    /// p99 <= --max-p99-ms.
    Strategy(StrategyArgs),
}

/// Which endpoint the load goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    /// `POST /bench/messages`: parsed and validated, stored nowhere (needs
    /// `[bench] null_route = true`).
    Bench,
    /// `POST /v1/messages`: durable accepts.
    Send,
}

impl Route {
    pub fn path(self) -> &'static str {
        match self {
            Route::Bench => "/bench/messages",
            Route::Send => "/v1/messages",
        }
    }
}

/// The system under test and where results go.
#[derive(Debug, Clone, Args, Serialize)]
#[command(next_help_heading = "Target")]
pub struct TargetArgs {
    /// Base URL of an already running umsd (loopback only: 127.0.0.0/8, ::1, localhost).
    /// Without it the harness starts its own umsd.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// umsd binary to start (relative to the current directory, normally the workspace
    /// root).
    #[arg(long, value_name = "PATH", default_value = "target/release/umsd")]
    pub umsd_bin: PathBuf,
    /// Config file for a started umsd instead of the one the harness writes (which enables
    /// the null route and the demo app with an inbox channel).
    #[arg(long, value_name = "FILE")]
    pub umsd_config: Option<PathBuf>,
    /// Data directory for a started umsd (kept afterwards). Default: a fresh temporary
    /// directory, removed afterwards unless --keep.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep the temporary data directory of a started umsd.
    #[arg(long)]
    pub keep: bool,
    /// Loopback port for a started umsd (default: a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// How long a started umsd may take to answer 200 on /readyz.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub ready_timeout_s: u64,
    /// How long to wait for a started umsd to exit after SIGTERM before SIGKILL.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub stop_timeout_s: u64,
    /// Database of a running umsd (libpq URL or key=value string); needed with --target for
    /// R_copy and the count checks. A started umsd's embedded cluster is found by itself.
    #[arg(long, value_name = "URL")]
    #[serde(skip)]
    pub database_url: Option<String>,
    /// Pid of a running umsd, for CPU accounting with --target.
    #[arg(long)]
    pub umsd_pid: Option<u32>,
    /// App key for HTTP Basic auth.
    #[arg(long, default_value = "demo")]
    pub app_key: String,
    /// App secret for HTTP Basic auth.
    #[arg(long, default_value = "demo-secret")]
    #[serde(skip)]
    pub app_secret: String,
    /// Output directory [default: loadtest/results/<run id>/].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Hard limit on the whole run; it is stopped (and the daemon with it) after this.
    #[arg(long, value_name = "SECONDS", default_value_t = 1800)]
    pub max_total_s: u64,
}

/// How load is offered.
#[derive(Debug, Clone, Args, Serialize)]
#[command(next_help_heading = "Load")]
pub struct LoadArgs {
    /// Keep-alive HTTP/1.1 connections (one worker each). A durable accept takes a few
    /// milliseconds (it waits for COMMIT), so by Little's law C connections cap the rate at
    /// C / latency: keep C well above rate × p99 so that the client is never the limit.
    #[arg(long, default_value_t = 256)]
    pub connections: usize,
    /// Longest wait for one answer; a request not answered by then counts as a timeout.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Upper bound on the requests of any one phase.
    #[arg(long, value_name = "N", default_value_t = 2_000_000)]
    pub max_requests: u64,
}

/// How the maximum sustainable rate is searched.
#[derive(Debug, Clone, Args, Serialize)]
#[command(next_help_heading = "Rate search")]
pub struct SearchArgs {
    /// First rate tried (req/s).
    #[arg(long, default_value_t = 2000.0)]
    pub start_rate: f64,
    /// Each step up multiplies the rate by this (a failing first step divides by it).
    #[arg(long, default_value_t = 1.3)]
    pub step_factor: f64,
    /// Length of each step.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub step_seconds: f64,
    /// Pause between steps, to let the system settle.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub settle_ms: u64,
    /// Bisection steps between the last passing and the first failing rate.
    #[arg(long, default_value_t = 2)]
    pub bisect_steps: u32,
    /// Lowest rate tried when stepping down.
    #[arg(long, default_value_t = 100.0)]
    pub min_rate: f64,
    /// Highest rate tried.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub max_rate: f64,
    /// Most steps of one search.
    #[arg(long, default_value_t = 25)]
    pub max_steps: u32,
    /// A step passes only if its p99 latency is at most this.
    #[arg(long, value_name = "MS", default_value_t = 100.0)]
    pub p99_max_ms: f64,
    /// A step passes only if achieved throughput is at least this fraction of the target.
    #[arg(long, default_value_t = 0.97)]
    pub min_throughput: f64,
}

impl Cmd {
    fn target(&self) -> &TargetArgs {
        match self {
            Cmd::Bench(a) => &a.target,
            Cmd::Run(a) => &a.target,
            Cmd::FindMax(a) => &a.target,
            Cmd::Fanout(a) => &a.target,
            Cmd::Backlog(a) => &a.target,
            Cmd::Cmpp(a) => &a.target,
            Cmd::Urgent(a) => &a.target,
            Cmd::Strategy(a) => &a.target,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Cmd::Bench(_) => "bench",
            Cmd::Run(_) => "run",
            Cmd::FindMax(_) => "find-max",
            Cmd::Fanout(_) => "fanout",
            Cmd::Backlog(_) => "backlog",
            Cmd::Cmpp(_) => "cmpp",
            Cmd::Urgent(_) => "urgent",
            Cmd::Strategy(_) => "strategy",
        }
    }

    fn parameters(&self) -> Result<serde_json::Value> {
        Ok(match self {
            Cmd::Bench(a) => serde_json::to_value(a)?,
            Cmd::Run(a) => serde_json::to_value(a)?,
            Cmd::FindMax(a) => serde_json::to_value(a)?,
            Cmd::Fanout(a) => serde_json::to_value(a)?,
            Cmd::Backlog(a) => serde_json::to_value(a)?,
            Cmd::Cmpp(a) => serde_json::to_value(a)?,
            Cmd::Urgent(a) => serde_json::to_value(a)?,
            Cmd::Strategy(a) => serde_json::to_value(a)?,
        })
    }
}

/// Seconds from a flag, checked.
pub fn seconds(v: f64, flag: &str) -> Result<Duration> {
    if v.is_finite() && v > 0.0 && v < 86_400.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(anyhow!(
            "{flag} must be a positive number of seconds below a day"
        ))
    }
}

/// An HTTP client builder, with the process's TLS provider installed first (HTTPS-capable
/// clients need one).
pub fn http_builder() -> reqwest::ClientBuilder {
    umsd_sim::init_tls();
    reqwest::Client::builder()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = cli.cmd.target().threads.max(1);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the runtime")
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(scenarios::main(cli.cmd)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_brief() {
        let cli = Cli::try_parse_from(["umsd-loadtest", "bench"]).unwrap();
        let Cmd::Bench(a) = cli.cmd else {
            panic!("not bench")
        };
        assert_eq!(a.load.connections, 256);
        assert_eq!(a.search.start_rate, 2000.0);
        assert_eq!(a.search.step_factor, 1.3);
        assert_eq!(a.search.p99_max_ms, 100.0);
        assert_eq!(a.search.min_throughput, 0.97);
        assert_eq!(a.steady_seconds, 20.0);
        assert_eq!(a.steady_fraction, 0.8);
        assert_eq!(a.copy_messages, 200_000);
        assert_eq!(a.target.umsd_bin, PathBuf::from("target/release/umsd"));
        // secrets stay out of the report
        let v = serde_json::to_value(&a).unwrap();
        assert!(v["target"].get("app_secret").is_none());
        assert!(v["target"].get("database_url").is_none());

        let cli = Cli::try_parse_from([
            "umsd-loadtest",
            "run",
            "--route",
            "send",
            "--rate",
            "500",
            "--target",
            "http://127.0.0.1:8080",
        ])
        .unwrap();
        let Cmd::Run(a) = cli.cmd else {
            panic!("not run")
        };
        assert_eq!(a.route, Route::Send);
        assert_eq!(a.route.path(), "/v1/messages");

        let cli = Cli::try_parse_from(["umsd-loadtest", "fanout", "--mixed"]).unwrap();
        let Cmd::Fanout(a) = cli.cmd else {
            panic!("not fanout")
        };
        assert!(a.mixed);
        assert_eq!(a.connections, 32);
        let cli = Cli::try_parse_from(["umsd-loadtest", "backlog", "--messages", "10"]).unwrap();
        let Cmd::Backlog(a) = cli.cmd else {
            panic!("not backlog")
        };
        assert_eq!((a.users, a.messages), (1000, 10));
        let cli = Cli::try_parse_from(["umsd-loadtest", "cmpp", "--rate", "200"]).unwrap();
        let Cmd::Cmpp(a) = cli.cmd else {
            panic!("not cmpp")
        };
        assert_eq!((a.rate, a.messages, a.window), (200.0, 20, 16));
        let cli = Cli::try_parse_from(["umsd-loadtest", "urgent", "--seconds", "5"]).unwrap();
        let Cmd::Urgent(a) = cli.cmd else {
            panic!("not urgent")
        };
        assert_eq!((a.seconds, a.high_every_ms), (5.0, 250));
        let cli = Cli::try_parse_from(["umsd-loadtest", "strategy", "--users", "20000"]).unwrap();
        let Cmd::Strategy(a) = cli.cmd else {
            panic!("not strategy")
        };
        assert_eq!((a.users, a.within_s), (20_000, 180));
        let cli =
            Cli::try_parse_from(["umsd-loadtest", "bench", "--e2e-channels", "inbox"]).unwrap();
        let Cmd::Bench(a) = cli.cmd else {
            panic!("not bench")
        };
        assert_eq!(a.e2e_channels().len(), 1);
    }

    #[test]
    fn seconds_are_checked() {
        assert!(seconds(0.0, "--x").is_err());
        assert!(seconds(f64::NAN, "--x").is_err());
        assert_eq!(seconds(2.5, "--x").unwrap(), Duration::from_millis(2500));
    }
}
