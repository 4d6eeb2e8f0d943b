//! `bench` against one daemon: `--rounds` rounds of (R_http, R_copy, R_daemon, R_e2e)
//! back to back, the median round as the result, then the steady run with CPU
//! accounting. Every measured search and phase starts on a quiet daemon.

use std::time::Duration;

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use tokio_postgres::Client;

use super::args::{check_args, BenchArgs, E2eChannel, SteadyOf};
use super::e2e;
use super::quiet::Quiet;
use super::report::{e2e_medians, E2eCriteria, E2eReport};
use super::round::one_round;
use super::setup::{Setup, HOOK};
use super::steady;
use crate::db;
use crate::openloop::{user_of, DEFAULT_USERS};
use crate::report::opt;
use crate::scenarios::deliver::Api;
use crate::scenarios::stats::median_round;
use crate::scenarios::Ctx;
use crate::{sims, Route};

/// What the rounds and the steady run share.
pub(super) struct Env {
    pub(super) quiet: Quiet,
    pub(super) db: Client,
    pub(super) app_id: i32,
    /// Rows under a prefix are found by a key range (the database compares bytewise).
    pub(super) bytewise: bool,
    /// The webhook channel's code, when the daemon has one the harness configured.
    pub(super) webhook: Option<String>,
}

/// The users the one-user messages go to (`u0` … `u9999`): the inbox needs them to
/// exist, the webhook channel needs each bound to its URL on the simulator.
async fn create_users(ctx: &Ctx, hook_base: Option<&str>) -> Result<()> {
    let api = Api::new(&ctx.base_url, &ctx.app_key, &ctx.app_secret)?;
    let rows: Vec<Value> = (0..DEFAULT_USERS)
        .map(|i| {
            let user = user_of(i, DEFAULT_USERS);
            let bindings: Vec<Value> = hook_base
                .map(|b| json!({"type": "webhook", "value": sims::hook_url(b, &user)}))
                .into_iter()
                .collect();
            json!({"user_id": user, "bindings": bindings})
        })
        .collect();
    eprintln!(
        "== bench: creating {} users{} ==",
        rows.len(),
        if hook_base.is_some() {
            " bound to the webhook simulator"
        } else {
            ""
        }
    );
    api.put_users(rows).await?;
    Ok(())
}

pub async fn run(ctx: &mut Ctx, a: &BenchArgs, setup: Setup) -> Result<()> {
    check_args(a)?;
    let db_target = ctx.db.clone().ok_or_else(|| {
        anyhow!("bench needs the daemon's database: pass --database-url with --target")
    })?;
    ctx.preflight(Route::Bench).await?;
    ctx.preflight(Route::Send).await?;

    let db = db::connect(&db_target).await?;
    let app_id = db::app_id(&db, &ctx.app_key).await?;
    let bytewise = db::bytewise_collation(&db).await?;
    let mut channels = a.e2e_channels();
    if channels.contains(&E2eChannel::Webhook) && setup.sim.is_none() {
        ctx.report.problems.push(
            "R_e2e webhook skipped: its channel and simulator come with the config the harness \
             writes for a daemon it starts (no --target, no --umsd-config)"
                .to_owned(),
        );
        channels.retain(|c| *c != E2eChannel::Webhook);
    }
    let hook_base = setup.sim.as_ref().map(|s| s.url());
    if !channels.is_empty() {
        create_users(ctx, hook_base.as_deref()).await?;
    }
    // deliveries created from shortly before the run on are looked at by the quiet wait
    let run_began = chrono::Utc::now()
        - chrono::Duration::from_std(ctx.run_start.elapsed() + Duration::from_secs(5))?;
    let quiet = Quiet::new(
        db::connect(&db_target).await?,
        &ctx.base_url,
        run_began,
        Duration::from_secs(a.quiet_timeout_s),
        Duration::from_millis(a.quiet_settle_ms),
    )?;
    let env = Env {
        quiet,
        db,
        app_id,
        bytewise,
        webhook: setup.sim.as_ref().map(|_| HOOK.to_owned()),
    };
    for c in &channels {
        ctx.preflight_with(Route::Send, &e2e::body_of(*c, &env)?)
            .await?;
    }

    if !channels.is_empty() {
        ctx.report.e2e = Some(E2eReport {
            channels: channels.clone(),
            criteria: E2eCriteria {
                p99_max_ms: a.e2e_p99_ms,
                drain_s: a.e2e_drain_s,
            },
            searches: Vec::new(),
            medians: Vec::new(),
        });
    }
    // each round goes into the report as soon as it is done, so that a run stopped later
    // (--max-total-s, a signal) still has it
    let mut rounds = Vec::new();
    for round in 1..=a.rounds {
        let (r, s) = one_round(ctx, a, &env, &db_target, round, &channels).await?;
        ctx.report.rounds.push(r.summary.clone());
        if let Some(e) = ctx.report.e2e.as_mut() {
            e.searches.extend(s);
            e.medians = e2e_medians(&ctx.report.rounds);
        }
        rounds.push(r);
    }
    // The median round by ratio (rounds without a ratio sort first).
    let ratios: Vec<Option<f64>> = rounds.iter().map(|r| r.summary.ratio).collect();
    let median = median_round(&ratios);
    let chosen = rounds.swap_remove(median);
    if a.rounds > 1 {
        eprintln!(
            "== rounds: ratios {}; reporting round {} (the median) ==",
            ratios
                .iter()
                .map(|r| opt(*r, 3))
                .collect::<Vec<_>>()
                .join(", "),
            chosen.summary.round
        );
    }
    let medians = e2e_medians(&ctx.report.rounds);
    for m in &medians {
        eprintln!(
            "== R_e2e {}: median {}/s over {} of {} rounds, R_e2e/R_ref {}, R_e2e/R_daemon {} ==",
            m.channel.name(),
            opt(m.r_e2e, 0),
            m.rounds_with_rate,
            a.rounds,
            opt(m.over_ref, 3),
            opt(m.over_daemon, 3)
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

    // the steady run, at a fraction of R_e2e_inbox (or R_daemon)
    let Some(r_daemon) = r_daemon else {
        return Ok(());
    };
    let e2e_inbox = medians
        .iter()
        .find(|m| m.channel == E2eChannel::Inbox)
        .and_then(|m| m.r_e2e);
    let (basis, basis_rate) = match (a.steady_of, e2e_inbox) {
        (SteadyOf::E2e, Some(r)) => ("R_e2e_inbox", r),
        (SteadyOf::E2e, None) => {
            eprintln!("(no R_e2e_inbox: the steady run takes R_daemon)");
            ("R_daemon", r_daemon)
        }
        (SteadyOf::Daemon, _) => ("R_daemon", r_daemon),
    };
    steady::run(ctx, a, &env, basis, basis_rate).await
}
