//! What `fanout` does before umsd starts: the provider simulators, each measured alone,
//! and the daemon's config with channels pointing at them. Later rounds measure the
//! simulators alone again while umsd idles.

use anyhow::{bail, Result};
use tokio::time::Instant;
use umsd_sim::{Kind, SimHandle};

use super::args::{check_args, FanoutArgs};
use super::{FEISHU, HOOK, INBOX, WECOM};
use crate::cpu::{self, Probe};
use crate::report::opt;
use crate::scenarios::deliver::{self, ChannelDef, Setting};
use crate::seconds;
use crate::sims::{self, SimAlone};

/// `pool_size` of the channels that batch (WeCom) or write locally (inbox): umsd's
/// default.
const BATCH_POOL: usize = umsd_actors::channel::config::DEFAULT_POOL_SIZE;

/// What is set up before umsd starts: the simulators, their figures alone, the config.
pub struct Setup {
    pub(super) sims: Vec<(&'static str, SimHandle)>,
    pub(super) sims_alone: Vec<SimAlone>,
    pub(super) channels: Vec<ChannelDef>,
    pub config: String,
}

/// Starts the simulators, measures them alone and writes the daemon's config.
pub async fn prepare(a: &FanoutArgs) -> Result<Setup> {
    check_args(a)?;
    deliver::require_started_daemon(&a.target, "fanout")?;
    let mut sims: Vec<(&'static str, SimHandle)> =
        vec![(HOOK, sims::start(Kind::Webhook, a.sim_threads)?)];
    if a.mixed {
        sims.push((WECOM, sims::start(Kind::Wecom, a.sim_threads)?));
        sims.push((FEISHU, sims::start(Kind::Feishu, a.sim_threads)?));
    }
    let sims_alone = measure_alone(a, &sims, 1, None).await?;
    let mut channels = Vec::new();
    for (code, sim) in &sims {
        let cfg = sim.config();
        channels.push(match sim.kind() {
            Kind::Webhook => ChannelDef {
                code: (*code).to_owned(),
                channel_type: "webhook",
                pool_size: Some(a.connections),
                rate_per_second: None,
                settings: vec![("secret", Setting::Str(cfg.app_secret))],
            },
            Kind::Wecom => ChannelDef {
                code: (*code).to_owned(),
                channel_type: "wecom",
                pool_size: Some(BATCH_POOL),
                rate_per_second: None,
                settings: vec![
                    ("base_url", Setting::Str(sim.url())),
                    ("corpid", Setting::Str(cfg.app_key)),
                    ("corpsecret", Setting::Str(cfg.app_secret)),
                    ("agentid", Setting::Int(1)),
                ],
            },
            Kind::Feishu => ChannelDef {
                code: (*code).to_owned(),
                channel_type: "feishu",
                pool_size: Some(a.connections),
                rate_per_second: None,
                settings: vec![
                    ("base_url", Setting::Str(sim.url())),
                    ("app_id", Setting::Str(cfg.app_key)),
                    ("app_secret", Setting::Str(cfg.app_secret)),
                ],
            },
            other => bail!("no channel for the {other} simulator"),
        });
    }
    if a.mixed {
        channels.push(ChannelDef {
            code: INBOX.to_owned(),
            channel_type: "inbox",
            pool_size: Some(BATCH_POOL),
            rate_per_second: None,
            settings: vec![],
        });
    }
    let config = deliver::config_text(&a.target.app_key, &a.target.app_secret, &channels);
    Ok(Setup {
        sims,
        sims_alone,
        channels,
        config,
    })
}

/// Every simulator that has a simulator-alone measurement, alone, one after the other.
pub(super) async fn measure_alone(
    a: &FanoutArgs,
    sims: &[(&'static str, SimHandle)],
    round: usize,
    probe: Option<&Probe>,
) -> Result<Vec<SimAlone>> {
    let duration = seconds(a.sim_seconds, "--sim-seconds")?;
    let mut out = Vec::new();
    for (code, sim) in sims {
        if !sims::measurable_alone(sim.kind()) {
            continue;
        }
        eprintln!(
            "== round {round}: simulator alone: {} ({code}), {} connections, closed loop for {:.0} s ==",
            sim.kind(),
            a.connections,
            a.sim_seconds
        );
        let before = probe.map(Probe::snapshot);
        let t = Instant::now();
        let mut r = sims::alone(sim, a.users, a.connections, duration).await?;
        if let (Some(probe), Some(before)) = (probe, before) {
            let c = cpu::report(
                probe,
                &before,
                &probe.snapshot(),
                t.elapsed().as_secs_f64(),
                0,
            );
            r.umsd_cores = c.umsd_cores;
            r.postgres_cores = Some(c.postgres_cores);
        }
        eprintln!(
            "[{} alone] {:.0} recipients/s ({} ok, {} non-2xx, {} errors; harness {:.2} cores, \
             whole machine {} cores{})",
            r.kind,
            r.rate,
            r.requests_ok,
            r.non_2xx,
            r.errors,
            r.harness_cpu_cores,
            opt(r.machine_busy_cores, 2),
            match (r.umsd_cores, r.postgres_cores) {
                (Some(u), Some(p)) => format!(", idle umsd {u:.2}, PostgreSQL {p:.2}"),
                _ => String::new(),
            }
        );
        if r.requests_ok == 0 {
            bail!(
                "the {} simulator accepted nothing alone: {:?}",
                r.kind,
                r.notes
            );
        }
        out.push(r);
    }
    Ok(out)
}
