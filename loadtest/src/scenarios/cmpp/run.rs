//! `cmpp` through umsd: the users bound to phone numbers, then each channel in turn until
//! its simulator has accepted every SUBMIT and every delivery is final, sampled every
//! second; then the rate check on the rate-limited channel.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use serde_json::json;
use tokio::time::Instant;
use umsd_actors::metrics as m;
use umsd_sim::ismg::IsmgHandle;

use super::args::CmppArgs;
use super::buckets::{scrape_buckets, submit_resp_buckets, BucketLatency};
use super::rates::{rate_check, rate_series, span_rate, RATE_SKIP_MS, RATE_TOLERANCE};
use super::report::{latency_text, pct, AloneResult, ChannelRun, CmppReport, CmppSample};
use super::setup::{ChannelPlan, Setup};
use crate::cpu;
use crate::db;
use crate::metrics;
use crate::report::opt;
use crate::scenarios::deliver::{self, Api};
use crate::scenarios::Ctx;
use crate::sims;

/// Longest wait for the channel's sessions to log in.
const LOGIN_WAIT: Duration = Duration::from_secs(30);

/// What every channel's phase shares.
struct Env {
    api: Api,
    db: tokio_postgres::Client,
    app_id: i32,
    http: reqwest::Client,
    users: Vec<String>,
    t0: Instant,
    t0_unix_ms: u64,
}

pub async fn run(ctx: &mut Ctx, a: &CmppArgs, setup: Setup) -> Result<()> {
    let Setup {
        channels,
        alone,
        config: _,
    } = setup;
    let db_target = ctx
        .db
        .clone()
        .ok_or_else(|| anyhow!("cmpp needs the daemon's database"))?;
    let api = Api::new(&ctx.base_url, &ctx.app_key, &ctx.app_secret)?;
    let users: Vec<String> = (0..a.users).map(sims::user_id).collect();
    let rows = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            json!({"user_id": u, "bindings": [{"type": "phone", "value": format!("+86139{i:08}")}]})
        })
        .collect();
    eprintln!("== cmpp: creating {} users ==", users.len());
    api.put_users(rows).await?;
    let db = db::connect(&db_target).await?;
    let app_id = db::app_id(&db, &ctx.app_key).await?;
    let env = Env {
        api,
        db,
        app_id,
        http: crate::http_builder()
            .timeout(Duration::from_secs(5))
            .build()?,
        users,
        t0: Instant::now(),
        t0_unix_ms: unix_ms(),
    };
    let mut samples = Vec::new();
    let mut runs = Vec::new();
    for (plan, sim) in &channels {
        let logged_in = sim
            .wait_for(LOGIN_WAIT, |s| {
                s.connections_logged_in >= plan.sessions as u64
            })
            .await
            .unwrap_or_else(|s| s)
            .connections_logged_in;
        if logged_in < plan.sessions as u64 {
            ctx.report.problems.push(format!(
                "cmpp {}: {logged_in} of {} sessions logged in after {} s",
                plan.code,
                plan.sessions,
                LOGIN_WAIT.as_secs()
            ));
        }
        let alone_of = alone.iter().find(|r| r.connections == plan.sessions);
        let r = one_channel(ctx, a, &env, plan, sim, alone_of, &mut samples).await?;
        eprintln!(
            "[{}] {}/{} accepted, {} SUBMITs/s ({} of the simulator alone), submit->resp {}",
            r.code,
            r.accepted,
            r.expected,
            opt(r.submits_per_second, 0),
            opt(r.ratio, 3),
            latency_text(&r.submit_resp)
        );
        runs.push(r);
    }
    let rate_check = channels
        .iter()
        .find(|(p, _)| p.rate_per_second.is_some())
        .and_then(|(plan, sim)| {
            rate_check(
                &accepted_times(sim),
                plan.rate_per_second?,
                plan.sessions,
                RATE_SKIP_MS,
                (a.rate_window_s * 1000.0).round() as u64,
            )
        });
    match &rate_check {
        Some(r) if r.measured.is_none() => ctx.report.problems.push(format!(
            "cmpp rate check: the SUBMITs ended before the {:.0} s window did (raise --messages)",
            r.window_s
        )),
        Some(r) if !r.pass => ctx.report.problems.push(format!(
            "cmpp rate rule failed: {}/s measured against {}/s configured",
            opt(r.measured, 1),
            r.configured
        )),
        None => ctx
            .report
            .problems
            .push("cmpp rate check: no SUBMIT accepted on the rated channel".into()),
        _ => {}
    }
    if let Some(r) = &rate_check {
        if r.worst_window_error
            .is_some_and(|e| e.abs() > RATE_TOLERANCE)
        {
            ctx.report.problems.push(format!(
                "cmpp rate: the busiest {:.0} s window after the first second carried {}/s \
                 ({}); the most in one second: {} SUBMITs",
                r.window_s,
                opt(r.worst_window_rate, 1),
                pct(r.worst_window_error),
                r.peak_1s.unwrap_or(0)
            ));
        }
    }
    let all_complete = runs.iter().all(|r| r.complete);
    let pass = Some(all_complete && rate_check.as_ref().is_some_and(|r| r.pass));
    // (the simulators' threads are joined off the runtime)
    tokio::task::spawn_blocking(move || drop(channels)).await?;
    ctx.report.cmpp = Some(CmppReport {
        users: a.users,
        messages: a.messages,
        window: a.window,
        alone,
        channels: runs,
        rate_check,
        pass,
        samples,
    });
    Ok(())
}

fn unix_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// The simulator's accepted SUBMITs' timestamps, ascending.
fn accepted_times(sim: &IsmgHandle) -> Vec<u64> {
    let mut t: Vec<u64> = sim.submits().iter().map(|s| s.at_ms).collect();
    t.sort_unstable();
    t
}

/// One channel through umsd: M messages to every user, then a bounded wait until the
/// simulator has accepted every SUBMIT and every delivery is final.
async fn one_channel(
    ctx: &mut Ctx,
    a: &CmppArgs,
    env: &Env,
    plan: &ChannelPlan,
    sim: &IsmgHandle,
    alone: Option<&AloneResult>,
    samples: &mut Vec<CmppSample>,
) -> Result<ChannelRun> {
    let code = plan.code;
    let expected = (a.users * a.messages) as u64;
    let prefix = ctx.prefix(code);
    let content = json!({ code: {"text": sims::IM_TEXT} });
    let make: deliver::MakeBody = {
        let (users, prefix) = (env.users.clone(), prefix.clone());
        Arc::new(move |i| deliver::message_body(&format!("{prefix}{i}"), &users, &[code], &content))
    };
    let accepted_now = || sim.stats().submit_resp.get(&0).copied().unwrap_or(0);
    let base = accepted_now();
    eprintln!(
        "== cmpp {code}: {} messages x {} users = {expected} SUBMITs, {} session(s){} ==",
        a.messages,
        a.users,
        plan.sessions,
        plan.rate_per_second
            .map_or_else(String::new, |r| format!(", rate_per_second {r}"))
    );
    let probe = ctx.probe.clone();
    let before = probe.snapshot();
    let machine0 = cpu::machine_ticks();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(a.deadline_s.max(1));
    let mut sender = Some(tokio::spawn(deliver::send_messages(
        env.api.clone(),
        a.messages,
        a.send_concurrency,
        make,
        Arc::new(AtomicU64::new(0)),
    )));
    let mut send = None;
    let mut complete = false;
    let hz = cpu::clock_ticks_per_second() as f64;
    let mut last = (t0, before.clone(), cpu::own_cpu_time());
    let mut next_sample = t0 + Duration::from_secs(1);
    let mut next_db_check = t0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Instant::now();
        if sender.as_ref().is_some_and(|h| h.is_finished()) {
            if let Some(h) = sender.take() {
                send = Some(h.await.map_err(|e| anyhow!("send task: {e}"))??);
            }
        }
        let accepted = accepted_now().saturating_sub(base);
        if now >= next_sample {
            next_sample += Duration::from_secs(1);
            let snap = probe.snapshot();
            let own = cpu::own_cpu_time();
            let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
            let sample = CmppSample {
                t_s: now.duration_since(env.t0).as_secs_f64(),
                channel: code,
                accepted,
                umsd_cores: match (last.1.umsd, snap.umsd) {
                    (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / hz / dt),
                    _ => None,
                },
                postgres_cores: cpu::postgres_delta(&last.1, &snap) as f64 / hz / dt,
                harness_cores: own.saturating_sub(last.2).as_secs_f64() / dt,
            };
            eprintln!(
                "[{code}] {:>5.1} s: {accepted} SUBMITs accepted, umsd {} cores, PostgreSQL {:.2} cores",
                now.duration_since(t0).as_secs_f64(),
                opt(sample.umsd_cores, 2),
                sample.postgres_cores
            );
            samples.push(sample);
            last = (now, snap, own);
        }
        if send.is_some() && accepted >= expected && now >= next_db_check {
            let states = deliver::state_counts(&env.db, env.app_id, &prefix).await?;
            if deliver::final_count(&states) >= expected {
                complete = true;
                break;
            }
            next_db_check = now + Duration::from_millis(500);
        }
        if now >= deadline {
            if let Some(h) = sender.take() {
                h.abort();
            }
            break;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let after = probe.snapshot();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let machine = cpu::machine_busy_cores(machine0, cpu::machine_ticks(), cores);
    let accepted = accepted_now().saturating_sub(base);
    if !complete {
        let msg = format!(
            "cmpp {code}: {accepted} of {expected} SUBMITs accepted or deliveries not final \
             within --deadline-s {}",
            a.deadline_s
        );
        eprintln!("\n!!! {msg} !!!\n");
        ctx.report.problems.push(msg);
    }
    let times = accepted_times(sim);
    let submits_per_second = span_rate(&times);
    // (the unlimited channels are done within a second or two)
    let bin_ms = if plan.rate_per_second.is_some() {
        1000
    } else {
        100
    };
    let scrape = metrics::scrape(&env.http, &ctx.base_url)
        .await
        .unwrap_or_default();
    let labels = [("channel", code)];
    let states = deliver::state_counts(&env.db, env.app_id, &prefix)
        .await?
        .remove(code)
        .unwrap_or_default();
    let delivered = states.get("delivered").copied().unwrap_or(0);
    if u64::try_from(delivered).unwrap_or(0) != expected {
        ctx.report.problems.push(format!(
            "cmpp {code}: {delivered} of {expected} deliveries delivered (states {states:?})"
        ));
    }
    let cpu_report = cpu::report(&probe, &before, &after, elapsed, accepted);
    let per_submit = |s: f64| (accepted > 0).then(|| s * 1e6 / accepted as f64);
    // (a rate-limited channel is not compared with the simulator alone)
    let alone_rate = alone
        .filter(|_| plan.rate_per_second.is_none())
        .map(|r| r.rate);
    Ok(ChannelRun {
        code,
        sessions: plan.sessions,
        rate_per_second: plan.rate_per_second,
        id_prefix: prefix,
        send,
        expected,
        accepted,
        complete,
        first_submit_s: times
            .first()
            .map(|&f| f.saturating_sub(env.t0_unix_ms) as f64 / 1000.0),
        span_s: match (times.first(), times.last()) {
            (Some(f), Some(l)) => Some(l.saturating_sub(*f) as f64 / 1000.0),
            _ => None,
        },
        submits_per_second,
        alone_rate,
        ratio: match (submits_per_second, alone_rate) {
            (Some(u), Some(s)) if s > 0.0 => Some(u / s),
            _ => None,
        },
        submit_resp: BucketLatency::of(&scrape_buckets(&scrape, &submit_resp_buckets(), &labels)),
        alone_submit_resp: alone.map(|r| r.latency_bucketed.clone()),
        // (+ 0.0: a counter never incremented is absent, and an empty sum is -0.0)
        flow_controlled: scrape.sum(m::CMPP_FLOW_CONTROL_TOTAL, &labels) + 0.0,
        resends: scrape.sum(m::CMPP_RESENDS_TOTAL, &labels) + 0.0,
        states,
        umsd_us_per_submit: cpu_report.umsd_cpu_s.and_then(per_submit),
        postgres_us_per_submit: per_submit(cpu_report.postgres_cpu_s),
        cpu: Some(cpu_report),
        machine_busy_cores: machine,
        bin_ms,
        series: rate_series(&times, env.t0_unix_ms, bin_ms),
    })
}
