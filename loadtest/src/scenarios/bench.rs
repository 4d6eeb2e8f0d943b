//! The `bench` scenario: in one run, against one daemon,
//!
//! 1. `R_http` — maximum sustainable rate of `POST /bench/messages` (HTTP, auth, parsing,
//!    validation; nothing stored);
//! 2. `R_copy` — binary COPY throughput of the same rows into the same tables;
//! 3. `R_daemon` — maximum sustainable rate of durable accepts on `POST /v1/messages`,
//!    then checked against the database (rows under the search's prefix = 2xx answers);
//! 4. `ratio = R_daemon / R_ref` with `R_ref = 1 / (1/R_http + 1/R_copy)`;
//! 5. a steady run at a fraction of R_daemon with p50/p99/p99.9 and CPU-µs per accepted
//!    message (umsd alone and umsd + PostgreSQL), also count-checked.

use anyhow::{anyhow, Result};
use tokio::time::Instant;

use super::Ctx;
use crate::copy::{self, CopyParams};
use crate::cpu;
use crate::db;
use crate::report::{self, SteadySummary};
use crate::{seconds, BenchArgs, Route};

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

    // 1. R_http
    eprintln!("== R_http: POST /bench/messages ==");
    let prefix = ctx.prefix("h");
    let http = ctx
        .find_max("R_http", Route::Bench, &a.search, &prefix)
        .await?;
    let r_http = http.max_rate;
    ctx.report.r_http = Some(http);
    settle(a).await;

    // 2. R_copy
    eprintln!(
        "== R_copy: binary COPY of {} messages, chunks of {}, {} connections ==",
        a.copy_messages, a.copy_chunk, a.copy_connections
    );
    let app_id = {
        let client = db::connect(&db_target).await?;
        db::app_id(&client, &ctx.app_key).await?
    };
    let params = CopyParams {
        messages: a.copy_messages,
        chunk: a.copy_chunk,
        connections: a.copy_connections,
    };
    let copy_prefix = format!("cp-{}-", ctx.run_id);
    let offset = ctx.run_start.elapsed().as_secs_f64();
    let mut c = copy::run(&db_target, app_id, &copy_prefix, &params).await?;
    c.start_offset_s = offset;
    eprintln!(
        "[R_copy] {:.0} messages/s ({:.0} rows/s) in {:.2} s; cleanup removed {}+{}+{} rows in {:.2} s",
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
    let r_copy = c.messages_per_second;
    ctx.report.r_copy = Some(c);
    settle(a).await;

    // 3. R_daemon, checked against the database
    eprintln!("== R_daemon: POST /v1/messages ==");
    let prefix = ctx.prefix("d");
    let daemon = ctx
        .find_max("R_daemon", Route::Send, &a.search, &prefix)
        .await?;
    let r_daemon = daemon.max_rate;
    let (ok, unknown) = (daemon.ok_2xx, daemon.unknown_fate);
    ctx.report.r_daemon = Some(daemon);
    ctx.count_check("R_daemon search", &prefix, ok, unknown)
        .await?;

    // 4. ratio
    if let Some(h) = r_http {
        ctx.report.r_ref = report::r_ref(h, r_copy);
    } else {
        ctx.report
            .problems
            .push("R_http: no step passed, so no R_ref and no ratio".to_owned());
    }
    match (r_daemon, ctx.report.r_ref) {
        (Some(d), Some(r)) => ctx.report.ratio = Some(d / r),
        (None, _) => ctx
            .report
            .problems
            .push("R_daemon: no step passed, so no ratio and no steady run".to_owned()),
        _ => {}
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
