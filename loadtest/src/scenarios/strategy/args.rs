//! The `strategy` command line and its checks.

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use umsd_actors::domain::strategy::{MAX_WITHIN_SECONDS, MIN_WITHIN_SECONDS};

use crate::TargetArgs;

#[derive(Debug, Clone, Args, Serialize)]
pub struct StrategyArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// U: users of the app; the one broadcast message goes to all of them.
    #[arg(long, default_value_t = 1_000_000, help_heading = "Strategy")]
    pub users: usize,
    /// Share of the users bound to the webhook channel (their step 1 is delivered in
    /// time); the others have no address there (step 1 lost as `no_address`), so they fall
    /// back to the inbox.
    #[arg(long, default_value_t = 0.2, help_heading = "Strategy")]
    pub delivered_share: f64,
    /// `within_seconds` of step 2's condition (not delivered on step 1 within this).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 180,
        help_heading = "Strategy"
    )]
    pub within_s: u32,
    /// `rate_per_second` of the webhook channel.
    #[arg(long, default_value_t = 5000.0, help_heading = "Strategy")]
    pub channel_rate: f64,
    /// `pool_size` of the webhook channel (provider calls in flight).
    #[arg(long, default_value_t = 32, help_heading = "Strategy")]
    pub pool_size: usize,
    /// Worker threads of the simulator.
    #[arg(long, default_value_t = 1, help_heading = "Strategy")]
    pub sim_threads: usize,
    /// `POST /v1/users/batch` requests (1000 users each) in flight while creating users.
    #[arg(long, default_value_t = 4, help_heading = "Strategy")]
    pub user_concurrency: usize,
    /// Longest wait, from the send, until step 1 is planned for every user.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 900,
        help_heading = "Strategy"
    )]
    pub plan_wait_s: u64,
    /// Longest wait, from the last deadline, until no deadline is left and every step-2
    /// delivery is final.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 600,
        help_heading = "Strategy"
    )]
    pub fire_wait_s: u64,
    /// Sampling interval.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 1000,
        help_heading = "Strategy"
    )]
    pub sample_ms: u64,
    /// Pass rule: umsd's peak RSS over the run at most this.
    #[arg(
        long,
        value_name = "MIB",
        default_value_t = 300.0,
        help_heading = "Strategy"
    )]
    pub max_rss_mb: f64,
    /// Pass rule: per-target lateness of step 2 (its delivery's creation minus the
    /// target's deadline), p99 at most this.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 100.0,
        help_heading = "Strategy"
    )]
    pub max_p99_ms: f64,
}

impl StrategyArgs {
    /// Whether user `i` is bound to the webhook channel: `delivered_share` of the users,
    /// spread evenly over them (so every planning page holds its share).
    pub fn bound(&self, i: usize) -> bool {
        is_bound(i, self.delivered_share)
    }

    /// Users bound to the webhook channel.
    pub fn bound_users(&self) -> usize {
        (0..self.users).filter(|i| self.bound(*i)).count()
    }
}

/// `floor((i + 1) · share) > floor(i · share)`: exactly `floor(n · share)` of the first
/// `n` users, evenly spread.
pub fn is_bound(i: usize, share: f64) -> bool {
    ((i + 1) as f64 * share).floor() > (i as f64 * share).floor()
}

pub(super) fn check_args(a: &StrategyArgs) -> Result<()> {
    if a.users == 0 || a.users > 100_000_000 {
        bail!("--users must be 1..=100000000");
    }
    if !(a.delivered_share.is_finite() && (0.0..=1.0).contains(&a.delivered_share)) {
        bail!("--delivered-share must be between 0 and 1");
    }
    if !(MIN_WITHIN_SECONDS..=MAX_WITHIN_SECONDS).contains(&a.within_s) {
        bail!("--within-s must be {MIN_WITHIN_SECONDS}..={MAX_WITHIN_SECONDS} (umsd's range)");
    }
    if a.pool_size == 0 || a.sim_threads == 0 || a.user_concurrency == 0 || a.sample_ms == 0 {
        bail!("--pool-size, --sim-threads, --user-concurrency and --sample-ms must be at least 1");
    }
    for (v, flag) in [
        (a.channel_rate, "--channel-rate"),
        (a.max_rss_mb, "--max-rss-mb"),
        (a.max_p99_ms, "--max-p99-ms"),
    ] {
        if !(v.is_finite() && v > 0.0) {
            bail!("{flag} must be positive");
        }
    }
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
            a: StrategyArgs,
        }
        let t = T::try_parse_from(["t"]).unwrap();
        assert_eq!(t.a.users, 1_000_000);
        assert_eq!(t.a.delivered_share, 0.2);
        assert_eq!(t.a.within_s, 180);
        assert_eq!(t.a.channel_rate, 5000.0);
        assert_eq!(t.a.max_rss_mb, 300.0);
        assert_eq!(t.a.max_p99_ms, 100.0);
        assert!(check_args(&t.a).is_ok());
        for bad in [
            vec!["t", "--within-s", "9"],
            vec!["t", "--within-s", "259201"],
            vec!["t", "--delivered-share", "1.5"],
            vec!["t", "--users", "0"],
            vec!["t", "--user-concurrency", "0"],
        ] {
            let b = T::try_parse_from(&bad).unwrap();
            assert!(check_args(&b.a).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_bound_share_is_exact_and_spread() {
        let n = 20_000;
        for (share, want) in [(0.2, 4000), (0.0, 0), (1.0, n), (0.25, 5000)] {
            let bound = (0..n).filter(|i| is_bound(*i, share)).count();
            assert_eq!(bound, want, "{share}");
        }
        // every page of 1000 consecutive users holds its share
        let page: usize = (5000..6000).filter(|i| is_bound(*i, 0.2)).count();
        assert_eq!(page, 200);
    }
}
