//! `fanout` through umsd: the users bound on every channel, then `--rounds` rounds of
//! (simulators alone, messages through umsd), and the result of the median round.

use std::time::Duration;

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use tokio::time::Instant;
use umsd_sim::SimHandle;

use super::args::FanoutArgs;
use super::report::{verdict, ChannelPlan, FanoutReport};
use super::round::one_round;
use super::setup::{measure_alone, Setup};
use super::{FEISHU, HOOK, INBOX, WECOM};
use crate::cpu::{self, Probe};
use crate::db;
use crate::report::opt;
use crate::scenarios::deliver::Api;
use crate::scenarios::stats::median_round;
use crate::scenarios::Ctx;
use crate::sims;

/// Below this many cores (umsd and PostgreSQL together, over a second) the daemon idles.
const IDLE_CORES: f64 = 0.05;
/// Longest wait for it to idle between rounds.
const IDLE_WAIT: Duration = Duration::from_secs(60);

/// Waits until umsd and its PostgreSQL idle (at most `max`); answers the cores they used
/// in the last second.
async fn wait_idle(probe: &Probe, max: Duration) -> f64 {
    let t0 = Instant::now();
    loop {
        let before = probe.snapshot();
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let c = cpu::report(
            probe,
            &before,
            &probe.snapshot(),
            t.elapsed().as_secs_f64(),
            0,
        );
        let busy = c.umsd_cores.unwrap_or(0.0) + c.postgres_cores;
        if busy < IDLE_CORES || t0.elapsed() >= max {
            if t0.elapsed() > Duration::from_secs(2) {
                eprintln!(
                    "[fanout] waited {:.0} s for umsd and PostgreSQL to idle ({busy:.2} cores)",
                    t0.elapsed().as_secs_f64()
                );
            }
            return busy;
        }
    }
}

/// What every round shares.
pub(super) struct Env {
    pub(super) api: Api,
    pub(super) db: tokio_postgres::Client,
    pub(super) app_id: i32,
    pub(super) http: reqwest::Client,
    pub(super) users: Vec<String>,
    pub(super) codes: Vec<String>,
    pub(super) content: Value,
    pub(super) sims: Vec<(&'static str, SimHandle)>,
}

pub async fn run(ctx: &mut Ctx, a: &FanoutArgs, setup: Setup) -> Result<()> {
    let Setup {
        sims,
        sims_alone,
        channels,
        config: _,
    } = setup;
    let db_target = ctx
        .db
        .clone()
        .ok_or_else(|| anyhow!("fanout needs the daemon's database"))?;
    let api = Api::new(&ctx.base_url, &ctx.app_key, &ctx.app_secret)?;
    let codes: Vec<String> = channels.iter().map(|c| c.code.clone()).collect();

    // users, bound on every channel
    let hook_base = sims
        .iter()
        .find(|(c, _)| *c == HOOK)
        .map(|(_, s)| s.url())
        .ok_or_else(|| anyhow!("no webhook simulator"))?;
    let users: Vec<String> = (0..a.users).map(sims::user_id).collect();
    let rows: Vec<Value> = users
        .iter()
        .map(|u| {
            let mut bindings =
                vec![json!({"type": "webhook", "value": sims::hook_url(&hook_base, u)})];
            if a.mixed {
                bindings.push(json!({"type": "wecom", "value": u}));
                bindings.push(json!({"type": "feishu", "value": u}));
            }
            json!({"user_id": u, "bindings": bindings})
        })
        .collect();
    eprintln!("== fanout: creating {} users ==", users.len());
    api.put_users(rows).await?;

    let db = db::connect(&db_target).await?;
    let app_id = db::app_id(&db, &ctx.app_key).await?;
    let mut content = serde_json::Map::new();
    content.insert(HOOK.into(), json!({"body": sims::webhook_body()}));
    if a.mixed {
        content.insert(WECOM.into(), json!({"text": sims::IM_TEXT}));
        content.insert(FEISHU.into(), json!({"text": sims::IM_TEXT}));
        content.insert(
            INBOX.into(),
            json!({"title": "Order shipped", "body": sims::IM_TEXT}),
        );
    }
    let env = Env {
        api,
        db,
        app_id,
        http: crate::http_builder()
            .timeout(Duration::from_secs(5))
            .build()?,
        users,
        codes,
        content: Value::Object(content),
        sims,
    };

    let mut rounds = Vec::new();
    let mut alone = Some(sims_alone);
    for round in 1..=a.rounds {
        let sims_alone = match alone.take() {
            Some(s) => s,
            None => {
                // what the last round left behind (autovacuum, say) must not share the
                // cores with the simulator alone
                let probe = ctx.probe.clone();
                let busy = wait_idle(&probe, IDLE_WAIT).await;
                if busy > IDLE_CORES {
                    ctx.report.problems.push(format!(
                        "fanout round {round}: umsd and PostgreSQL still used {busy:.2} cores \
                         after {} s; the simulator-alone phase shares the machine with them",
                        IDLE_WAIT.as_secs()
                    ));
                }
                measure_alone(a, &env.sims, round, Some(&probe)).await?
            }
        };
        let r = one_round(ctx, a, &env, round, sims_alone).await?;
        eprintln!(
            "[round {round}] R_sim {}/s, R_umsd {}/s, ratio {}",
            opt(r.r_sim, 0),
            opt(r.r_umsd, 0),
            opt(r.ratio, 3)
        );
        let complete = r.complete;
        rounds.push(r);
        if !complete {
            // its leftovers would slow the next round down
            break;
        }
    }
    let ratios: Vec<Option<f64>> = rounds.iter().map(|r| r.ratio).collect();
    let median = median_round(&ratios);
    let (r_sim, r_umsd, ratio, complete) =
        rounds.get(median).map_or((None, None, None, false), |r| {
            (r.r_sim, r.r_umsd, r.ratio, r.complete)
        });
    let (_, pass) = verdict(r_umsd, r_sim, a.min_ratio, complete);
    let all_complete = rounds.len() == a.rounds && rounds.iter().all(|r| r.complete);
    let pass = (!a.mixed).then_some(pass && all_complete);
    if pass == Some(false) {
        ctx.report.problems.push(format!(
            "fanout rule failed: median ratio {} (rule >= {}) or not every delivery delivered",
            opt(ratio, 3),
            a.min_ratio
        ));
    }
    if rounds.len() > 1 {
        eprintln!(
            "== rounds: ratios {}; reporting round {} (the median) ==",
            ratios
                .iter()
                .map(|r| opt(*r, 3))
                .collect::<Vec<_>>()
                .join(", "),
            median + 1
        );
    }
    ctx.report.fanout = Some(FanoutReport {
        mixed: a.mixed,
        users: a.users,
        messages: a.messages,
        connections: a.connections,
        channels: channels
            .iter()
            .map(|c| ChannelPlan {
                code: c.code.clone(),
                channel_type: c.channel_type.to_owned(),
                pool_size: c.pool_size,
            })
            .collect(),
        expected_deliveries: (a.users * a.messages * env.codes.len()) as u64,
        rounds,
        median_round: median,
        r_sim,
        r_umsd,
        ratio,
        min_ratio: a.min_ratio,
        pass,
    });
    Ok(())
}
