//! The steady run: `--steady-fraction` of R_e2e_inbox (or R_daemon) on the inbox for
//! `--steady-seconds`, started on a quiet daemon. Next to the HTTP latency it reports, from
//! the database, accept → planned and accept → delivered of its messages and the time from
//! the last accept to the last delivery. CPU is measured from the start of the sends
//! until every message is delivered (bounded by `--steady-drain-s`), so that planning and
//! delivery are in it, and divided by the messages delivered.

use anyhow::Result;
use tokio::time::Instant;

use super::args::BenchArgs;
use super::run::Env;
use crate::cpu;
use crate::db;
use crate::report::{opt, SteadySummary};
use crate::scenarios::pipeline;
use crate::scenarios::Ctx;
use crate::{seconds, Route};

pub(super) async fn run(
    ctx: &mut Ctx,
    a: &BenchArgs,
    env: &Env,
    basis: &str,
    basis_rate: f64,
) -> Result<()> {
    let duration = seconds(a.steady_seconds, "--steady-seconds")?;
    let drain = seconds(a.steady_drain_s, "--steady-drain-s")?;
    let rate = basis_rate * a.steady_fraction;
    env.quiet.wait_recorded(ctx, "steady").await?;
    eprintln!(
        "== steady: {rate:.0}/s ({:.0} % of {basis}) on POST /v1/messages for {:.0} s ==",
        a.steady_fraction * 100.0,
        a.steady_seconds
    );
    let prefix = ctx.prefix("s");
    let probe = ctx.probe.clone();
    let before = probe.snapshot();
    let t = Instant::now();
    let i = ctx
        .phase(
            &format!("steady @ {rate:.0}/s"),
            Route::Send,
            rate,
            duration,
            &prefix,
        )
        .await?;
    let r = ctx.phase_result(i)?.clone();
    let key = db::key_prefix(&prefix, env.bytewise);
    let (progress, waited) =
        pipeline::wait_settled(&env.db, env.app_id, &key, "inbox", r.ok_2xx, drain).await?;
    let window = t.elapsed().as_secs_f64();
    let after = probe.snapshot();
    let all_delivered = progress.delivered >= r.ok_2xx.max(progress.messages);
    let pl = pipeline::summarize(&pipeline::read(&env.db, env.app_id, &key, "inbox").await?);
    let cpu = (probe.umsd_pid.is_some() || !after.postgres.is_empty())
        .then(|| cpu::report(&probe, &before, &after, window, progress.delivered));
    if probe.umsd_pid.is_none() {
        ctx.report
            .problems
            .push("no umsd pid (pass --umsd-pid with --target): umsd CPU not measured".to_owned());
    }
    eprintln!(
        "[steady] achieved {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, {} ok, {} non-2xx, {} timeouts, {} errors",
        r.achieved_rate,
        r.latency.p50_ms,
        r.latency.p99_ms,
        r.latency.p999_ms,
        r.ok_2xx,
        r.non_2xx,
        r.timeouts,
        r.errors
    );
    let d = pl.accept_to_delivered.as_ref();
    eprintln!(
        "[steady] {} of {} delivered {waited:.1} s after the sends; accept->delivered p50 {} ms, \
         p99 {} ms, max {} ms; last accept -> last delivery {} s",
        progress.delivered,
        r.ok_2xx.max(progress.messages),
        opt(d.map(|p| p.p50_ms), 0),
        opt(d.map(|p| p.p99_ms), 0),
        opt(d.map(|p| p.max_ms), 0),
        opt(pl.last_accept_to_last_delivery_s, 2)
    );
    if r.non_2xx + r.timeouts + r.errors + r.not_sent > 0 {
        ctx.report.problems.push(format!(
            "steady run: {} non-2xx, {} timeouts, {} errors, {} not sent",
            r.non_2xx, r.timeouts, r.errors, r.not_sent
        ));
    }
    if !all_delivered {
        ctx.report.problems.push(format!(
            "steady run: {} of {} messages delivered within --steady-drain-s {} after the \
             sends ({} lost); CPU covers the run up to then",
            progress.delivered,
            r.ok_2xx.max(progress.messages),
            a.steady_drain_s,
            progress.lost
        ));
    }
    ctx.report.steady = Some(SteadySummary {
        fraction: a.steady_fraction,
        basis: Some(basis.to_owned()),
        basis_rate: Some(basis_rate),
        rate,
        phase: i,
        latency: r.latency.clone(),
        ok_2xx: r.ok_2xx,
        cpu,
        pipeline: Some(pl),
        delivery_wait_s: Some(waited),
        all_delivered: Some(all_delivered),
    });
    ctx.count_check("steady run", &prefix, r.ok_2xx, r.timeouts + r.errors)
        .await?;
    Ok(())
}
