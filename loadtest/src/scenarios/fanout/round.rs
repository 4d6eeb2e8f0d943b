//! One `fanout` round through umsd: M messages to every user on every channel, sampled
//! every second from `/metrics` and `/proc`, then the figures from the database.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use tokio::time::Instant;
use umsd_actors::metrics as m;
use umsd_sim::SimHandle;

use super::args::FanoutArgs;
use super::report::{verdict, ChannelResult, FanoutRound, FanoutSample};
use super::run::Env;
use super::HOOK;
use crate::cpu;
use crate::metrics::{self, Scrape};
use crate::report::opt;
use crate::scenarios::deliver;
use crate::scenarios::Ctx;
use crate::sims::SimAlone;

/// The `/metrics` series kept at the end of each round (name prefixes): counters whole,
/// histograms by their sum and count, and every planner series.
fn kept_metrics() -> Vec<String> {
    let mut kept: Vec<String> = [
        m::DELIVERY_OUTCOMES_TOTAL,
        m::DELIVERY_RETRIES_TOTAL,
        m::STATUS_WRITES_TOTAL,
    ]
    .map(str::to_owned)
    .into();
    for histogram in [
        m::STATUS_BATCH_SIZE,
        m::ACCEPT_TO_SUBMIT_SECONDS,
        m::PROVIDER_REQUEST_DURATION_SECONDS,
    ] {
        kept.push(format!("{histogram}_sum"));
        kept.push(format!("{histogram}_count"));
    }
    kept.extend(
        [
            m::PLANNER_MESSAGES_TOTAL,
            m::PLANNER_TARGETS_TOTAL,
            m::PLANNER_LAG_SECONDS,
        ]
        .map(str::to_owned),
    );
    kept
}

/// Per-channel values of one gauge or counter.
fn per_channel(scrape: &Scrape, name: &str, extra: &[(&str, &str)]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in scrape.matching(name, extra) {
        if let Some(ch) = s.labels.get("channel") {
            *out.entry(ch.clone()).or_insert(0.0) += s.value;
        }
    }
    out
}

/// Mean of a histogram's observations between two scrapes.
fn mean_between(start: &Scrape, end: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (sum, count) = (format!("{name}_sum"), format!("{name}_count"));
    let n = end.sum(&count, labels) - start.sum(&count, labels);
    (n > 0.0).then(|| (end.sum(&sum, labels) - start.sum(&sum, labels)) / n)
}

/// One round through umsd: M messages to every user on every channel, then a bounded wait
/// until every delivery is delivered and written; the figures from the database.
pub(super) async fn one_round(
    ctx: &mut Ctx,
    a: &FanoutArgs,
    env: &Env,
    round: usize,
    sims_alone: Vec<SimAlone>,
) -> Result<FanoutRound> {
    let per_channel_expected = (a.users * a.messages) as u64;
    let expected = per_channel_expected * env.codes.len() as u64;
    let prefix = ctx.prefix(&format!("f{round}"));
    let make: deliver::MakeBody = {
        let (users, prefix, codes, content) = (
            env.users.clone(),
            prefix.clone(),
            env.codes.clone(),
            env.content.clone(),
        );
        Arc::new(move |i| {
            let chans: Vec<&str> = codes.iter().map(String::as_str).collect();
            deliver::message_body(&format!("{prefix}{i}"), &users, &chans, &content)
        })
    };
    let base_scrape = metrics::scrape(&env.http, &ctx.base_url).await?;
    let base_delivered = per_channel(
        &base_scrape,
        m::DELIVERY_OUTCOMES_TOTAL,
        &[("outcome", "delivered")],
    );
    let sim_base: Vec<(u64, &SimHandle)> = env
        .sims
        .iter()
        .map(|(_, s)| (s.stats().recipients_accepted, s))
        .collect();
    let sims_done = || {
        sim_base
            .iter()
            .all(|(b, s)| s.stats().recipients_accepted.saturating_sub(*b) >= per_channel_expected)
    };

    eprintln!(
        "== round {round}: {} messages x {} users on {} ({} deliveries) ==",
        a.messages,
        a.users,
        env.codes.join(", "),
        expected
    );
    let probe = ctx.probe.clone();
    let before = probe.snapshot();
    let cpu0 = cpu::own_cpu_time();
    let machine0 = cpu::machine_ticks();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(a.deadline_s.max(1));
    let accepted = Arc::new(AtomicU64::new(0));
    let mut sender = Some(tokio::spawn(deliver::send_messages(
        env.api.clone(),
        a.messages,
        a.send_concurrency,
        make,
        accepted.clone(),
    )));
    let mut send_summary = None;
    let mut samples = Vec::new();
    let mut last = (t0, before.clone(), cpu0);
    let mut next_sample = t0 + Duration::from_secs(1);
    let mut next_db_check = t0;
    let mut complete = false;
    let hz = cpu::clock_ticks_per_second() as f64;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Instant::now();
        if sender.as_ref().is_some_and(|h| h.is_finished()) {
            if let Some(h) = sender.take() {
                let s = h.await.map_err(|e| anyhow!("send task: {e}"))??;
                eprintln!(
                    "[fanout] {} messages accepted in {:.2} s ({} retries)",
                    s.messages, s.elapsed_s, s.retries
                );
                send_summary = Some(s);
            }
        }
        if now >= next_sample {
            next_sample += Duration::from_secs(1);
            let snap = probe.snapshot();
            let cpu = cpu::own_cpu_time();
            let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
            let scrape = metrics::scrape(&env.http, &ctx.base_url)
                .await
                .unwrap_or_default();
            let mut delivered = per_channel(
                &scrape,
                m::DELIVERY_OUTCOMES_TOTAL,
                &[("outcome", "delivered")],
            );
            for (k, v) in delivered.iter_mut() {
                *v -= base_delivered.get(k).copied().unwrap_or(0.0);
            }
            let sample = FanoutSample {
                t_s: now.duration_since(t0).as_secs_f64(),
                messages_accepted: accepted.load(Ordering::Relaxed),
                delivered,
                in_flight: per_channel(&scrape, m::CHANNEL_IN_FLIGHT, &[]),
                held: per_channel(&scrape, m::CHANNEL_QUEUE_DEPTH, &[]),
                status_pending: scrape.sum(m::STATUS_PENDING, &[]),
                umsd_cores: match (last.1.umsd, snap.umsd) {
                    (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / hz / dt),
                    _ => None,
                },
                postgres_cores: cpu::postgres_delta(&last.1, &snap) as f64 / hz / dt,
                harness_cores: cpu.saturating_sub(last.2).as_secs_f64() / dt,
            };
            let total: f64 = sample.delivered.values().sum();
            eprintln!(
                "[fanout] {:>5.1} s: {} messages accepted, {:.0} delivered, in flight {:?}, status pending {:.0}, umsd {} cores, PostgreSQL {:.2} cores",
                sample.t_s,
                sample.messages_accepted,
                total,
                sample.in_flight,
                sample.status_pending,
                opt(sample.umsd_cores, 2),
                sample.postgres_cores
            );
            samples.push(sample);
            last = (now, snap, cpu);
        }
        if send_summary.is_some() && sims_done() && now >= next_db_check {
            // every simulator has its recipients: wait for the inbox (if any) and for the
            // outcomes to be written
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
    let wait = t0.elapsed().as_secs_f64();
    let after = probe.snapshot();
    let harness_cpu = cpu::own_cpu_time().saturating_sub(cpu0).as_secs_f64();
    let machine = cpu::machine_busy_cores(
        machine0,
        cpu::machine_ticks(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    if !complete {
        let msg = format!(
            "fanout round {round}: not every delivery was delivered and written within \
             --deadline-s {} (simulators: {})",
            a.deadline_s,
            sim_base
                .iter()
                .map(|(b, s)| format!(
                    "{} {}",
                    s.kind(),
                    s.stats().recipients_accepted.saturating_sub(*b)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        eprintln!("\n!!! {msg} !!!\n");
        ctx.report.problems.push(msg);
    }
    let end_scrape = metrics::scrape(&env.http, &ctx.base_url)
        .await
        .unwrap_or_default();
    let states = deliver::state_counts(&env.db, env.app_id, &prefix).await?;
    let accepts = deliver::accepts(&env.db, env.app_id, &prefix).await?;
    let events = deliver::channel_events(&env.db, env.app_id, &prefix).await?;
    let sim_rate = |code: &str| -> Option<f64> {
        let kind = env.sims.iter().find(|(c, _)| *c == code)?.1.kind();
        sims_alone
            .iter()
            .find(|s| s.kind == kind.as_str())
            .map(|s| s.rate)
    };
    let result_of = |ev: &deliver::ChannelEvents| -> ChannelResult {
        let rate = match (accepts.first, ev.last_delivered) {
            (Some(f), Some(l)) => deliver::rate(u64::try_from(ev.delivered).unwrap_or(0), f, l),
            _ => None,
        };
        let sim_alone_rate = ev.channel.as_deref().and_then(sim_rate);
        let st = match &ev.channel {
            Some(c) => states.get(c).cloned().unwrap_or_default(),
            None => {
                let mut all = BTreeMap::new();
                for m in states.values() {
                    for (k, v) in m {
                        *all.entry(k.clone()).or_insert(0) += v;
                    }
                }
                all
            }
        };
        ChannelResult {
            channel: ev.channel.clone(),
            expected: if ev.channel.is_some() {
                per_channel_expected
            } else {
                expected
            },
            delivered: ev.delivered,
            rate,
            last_delivery_after_first_accept_s: match (accepts.first, ev.last_delivered) {
                (Some(f), Some(l)) => (l - f).num_microseconds().map(|us| us as f64 / 1e6),
                _ => None,
            },
            sim_alone_rate,
            ratio: match (rate, sim_alone_rate) {
                (Some(r), Some(s)) if s > 0.0 => Some(r / s),
                _ => None,
            },
            accept_to_submit: ev.accept_to_submit.clone(),
            states: st,
        }
    };
    let per_channel_results: Vec<ChannelResult> = events
        .iter()
        .filter(|e| e.channel.is_some())
        .map(result_of)
        .collect();
    let total = events.iter().find(|e| e.channel.is_none()).map(result_of);
    for ch in &env.codes {
        let Some(c) = per_channel_results
            .iter()
            .find(|c| c.channel.as_deref() == Some(ch.as_str()))
        else {
            ctx.report.problems.push(format!(
                "fanout round {round}: no delivery events for channel {ch}"
            ));
            continue;
        };
        if u64::try_from(c.delivered).unwrap_or(0) != c.expected {
            ctx.report.problems.push(format!(
                "fanout round {round}: channel {ch} has {} of {} deliveries delivered (states {:?})",
                c.delivered, c.expected, c.states
            ));
        }
    }
    let delivered_total = total
        .as_ref()
        .map_or(0, |t| u64::try_from(t.delivered).unwrap_or(0));
    let cpu_report = cpu::report(&probe, &before, &after, wait, delivered_total);
    let r_sim = sim_rate(HOOK);
    let r_umsd = per_channel_results
        .iter()
        .find(|c| c.channel.as_deref() == Some(HOOK))
        .and_then(|c| c.rate);
    let (ratio, _) = verdict(r_umsd, r_sim, a.min_ratio, complete);
    let busy: Vec<&FanoutSample> = samples
        .iter()
        .filter(|s| s.in_flight.values().any(|v| *v > 0.0) || s.status_pending > 0.0)
        .collect();
    let mut mean_in_flight = BTreeMap::new();
    let mut provider_call_mean_ms = BTreeMap::new();
    for ch in &env.codes {
        if !busy.is_empty() {
            let sum: f64 = busy
                .iter()
                .map(|s| s.in_flight.get(ch.as_str()).copied().unwrap_or(0.0))
                .sum();
            mean_in_flight.insert(ch.clone(), sum / busy.len() as f64);
        }
        if let Some(m) = mean_between(
            &base_scrape,
            &end_scrape,
            m::PROVIDER_REQUEST_DURATION_SECONDS,
            &[("channel", ch.as_str())],
        ) {
            provider_call_mean_ms.insert(ch.clone(), m * 1000.0);
        }
    }
    let per_delivery = |s: f64| (delivered_total > 0).then(|| s * 1e6 / delivered_total as f64);
    let harness_cores = if wait > 0.0 { harness_cpu / wait } else { 0.0 };
    let (umsd_cores, postgres_cores) = (cpu_report.umsd_cores, cpu_report.postgres_cores);
    Ok(FanoutRound {
        round,
        sims_alone: sims_alone.clone(),
        id_prefix: prefix,
        send: send_summary,
        accepts: Some(accepts),
        complete,
        wait_s: wait,
        per_channel: per_channel_results,
        total,
        r_sim,
        r_umsd,
        ratio,
        umsd_us_per_delivery: cpu_report.umsd_cpu_s.and_then(per_delivery),
        postgres_us_per_delivery: per_delivery(cpu_report.postgres_cpu_s),
        cpu: Some(cpu_report),
        machine_busy_cores: machine,
        other_cores: machine
            .map(|m| (m - umsd_cores.unwrap_or(0.0) - postgres_cores - harness_cores).max(0.0)),
        harness_cpu_cores: harness_cores,
        mean_in_flight,
        status_batch_mean: mean_between(&base_scrape, &end_scrape, m::STATUS_BATCH_SIZE, &[]),
        provider_call_mean_ms,
        metrics_end: end_scrape
            .select(
                &kept_metrics()
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            )
            .into_iter()
            .filter(|(k, _)| !k.contains("_bucket"))
            .collect(),
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_between_scrapes() {
        let a = Scrape::parse("umsd_status_batch_size_sum 1000\numsd_status_batch_size_count 10\n");
        let b = Scrape::parse("umsd_status_batch_size_sum 5000\numsd_status_batch_size_count 12\n");
        assert_eq!(
            mean_between(&a, &b, "umsd_status_batch_size", &[]),
            Some(2000.0)
        );
        assert_eq!(mean_between(&b, &b, "umsd_status_batch_size", &[]), None);
    }

    #[test]
    fn per_channel_reads_labels() {
        let s = Scrape::parse(
            "umsd_channel_in_flight{channel=\"hook\"} 31\n\
             umsd_delivery_outcomes_total{channel=\"hook\",type=\"webhook\",outcome=\"delivered\"} 7\n\
             umsd_delivery_outcomes_total{channel=\"hook\",type=\"webhook\",outcome=\"retryable\"} 2\n",
        );
        assert_eq!(per_channel(&s, "umsd_channel_in_flight", &[])["hook"], 31.0);
        assert_eq!(
            per_channel(
                &s,
                "umsd_delivery_outcomes_total",
                &[("outcome", "delivered")]
            )["hook"],
            7.0
        );
    }
}
