//! R_e2e: the highest rate of one-user messages on one channel that the daemon takes in
//! *and delivers*. The same rate search as R_daemon ([`RateSearch`]), each step an
//! open-loop phase on `POST /v1/messages` with its own `message_id` prefix; a step passes
//! when the HTTP criteria hold, every accepted message of the step is delivered within
//! `--e2e-drain-s` after its sends end, and accept → delivered p99 (from the database) is
//! at most `--e2e-p99-ms`. Every step starts on a quiet daemon.

use anyhow::{anyhow, bail, Result};
use serde::Serialize;

use super::args::{BenchArgs, E2eChannel};
use super::report::{judge_e2e, E2eCriteria, E2eObserved};
use super::run::Env;
use crate::db;
use crate::openloop::{BodySpec, ContentKind};
use crate::report::opt;
use crate::scenarios::pipeline::{self, Pipeline};
use crate::scenarios::Ctx;
use crate::search::{self, Criteria, RateSearch, SearchParams};
use crate::{seconds, Route};

/// One step of an end-to-end search.
#[derive(Debug, Clone, Serialize)]
pub struct E2eStep {
    pub rate: f64,
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub reasons: Vec<String>,
    /// Index into the report's phases.
    pub phase: usize,
    pub id_prefix: String,
    /// The quiet wait before it.
    pub quiet_wait_s: f64,
    pub quiet: bool,
    /// From the end of its sends until every message was delivered (or the drain wait
    /// ended); 0 when the door already failed.
    pub drain_wait_s: f64,
    /// 2xx answers.
    pub accepted: u64,
    pub pipeline: Pipeline,
}

/// One channel's end-to-end search in one round.
#[derive(Debug, Clone, Serialize)]
pub struct E2eSearch {
    pub round: usize,
    pub channel: E2eChannel,
    pub channel_code: String,
    pub params: SearchParams,
    pub criteria: Criteria,
    /// Highest rate that passed; `None` if none did.
    pub max_rate: Option<f64>,
    pub first_fail: Option<f64>,
    pub steps: Vec<E2eStep>,
    pub ok_2xx: u64,
    pub unknown_fate: u64,
    /// The `message_id` prefix of every step (each step adds `s<n>-`).
    pub id_prefix: String,
}

/// The channel code and the bodies of a channel's search.
fn channel_body(channel: E2eChannel, env: &Env) -> Result<(String, BodySpec)> {
    match channel {
        E2eChannel::Inbox => Ok(("inbox".to_owned(), BodySpec::inbox())),
        E2eChannel::Webhook => {
            let code = env
                .webhook
                .clone()
                .ok_or_else(|| anyhow!("no webhook channel in this daemon's config"))?;
            let body = BodySpec::new(&code, ContentKind::Webhook);
            Ok((code, body))
        }
        E2eChannel::None => bail!("no channel"),
    }
}

/// The body spec a channel's steps send (for the preflight).
pub(super) fn body_of(channel: E2eChannel, env: &Env) -> Result<BodySpec> {
    channel_body(channel, env).map(|(_, b)| b)
}

/// Runs one channel's search; count-checks it as a whole.
pub(super) async fn search(
    ctx: &mut Ctx,
    a: &BenchArgs,
    env: &Env,
    round: usize,
    channel: E2eChannel,
    r_daemon: Option<f64>,
) -> Result<E2eSearch> {
    let (code, body) = channel_body(channel, env)?;
    let max_rate = r_daemon.map_or(a.search.max_rate, |d| d.min(a.search.max_rate));
    let start = a.e2e_start_rate.min(max_rate);
    let params = SearchParams {
        start_rate: start,
        factor: a.search.step_factor,
        min_rate: a.e2e_min_rate.min(start),
        max_rate,
        bisect_steps: a.search.bisect_steps,
        max_steps: a.search.max_steps,
    };
    let criteria = Criteria {
        min_throughput_ratio: a.search.min_throughput,
        p99_max_ms: a.search.p99_max_ms,
    };
    let e2e = E2eCriteria {
        p99_max_ms: a.e2e_p99_ms,
        drain_s: a.e2e_drain_s,
    };
    let step = seconds(a.search.step_seconds, "--step-seconds")?;
    let drain = seconds(a.e2e_drain_s, "--e2e-drain-s")?;
    let name = channel.name();
    let label = if a.rounds > 1 {
        format!("R_e2e {name} r{round}")
    } else {
        format!("R_e2e {name}")
    };
    let id_prefix = ctx.prefix(&format!("e{round}{name}"));
    let mut rs = RateSearch::new(params.clone());
    let mut steps: Vec<E2eStep> = Vec::new();
    let (mut ok_2xx, mut unknown) = (0u64, 0u64);
    while let Some(rate) = rs.next_rate() {
        let n = steps.len() + 1;
        let qw = env
            .quiet
            .wait_recorded(ctx, &format!("{label} step {n}"))
            .await?;
        let prefix = format!("{id_prefix}s{n}-");
        let name = format!("{label} step {n} @ {rate:.0}/s");
        let i = ctx
            .phase_with(&name, Route::Send, rate, step, &prefix, &body)
            .await?;
        let r = ctx.phase_result(i)?.clone();
        ok_2xx += r.ok_2xx;
        unknown += r.timeouts + r.errors;
        let http = search::judge(&r, &criteria);
        let key = db::key_prefix(&prefix, env.bytewise);
        let (progress, drain_wait_s) = if http.is_empty() {
            pipeline::wait_settled(&env.db, env.app_id, &key, &code, r.ok_2xx, drain).await?
        } else {
            let p = pipeline::progress(&env.db, env.app_id, &key, &code).await?;
            (p, 0.0)
        };
        let pl = pipeline::summarize(&pipeline::read(&env.db, env.app_id, &key, &code).await?);
        let delivered = pl.accept_to_delivered.as_ref();
        let observed = E2eObserved {
            accepted: r.ok_2xx,
            progress,
            p99_ms: delivered.map(|p| p.p99_ms),
        };
        let reasons = judge_e2e(&http, &observed, &e2e);
        let passed = reasons.is_empty();
        eprintln!(
            "[{label}] {rate:>7.0}/s: achieved {:>7.0}/s, http p99 {:.1} ms, {} of {} delivered \
             {:.1} s after the sends, accept->delivered p50 {} ms p99 {} ms: {}",
            r.achieved_rate,
            r.latency.p99_ms,
            progress.delivered,
            r.ok_2xx.max(progress.messages),
            drain_wait_s,
            opt(delivered.map(|p| p.p50_ms), 0),
            opt(delivered.map(|p| p.p99_ms), 0),
            if passed {
                "pass".to_owned()
            } else {
                format!("FAIL ({})", reasons.join("; "))
            }
        );
        rs.record(rate, passed);
        steps.push(E2eStep {
            rate,
            passed,
            reasons,
            phase: i,
            id_prefix: prefix,
            quiet_wait_s: qw.waited_s,
            quiet: qw.quiet,
            drain_wait_s,
            accepted: r.ok_2xx,
            pipeline: pl,
        });
    }
    ctx.count_check(&format!("{label} search"), &id_prefix, ok_2xx, unknown)
        .await?;
    Ok(E2eSearch {
        round,
        channel,
        channel_code: code,
        params,
        criteria,
        max_rate: rs.best(),
        first_fail: rs.first_fail(),
        steps,
        ok_2xx,
        unknown_fate: unknown,
        id_prefix,
    })
}
