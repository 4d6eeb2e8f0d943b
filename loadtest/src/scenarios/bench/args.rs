//! The `bench` command line.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::{seconds, LoadArgs, SearchArgs, TargetArgs};

/// A channel the end-to-end rate is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum E2eChannel {
    /// The daemon's own inbox (no provider).
    Inbox,
    /// A webhook channel against the webhook simulator the harness starts.
    Webhook,
    /// No end-to-end search.
    None,
}

impl E2eChannel {
    pub fn name(self) -> &'static str {
        match self {
            E2eChannel::Inbox => "inbox",
            E2eChannel::Webhook => "webhook",
            E2eChannel::None => "none",
        }
    }
}

/// What the steady run's rate is a fraction of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SteadyOf {
    /// R_e2e_inbox (the median over the rounds) when it was measured, else R_daemon.
    E2e,
    /// R_daemon of the median round.
    Daemon,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct BenchArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub search: SearchArgs,
    /// Rounds of (R_http, R_copy, R_daemon, R_e2e), each measured back to back; the round
    /// with the median ratio is reported as the result. A shared machine's speed drifts
    /// over minutes: pairing the figures per round and taking the median keeps the ratio
    /// honest.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Messages copied for R_copy (3 rows each).
    #[arg(long, default_value_t = 200_000, help_heading = "R_copy")]
    pub copy_messages: u64,
    /// Messages per COPY chunk (one transaction per chunk).
    #[arg(long, default_value_t = 10_000, help_heading = "R_copy")]
    pub copy_chunk: u64,
    /// Database connections copying in parallel.
    #[arg(long, default_value_t = 2, help_heading = "R_copy")]
    pub copy_connections: usize,
    /// Longest wait, before each measured search or phase, for the daemon to finish the
    /// work earlier phases left (queues empty, nothing queued); after it the phase starts
    /// anyway and a problem is recorded.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 600,
        help_heading = "Quiet wait"
    )]
    pub quiet_timeout_s: u64,
    /// How long the daemon must stay quiet before a phase starts.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 500,
        help_heading = "Quiet wait"
    )]
    pub quiet_settle_ms: u64,
    /// Channels the end-to-end rate R_e2e is searched on, comma-separated: `inbox`,
    /// `webhook` (needs a daemon the harness starts), or `none`.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "inbox,webhook",
        help_heading = "R_e2e"
    )]
    pub e2e_channels: Vec<E2eChannel>,
    /// A step passes only if accept → delivered p99 of its messages is at most this.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 1000.0,
        help_heading = "R_e2e"
    )]
    pub e2e_p99_ms: f64,
    /// After a step's sends end, how long its messages may take to be delivered.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5.0,
        help_heading = "R_e2e"
    )]
    pub e2e_drain_s: f64,
    /// First rate of the end-to-end search (never above R_daemon).
    #[arg(long, default_value_t = 200.0, help_heading = "R_e2e")]
    pub e2e_start_rate: f64,
    /// Lowest rate of the end-to-end search.
    #[arg(long, default_value_t = 20.0, help_heading = "R_e2e")]
    pub e2e_min_rate: f64,
    /// `pool_size` of the webhook channel (default: umsd's).
    #[arg(long, help_heading = "R_e2e")]
    pub e2e_webhook_pool_size: Option<usize>,
    /// Length of the steady run.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 20.0,
        help_heading = "Steady run"
    )]
    pub steady_seconds: f64,
    /// Rate of the steady run as a fraction of the rate named by --steady-of.
    #[arg(long, default_value_t = 0.8, help_heading = "Steady run")]
    pub steady_fraction: f64,
    /// The rate the steady run is a fraction of.
    #[arg(long, value_enum, default_value = "e2e", help_heading = "Steady run")]
    pub steady_of: SteadyOf,
    /// Longest wait after the steady run's sends for every one of its messages to be
    /// delivered (CPU is measured up to then).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 300.0,
        help_heading = "Steady run"
    )]
    pub steady_drain_s: f64,
}

impl BenchArgs {
    /// The channels of the end-to-end search, in order, without repeats.
    pub fn e2e_channels(&self) -> Vec<E2eChannel> {
        let mut out = Vec::new();
        for c in &self.e2e_channels {
            if *c != E2eChannel::None && !out.contains(c) {
                out.push(*c);
            }
        }
        out
    }
}

pub(super) fn check_args(a: &BenchArgs) -> Result<()> {
    seconds(a.steady_seconds, "--steady-seconds")?;
    seconds(a.steady_drain_s, "--steady-drain-s")?;
    seconds(a.e2e_drain_s, "--e2e-drain-s")?;
    if !(a.steady_fraction > 0.0 && a.steady_fraction <= 1.0) {
        bail!("--steady-fraction must be in (0, 1]");
    }
    if a.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if a.e2e_channels.contains(&E2eChannel::None) && a.e2e_channels.len() > 1 {
        bail!("--e2e-channels none goes alone");
    }
    if !(a.e2e_p99_ms.is_finite() && a.e2e_p99_ms > 0.0) {
        bail!("--e2e-p99-ms must be positive");
    }
    if !(a.e2e_min_rate > 0.0 && a.e2e_start_rate >= a.e2e_min_rate) {
        bail!("--e2e-min-rate must be positive and at most --e2e-start-rate");
    }
    if a.e2e_webhook_pool_size == Some(0) {
        bail!("--e2e-webhook-pool-size must be at least 1");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: BenchArgs,
    }

    #[test]
    fn defaults_and_channel_lists() {
        let t = T::try_parse_from(["t"]).unwrap();
        assert_eq!(
            t.a.e2e_channels(),
            vec![E2eChannel::Inbox, E2eChannel::Webhook]
        );
        assert_eq!(t.a.e2e_p99_ms, 1000.0);
        assert_eq!(t.a.e2e_drain_s, 5.0);
        assert_eq!(t.a.quiet_timeout_s, 600);
        assert_eq!(t.a.steady_of, SteadyOf::E2e);
        assert!(check_args(&t.a).is_ok());
        let t = T::try_parse_from(["t", "--e2e-channels", "none"]).unwrap();
        assert!(t.a.e2e_channels().is_empty());
        assert!(check_args(&t.a).is_ok());
        let t = T::try_parse_from(["t", "--e2e-channels", "webhook,inbox,webhook"]).unwrap();
        assert_eq!(
            t.a.e2e_channels(),
            vec![E2eChannel::Webhook, E2eChannel::Inbox]
        );
        let t = T::try_parse_from(["t", "--e2e-channels", "none,inbox"]).unwrap();
        assert!(check_args(&t.a).is_err());
        assert!(T::try_parse_from(["t", "--e2e-channels", "sms"]).is_err());
        let t = T::try_parse_from(["t", "--steady-of", "daemon"]).unwrap();
        assert_eq!(t.a.steady_of, SteadyOf::Daemon);
    }
}
