//! The scenarios and what they share: setting up the target (started or running), the run
//! context that numbers requests and collects phases, the rate-search driver, and the
//! common ending (stop the daemon, write `result.json` and `chart.svg`, print the summary).
//!
//! The delivery scenarios (`fanout`, `backlog`, `cmpp`) first start their provider
//! simulators (and `fanout` and `cmpp` measure them alone), then start umsd with a config
//! pointing at them.

pub mod backlog;
mod bench;
pub mod cmpp;
mod deliver;
pub mod fanout;
mod simple;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

use crate::cpu::Probe;
use crate::daemon::{self, Daemon, StartOptions};
use crate::db::{self, CountCheck, DbTarget};
use crate::openloop::{self, Endpoint, LoadSpec, PhaseResult};
use crate::report::{self, Environment, Report, SearchSummary, StepRecord};
use crate::search::{self, Criteria, RateSearch, SearchParams};
use crate::{seconds, Cmd, LoadArgs, Route, SearchArgs};

/// Exit code when a count check or a pass rule failed (the run itself completed).
const EXIT_CHECK_FAILED: u8 = 2;

/// What a scenario sets up before its daemon starts.
enum Setup {
    None,
    Fanout(fanout::Setup),
    Backlog(backlog::Setup),
    Cmpp(cmpp::Setup),
}

impl Setup {
    /// The config the started daemon gets instead of the default one.
    fn config_text(&self) -> Option<String> {
        match self {
            Setup::None => None,
            Setup::Fanout(s) => Some(s.config.clone()),
            Setup::Backlog(s) => Some(s.config.clone()),
            Setup::Cmpp(s) => Some(s.config.clone()),
        }
    }
}

/// Everything a scenario works with.
pub struct Ctx {
    pub endpoint: Endpoint,
    pub base_url: String,
    pub run_id: String,
    pub run_start: Instant,
    pub authorization: String,
    pub app_key: String,
    pub app_secret: String,
    pub load: LoadArgs,
    pub db: Option<DbTarget>,
    pub probe: Probe,
    /// Global request counter: every request of the run gets a distinct index.
    pub next_index: u64,
    pub report: Report,
}

impl Ctx {
    /// The `message_id` prefix of one group of phases, e.g. `lt-<run>-d-`.
    pub fn prefix(&self, group: &str) -> String {
        format!("lt-{}-{group}-", self.run_id)
    }

    /// Runs one load phase and appends it to the report; returns its index.
    pub async fn phase(
        &mut self,
        name: &str,
        route: Route,
        rate: f64,
        duration: Duration,
        id_prefix: &str,
    ) -> Result<usize> {
        let spec = LoadSpec {
            rate,
            duration,
            max_requests: self.load.max_requests,
            connections: self.load.connections,
            timeout: Duration::from_millis(self.load.timeout_ms.max(1)),
            path: route.path().to_owned(),
            authorization: self.authorization.clone(),
            id_prefix: id_prefix.to_owned(),
            first_index: self.next_index,
        };
        self.next_index += openloop::planned_requests(rate, duration, spec.max_requests);
        let r = openloop::run_phase(name, &self.endpoint, &spec, self.run_start).await?;
        self.report.phases.push(r);
        Ok(self.report.phases.len() - 1)
    }

    pub fn phase_result(&self, i: usize) -> Result<&PhaseResult> {
        self.report
            .phases
            .get(i)
            .ok_or_else(|| anyhow!("no phase {i}"))
    }

    /// One request through the ordinary HTTP client, to fail early and clearly when the
    /// route is missing or the credentials are wrong.
    pub async fn preflight(&mut self, route: Route) -> Result<()> {
        let index = self.next_index;
        self.next_index += 1;
        let id = format!("{}{index}", self.prefix("p"));
        let client = crate::http_builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let resp = client
            .post(format!("{}{}", self.base_url, route.path()))
            .basic_auth(&self.app_key, Some(&self.app_secret))
            .header("content-type", "application/json")
            .body(openloop::message_body(&id, index))
            .send()
            .await
            .with_context(|| format!("preflight POST {}", route.path()))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() {
            return Ok(());
        }
        let hint = match (route, status.as_u16()) {
            (Route::Bench, 404) => " (is `[bench] null_route = true` in the daemon's config?)",
            (_, 401) => " (check --app-key / --app-secret)",
            _ => "",
        };
        bail!(
            "preflight POST {} answered {status}{hint}: {}",
            route.path(),
            body.chars().take(300).collect::<String>()
        )
    }

    /// Steps the rate as [`RateSearch`] says until it is done; each step a phase.
    pub async fn find_max(
        &mut self,
        label: &str,
        route: Route,
        s: &SearchArgs,
        id_prefix: &str,
    ) -> Result<SearchSummary> {
        let params = SearchParams {
            start_rate: s.start_rate,
            factor: s.step_factor,
            min_rate: s.min_rate,
            max_rate: s.max_rate,
            bisect_steps: s.bisect_steps,
            max_steps: s.max_steps,
        };
        let criteria = Criteria {
            min_throughput_ratio: s.min_throughput,
            p99_max_ms: s.p99_max_ms,
        };
        let step = seconds(s.step_seconds, "--step-seconds")?;
        let mut search = RateSearch::new(params.clone());
        if search.next_rate().is_none() {
            bail!(
                "invalid rate search parameters (need --step-factor > 1, --max-rate >= --min-rate)"
            );
        }
        let mut steps = Vec::new();
        let (mut ok_2xx, mut unknown) = (0u64, 0u64);
        let mut best_achieved = None;
        while let Some(rate) = search.next_rate() {
            if !steps.is_empty() {
                tokio::time::sleep(Duration::from_millis(s.settle_ms)).await;
            }
            let name = format!("{label} step {} @ {rate:.0}/s", steps.len() + 1);
            let i = self.phase(&name, route, rate, step, id_prefix).await?;
            let r = self.phase_result(i)?;
            let reasons = search::judge(r, &criteria);
            let passed = reasons.is_empty();
            ok_2xx += r.ok_2xx;
            unknown += r.timeouts + r.errors;
            eprintln!(
                "[{label}] {rate:>9.0}/s: achieved {:>9.0}/s, p50 {:>7.2} ms, p99 {:>8.2} ms, \
                 {} ok, client {:.2} cores: {}",
                r.achieved_rate,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.ok_2xx,
                r.client_cpu_cores,
                if passed {
                    "pass".to_owned()
                } else {
                    format!("FAIL ({})", reasons.join("; "))
                }
            );
            if passed && search.best().is_none_or(|b| rate > b) {
                best_achieved = Some(r.achieved_rate);
            }
            search.record(rate, passed);
            steps.push(StepRecord {
                rate,
                passed,
                reasons,
                phase: i,
            });
        }
        Ok(SearchSummary {
            path: route.path().to_owned(),
            params,
            criteria,
            max_rate: search.best(),
            max_rate_achieved: best_achieved,
            first_fail: search.first_fail(),
            steps,
            ok_2xx,
            unknown_fate: unknown,
            id_prefix: id_prefix.to_owned(),
        })
    }

    /// Compares 2xx answers with stored rows under `prefix`, records the check and a
    /// problem if they differ.
    pub async fn count_check(
        &mut self,
        what: &str,
        prefix: &str,
        answered: u64,
        unknown: u64,
    ) -> Result<Option<CountCheck>> {
        let Some(target) = &self.db else {
            self.report.problems.push(format!(
                "count check `{what}` skipped: no database (pass --database-url with --target)"
            ));
            return Ok(None);
        };
        let client = db::connect(target).await?;
        let app_id = db::app_id(&client, &self.app_key).await?;
        let check = db::count_check(&client, what, app_id, prefix, answered, unknown).await?;
        if !check.ok {
            let mut msg = format!(
                "COUNT MISMATCH ({what}): {} 2xx answers but {} rows in messages and {} in \
                 message_keys under `{prefix}`",
                check.answered_2xx, check.rows_in_messages, check.rows_in_message_keys
            );
            if unknown > 0 {
                msg.push_str(&format!(
                    " ({unknown} requests timed out or broke; they may have been stored)"
                ));
            }
            eprintln!("\n!!! {msg} !!!\n");
            self.report.problems.push(msg);
        }
        self.report.count_checks.push(check.clone());
        Ok(Some(check))
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
    let charted = match (&report.fanout, &report.backlog, &report.cmpp) {
        (Some(f), _, _) => report::write_panels(&chart, &title, &f.panels()),
        (None, Some(b), _) => report::write_panels(&chart, &title, &b.panels()),
        (None, None, Some(c)) => report::write_panels(&chart, &title, &c.panels()),
        (None, None, None) if matches!(cmd, Cmd::Fanout(_) | Cmd::Backlog(_) | Cmd::Cmpp(_)) => {
            Ok(())
        }
        (None, None, None) => report::write_chart(&report, &chart),
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
        || report.cmpp.as_ref().is_some_and(|c| c.pass == Some(false));
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
        Cmd::Bench(_) | Cmd::Run(_) | Cmd::FindMax(_) => Setup::None,
    })
}

async fn run_scenario(ctx: &mut Ctx, cmd: &Cmd, setup: Setup) -> Result<()> {
    match (cmd, setup) {
        (Cmd::Bench(a), _) => bench::run(ctx, a).await,
        (Cmd::Run(a), _) => simple::run(ctx, a).await,
        (Cmd::FindMax(a), _) => simple::find_max(ctx, a).await,
        (Cmd::Fanout(a), Setup::Fanout(s)) => fanout::run(ctx, a, s).await,
        (Cmd::Backlog(a), Setup::Backlog(s)) => backlog::run(ctx, a, s).await,
        (Cmd::Cmpp(a), Setup::Cmpp(s)) => cmpp::run(ctx, a, s).await,
        (Cmd::Fanout(_) | Cmd::Backlog(_) | Cmd::Cmpp(_), _) => {
            Err(anyhow!("scenario set up wrongly"))
        }
    }
}
