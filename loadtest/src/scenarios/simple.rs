//! The single-route scenarios: `run` (one fixed rate for a fixed time) and `find-max`
//! (the maximum sustainable rate). Against `POST /v1/messages` both end with a count check
//! when the database is reachable. Their arguments come first, then how each runs; their
//! figures are the run's shared record (`crate::report`).

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use tokio::time::Instant;

use super::Ctx;
use crate::cpu;
use crate::report::SteadySummary;
use crate::{seconds, LoadArgs, Route, SearchArgs, TargetArgs};

#[derive(Debug, Clone, Args, Serialize)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Route to load.
    #[arg(long, value_enum, default_value_t = Route::Bench, help_heading = "Run")]
    pub route: Route,
    /// Requests per second.
    #[arg(long, default_value_t = 1000.0, help_heading = "Run")]
    pub rate: f64,
    /// Length of the run.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10.0,
        help_heading = "Run"
    )]
    pub duration_s: f64,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct FindMaxArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub search: SearchArgs,
    /// Route to search.
    #[arg(long, value_enum, default_value_t = Route::Bench, help_heading = "Route")]
    pub route: Route,
}

pub async fn run(ctx: &mut Ctx, a: &RunArgs) -> Result<()> {
    let duration = seconds(a.duration_s, "--duration-s")?;
    anyhow::ensure!(
        a.rate.is_finite() && a.rate > 0.0,
        "--rate must be positive"
    );
    ctx.preflight(a.route).await?;
    let prefix = ctx.prefix("r");
    let probe = ctx.probe.clone();
    let before = probe.snapshot();
    let t = Instant::now();
    let i = ctx
        .phase(
            &format!("run @ {:.0}/s", a.rate),
            a.route,
            a.rate,
            duration,
            &prefix,
        )
        .await?;
    let window = t.elapsed().as_secs_f64();
    let after = probe.snapshot();
    let r = ctx.phase_result(i)?.clone();
    eprintln!(
        "[run] {} @ {:.0}/s: achieved {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, \
         {} ok, {} non-2xx, {} timeouts, {} errors, {} not sent",
        r.path,
        a.rate,
        r.achieved_rate,
        r.latency.p50_ms,
        r.latency.p99_ms,
        r.latency.p999_ms,
        r.ok_2xx,
        r.non_2xx,
        r.timeouts,
        r.errors,
        r.not_sent
    );
    if a.route == Route::Send {
        let cpu = probe
            .umsd_pid
            .is_some()
            .then(|| cpu::report(&probe, &before, &after, window, r.ok_2xx));
        ctx.report.steady = Some(SteadySummary {
            fraction: 0.0,
            basis: None,
            basis_rate: None,
            rate: a.rate,
            phase: i,
            latency: r.latency.clone(),
            ok_2xx: r.ok_2xx,
            cpu,
            pipeline: None,
            delivery_wait_s: None,
            all_delivered: None,
        });
        ctx.count_check("run", &prefix, r.ok_2xx, r.timeouts + r.errors)
            .await?;
    }
    Ok(())
}

pub async fn find_max(ctx: &mut Ctx, a: &FindMaxArgs) -> Result<()> {
    ctx.preflight(a.route).await?;
    match a.route {
        Route::Bench => {
            let prefix = ctx.prefix("h");
            let s = ctx.find_max("R_http", a.route, &a.search, &prefix).await?;
            ctx.report.r_http = Some(s);
        }
        Route::Send => {
            let prefix = ctx.prefix("d");
            let s = ctx
                .find_max("R_daemon", a.route, &a.search, &prefix)
                .await?;
            let (ok, unknown) = (s.ok_2xx, s.unknown_fate);
            ctx.report.r_daemon = Some(s);
            ctx.count_check("R_daemon search", &prefix, ok, unknown)
                .await?;
        }
    }
    Ok(())
}
