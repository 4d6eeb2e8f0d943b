//! `bench` against one daemon: `--rounds` rounds of (R_http, R_copy, R_daemon) back to
//! back, the median round as the result, then the steady run with CPU accounting.

use anyhow::{anyhow, Result};
use tokio::time::Instant;

use super::args::BenchArgs;
use super::report::{r_ref, RoundSummary};
use crate::copy::{self, CopyParams};
use crate::cpu;
use crate::db;
use crate::report::SteadySummary;
use crate::scenarios::stats::median_round;
use crate::scenarios::Ctx;
use crate::{seconds, Route};

pub async fn run(ctx: &mut Ctx, a: &BenchArgs) -> Result<()> {
    let steady_duration = seconds(a.steady_seconds, "--steady-seconds")?;
    if !(a.steady_fraction > 0.0 && a.steady_fraction <= 1.0) {
        return Err(anyhow!("--steady-fraction must be in (0, 1]"));
    }
    let db_target = ctx.db.clone().ok_or_else(|| {
        anyhow!("bench needs the daemon's database: pass --database-url with --target")
    })?;
    ctx.preflight(Route::Bench).await?;
    ctx.preflight(Route::Send).await?;

    if a.rounds == 0 {
        return Err(anyhow!("--rounds must be at least 1"));
    }
    let app_id = {
        let client = db::connect(&db_target).await?;
        db::app_id(&client, &ctx.app_key).await?
    };
    let mut rounds = Vec::new();
    for round in 1..=a.rounds {
        rounds.push(one_round(ctx, a, &db_target, app_id, round).await?);
    }
    // The median round by ratio (rounds without a ratio sort first).
    let ratios: Vec<Option<f64>> = rounds.iter().map(|r| r.summary.ratio).collect();
    let median = median_round(&ratios);
    ctx.report.rounds = rounds.iter().map(|r| r.summary.clone()).collect();
    let chosen = rounds.swap_remove(median);
    if a.rounds > 1 {
        eprintln!(
            "== rounds: ratios {}; reporting round {} (the median) ==",
            ctx.report
                .rounds
                .iter()
                .map(|r| r.ratio.map_or("-".to_owned(), |v| format!("{v:.3}")))
                .collect::<Vec<_>>()
                .join(", "),
            chosen.summary.round
        );
    }
    ctx.report.r_http = chosen.http;
    ctx.report.r_copy = Some(chosen.copy);
    ctx.report.r_daemon = chosen.daemon;
    ctx.report.r_ref = chosen.summary.r_ref;
    ctx.report.ratio = chosen.summary.ratio;
    if chosen.summary.r_http.is_none() {
        ctx.report
            .problems
            .push("R_http: no step passed, so no R_ref and no ratio".to_owned());
    }
    let r_daemon = chosen.summary.r_daemon;
    if r_daemon.is_none() {
        ctx.report
            .problems
            .push("R_daemon: no step passed, so no ratio and no steady run".to_owned());
    }

    // 5. steady run with CPU accounting
    let Some(r_daemon) = r_daemon else {
        return Ok(());
    };
    settle(a).await;
    let rate = r_daemon * a.steady_fraction;
    eprintln!(
        "== steady: {rate:.0}/s on POST /v1/messages for {:.0} s ==",
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
            steady_duration,
            &prefix,
        )
        .await?;
    let window = t.elapsed().as_secs_f64();
    let after = probe.snapshot();
    let r = ctx.phase_result(i)?.clone();
    let cpu = (probe.umsd_pid.is_some() || !after.postgres.is_empty())
        .then(|| cpu::report(&probe, &before, &after, window, r.ok_2xx));
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
    if r.non_2xx + r.timeouts + r.errors + r.not_sent > 0 {
        ctx.report.problems.push(format!(
            "steady run: {} non-2xx, {} timeouts, {} errors, {} not sent",
            r.non_2xx, r.timeouts, r.errors, r.not_sent
        ));
    }
    ctx.report.steady = Some(SteadySummary {
        fraction_of_r_daemon: a.steady_fraction,
        rate,
        phase: i,
        latency: r.latency.clone(),
        ok_2xx: r.ok_2xx,
        cpu,
    });
    ctx.count_check("steady run", &prefix, r.ok_2xx, r.timeouts + r.errors)
        .await?;
    Ok(())
}

async fn settle(a: &BenchArgs) {
    tokio::time::sleep(std::time::Duration::from_millis(a.search.settle_ms)).await;
}

/// What one round measured.
struct Round {
    summary: RoundSummary,
    http: Option<crate::report::SearchSummary>,
    copy: crate::copy::CopyResult,
    daemon: Option<crate::report::SearchSummary>,
}

/// R_http, R_copy and R_daemon back to back (R_daemon count-checked).
async fn one_round(
    ctx: &mut Ctx,
    a: &BenchArgs,
    db_target: &db::DbTarget,
    app_id: i32,
    round: usize,
) -> Result<Round> {
    let tag = |name: &str| {
        if a.rounds > 1 {
            format!("{name} r{round}")
        } else {
            name.to_owned()
        }
    };
    eprintln!("== {}: POST /bench/messages ==", tag("R_http"));
    let prefix = ctx.prefix(&format!("h{round}"));
    let http = ctx
        .find_max(&tag("R_http"), Route::Bench, &a.search, &prefix)
        .await?;
    settle(a).await;

    eprintln!(
        "== {}: binary COPY of {} messages, chunks of {}, {} connections ==",
        tag("R_copy"),
        a.copy_messages,
        a.copy_chunk,
        a.copy_connections
    );
    let params = CopyParams {
        messages: a.copy_messages,
        chunk: a.copy_chunk,
        connections: a.copy_connections,
    };
    let copy_prefix = format!("cp-{}-{round}-", ctx.run_id);
    let offset = ctx.run_start.elapsed().as_secs_f64();
    let mut c = copy::run(db_target, app_id, &copy_prefix, &params).await?;
    c.start_offset_s = offset;
    eprintln!(
        "[{}] {:.0} messages/s ({:.0} rows/s) in {:.2} s; cleanup removed {}+{}+{} rows in {:.2} s",
        tag("R_copy"),
        c.messages_per_second,
        c.rows_per_second,
        c.elapsed_s,
        c.cleanup.deleted_messages,
        c.cleanup.deleted_message_keys,
        c.cleanup.deleted_message_queue,
        c.cleanup.elapsed_s
    );
    if c.cleanup.left_over > 0 || c.cleanup.deleted_messages != c.messages {
        ctx.report.problems.push(format!(
            "R_copy cleanup: deleted {} of {} messages, {} rows left over",
            c.cleanup.deleted_messages, c.messages, c.cleanup.left_over
        ));
    }
    settle(a).await;

    eprintln!("== {}: POST /v1/messages ==", tag("R_daemon"));
    let prefix = ctx.prefix(&format!("d{round}"));
    let daemon = ctx
        .find_max(&tag("R_daemon"), Route::Send, &a.search, &prefix)
        .await?;
    let (ok, unknown) = (daemon.ok_2xx, daemon.unknown_fate);
    ctx.count_check(&format!("{} search", tag("R_daemon")), &prefix, ok, unknown)
        .await?;
    settle(a).await;

    let r_http = http.max_rate;
    let r_copy = c.messages_per_second;
    let r_daemon = daemon.max_rate;
    let r_ref = r_http.and_then(|h| r_ref(h, r_copy));
    let ratio = match (r_daemon, r_ref) {
        (Some(d), Some(r)) => Some(d / r),
        _ => None,
    };
    eprintln!(
        "[round {round}] R_http {}, R_copy {r_copy:.0}, R_daemon {}, ratio {}",
        r_http.map_or("-".to_owned(), |v| format!("{v:.0}")),
        r_daemon.map_or("-".to_owned(), |v| format!("{v:.0}")),
        ratio.map_or("-".to_owned(), |v| format!("{v:.3}")),
    );
    Ok(Round {
        summary: RoundSummary {
            round,
            r_http,
            r_copy,
            r_daemon,
            r_ref,
            ratio,
        },
        http: Some(http),
        copy: c,
        daemon: Some(daemon),
    })
}
