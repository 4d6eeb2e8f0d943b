//! The `urgent` command line and its checks.

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use umsd_actors::domain::send::MAX_USER_IDS;

use crate::{seconds, TargetArgs};

#[derive(Debug, Clone, Args, Serialize)]
pub struct UrgentArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// U: users bound to the webhook channel; every backlog message goes to all of them
    /// (at most 1000), the stream's messages to one of them each.
    #[arg(long, default_value_t = 1000, help_heading = "Urgent")]
    pub users: usize,
    /// M: backlog messages, each to all U users (U × M queued deliveries).
    #[arg(long, default_value_t = 1000, help_heading = "Urgent")]
    pub backlog_messages: usize,
    /// Send requests in flight while submitting the backlog.
    #[arg(long, default_value_t = 4, help_heading = "Urgent")]
    pub send_concurrency: usize,
    /// `rate_per_second` of the webhook channel.
    #[arg(long, default_value_t = 2000.0, help_heading = "Urgent")]
    pub channel_rate: f64,
    /// `pool_size` of the webhook channel (provider calls in flight).
    #[arg(long, default_value_t = 32, help_heading = "Urgent")]
    pub pool_size: usize,
    /// The channel's `backlog` setting (deliveries a sender holds in memory); default:
    /// umsd's.
    #[arg(long, help_heading = "Urgent")]
    pub channel_backlog: Option<usize>,
    /// Worker threads of the simulator.
    #[arg(long, default_value_t = 1, help_heading = "Urgent")]
    pub sim_threads: usize,
    /// Longest wait after the backlog's sends for it to be planned and in the sender's
    /// hands (deliveries being submitted).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 600,
        help_heading = "Urgent"
    )]
    pub ready_wait_s: u64,
    /// Rate of the normal one-user stream during the run.
    #[arg(long, default_value_t = 200.0, help_heading = "Urgent")]
    pub rate: f64,
    /// Length of the stream.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30.0,
        help_heading = "Urgent"
    )]
    pub seconds: f64,
    /// One high-priority message every this many milliseconds during the stream.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 250,
        help_heading = "Urgent"
    )]
    pub high_every_ms: u64,
    /// Keep-alive connections of the normal stream.
    #[arg(long, default_value_t = 32, help_heading = "Urgent")]
    pub connections: usize,
    /// After the stream, how long the high messages may still take to be submitted.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10.0,
        help_heading = "Urgent"
    )]
    pub drain_s: f64,
    /// Pass rule: accept → submitted p99 of the high messages at most this.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 1000.0,
        help_heading = "Urgent"
    )]
    pub max_p99_ms: f64,
}

impl UrgentArgs {
    /// High-priority messages per second.
    pub fn high_rate(&self) -> f64 {
        1000.0 / self.high_every_ms.max(1) as f64
    }
}

pub(super) fn check_args(a: &UrgentArgs) -> Result<()> {
    if !(1..=MAX_USER_IDS).contains(&a.users) {
        bail!("--users must be 1..={MAX_USER_IDS} (every backlog message goes to all of them)");
    }
    if a.backlog_messages == 0
        || a.send_concurrency == 0
        || a.pool_size == 0
        || a.connections == 0
        || a.high_every_ms == 0
    {
        bail!(
            "--backlog-messages, --send-concurrency, --pool-size, --connections and \
             --high-every-ms must be at least 1"
        );
    }
    for (v, flag) in [
        (a.channel_rate, "--channel-rate"),
        (a.rate, "--rate"),
        (a.max_p99_ms, "--max-p99-ms"),
    ] {
        if !(v.is_finite() && v > 0.0) {
            bail!("{flag} must be positive");
        }
    }
    seconds(a.seconds, "--seconds")?;
    seconds(a.drain_s, "--drain-s")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: UrgentArgs,
        }
        let t = T::try_parse_from(["t"]).unwrap();
        assert_eq!(t.a.users * t.a.backlog_messages, 1_000_000);
        assert_eq!(t.a.channel_rate, 2000.0);
        assert_eq!(t.a.rate, 200.0);
        assert_eq!(t.a.seconds, 30.0);
        assert_eq!(t.a.high_every_ms, 250);
        assert_eq!(t.a.high_rate(), 4.0);
        assert_eq!(t.a.max_p99_ms, 1000.0);
        assert!(check_args(&t.a).is_ok());
        let bad = T::try_parse_from(["t", "--users", "1001"]).unwrap();
        assert!(check_args(&bad.a).is_err());
        let bad = T::try_parse_from(["t", "--high-every-ms", "0"]).unwrap();
        assert!(check_args(&bad.a).is_err());
    }
}
