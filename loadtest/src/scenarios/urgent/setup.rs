//! What `urgent` does before umsd starts: the webhook simulator and the daemon's config
//! with one rate-limited webhook channel.

use anyhow::Result;
use umsd_sim::{Kind, SimHandle};

use super::args::{check_args, UrgentArgs};
use super::CHANNEL;
use crate::scenarios::deliver::{self, ChannelDef, Setting};
use crate::sims;

/// What is set up before umsd starts.
pub struct Setup {
    pub(super) sim: SimHandle,
    pub config: String,
}

pub fn prepare(a: &UrgentArgs) -> Result<Setup> {
    check_args(a)?;
    deliver::require_started_daemon(&a.target, "urgent")?;
    let sim = sims::start(Kind::Webhook, a.sim_threads)?;
    let mut settings = vec![("secret", Setting::Str(sim.config().app_secret))];
    if let Some(b) = a.channel_backlog {
        settings.push(("backlog", Setting::Int(i64::try_from(b)?)));
    }
    let channels = [ChannelDef {
        code: CHANNEL.to_owned(),
        channel_type: "webhook",
        pool_size: Some(a.pool_size),
        rate_per_second: Some(a.channel_rate),
        settings,
    }];
    let config = deliver::config_text(&a.target.app_key, &a.target.app_secret, &channels);
    Ok(Setup { sim, config })
}
