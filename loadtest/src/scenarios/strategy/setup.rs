//! What `strategy` does before umsd starts: the webhook simulator and the daemon's config
//! with a rate-limited webhook channel (step 1) and the inbox (step 2), both granted.

use anyhow::Result;
use umsd_sim::{Kind, SimHandle};

use super::args::{check_args, StrategyArgs};
use super::{HOOK, INBOX};
use crate::scenarios::deliver::{self, ChannelDef, Setting};
use crate::sims;

/// What is set up before umsd starts.
pub struct Setup {
    pub(super) sim: SimHandle,
    pub config: String,
}

pub fn prepare(a: &StrategyArgs) -> Result<Setup> {
    check_args(a)?;
    deliver::require_started_daemon(&a.target, "strategy")?;
    let sim = sims::start(Kind::Webhook, a.sim_threads)?;
    let channels = [
        ChannelDef {
            code: HOOK.to_owned(),
            channel_type: "webhook",
            pool_size: Some(a.pool_size),
            rate_per_second: Some(a.channel_rate),
            settings: vec![("secret", Setting::Str(sim.config().app_secret))],
        },
        ChannelDef {
            code: INBOX.to_owned(),
            channel_type: "inbox",
            pool_size: None,
            rate_per_second: None,
            settings: vec![],
        },
    ];
    let config = deliver::config_text(&a.target.app_key, &a.target.app_secret, &channels);
    Ok(Setup { sim, config })
}
