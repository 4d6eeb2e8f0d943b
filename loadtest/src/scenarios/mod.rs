//! The scenarios and what they share: setting up the target (started or running), the run
//! context that numbers requests and collects phases ([`Ctx`], with the rate-search
//! driver), and the common ending (stop the daemon, write `result.json` and `chart.svg`,
//! print the summary).
//!
//! The delivery scenarios (`fanout`, `backlog`, `cmpp`, `urgent`, `strategy`) first start their
//! provider simulators (and `fanout` and `cmpp` measure them alone), then start umsd with
//! a config pointing at them; so does `bench` for its webhook end-to-end search. Each of them is a folder: its arguments (`args`), what it sets up
//! before umsd starts (`setup`), how it drives and measures umsd (`run`), and its figures,
//! verdicts and rendering (`report`).

pub mod backlog;
pub mod bench;
pub mod cmpp;
mod ctx;
mod deliver;
pub mod fanout;
pub mod pipeline;
pub mod simple;
mod stats;
pub mod strategy;
pub mod urgent;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

use crate::cpu::Probe;
use crate::daemon::{self, Daemon, StartOptions};
use crate::db::DbTarget;
use crate::report::{self, Environment, Report};
use crate::{Cmd, LoadArgs};

pub use ctx::Ctx;

/// Exit code when a count check or a pass rule failed (the run itself completed).
const EXIT_CHECK_FAILED: u8 = 2;

/// What a scenario sets up before its daemon starts.
enum Setup {
    None,
    Bench(bench::Setup),
    Fanout(fanout::Setup),
    Backlog(backlog::Setup),
    Cmpp(cmpp::Setup),
    Urgent(urgent::Setup),
    Strategy(strategy::Setup),
}

impl Setup {
    /// The config the started daemon gets instead of the default one.
    fn config_text(&self) -> Option<String> {
        match self {
            Setup::None => None,
            Setup::Bench(s) => s.config.clone(),
            Setup::Fanout(s) => Some(s.config.clone()),
            Setup::Backlog(s) => Some(s.config.clone()),
            Setup::Cmpp(s) => Some(s.config.clone()),
            Setup::Urgent(s) => Some(s.config.clone()),
            Setup::Strategy(s) => Some(s.config.clone()),
        }
    }
}

/// SIGINT and SIGTERM, listened for from the start so neither kills the harness before it
/// has stopped what it started.
struct StopSignal {
    int: Signal,
    term: Signal,
}

impl StopSignal {
    fn new() -> Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "interrupted (SIGINT)",
            _ = self.term.recv() => "terminated (SIGTERM)",
        }
    }
}

fn default_out_dir(run_id: &str) -> PathBuf {
    PathBuf::from("loadtest/results").join(run_id)
}

/// Runs one subcommand end to end; the exit code says whether every check held.
pub async fn main(cmd: Cmd) -> Result<ExitCode> {
    let t = cmd.target().clone();
    let started = chrono::Utc::now();
    let run_id = format!(
        "{}-{}",
        started.format("%Y%m%dT%H%M%S"),
        std::process::id() % 100_000
    );
    let out_dir = t.out.clone().unwrap_or_else(|| default_out_dir(&run_id));
    let mut report = Report {
        tool: "umsd-loadtest".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        scenario: cmd.name().to_owned(),
        run_id: run_id.clone(),
        started_at: started.to_rfc3339(),
        parameters: cmd.parameters()?,
        ..Default::default()
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = match &cmd {
        Cmd::Bench(a) => a.load.clone(),
        Cmd::Run(a) => a.load.clone(),
        Cmd::FindMax(a) => a.load.clone(),
        // (the delivery scenarios do not use the open-loop generator)
        Cmd::Fanout(a) => LoadArgs {
            connections: a.connections,
            timeout_ms: 5000,
            max_requests: 0,
        },
        Cmd::Backlog(a) => LoadArgs {
            connections: a.send_concurrency,
            timeout_ms: 5000,
            max_requests: 0,
        },
        Cmd::Cmpp(a) => LoadArgs {
            connections: a.send_concurrency,
            timeout_ms: 5000,
            max_requests: 0,
        },
        Cmd::Urgent(a) => LoadArgs {
            connections: a.connections,
            timeout_ms: 5000,
            max_requests: 2_000_000,
        },
        Cmd::Strategy(a) => LoadArgs {
            connections: a.user_concurrency,
            timeout_ms: 5000,
            max_requests: 0,
        },
    };

    // SIGINT and SIGTERM end the run in order (stopping a started daemon) from here on.
    let mut stop_signal = StopSignal::new()?;
    // --max-total-s bounds everything from here: setup, start, scenario.
    let max_total = Duration::from_secs(t.max_total_s.max(1));
    let run_deadline = Instant::now() + max_total;

    // Simulators (and the simulators-alone phase) before any daemon.
    let setup = tokio::select! {
        r = tokio::time::timeout_at(run_deadline, prepare(&cmd)) => match r {
            Ok(s) => s?,
            Err(_) => bail!("the run exceeded --max-total-s {} while setting up", t.max_total_s),
        },
        sig = stop_signal.recv() => bail!("{sig} while setting up"),
    };

    // The target: a running daemon, or one we start.
    let mut started_daemon: Option<Daemon> = None;
    let (endpoint, base_url, db_target, probe) = match &t.target {
        Some(url) => {
            let (parsed, ep) = daemon::loopback_endpoint(url).await?;
            let base = parsed.as_str().trim_end_matches('/').to_owned();
            let db = t.database_url.clone().map(DbTarget::Url);
            let probe = Probe {
                umsd_pid: t.umsd_pid,
                postmaster_pid: None,
            };
            (ep, base, db, probe)
        }
        None => {
            let opts = StartOptions {
                bin: t.umsd_bin.clone(),
                config: t.umsd_config.clone(),
                config_text: setup.config_text(),
                data_dir: t.data_dir.clone(),
                keep: t.keep,
                port: t.port,
                ready_timeout: Duration::from_secs(t.ready_timeout_s),
                stop_timeout: Duration::from_secs(t.stop_timeout_s),
                out_dir: out_dir.clone(),
            };
            eprintln!("starting {} …", t.umsd_bin.display());
            // Interrupting the start drops the half-started daemon, which stops it.
            let d = tokio::select! {
                d = Daemon::start(&opts) => d?,
                sig = stop_signal.recv() => bail!("{sig} while starting umsd"),
            };
            eprintln!("umsd (pid {}) ready at {}", d.pid(), d.base_url);
            let db = Some(match &t.database_url {
                Some(url) => DbTarget::Url(url.clone()),
                None => DbTarget::Embedded {
                    socket_dir: d.pg_dir(),
                },
            });
            let probe = Probe {
                umsd_pid: Some(d.pid()),
                postmaster_pid: crate::cpu::postmaster_pid(&d.pg_dir()),
            };
            let r = (d.endpoint.clone(), d.base_url.clone(), db, probe);
            started_daemon = Some(d);
            r
        }
    };
    // (created only now, so a refused target leaves no empty result directory)
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    report.environment = Environment {
        cores,
        harness_threads: t.threads.max(1),
        target: base_url.clone(),
        started_daemon: started_daemon.is_some(),
        umsd_bin: started_daemon
            .as_ref()
            .map(|_| t.umsd_bin.display().to_string()),
        umsd_pid: probe.umsd_pid,
        umsd_config: started_daemon
            .as_ref()
            .map(|d| d.config_path.display().to_string()),
        umsd_log: started_daemon
            .as_ref()
            .map(|d| d.log_path.display().to_string()),
        data_dir: started_daemon
            .as_ref()
            .map(|d| d.data_dir.display().to_string()),
        database: db_target.as_ref().map(DbTarget::describe),
    };

    let credentials = format!("{}:{}", t.app_key, t.app_secret);
    let mut ctx = Ctx {
        endpoint,
        base_url,
        run_id,
        run_start: Instant::now(),
        authorization: format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        ),
        app_key: t.app_key.clone(),
        app_secret: t.app_secret.clone(),
        load,
        db: db_target,
        probe,
        next_index: 0,
        report,
    };

    let outcome = tokio::select! {
        r = tokio::time::timeout_at(run_deadline, run_scenario(&mut ctx, &cmd, setup)) => match r {
            Ok(r) => r,
            Err(_) => Err(anyhow!("the run exceeded --max-total-s {}", t.max_total_s)),
        },
        sig = stop_signal.recv() => Err(anyhow!("{sig}: run stopped")),
    };

    // Always stop what we started, also after an error.
    if let Some(mut d) = started_daemon.take() {
        eprintln!("stopping umsd (pid {}) …", d.pid());
        match d.stop().await {
            Ok(Some(status)) if !status.success() => ctx
                .report
                .problems
                .push(format!("umsd exited with {status} after SIGTERM")),
            Ok(_) => {}
            Err(e) => ctx.report.problems.push(format!("stopping umsd: {e:#}")),
        }
    }

    let mut report = ctx.report;
    if let Err(e) = &outcome {
        report.error = Some(format!("{e:#}"));
    }
    report.finished_at = Some(chrono::Utc::now().to_rfc3339());
    report::write_json(&report, &out_dir.join("result.json"))?;
    let chart = out_dir.join("chart.svg");
    let title = format!("umsd load test {} ({})", report.run_id, report.scenario);
    let charted = match (
        &report.fanout,
        &report.backlog,
        &report.cmpp,
        &report.strategy,
    ) {
        (Some(f), _, _, _) => report::write_panels(&chart, &title, &f.panels()),
        (None, Some(b), _, _) => report::write_panels(&chart, &title, &b.panels()),
        (None, None, Some(c), _) => report::write_panels(&chart, &title, &c.panels()),
        (None, None, None, Some(s)) => report::write_panels(&chart, &title, &s.panels()),
        (None, None, None, None)
            if matches!(
                cmd,
                Cmd::Fanout(_) | Cmd::Backlog(_) | Cmd::Cmpp(_) | Cmd::Strategy(_)
            ) =>
        {
            Ok(())
        }
        (None, None, None, None) => report::write_chart(&report, &chart),
    };
    if let Err(e) = charted {
        eprintln!("chart not written: {e:#}");
    }
    println!("{}", report::summary(&report, &out_dir));
    outcome?;
    let rule_failed = report
        .fanout
        .as_ref()
        .is_some_and(|f| f.pass == Some(false))
        || report
            .backlog
            .as_ref()
            .is_some_and(|b| b.pass == Some(false) || !b.complete)
        || report.cmpp.as_ref().is_some_and(|c| c.pass == Some(false))
        || report
            .urgent
            .as_ref()
            .is_some_and(|u| u.pass == Some(false))
        || report
            .strategy
            .as_ref()
            .is_some_and(|s| s.pass == Some(false));
    if report.count_checks.iter().any(|c| !c.ok) || rule_failed {
        return Ok(ExitCode::from(EXIT_CHECK_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

/// The scenario's own setup before the daemon starts.
async fn prepare(cmd: &Cmd) -> Result<Setup> {
    Ok(match cmd {
        Cmd::Fanout(a) => Setup::Fanout(fanout::prepare(a).await?),
        Cmd::Backlog(a) => Setup::Backlog(backlog::prepare(a)?),
        Cmd::Cmpp(a) => Setup::Cmpp(cmpp::prepare(a).await?),
        Cmd::Urgent(a) => Setup::Urgent(urgent::prepare(a)?),
        Cmd::Strategy(a) => Setup::Strategy(strategy::prepare(a)?),
        Cmd::Bench(a) => Setup::Bench(bench::prepare(a)?),
        Cmd::Run(_) | Cmd::FindMax(_) => Setup::None,
    })
}

async fn run_scenario(ctx: &mut Ctx, cmd: &Cmd, setup: Setup) -> Result<()> {
    match (cmd, setup) {
        (Cmd::Bench(a), Setup::Bench(s)) => bench::run(ctx, a, s).await,
        (Cmd::Run(a), _) => simple::run(ctx, a).await,
        (Cmd::FindMax(a), _) => simple::find_max(ctx, a).await,
        (Cmd::Fanout(a), Setup::Fanout(s)) => fanout::run(ctx, a, s).await,
        (Cmd::Backlog(a), Setup::Backlog(s)) => backlog::run(ctx, a, s).await,
        (Cmd::Cmpp(a), Setup::Cmpp(s)) => cmpp::run(ctx, a, s).await,
        (Cmd::Urgent(a), Setup::Urgent(s)) => urgent::run(ctx, a, s).await,
        (Cmd::Strategy(a), Setup::Strategy(s)) => strategy::run(ctx, a, s).await,
        (
            Cmd::Bench(_)
            | Cmd::Fanout(_)
            | Cmd::Backlog(_)
            | Cmd::Cmpp(_)
            | Cmd::Urgent(_)
            | Cmd::Strategy(_),
            _,
        ) => Err(anyhow!("scenario set up wrongly")),
    }
}
