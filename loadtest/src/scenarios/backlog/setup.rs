//! What `backlog` does before umsd starts: the WeCom simulator and the daemon's config
//! with one channel pointing at it.

use anyhow::Result;
use umsd_sim::{Kind, SimHandle};

use super::args::{check_args, BacklogArgs};
use super::CHANNEL;
use crate::scenarios::deliver::{self, ChannelDef, Setting};
use crate::sims;

/// What is set up before umsd starts.
pub struct Setup {
    pub(super) sim: SimHandle,
    pub config: String,
}

pub fn prepare(a: &BacklogArgs) -> Result<Setup> {
    check_args(a)?;
    deliver::require_started_daemon(&a.target, "backlog")?;
    let sim = sims::start(Kind::Wecom, a.sim_threads)?;
    let cfg = sim.config();
    let mut settings = vec![
        ("base_url", Setting::Str(sim.url())),
        ("corpid", Setting::Str(cfg.app_key)),
        ("corpsecret", Setting::Str(cfg.app_secret)),
        ("agentid", Setting::Int(1)),
    ];
    if let Some(b) = a.channel_backlog {
        settings.push(("backlog", Setting::Int(i64::try_from(b)?)));
    }
    let channels = [ChannelDef {
        code: CHANNEL.to_owned(),
        channel_type: "wecom",
        pool_size: Some(a.pool_size),
        rate_per_second: None,
        settings,
    }];
    let config = deliver::config_text(&a.target.app_key, &a.target.app_secret, &channels);
    Ok(Setup { sim, config })
}
