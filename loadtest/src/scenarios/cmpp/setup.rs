//! What `cmpp` does before umsd starts: the simulator measured alone with 1 and 4
//! connections, then one fresh simulator per channel and the daemon's config with the
//! channels pointing at them.

use anyhow::{Context, Result};
use serde::Serialize;
use umsd_sim::ismg::{self, IsmgAccount, IsmgConfig, IsmgHandle};

use super::alone::measure_alone;
use super::args::{check_args, CmppArgs};
use super::report::AloneResult;
use super::SRC_ID;
use crate::report::opt;
use crate::scenarios::deliver::{self, ChannelDef, Setting};
use crate::seconds;

/// One channel of the written config.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelPlan {
    pub code: &'static str,
    pub sessions: usize,
    pub rate_per_second: Option<f64>,
}

/// What is set up before umsd starts.
pub struct Setup {
    pub(super) channels: Vec<(ChannelPlan, IsmgHandle)>,
    pub(super) alone: Vec<AloneResult>,
    pub config: String,
}

/// The simulator both phases use: default account, no rate limit, no SUBMIT_RESP delay,
/// reports after 200 ms.
pub(super) fn sim_config(a: &CmppArgs) -> IsmgConfig {
    IsmgConfig {
        threads: a.sim_threads,
        window: a.window,
        ..IsmgConfig::default()
    }
}

fn start_sim(a: &CmppArgs) -> Result<IsmgHandle> {
    ismg::start(sim_config(a)).context("starting the ISMG simulator")
}

/// Measures the simulator alone, starts the simulators umsd will use and writes its
/// config.
pub async fn prepare(a: &CmppArgs) -> Result<Setup> {
    check_args(a)?;
    deliver::require_started_daemon(&a.target, "cmpp")?;
    let mut alone = Vec::new();
    for connections in [1, 4] {
        eprintln!(
            "== simulator alone: {connections} connection(s), window {}, closed loop for {:.0} s ==",
            a.window, a.sim_seconds
        );
        let sim = start_sim(a)?;
        let r = measure_alone(&sim, connections, a.window, seconds(a.sim_seconds, "")?).await;
        // (joining the simulator's thread blocks)
        tokio::task::spawn_blocking(move || sim.shutdown()).await?;
        let r = r?;
        eprintln!(
            "[alone x{connections}] {:.0} SUBMITs/s, submit->resp p50 {:.3} ms, p99 {:.3} ms; harness {:.2} cores, machine {} cores",
            r.rate,
            r.latency.p50_ms,
            r.latency.p99_ms,
            r.harness_cpu_cores,
            opt(r.machine_busy_cores, 2)
        );
        alone.push(r);
    }
    let plans = [
        ChannelPlan {
            code: "sms1",
            sessions: 1,
            rate_per_second: None,
        },
        ChannelPlan {
            code: "sms4",
            sessions: 4,
            rate_per_second: None,
        },
        ChannelPlan {
            code: "smsrate",
            sessions: 4,
            rate_per_second: Some(a.rate),
        },
    ];
    let mut channels = Vec::new();
    let mut defs = Vec::new();
    for plan in plans {
        let sim = start_sim(a)?;
        let account = IsmgAccount::default_account();
        defs.push(ChannelDef {
            code: plan.code.to_owned(),
            channel_type: "sms_cmpp",
            pool_size: None,
            rate_per_second: plan.rate_per_second,
            settings: vec![
                ("host", Setting::Str(sim.addr().ip().to_string())),
                ("port", Setting::Int(i64::from(sim.addr().port()))),
                ("account", Setting::Str(account.account)),
                ("password", Setting::Str(account.password)),
                ("version", Setting::Str("3.0".into())),
                ("src_id", Setting::Str(SRC_ID.into())),
                (
                    "max_connections",
                    Setting::Int(i64::try_from(plan.sessions)?),
                ),
                ("window", Setting::Int(i64::try_from(a.window)?)),
            ],
        });
        channels.push((plan, sim));
    }
    let config = deliver::config_text(&a.target.app_key, &a.target.app_secret, &defs);
    Ok(Setup {
        channels,
        alone,
        config,
    })
}
