//! The `bench` command line.

use clap::Args;
use serde::Serialize;

use crate::{LoadArgs, SearchArgs, TargetArgs};

#[derive(Debug, Clone, Args, Serialize)]
pub struct BenchArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub search: SearchArgs,
    /// Rounds of (R_http, R_copy, R_daemon), each measured back to back; the round with
    /// the median ratio is reported as the result. A shared machine's speed drifts over
    /// minutes: pairing the three figures per round and taking the median keeps the ratio
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
    /// Length of the steady run.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 20.0,
        help_heading = "Steady run"
    )]
    pub steady_seconds: f64,
    /// Rate of the steady run as a fraction of R_daemon.
    #[arg(long, default_value_t = 0.8, help_heading = "Steady run")]
    pub steady_fraction: f64,
}
