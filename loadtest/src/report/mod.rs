//! Results: the `result.json` with every figure, the parameters and each phase's
//! per-second series; `chart.svg` with throughput and latency over the whole run (two
//! stacked panels) or, for the delivery scenarios (`fanout`, `backlog`, `cmpp`,
//! `strategy`), their own sampled series ([`chart`]); and the short human summary printed
//! at the end ([`text`]).
//!
//! This module holds the record of a run ([`Report`]) and the figures every scenario
//! driven by the open-loop generator shares; each delivery scenario keeps its own figures
//! in its `report` module.

mod chart;
mod text;

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::copy::CopyResult;
use crate::cpu::CpuReport;
use crate::db::CountCheck;
use crate::openloop::{LatencySummary, PhaseResult};
use crate::scenarios::backlog::BacklogReport;
use crate::scenarios::bench::{E2eReport, QuietWait, RoundSummary};
use crate::scenarios::cmpp::CmppReport;
use crate::scenarios::fanout::FanoutReport;
use crate::scenarios::pipeline::Pipeline;
use crate::scenarios::strategy::StrategyReport;
use crate::scenarios::urgent::UrgentReport;
use crate::search::{Criteria, SearchParams};

pub use chart::{write_chart, write_panels, Line, Panel};
pub use text::{opt, percentiles, summary};

/// One step of a rate search.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub rate: f64,
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub reasons: Vec<String>,
    /// Index into [`Report::phases`].
    pub phase: usize,
}

/// A finished rate search against one route.
#[derive(Debug, Clone, Serialize)]
pub struct SearchSummary {
    pub path: String,
    pub params: SearchParams,
    pub criteria: Criteria,
    /// Highest rate that passed; `None` if none did.
    pub max_rate: Option<f64>,
    /// Achieved throughput at that step.
    pub max_rate_achieved: Option<f64>,
    /// Lowest rate that failed, if any was tried.
    pub first_fail: Option<f64>,
    pub steps: Vec<StepRecord>,
    /// 2xx answers over all steps.
    pub ok_2xx: u64,
    /// Timeouts and broken connections over all steps.
    pub unknown_fate: u64,
    /// The `message_id` prefix of every request of this search.
    pub id_prefix: String,
}

/// The steady run at a fraction of R_e2e_inbox or R_daemon (or a `run` at a fixed rate).
#[derive(Debug, Clone, Serialize)]
pub struct SteadySummary {
    /// The rate is this fraction of `basis_rate` (0 for a `run` at a fixed rate).
    pub fraction: f64,
    /// `R_e2e_inbox` or `R_daemon`.
    pub basis: Option<String>,
    pub basis_rate: Option<f64>,
    pub rate: f64,
    pub phase: usize,
    pub latency: LatencySummary,
    pub ok_2xx: u64,
    /// For `bench`: from the start of the sends until every message was delivered (or the
    /// wait ended), per message delivered (`cpu.accepted` holds that count).
    pub cpu: Option<CpuReport>,
    /// Accept → planned and accept → delivered of the run's messages, from the database.
    pub pipeline: Option<Pipeline>,
    /// From the end of the sends until the last message was delivered (or the wait ended).
    pub delivery_wait_s: Option<f64>,
    pub all_delivered: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Environment {
    pub cores: usize,
    pub harness_threads: usize,
    pub target: String,
    pub started_daemon: bool,
    pub umsd_bin: Option<String>,
    pub umsd_pid: Option<u32>,
    pub umsd_config: Option<String>,
    pub umsd_log: Option<String>,
    pub data_dir: Option<String>,
    pub database: Option<String>,
}

/// Everything a run produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    pub scenario: String,
    pub run_id: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub parameters: serde_json::Value,
    pub environment: Environment,
    /// R_http: the null route's maximum sustainable rate.
    pub r_http: Option<SearchSummary>,
    /// R_copy: binary COPY throughput of the same rows.
    pub r_copy: Option<CopyResult>,
    /// R_daemon: durable accepts' maximum sustainable rate.
    pub r_daemon: Option<SearchSummary>,
    /// `1 / (1/R_http + 1/R_copy)`.
    pub r_ref: Option<f64>,
    /// `R_daemon / R_ref`.
    pub ratio: Option<f64>,
    /// Every round's figures (the fields above are the median round's).
    pub rounds: Vec<RoundSummary>,
    /// R_e2e: every round's end-to-end searches and their medians.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2e: Option<E2eReport>,
    /// Each wait for a quiet daemon before a measured search, step or phase.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quiet_waits: Vec<QuietWait>,
    pub count_checks: Vec<CountCheck>,
    pub steady: Option<SteadySummary>,
    /// Every load phase in order, each with its per-second series.
    pub phases: Vec<PhaseResult>,
    /// The `fanout` scenario's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanout: Option<FanoutReport>,
    /// The `backlog` scenario's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<BacklogReport>,
    /// The `cmpp` scenario's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmpp: Option<CmppReport>,
    /// The `urgent` scenario's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub urgent: Option<UrgentReport>,
    /// The `strategy` scenario's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategyReport>,
    /// Things that went wrong but did not stop the run (a failed count check among them).
    pub problems: Vec<String>,
    /// The error that stopped the run, if one did.
    pub error: Option<String>,
}

pub fn write_json(report: &Report, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openloop::{summarize, LoadSpec, Outcome, Sample};
    use std::time::Duration;

    fn phase(name: &str, offset: f64, rate: f64) -> PhaseResult {
        let spec = LoadSpec {
            rate,
            duration: Duration::from_secs(3),
            max_requests: 1_000_000,
            connections: 4,
            timeout: Duration::from_secs(1),
            path: "/bench/messages".into(),
            authorization: String::new(),
            id_prefix: String::new(),
            first_index: 0,
            body: crate::openloop::BodySpec::inbox(),
        };
        let samples: Vec<Sample> = (0..300u64)
            .map(|i| Sample {
                done_us: i * 10_000,
                latency_us: 500 + i * 10,
                service_us: 400,
                outcome: if i % 50 == 0 {
                    Outcome::Status(503)
                } else {
                    Outcome::Status(202)
                },
            })
            .collect();
        let mut p = summarize(name, &spec, 300, &samples).unwrap();
        p.start_offset_s = offset;
        p
    }

    #[test]
    fn chart_and_json_are_written() {
        let dir = std::env::temp_dir().join(format!("umsd-lt-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = Report {
            run_id: "test".into(),
            scenario: "unit".into(),
            phases: vec![phase("a", 0.0, 100.0), phase("b", 5.0, 130.0)],
            ratio: Some(0.5),
            ..Default::default()
        };
        let svg = dir.join("chart.svg");
        write_chart(&report, &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..100.min(text.len())]);
        assert!(text.contains("polyline"));
        assert!(text.contains("p99"));
        let json = dir.join("result.json");
        write_json(&report, &json).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["phases"][1]["series"][0]["second"], 0);
        assert_eq!(v["ratio"], 0.5);
        assert!(summary(&report, &dir).contains("ratio    = 0.500"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
