//! `urgent` through umsd: the users, the backlog (sent as `backlog` sends its messages)
//! and the wait until it is in the sender's hands, the normal stream with the
//! high-priority messages beside it, and the outcome from the database.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use umsd_actors::domain::Priority;
use umsd_sim::SimHandle;

use super::args::UrgentArgs;
use super::report::{verdict, UrgentReport};
use super::setup::Setup;
use super::CHANNEL;
use crate::db::{self, KeyPrefix};
use crate::openloop::{self, user_of, BodySpec, ContentKind};
use crate::report::opt;
use crate::scenarios::deliver::{self, Api};
use crate::scenarios::pipeline;
use crate::scenarios::Ctx;
use crate::{seconds, sims, Route};

/// Connections of the high-priority phase (a few requests per second).
const HIGH_CONNECTIONS: usize = 2;

/// Messages not yet planned (due within a minute).
async fn unplanned(db: &Client) -> Result<i64> {
    Ok(db
        .query_one(
            "SELECT count(*) FROM message_queue WHERE not_before <= now() + interval '1 minute'",
            &[],
        )
        .await
        .context("counting message_queue")?
        .get(0))
}

/// Waits until the backlog is planned and the simulator has seen deliveries, at most
/// `max`; answers the seconds waited and whether it got there.
async fn wait_in_hand(
    db: &Client,
    sim: &SimHandle,
    base: u64,
    max: Duration,
) -> Result<(f64, bool)> {
    let t0 = Instant::now();
    let mut next_note = t0;
    loop {
        let left = unplanned(db).await?;
        let sent = sim.stats().recipients_accepted.saturating_sub(base);
        let waited = t0.elapsed();
        if left == 0 && sent > 0 {
            eprintln!(
                "[urgent] backlog planned and being submitted after {:.1} s ({sent} delivered so far)",
                waited.as_secs_f64()
            );
            return Ok((waited.as_secs_f64(), true));
        }
        if waited >= max {
            return Ok((waited.as_secs_f64(), false));
        }
        if Instant::now() >= next_note {
            next_note += Duration::from_secs(5);
            eprintln!(
                "[urgent] {:.0} s: {left} backlog messages to plan, {sent} delivered",
                waited.as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Deliveries of the messages under `key` whose first outcome fell in `[from, to)`.
async fn sent_between(
    db: &Client,
    app_id: i32,
    key: &KeyPrefix,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<i64> {
    let (cond, args) = key.condition("k.message_id", 4);
    let sql = format!(
        "SELECT count(*) FROM message_keys k
           JOIN deliveries d ON d.message_pk = k.id AND d.created_at >= k.created_at
          WHERE k.app_id = $1 AND {cond} AND d.sent_at >= $2 AND d.sent_at < $3"
    );
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&app_id, &from, &to];
    params.extend(args.iter().map(|a| a as &(dyn ToSql + Sync)));
    Ok(db
        .query_one(&sql, &params)
        .await
        .context("counting the backlog's deliveries during the stream")?
        .get(0))
}

pub async fn run(ctx: &mut Ctx, a: &UrgentArgs, setup: Setup) -> Result<()> {
    let sim = setup.sim;
    let db_target = ctx
        .db
        .clone()
        .ok_or_else(|| anyhow!("urgent needs the daemon's database"))?;
    let api = Api::new(&ctx.base_url, &ctx.app_key, &ctx.app_secret)?;
    let users: Vec<String> = (0..a.users as u64)
        .map(|i| user_of(i, a.users as u64))
        .collect();
    let rows: Vec<Value> = users
        .iter()
        .map(|u| {
            json!({"user_id": u, "bindings": [
                {"type": "webhook", "value": sims::hook_url(&sim.url(), u)}
            ]})
        })
        .collect();
    eprintln!("== urgent: creating {} users ==", users.len());
    api.put_users(rows).await?;
    let db = db::connect(&db_target).await?;
    let app_id = db::app_id(&db, &ctx.app_key).await?;
    let bytewise = db::bytewise_collation(&db).await?;
    let body = BodySpec::new(CHANNEL, ContentKind::Webhook).with_users(a.users as u64);
    ctx.preflight_with(Route::Send, &body.clone().with_priority(Priority::High))
        .await?;

    // 1. the backlog
    let expected = (a.users * a.backlog_messages) as u64;
    eprintln!(
        "== urgent: backlog of {} messages x {} users = {expected} deliveries on {CHANNEL} \
         (rate_per_second {}) ==",
        a.backlog_messages, a.users, a.channel_rate
    );
    let backlog_prefix = ctx.prefix("ub");
    let content = json!({ CHANNEL: {"body": sims::webhook_body()} });
    let make: deliver::MakeBody = {
        let (users, prefix) = (users.clone(), backlog_prefix.clone());
        Arc::new(move |i| {
            deliver::message_body(&format!("{prefix}{i}"), &users, &[CHANNEL], &content)
        })
    };
    let sim_base = sim.stats().recipients_accepted;
    let send = deliver::send_messages(
        api.clone(),
        a.backlog_messages,
        a.send_concurrency,
        make,
        Arc::new(AtomicU64::new(0)),
    )
    .await?;
    eprintln!(
        "[urgent] {} backlog messages accepted in {:.1} s ({} retries)",
        send.messages, send.elapsed_s, send.retries
    );
    let max_wait = Duration::from_secs(a.ready_wait_s.max(1));
    let (ready_s, ready) = wait_in_hand(&db, &sim, sim_base, max_wait).await?;
    if !ready {
        ctx.report.problems.push(format!(
            "urgent: the backlog was not planned in full and being submitted within \
             --ready-wait-s {}; the stream ran anyway",
            a.ready_wait_s
        ));
    }
    let queued_at_start = deliver::queued_deliveries(&db).await?;

    // 2. the normal stream and the high-priority messages beside it
    let duration = seconds(a.seconds, "--seconds")?;
    let stream_prefix = ctx.prefix("un");
    let high_prefix = ctx.prefix("uh");
    let stream_spec = ctx.load_spec(
        Route::Send,
        a.rate,
        duration,
        &stream_prefix,
        &body,
        a.connections,
    );
    let high_body = body.clone().with_priority(Priority::High);
    let high_spec = ctx.load_spec(
        Route::Send,
        a.high_rate(),
        duration,
        &high_prefix,
        &high_body,
        HIGH_CONNECTIONS,
    );
    eprintln!(
        "== urgent: {:.0}/s normal and one high every {} ms on {CHANNEL} for {:.0} s ==",
        a.rate, a.high_every_ms, a.seconds
    );
    let sim0 = sim.stats().recipients_accepted;
    let (from, t0) = (Utc::now(), Instant::now());
    let stream_name = format!("urgent normal @ {:.0}/s", a.rate);
    let high_name = format!("urgent high every {} ms", a.high_every_ms);
    let (stream, high) = tokio::join!(
        openloop::run_phase(&stream_name, &ctx.endpoint, &stream_spec, ctx.run_start),
        openloop::run_phase(&high_name, &ctx.endpoint, &high_spec, ctx.run_start),
    );
    let (to, window) = (Utc::now(), t0.elapsed().as_secs_f64());
    let sim_sent = sim.stats().recipients_accepted.saturating_sub(sim0);
    let (stream, high) = (stream?, high?);
    for (what, r) in [("normal", &stream), ("high", &high)] {
        eprintln!(
            "[urgent] {what}: achieved {:.1}/s, HTTP p50 {:.2} ms, p99 {:.2} ms, {} ok, {} non-2xx, {} timeouts, {} errors",
            r.achieved_rate,
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.ok_2xx,
            r.non_2xx,
            r.timeouts,
            r.errors
        );
    }
    let (stream_accepted, high_accepted) = (stream.ok_2xx, high.ok_2xx);
    let unknown = |r: &openloop::PhaseResult| r.timeouts + r.errors;
    let (stream_unknown, high_unknown) = (unknown(&stream), unknown(&high));
    ctx.report.phases.push(stream);
    let stream_phase = ctx.report.phases.len() - 1;
    ctx.report.phases.push(high);
    let high_phase = ctx.report.phases.len() - 1;

    // 3. the outcome
    let high_key = db::key_prefix(&high_prefix, bytewise);
    let drain = seconds(a.drain_s, "--drain-s")?;
    let (_, high_wait_s) =
        pipeline::wait_settled(&db, app_id, &high_key, CHANNEL, high_accepted, drain).await?;
    let high_pl = pipeline::summarize(&pipeline::read(&db, app_id, &high_key, CHANNEL).await?);
    let stream_key = db::key_prefix(&stream_prefix, bytewise);
    let normal = pipeline::summarize(&pipeline::read(&db, app_id, &stream_key, CHANNEL).await?);
    let backlog_key = db::key_prefix(&backlog_prefix, bytewise);
    let backlog_sent = sent_between(&db, app_id, &backlog_key, from, to).await?;
    let queued_at_end = deliver::queued_deliveries(&db).await?;
    let reasons = verdict(
        high_accepted,
        high_pl.delivered,
        high_pl.messages,
        high_pl.accept_to_delivered.as_ref().map(|p| p.p99_ms),
        a.max_p99_ms,
    );
    let pass = reasons.is_empty();
    eprintln!(
        "[urgent] high accept->submitted p99 {} ms ({} of {} submitted); normal p50 {} ms; \
         backlog {backlog_sent} sent during the stream: {}",
        opt(high_pl.accept_to_delivered.as_ref().map(|p| p.p99_ms), 0),
        high_pl.delivered,
        high_accepted.max(high_pl.messages),
        opt(normal.accept_to_delivered.as_ref().map(|p| p.p50_ms), 0),
        if pass { "PASS" } else { "FAIL" }
    );
    if !pass {
        ctx.report
            .problems
            .push(format!("urgent rule failed: {}", reasons.join("; ")));
    }
    let per_second = |n: f64| (window > 0.0).then(|| n / window);
    ctx.report.urgent = Some(UrgentReport {
        users: a.users,
        backlog_messages: a.backlog_messages,
        backlog_deliveries: expected,
        channel_rate: a.channel_rate,
        pool_size: a.pool_size,
        backlog_send: Some(send),
        backlog_ready_s: ready_s,
        backlog_ready: ready,
        queued_at_start,
        queued_at_end,
        stream_rate: a.rate,
        high_every_ms: a.high_every_ms,
        seconds: a.seconds,
        stream_phase,
        high_phase,
        stream_accepted,
        high_accepted,
        high: high_pl,
        high_wait_s,
        normal,
        backlog_sent_during_stream: backlog_sent,
        backlog_drain_rate: per_second(backlog_sent as f64),
        sim_rate_during_stream: per_second(sim_sent as f64),
        max_p99_ms: a.max_p99_ms,
        pass: Some(pass),
        reasons,
    });
    ctx.count_check(
        "urgent normal stream",
        &stream_prefix,
        stream_accepted,
        stream_unknown,
    )
    .await?;
    ctx.count_check("urgent high", &high_prefix, high_accepted, high_unknown)
        .await?;
    Ok(())
}
