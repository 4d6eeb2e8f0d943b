//! The `backlog` command line and its checks.

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use umsd_actors::domain::send::MAX_USER_IDS;

use crate::TargetArgs;

#[derive(Debug, Clone, Args, Serialize)]
pub struct BacklogArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// U: users; every message goes to all of them (at most 1000).
    #[arg(long, default_value_t = 1000, help_heading = "Backlog")]
    pub users: usize,
    /// M: messages, each to all U users.
    #[arg(long, default_value_t = 1000, help_heading = "Backlog")]
    pub messages: usize,
    /// Send requests in flight while submitting the messages.
    #[arg(long, default_value_t = 4, help_heading = "Backlog")]
    pub send_concurrency: usize,
    /// `pool_size` of the WeCom channel (provider calls in flight).
    #[arg(long, default_value_t = 8, help_heading = "Backlog")]
    pub pool_size: usize,
    /// The channel's `backlog` setting (deliveries a sender holds in memory); default:
    /// umsd's (10000).
    #[arg(long, help_heading = "Backlog")]
    pub channel_backlog: Option<usize>,
    /// Worker threads of the simulator.
    #[arg(long, default_value_t = 2, help_heading = "Backlog")]
    pub sim_threads: usize,
    /// Longest wait, from the first send, for the queue to drain.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 900,
        help_heading = "Backlog"
    )]
    pub deadline_s: u64,
    /// Sampling interval.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 1000,
        help_heading = "Backlog"
    )]
    pub sample_ms: u64,
}

pub(super) fn check_args(a: &BacklogArgs) -> Result<()> {
    if !(1..=MAX_USER_IDS).contains(&a.users) {
        bail!("--users must be 1..={MAX_USER_IDS} (every message goes to all of them in one send)");
    }
    if a.messages == 0 || a.send_concurrency == 0 || a.pool_size == 0 || a.sample_ms == 0 {
        bail!("--messages, --send-concurrency, --pool-size and --sample-ms must be at least 1");
    }
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
            a: BacklogArgs,
        }
        let t = T::try_parse_from(["t"]).unwrap();
        assert_eq!(t.a.users, 1000);
        assert_eq!(t.a.messages, 1000);
        assert_eq!(t.a.deadline_s, 900);
        assert_eq!(t.a.sample_ms, 1000);
        assert!(check_args(&t.a).is_ok());
    }
}
