//! The config of a daemon the delivery scenarios start: the load-test app granted every
//! channel, and channels pointing at the simulators the harness runs.

use std::fmt::Write as _;

use anyhow::{bail, Result};

use crate::TargetArgs;

/// One `settings` value of a channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    Str(String),
    Int(i64),
}

/// One `[[channels]]` entry of the written config.
#[derive(Debug, Clone)]
pub struct ChannelDef {
    pub code: String,
    pub channel_type: &'static str,
    /// `None`: umsd's default.
    pub pool_size: Option<usize>,
    /// `None`: no rate limit.
    pub rate_per_second: Option<f64>,
    pub settings: Vec<(&'static str, Setting)>,
}

/// A TOML basic string (JSON string escaping is valid TOML).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The config of a started umsd: the load-test app granted every channel, the channels
/// (with a rate limit only where one is given), nothing else.
pub fn config_text(app_key: &str, app_secret: &str, channels: &[ChannelDef]) -> String {
    let mut s = String::from("# Written by umsd-loadtest.\nadmin_token = \"demo-admin\"\n\n");
    let grants: Vec<String> = channels.iter().map(|c| toml_str(&c.code)).collect();
    let _ = writeln!(
        s,
        "[[apps]]\nkey = {}\nname = \"Load test\"\nsecret = {}\ngrants = [{}]\n",
        toml_str(app_key),
        toml_str(app_secret),
        grants.join(", ")
    );
    for c in channels {
        let _ = writeln!(
            s,
            "[[channels]]\ncode = {}\ntype = {}",
            toml_str(&c.code),
            toml_str(c.channel_type)
        );
        if let Some(p) = c.pool_size {
            let _ = writeln!(s, "pool_size = {p}");
        }
        if let Some(r) = c.rate_per_second {
            let _ = writeln!(s, "rate_per_second = {r:?}");
        }
        if !c.settings.is_empty() {
            let items: Vec<String> = c
                .settings
                .iter()
                .map(|(k, v)| match v {
                    Setting::Str(t) => format!("{k} = {}", toml_str(t)),
                    Setting::Int(n) => format!("{k} = {n}"),
                })
                .collect();
            let _ = writeln!(s, "settings = {{ {} }}", items.join(", "));
        }
        s.push('\n');
    }
    s
}

/// The delivery scenarios write their own config with channels pointing at simulators
/// they start, so they need a daemon they start themselves.
pub fn require_started_daemon(t: &TargetArgs, scenario: &str) -> Result<()> {
    if t.target.is_some() || t.umsd_config.is_some() {
        bail!(
            "{scenario} starts its own umsd (its channels point at simulators the harness \
             starts): --target and --umsd-config are not supported"
        );
    }
    if t.database_url.is_some() || t.umsd_pid.is_some() {
        bail!("{scenario}: --database-url and --umsd-pid only go with --target");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_config_loads_in_umsd() {
        let channels = vec![
            ChannelDef {
                code: "hook".into(),
                channel_type: "webhook",
                pool_size: Some(32),
                rate_per_second: None,
                settings: vec![(
                    "secret",
                    Setting::Str(umsd_sim::Kind::Webhook.default_app_secret().into()),
                )],
            },
            ChannelDef {
                code: "wecom".into(),
                channel_type: "wecom",
                pool_size: None,
                rate_per_second: Some(500.0),
                settings: vec![
                    ("base_url", Setting::Str("http://127.0.0.1:9".into())),
                    ("corpid", Setting::Str("sim-key".into())),
                    ("corpsecret", Setting::Str("sim \"secret\"".into())),
                    ("agentid", Setting::Int(1)),
                ],
            },
            ChannelDef {
                code: "inbox".into(),
                channel_type: "inbox",
                pool_size: Some(8),
                rate_per_second: None,
                settings: vec![],
            },
        ];
        let text = config_text("demo", "demo-secret", &channels);
        let path = std::env::temp_dir().join(format!("umsd-lt-config-{}.toml", std::process::id()));
        std::fs::write(&path, &text).unwrap();
        let cfg = umsd::config::Config::load(Some(&path), &Default::default());
        std::fs::remove_file(&path).unwrap();
        let cfg = cfg.unwrap_or_else(|e| panic!("{e}\n{text}"));
        let specs = cfg.channel_specs();
        assert_eq!(specs.len(), 3, "{text}");
        assert_eq!(specs[0].pool_size, Some(32));
        assert_eq!(specs[0].rate_per_second, None);
        assert_eq!(specs[1].rate_per_second, Some(500.0));
        assert_eq!(specs[1].settings["corpsecret"], "sim \"secret\"");
        assert_eq!(specs[1].settings["agentid"], 1);
        assert_eq!(specs[2].pool_size, Some(8));
        let apps = cfg.app_specs();
        assert_eq!(apps[0].grants, vec!["hook", "wecom", "inbox"]);
    }
}
