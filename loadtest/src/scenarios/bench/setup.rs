//! What `bench` does before umsd starts: with the webhook end-to-end search on a daemon
//! the harness starts, the webhook simulator and a config that adds a webhook channel
//! (`hook`) to the default one (the demo app, the inbox, the null route).

use anyhow::Result;
use umsd_sim::{Kind, SimHandle};

use super::args::{check_args, BenchArgs, E2eChannel};
use crate::scenarios::deliver::{self, ChannelDef, Setting};
use crate::sims;

/// Code of the webhook channel of the written config.
pub const HOOK: &str = "hook";
/// Worker threads of the webhook simulator (it shares the harness's cores).
const SIM_THREADS: usize = 1;

/// What is set up before umsd starts.
pub struct Setup {
    /// The webhook simulator, when the webhook channel is configured.
    pub sim: Option<SimHandle>,
    /// The config to start umsd with instead of the default one.
    pub config: Option<String>,
}

pub fn prepare(a: &BenchArgs) -> Result<Setup> {
    check_args(a)?;
    let own_config = a.target.target.is_none() && a.target.umsd_config.is_none();
    if !own_config || !a.e2e_channels().contains(&E2eChannel::Webhook) {
        return Ok(Setup {
            sim: None,
            config: None,
        });
    }
    let sim = sims::start(Kind::Webhook, SIM_THREADS)?;
    let config = config_text(
        &a.target.app_key,
        &a.target.app_secret,
        &sim.config().app_secret,
        a.e2e_webhook_pool_size,
    );
    Ok(Setup {
        sim: Some(sim),
        config: Some(config),
    })
}

/// The bench's config with a webhook channel: the app granted the inbox and `hook`, the
/// null route on.
pub fn config_text(
    app_key: &str,
    app_secret: &str,
    webhook_secret: &str,
    pool_size: Option<usize>,
) -> String {
    let channels = [
        ChannelDef {
            code: "inbox".to_owned(),
            channel_type: "inbox",
            pool_size: None,
            rate_per_second: None,
            settings: vec![],
        },
        ChannelDef {
            code: HOOK.to_owned(),
            channel_type: "webhook",
            pool_size,
            rate_per_second: None,
            settings: vec![("secret", Setting::Str(webhook_secret.to_owned()))],
        },
    ];
    let mut text = deliver::config_text(app_key, app_secret, &channels);
    text.push_str("[bench]\nnull_route = true\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_config_loads_in_umsd() {
        let text = config_text(
            "demo",
            "demo-secret",
            umsd_sim::Kind::Webhook.default_app_secret(),
            Some(16),
        );
        let path = std::env::temp_dir().join(format!("umsd-lt-bench-{}.toml", std::process::id()));
        std::fs::write(&path, &text).unwrap();
        let cfg = umsd::config::Config::load(Some(&path), &Default::default());
        std::fs::remove_file(&path).unwrap();
        let cfg = cfg.unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(cfg.bench.null_route, "{text}");
        let specs = cfg.channel_specs();
        assert_eq!(specs.len(), 2, "{text}");
        assert_eq!(specs[1].pool_size, Some(16));
        assert_eq!(cfg.app_specs()[0].grants, vec!["inbox", HOOK]);
    }
}
