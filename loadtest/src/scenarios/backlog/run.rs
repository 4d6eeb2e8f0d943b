//! `backlog` through umsd: the users, the messages sent with bounded concurrency, and the
//! drain sampled every `--sample-ms` until nothing is queued or the deadline; then the
//! outcome from the database.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use serde_json::json;
use tokio::time::Instant;
use umsd_actors::metrics as m;

use super::args::BacklogArgs;
use super::report::{drain_rss, memory_flat, mib, rss_limit, BacklogReport, BacklogSample, MIB};
use super::setup::Setup;
use super::CHANNEL;
use crate::cpu;
use crate::db;
use crate::metrics;
use crate::report::opt;
use crate::scenarios::deliver::{self, Api};
use crate::scenarios::Ctx;
use crate::sims;

pub async fn run(ctx: &mut Ctx, a: &BacklogArgs, setup: Setup) -> Result<()> {
    let sim = setup.sim;
    let db_target = ctx
        .db
        .clone()
        .ok_or_else(|| anyhow!("backlog needs the daemon's database"))?;
    let pid = ctx
        .probe
        .umsd_pid
        .ok_or_else(|| anyhow!("backlog needs umsd's pid"))?;
    let api = Api::new(&ctx.base_url, &ctx.app_key, &ctx.app_secret)?;
    let expected = (a.users * a.messages) as u64;
    let users: Vec<String> = (0..a.users).map(sims::user_id).collect();
    let rows = users
        .iter()
        .map(|u| json!({"user_id": u, "bindings": [{"type": "wecom", "value": u}]}))
        .collect();
    eprintln!("== backlog: creating {} users ==", users.len());
    api.put_users(rows).await?;
    let db = db::connect(&db_target).await?;
    let app_id = db::app_id(&db, &ctx.app_key).await?;
    let prefix = ctx.prefix("b");
    let content = json!({ CHANNEL: {"text": sims::IM_TEXT} });
    let make: deliver::MakeBody = {
        let (users, prefix) = (users.clone(), prefix.clone());
        Arc::new(move |i| {
            deliver::message_body(&format!("{prefix}{i}"), &users, &[CHANNEL], &content)
        })
    };
    let http = crate::http_builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let rss_idle = cpu::read_rss_bytes(pid)?;
    let sim_base = sim.stats().recipients_accepted;

    eprintln!(
        "== backlog: {} messages x {} users = {} deliveries on {CHANNEL}, sampling every {} ms ==",
        a.messages, a.users, expected, a.sample_ms
    );
    let probe = ctx.probe.clone();
    let before = probe.snapshot();
    let machine0 = cpu::machine_ticks();
    let harness0 = crate::cpu::own_cpu_time();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(a.deadline_s.max(1));
    let interval = Duration::from_millis(a.sample_ms);
    let accepted = Arc::new(AtomicU64::new(0));
    let mut sender = Some(tokio::spawn(deliver::send_messages(
        api.clone(),
        a.messages,
        a.send_concurrency,
        make,
        accepted.clone(),
    )));
    let mut send_summary = None;
    let mut samples: Vec<BacklogSample> = Vec::new();
    let mut drain_from: Option<usize> = None;
    let mut last_snap = before.clone();
    let mut last_t = t0;
    let mut next = t0;
    let mut complete = false;
    let hz = cpu::clock_ticks_per_second() as f64;
    loop {
        next += interval;
        tokio::time::sleep_until(next).await;
        if sender.as_ref().is_some_and(|h| h.is_finished()) {
            if let Some(h) = sender.take() {
                let s = h.await.map_err(|e| anyhow!("send task: {e}"))??;
                eprintln!(
                    "[backlog] {} messages accepted in {:.1} s ({} retries): the drain begins",
                    s.messages, s.elapsed_s, s.retries
                );
                send_summary = Some(s);
            }
        }
        let now = Instant::now();
        let rss = cpu::read_rss_bytes(pid)?;
        let queued = deliver::queued_deliveries(&db).await?;
        let dispatch_rows = deliver::dispatch_rows(&db).await?;
        let delivered = sim.stats().recipients_accepted.saturating_sub(sim_base);
        let scrape = metrics::scrape(&http, &ctx.base_url)
            .await
            .unwrap_or_default();
        let snap = probe.snapshot();
        let dt = now.duration_since(last_t).as_secs_f64().max(1e-3);
        let draining = send_summary.is_some();
        if draining && drain_from.is_none() {
            drain_from = Some(samples.len());
        }
        let sample = BacklogSample {
            t_s: now.duration_since(t0).as_secs_f64(),
            phase: if draining { "drain" } else { "send" },
            messages_accepted: accepted.load(Ordering::Relaxed),
            rss_bytes: rss,
            queued,
            dispatch_rows,
            delivered,
            held: scrape.sum(m::CHANNEL_QUEUE_DEPTH, &[]),
            status_pending: scrape.sum(m::STATUS_PENDING, &[]),
            umsd_cores: match (last_snap.umsd, snap.umsd) {
                (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / hz / dt),
                _ => None,
            },
            postgres_cores: cpu::postgres_delta(&last_snap, &snap) as f64 / hz / dt,
        };
        if samples.len() % 10 == 0 || draining && queued == 0 {
            eprintln!(
                "[backlog] {:>6.1} s {}: {} messages accepted, {} queued ({} dispatch rows), {} delivered, RSS {:.1} MiB, umsd {} cores, PostgreSQL {:.2} cores",
                sample.t_s,
                sample.phase,
                sample.messages_accepted,
                sample.queued,
                sample.dispatch_rows,
                sample.delivered,
                rss as f64 / MIB,
                opt(sample.umsd_cores, 2),
                sample.postgres_cores
            );
        }
        samples.push(sample);
        last_snap = snap;
        last_t = now;
        if draining && queued == 0 && delivered >= expected {
            complete = true;
            break;
        }
        if now >= deadline {
            if let Some(h) = sender.take() {
                h.abort();
            }
            break;
        }
    }
    let window = t0.elapsed().as_secs_f64();
    let after = probe.snapshot();
    let machine = cpu::machine_busy_cores(
        machine0,
        cpu::machine_ticks(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let harness_cores = crate::cpu::own_cpu_time()
        .saturating_sub(harness0)
        .as_secs_f64()
        / window.max(1e-3);
    if !complete {
        let msg = format!(
            "backlog: the queue did not drain within --deadline-s {} ({} of {} delivered, {} \
             queued at the end)",
            a.deadline_s,
            samples.last().map_or(0, |s| s.delivered),
            expected,
            samples.last().map_or(0, |s| s.queued)
        );
        eprintln!("\n!!! {msg} !!!\n");
        ctx.report.problems.push(msg);
    }
    eprintln!("== backlog: reading the outcome from the database ==");
    let end_scrape = metrics::scrape(&http, &ctx.base_url)
        .await
        .unwrap_or_default();
    let states = deliver::state_counts(&db, app_id, &prefix)
        .await?
        .remove(CHANNEL)
        .unwrap_or_default();
    let accepts = deliver::accepts(&db, app_id, &prefix).await?;
    let events = deliver::channel_events(&db, app_id, &prefix).await?;
    let total = events.iter().find(|e| e.channel.is_none());
    let delivered_db = total.map_or(0, |t| t.delivered);
    let overall_rate = match (accepts.first, total.and_then(|t| t.last_delivered)) {
        (Some(f), Some(l)) => deliver::rate(u64::try_from(delivered_db).unwrap_or(0), f, l),
        _ => None,
    };
    let drain = drain_from.and_then(|i| drain_rss(&samples, i));
    let (drain_start_s, drain_end_s, drain_rate) = match drain_from {
        Some(i) => {
            let first = &samples[i];
            let last = samples.last().unwrap_or(first);
            let dt = last.t_s - first.t_s;
            let rate =
                (dt > 0.0).then(|| last.delivered.saturating_sub(first.delivered) as f64 / dt);
            (Some(first.t_s), Some(last.t_s), rate)
        }
        None => (None, None, None),
    };
    let delivered_n = u64::try_from(delivered_db).unwrap_or(0);
    if delivered_n != expected {
        ctx.report.problems.push(format!(
            "backlog: {delivered_db} of {expected} deliveries delivered (states {states:?})"
        ));
    }
    let cpu_report = cpu::report(&probe, &before, &after, window, delivered_n);
    let per_delivery = |s: f64| (delivered_n > 0).then(|| s * 1e6 / delivered_n as f64);
    let pass = drain.map(|(start, peak, _)| memory_flat(start, peak));
    let report = BacklogReport {
        users: a.users,
        messages: a.messages,
        expected_deliveries: expected,
        pool_size: a.pool_size,
        channel_backlog: a.channel_backlog,
        send: send_summary,
        complete,
        rss_idle_bytes: rss_idle,
        rss_drain_start_bytes: drain.map(|d| d.0),
        rss_drain_peak_bytes: drain.map(|d| d.1),
        rss_end_bytes: drain.map(|d| d.2),
        rss_limit_bytes: drain.map(|d| rss_limit(d.0)),
        pass,
        drain_start_s,
        drain_end_s,
        drain_rate,
        overall_rate,
        delivered_db,
        states,
        accept_to_submit: total.map(|t| t.accept_to_submit.clone()),
        umsd_us_per_delivery: cpu_report.umsd_cpu_s.and_then(per_delivery),
        machine_busy_cores: machine,
        other_cores: machine.map(|m| {
            (m - cpu_report.umsd_cores.unwrap_or(0.0) - cpu_report.postgres_cores - harness_cores)
                .max(0.0)
        }),
        postgres_us_per_delivery: per_delivery(cpu_report.postgres_cpu_s),
        cpu: Some(cpu_report),
        status_batch_mean: end_scrape.mean(m::STATUS_BATCH_SIZE, &[]),
        samples,
    };
    if report.pass == Some(false) {
        ctx.report.problems.push(format!(
            "backlog rule failed: RSS peak {} during the drain above the limit {}",
            mib(report.rss_drain_peak_bytes),
            mib(report.rss_limit_bytes)
        ));
    }
    ctx.report.backlog = Some(report);
    Ok(())
}
