//! `strategy` through umsd: the users (bound and unbound), the strategy and the one
//! broadcast sent with it, the sampled wait through both phases (`pending`, `firing`)
//! until no deadline is left and step 2 is final, and the outcome from the database.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_postgres::Client;
use umsd_actors::domain::user::MAX_BATCH;
use umsd_actors::domain::DeliveryState;
use umsd_actors::metrics as m;
use umsd_sim::SimHandle;

use super::args::StrategyArgs;
use super::outcome::{
    checks, col, counts, lateness, message_of, metric, metric_figures, planning, step2_pending,
    timer_rows, wall_times,
};
use super::report::{mib, phase_rss, verdict, StrategyReport, StrategySample, MIB};
use super::setup::Setup;
use super::{HOOK, INBOX, STRATEGY_ID};
use crate::metrics;
use crate::report::opt;
use crate::scenarios::deliver::{self, Api};
use crate::scenarios::Ctx;
use crate::{cpu, db, sims};

/// Once no deadline is left, how often the step-2 deliveries are counted (a scan of the
/// message's deliveries).
const FINAL_CHECK_EVERY: Duration = Duration::from_secs(2);
/// The outcome's queries read a million rows or more each; none may take longer.
const OUTCOME_TIMEOUT: &str = "300s";

/// User `i`'s row for `POST /v1/users/batch`: bound to `{sim}/hooks/u<n>` or unbound.
fn user_row(a: &StrategyArgs, i: usize, hook_base: &str) -> Value {
    let u = sims::user_id(i);
    if a.bound(i) {
        json!({"user_id": u, "bindings": [{"type": "webhook", "value": sims::hook_url(hook_base, &u)}]})
    } else {
        json!({ "user_id": u })
    }
}

/// Creates the users, `--user-concurrency` batches of 1000 in flight.
async fn create_users(api: &Api, a: &StrategyArgs, hook_base: &str) -> Result<()> {
    let chunks = a.users.div_ceil(MAX_BATCH);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..a.user_concurrency {
        let (api, next, a, base) = (api.clone(), next.clone(), a.clone(), hook_base.to_owned());
        set.spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= chunks {
                    return Ok::<(), anyhow::Error>(());
                }
                let end = ((k + 1) * MAX_BATCH).min(a.users);
                let rows = (k * MAX_BATCH..end)
                    .map(|i| user_row(&a, i, &base))
                    .collect();
                api.put_users(rows)
                    .await
                    .with_context(|| format!("user batch {k}"))?;
                if k > 0 && k % 100 == 0 {
                    eprintln!(
                        "[strategy] {:.0} s: {} of {} users created",
                        t0.elapsed().as_secs_f64(),
                        k * MAX_BATCH,
                        a.users
                    );
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("user worker")??;
    }
    Ok(())
}

/// The app's users and webhook bindings in the database.
async fn stored_users(db: &Client, app_id: i32) -> Result<(i64, i64)> {
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM users WHERE app_id = $1),
                    (SELECT count(*) FROM bindings WHERE app_id = $1 AND type = 'webhook')",
            &[&app_id],
        )
        .await
        .context("counting users and bindings")?;
    Ok((col(&row, 0)?, col(&row, 1)?))
}

/// `PUT /v1/strategies/hook-then-inbox`.
async fn put_strategy(api: &Api, within_s: u32) -> Result<()> {
    let body = json!({"steps": [
        {"channel": HOOK},
        {"channel": INBOX, "when": {"op": "and", "conditions": [
            {"step": 1, "event": "not_delivered", "within_seconds": within_s}
        ]}}
    ]});
    let resp = api
        .client
        .put(format!("{}/v1/strategies/{STRATEGY_ID}", api.base_url))
        .basic_auth(&api.app_key, Some(&api.app_secret))
        .json(&body)
        .send()
        .await
        .context("PUT /v1/strategies")?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!("PUT /v1/strategies/{STRATEGY_ID} answered {status}: {text}");
    }
    Ok(())
}

/// What the sampled wait saw.
struct Watched {
    samples: Vec<StrategySample>,
    planned: bool,
    complete: bool,
    timers_empty_s: Option<f64>,
    done_s: Option<f64>,
    max_timers_pending: f64,
    max_timer_rows: i64,
}

/// Where the sampled wait reads from.
struct Watch<'a> {
    db: &'a Client,
    http: &'a reqwest::Client,
    base_url: &'a str,
    probe: &'a cpu::Probe,
    sim: &'a SimHandle,
    sim_base: u64,
    pid: u32,
    pk: i64,
    t0: Instant,
}

/// Samples every `--sample-ms` from the send until no deadline is left and every step-2
/// delivery is final, or a wait runs out.
async fn watch(w: &Watch<'_>, a: &StrategyArgs, problems: &mut Vec<String>) -> Result<Watched> {
    let hz = cpu::clock_ticks_per_second() as f64;
    let interval = Duration::from_millis(a.sample_ms);
    let plan_wait = Duration::from_secs(a.plan_wait_s.max(1));
    let fire_wait = chrono::Duration::seconds(i64::try_from(a.fire_wait_s.max(1))?);
    let mut out = Watched {
        samples: Vec::new(),
        planned: false,
        complete: false,
        timers_empty_s: None,
        done_s: None,
        max_timers_pending: 0.0,
        max_timer_rows: 0,
    };
    let (mut first_due, mut last_due): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        (None, None);
    let mut last_snap = w.probe.snapshot();
    let (mut last_machine, mut last_own) = (cpu::machine_ticks(), cpu::own_cpu_time());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut last_t, mut next) = (w.t0, w.t0);
    let mut last_check: Option<Instant> = None;
    let mut phase = "pending";
    loop {
        next += interval;
        tokio::time::sleep_until(next).await;
        let (now, now_utc) = (Instant::now(), Utc::now());
        let t_s = now.duration_since(w.t0).as_secs_f64();
        let rss = cpu::read_rss_bytes(w.pid)?;
        let (rows, min_due, max_due) = timer_rows(w.db, w.pk).await?;
        let in_queue = planning(w.db, w.pk).await?;
        let scrape = metrics::scrape(w.http, w.base_url)
            .await
            .unwrap_or_default();
        let snap = w.probe.snapshot();
        let (machine, own) = (cpu::machine_ticks(), cpu::own_cpu_time());
        let dt = now.duration_since(last_t).as_secs_f64().max(1e-3);
        let umsd_cores = match (last_snap.umsd, snap.umsd) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / hz / dt),
            _ => None,
        };
        let postgres_cores = cpu::postgres_delta(&last_snap, &snap) as f64 / hz / dt;
        let harness_cores = own.saturating_sub(last_own).as_secs_f64() / dt;
        let other_cores = cpu::machine_busy_cores(last_machine, machine, cores)
            .map(|m| (m - umsd_cores.unwrap_or(0.0) - postgres_cores - harness_cores).max(0.0));
        first_due = match (first_due, min_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last_due = last_due.max(max_due);
        if !in_queue && !out.planned {
            out.planned = true;
            eprintln!(
                "[strategy] {t_s:.1} s: step 1 planned for every target; {rows} deadline rows, \
                 the first due in {:.1} s",
                first_due.map_or(0.0, |d| (d - now_utc).num_milliseconds() as f64 / 1e3)
            );
        }
        if phase == "pending" && first_due.is_some_and(|d| now_utc >= d) {
            phase = "firing";
            eprintln!("[strategy] {t_s:.1} s: the first deadline passed: firing");
        }
        let sample = StrategySample {
            t_s,
            phase,
            rss_bytes: rss,
            timers_pending: metric(&scrape, m::STRATEGY_TIMERS_PENDING),
            timer_rows: rows,
            planning: in_queue,
            hook_delivered: w.sim.stats().recipients_accepted.saturating_sub(w.sim_base),
            fallbacks: metric(&scrape, m::STRATEGY_FALLBACKS_TOTAL),
            settled: metric(&scrape, m::STRATEGY_SETTLED_TOTAL),
            timers_fired: metric(&scrape, m::STRATEGY_TIMERS_FIRED_TOTAL),
            umsd_cores,
            postgres_cores,
            other_cores,
        };
        out.max_timers_pending = out.max_timers_pending.max(sample.timers_pending);
        out.max_timer_rows = out.max_timer_rows.max(rows);
        if out.samples.len() % 10 == 0 {
            eprintln!(
                "[strategy] {t_s:>6.1} s {phase}: {} planning, {rows} deadline rows (gauge {:.0}), \
                 {} step-1 delivered, {:.0} fallbacks, {:.0} settled, RSS {:.1} MiB, umsd {} \
                 cores, PostgreSQL {:.2} cores, other processes {} cores",
                if in_queue { "still" } else { "done" },
                sample.timers_pending,
                sample.hook_delivered,
                sample.fallbacks,
                sample.settled,
                rss as f64 / MIB,
                opt(sample.umsd_cores, 2),
                sample.postgres_cores,
                opt(sample.other_cores, 2)
            );
        }
        out.samples.push(sample);
        last_snap = snap;
        (last_machine, last_own, last_t) = (machine, own, now);

        if out.planned && rows == 0 {
            if out.timers_empty_s.is_none() {
                out.timers_empty_s = Some(t_s);
                eprintln!("[strategy] {t_s:.1} s: no deadline left");
            }
            if last_check.is_none_or(|c| now.duration_since(c) >= FINAL_CHECK_EVERY) {
                last_check = Some(now);
                let pending = step2_pending(w.db, w.pk).await?;
                if pending == 0 {
                    out.done_s = Some(t_s);
                    out.complete = true;
                    eprintln!("[strategy] {t_s:.1} s: every step-2 delivery is final");
                    return Ok(out);
                }
            }
        }
        if !out.planned && now.duration_since(w.t0) >= plan_wait {
            problems.push(format!(
                "strategy: step 1 was not planned for every target within --plan-wait-s {}",
                a.plan_wait_s
            ));
            return Ok(out);
        }
        if out.planned && last_due.is_none_or(|d| now_utc >= d + fire_wait) {
            problems.push(format!(
                "strategy: {rows} deadline rows left or step-2 deliveries not final \
                 --fire-wait-s {} after the last deadline",
                a.fire_wait_s
            ));
            return Ok(out);
        }
    }
}

pub async fn run(ctx: &mut Ctx, a: &StrategyArgs, setup: Setup) -> Result<()> {
    let sim = setup.sim;
    let db_target = ctx
        .db
        .clone()
        .ok_or_else(|| anyhow!("strategy needs the daemon's database"))?;
    let pid = ctx
        .probe
        .umsd_pid
        .ok_or_else(|| anyhow!("strategy needs umsd's pid"))?;
    let api = Api::new(&ctx.base_url, &ctx.app_key, &ctx.app_secret)?;
    let bound = a.bound_users();

    // 1. users
    eprintln!(
        "== strategy: creating {} users ({bound} bound to {HOOK}, {} without a binding), \
         {} batches in flight ==",
        a.users,
        a.users - bound,
        a.user_concurrency
    );
    let t_users = Instant::now();
    create_users(&api, a, &sim.url()).await?;
    let users_created_s = t_users.elapsed().as_secs_f64();
    let db = db::connect(&db_target).await?;
    let app_id = db::app_id(&db, &ctx.app_key).await?;
    let (stored, bindings) = stored_users(&db, app_id).await?;
    if stored != i64::try_from(a.users)? || bindings != i64::try_from(bound)? {
        bail!(
            "{stored} users and {bindings} webhook bindings stored, expected {} and {bound}",
            a.users
        );
    }
    eprintln!(
        "[strategy] {stored} users ({bindings} bound) created in {users_created_s:.1} s ({:.0}/s)",
        stored as f64 / users_created_s.max(1e-3)
    );

    // 2. the strategy and the one message
    put_strategy(&api, a.within_s).await?;
    let prefix = ctx.prefix("s");
    let message_id = format!("{prefix}0");
    let body = json!({
        "message_id": message_id,
        "audience": {"broadcast": true},
        "strategy": STRATEGY_ID,
        "content": {
            HOOK: {"body": sims::webhook_body()},
            INBOX: {"title": "Order shipped", "body": sims::IM_TEXT},
        },
    })
    .to_string();
    let http = crate::http_builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let rss_idle = cpu::read_rss_bytes(pid)?;
    let sim_base = sim.stats().recipients_accepted;
    eprintln!(
        "== strategy: one broadcast with `{STRATEGY_ID}` (step 2 when not delivered within {} s), \
         sampling every {} ms ==",
        a.within_s, a.sample_ms
    );
    let make: deliver::MakeBody = Arc::new(move |_| body.clone());
    let send = deliver::send_messages(api.clone(), 1, 1, make, Arc::new(AtomicU64::new(0))).await?;
    let t0 = Instant::now();
    let (pk, accepted_at) = message_of(&db, app_id, &message_id).await?;

    // 3. the sampled wait
    let probe = ctx.probe.clone();
    let w = Watch {
        db: &db,
        http: &http,
        base_url: &ctx.base_url,
        probe: &probe,
        sim: &sim,
        sim_base,
        pid,
        pk,
        t0,
    };
    let watched = watch(&w, a, &mut ctx.report.problems).await?;
    if let Some(p) = ctx.report.problems.last().filter(|_| !watched.complete) {
        eprintln!("\n!!! {p} !!!\n");
    }

    // 4. the outcome
    eprintln!("== strategy: reading the outcome from the database ==");
    // The joins below must not depend on how fresh the planner's statistics of the new
    // partitions are: a nested loop over a million rows it takes for a few would not end.
    db.batch_execute(&format!(
        "SET enable_nestloop = off; SET statement_timeout = '{OUTCOME_TIMEOUT}'"
    ))
    .await
    .context("setting up the outcome's session")?;
    let delivered = DeliveryState::codes(DeliveryState::is_delivered);
    let counts = counts(&db, pk, a.within_s, &delivered).await?;
    let (lateness, early) = lateness(&db, pk, a.within_s).await?;
    let mut times = wall_times(&db, pk, accepted_at, a.within_s, &delivered).await?;
    times.timers_empty_s = watched.timers_empty_s;
    times.done_s = watched.done_s;
    let scrape = metrics::scrape(&http, &ctx.base_url).await;
    if let Err(e) = &scrape {
        ctx.report.problems.push(format!(
            "strategy: /metrics did not answer at the end: {e:#}"
        ));
    }
    let mf = scrape.as_ref().ok().map(metric_figures);
    let checks = checks(a, &counts, early, mf.as_ref());
    let samples = watched.samples;
    let rss_max = samples.iter().map(|s| s.rss_bytes).max();
    let reasons = verdict(
        &checks,
        watched.complete,
        rss_max,
        a.max_rss_mb,
        lateness.p99_ms,
        a.max_p99_ms,
    );
    let pass = reasons.is_empty();
    eprintln!(
        "[strategy] targets {}, settled {}, held {}, fired {}, duplicates {}; lateness p50 {} \
         ms, p99 {} ms, max {} ms; RSS peak {}: {}",
        counts.targets,
        counts.settled,
        counts.held,
        counts.fired,
        counts.duplicates,
        opt(lateness.p50_ms, 1),
        opt(lateness.p99_ms, 1),
        opt(lateness.max_ms, 1),
        mib(rss_max),
        if pass { "PASS" } else { "FAIL" }
    );
    if !pass {
        ctx.report
            .problems
            .push(format!("strategy rule failed: {}", reasons.join("; ")));
    }
    ctx.report.strategy = Some(StrategyReport {
        users: a.users,
        bound_users: bound,
        unbound_users: a.users - bound,
        delivered_share: a.delivered_share,
        within_s: a.within_s,
        channel_rate: a.channel_rate,
        pool_size: a.pool_size,
        users_created_s,
        send: Some(send),
        planned: watched.planned,
        complete: watched.complete,
        counts,
        checks,
        lateness,
        metrics: mf.unwrap_or_default(),
        times,
        rss_idle_bytes: rss_idle,
        rss_max_bytes: rss_max,
        pending: phase_rss(&samples, "pending"),
        firing: phase_rss(&samples, "firing"),
        max_timers_pending: watched.max_timers_pending,
        max_timer_rows: watched.max_timer_rows,
        max_rss_mb: a.max_rss_mb,
        max_p99_ms: a.max_p99_ms,
        pass: Some(pass),
        reasons,
        samples,
    });
    ctx.count_check("strategy broadcast", &prefix, 1, 0).await?;
    Ok(())
}
