//! The `fanout` command line and its checks.

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use umsd_actors::domain::send::MAX_USER_IDS;

use crate::{seconds, TargetArgs};

#[derive(Debug, Clone, Args, Serialize)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// U: users; every message goes to all of them (at most 1000, the audience limit of
    /// one send).
    #[arg(long, default_value_t = 1000, help_heading = "Fan-out")]
    pub users: usize,
    /// M: messages, each to all U users.
    #[arg(long, default_value_t = 50, help_heading = "Fan-out")]
    pub messages: usize,
    /// C: keep-alive connections of the simulator-alone phase, and the `pool_size`
    /// (provider calls in flight) of umsd's HTTP channels.
    #[arg(long, default_value_t = 32, help_heading = "Fan-out")]
    pub connections: usize,
    /// Length of each simulator-alone phase.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5.0,
        help_heading = "Fan-out"
    )]
    pub sim_seconds: f64,
    /// Worker threads of each simulator (the same in both phases).
    #[arg(long, default_value_t = 2, help_heading = "Fan-out")]
    pub sim_threads: usize,
    /// Four channels at once: webhook, WeCom, Feishu and the inbox.
    #[arg(long, help_heading = "Fan-out")]
    pub mixed: bool,
    /// Send requests in flight while submitting the messages.
    #[arg(long, default_value_t = 4, help_heading = "Fan-out")]
    pub send_concurrency: usize,
    /// Longest wait, from the first send, for every delivery to be delivered and written.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 300,
        help_heading = "Fan-out"
    )]
    pub deadline_s: u64,
    /// Pass rule: R_umsd / R_sim must be at least this.
    #[arg(long, default_value_t = 0.5, help_heading = "Fan-out")]
    pub min_ratio: f64,
    /// Rounds of (simulator alone, through umsd); the round with the median ratio is the
    /// result.
    #[arg(long, default_value_t = 3, help_heading = "Fan-out")]
    pub rounds: usize,
}

pub(super) fn check_args(a: &FanoutArgs) -> Result<()> {
    if !(1..=MAX_USER_IDS).contains(&a.users) {
        bail!("--users must be 1..={MAX_USER_IDS} (every message goes to all of them in one send)");
    }
    if a.messages == 0 || a.connections == 0 || a.send_concurrency == 0 || a.rounds == 0 {
        bail!("--messages, --connections, --send-concurrency and --rounds must be at least 1");
    }
    if !(a.min_ratio.is_finite() && a.min_ratio > 0.0) {
        bail!("--min-ratio must be positive");
    }
    seconds(a.sim_seconds, "--sim-seconds")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_brief() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: FanoutArgs,
        }
        let t = T::try_parse_from(["t"]).unwrap();
        assert_eq!(t.a.users, 1000);
        assert_eq!(t.a.messages, 50);
        assert_eq!(t.a.connections, 32);
        assert_eq!(t.a.sim_seconds, 5.0);
        assert_eq!(t.a.min_ratio, 0.5);
        assert_eq!(t.a.rounds, 3);
        assert!(!t.a.mixed);
        assert!(check_args(&t.a).is_ok());
        let bad = T::try_parse_from(["t", "--users", "1001"]).unwrap();
        assert!(check_args(&bad.a).is_err());
    }
}
