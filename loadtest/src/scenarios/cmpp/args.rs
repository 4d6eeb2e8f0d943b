//! The `cmpp` command line and its checks.

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use umsd_actors::domain::send::MAX_USER_IDS;

use crate::{seconds, TargetArgs};

#[derive(Debug, Clone, Args, Serialize)]
pub struct CmppArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// U: users, each bound to a phone number; every message goes to all of them (at most
    /// 1000).
    #[arg(long, default_value_t = 1000, help_heading = "CMPP")]
    pub users: usize,
    /// M: messages per channel, each to all U users (one SUBMIT per user).
    #[arg(long, default_value_t = 20, help_heading = "CMPP")]
    pub messages: usize,
    /// SUBMITs outstanding per connection, for the client loop and umsd's sessions.
    #[arg(long, default_value_t = 16, help_heading = "CMPP")]
    pub window: usize,
    /// Length of each simulator-alone phase.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5.0,
        help_heading = "CMPP"
    )]
    pub sim_seconds: f64,
    /// `rate_per_second` of the `smsrate` channel.
    #[arg(long, default_value_t = 500.0, help_heading = "CMPP")]
    pub rate: f64,
    /// Length of the window the rate is measured over (it starts one second after the
    /// first SUBMIT).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10.0,
        help_heading = "CMPP"
    )]
    pub rate_window_s: f64,
    /// Worker threads of each simulator (the same in both phases).
    #[arg(long, default_value_t = 1, help_heading = "CMPP")]
    pub sim_threads: usize,
    /// Send requests in flight while submitting the messages.
    #[arg(long, default_value_t = 4, help_heading = "CMPP")]
    pub send_concurrency: usize,
    /// Longest wait per channel, from its first send, for every SUBMIT to be accepted and
    /// every delivery to be final.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 120,
        help_heading = "CMPP"
    )]
    pub deadline_s: u64,
}

pub(super) fn check_args(a: &CmppArgs) -> Result<()> {
    if !(1..=MAX_USER_IDS).contains(&a.users) {
        bail!("--users must be 1..={MAX_USER_IDS} (every message goes to all of them in one send)");
    }
    if a.messages == 0 || a.window == 0 || a.send_concurrency == 0 || a.sim_threads == 0 {
        bail!("--messages, --window, --send-concurrency and --sim-threads must be at least 1");
    }
    if !(a.rate.is_finite() && a.rate >= 1.0) {
        bail!("--rate must be at least 1");
    }
    seconds(a.sim_seconds, "--sim-seconds")?;
    seconds(a.rate_window_s, "--rate-window-s")?;
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
            a: CmppArgs,
        }
        let t = T::try_parse_from(["t"]).unwrap();
        assert_eq!((t.a.users, t.a.messages, t.a.window), (1000, 20, 16));
        assert_eq!(t.a.sim_seconds, 5.0);
        assert_eq!(t.a.rate, 500.0);
        assert_eq!(t.a.rate_window_s, 10.0);
        assert!(check_args(&t.a).is_ok());
        let bad = T::try_parse_from(["t", "--window", "0"]).unwrap();
        assert!(check_args(&bad.a).is_err());
        let bad = T::try_parse_from(["t", "--rate", "0"]).unwrap();
        assert!(check_args(&bad.a).is_err());
    }
}
