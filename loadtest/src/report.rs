//! Results: the `result.json` with every figure, the parameters and each phase's
//! per-second series; `chart.svg` with throughput and latency over the whole run (two
//! stacked panels) or, for the delivery scenarios (`fanout`, `backlog`, `cmpp`), their own
//! sampled series ([`write_panels`]); and the short human summary printed at the end.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::Serialize;

use crate::copy::CopyResult;
use crate::cpu::CpuReport;
use crate::db::CountCheck;
use crate::openloop::{LatencySummary, PhaseResult, SecondPoint};
use crate::scenarios::backlog::BacklogReport;
use crate::scenarios::cmpp::CmppReport;
use crate::scenarios::fanout::FanoutReport;
use crate::search::{Criteria, SearchParams};

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

/// The steady run at a fraction of R_daemon.
#[derive(Debug, Clone, Serialize)]
pub struct SteadySummary {
    pub fraction_of_r_daemon: f64,
    pub rate: f64,
    pub phase: usize,
    pub latency: LatencySummary,
    pub ok_2xx: u64,
    pub cpu: Option<CpuReport>,
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
    /// Things that went wrong but did not stop the run (a failed count check among them).
    pub problems: Vec<String>,
    /// The error that stopped the run, if one did.
    pub error: Option<String>,
}

/// One round of the bench scenario: the three rates measured back to back.
#[derive(Debug, Clone, Serialize)]
pub struct RoundSummary {
    pub round: usize,
    pub r_http: Option<f64>,
    pub r_copy: f64,
    pub r_daemon: Option<f64>,
    pub r_ref: Option<f64>,
    pub ratio: Option<f64>,
}

/// `1 / (1/a + 1/b)`: the rate of doing both things one after the other.
pub fn r_ref(r_http: f64, r_copy: f64) -> Option<f64> {
    (r_http > 0.0 && r_copy > 0.0).then(|| 1.0 / (1.0 / r_http + 1.0 / r_copy))
}

pub fn write_json(report: &Report, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// One line of the chart: points `(seconds since run start, value)` at the middle of each
/// second, split into segments per phase so pauses between phases stay gaps. With
/// `window_only`, only the seconds of the phase's sending window are drawn: the drain
/// after it is a partial second whose count would read as a drop in throughput.
fn series(
    phases: &[PhaseResult],
    window_only: bool,
    value: impl Fn(&SecondPoint) -> Option<f64>,
) -> Vec<Vec<(f64, f64)>> {
    phases
        .iter()
        .map(|ph| {
            let window = ph.duration_s.ceil().max(1.0) as u64;
            ph.series
                .iter()
                .filter(|p| !window_only || p.second < window)
                .filter_map(|p| value(p).map(|v| (ph.start_offset_s + p.second as f64 + 0.5, v)))
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Writes the two-panel SVG chart: req/s on top, p50/p99 latency (ms, log scale) below.
pub fn write_chart(report: &Report, path: &Path) -> Result<()> {
    let phases = &report.phases;
    let completed = series(phases, true, |p| Some(p.completed as f64));
    let failed = series(phases, true, |p| Some((p.non_2xx + p.failed) as f64));
    let p50 = series(phases, false, |p| p.p50_ms);
    let p99 = series(phases, false, |p| p.p99_ms);

    let x_max = phases
        .iter()
        .map(|p| p.start_offset_s + p.series.len() as f64)
        .fold(1.0f64, f64::max);
    let all = |s: &Vec<Vec<(f64, f64)>>| s.iter().flatten().map(|p| p.1).collect::<Vec<f64>>();
    let rate_max = all(&completed)
        .into_iter()
        .chain(phases.iter().map(|p| p.target_rate))
        .fold(1.0f64, f64::max)
        * 1.1;
    let lat: Vec<f64> = all(&p50).into_iter().chain(all(&p99)).collect();
    let lat_max = lat.iter().copied().fold(1.0f64, f64::max) * 1.5;
    let lat_min = lat
        .iter()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min)
        .clamp(0.01, 1.0)
        / 1.5;

    let root = SVGBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root
        .titled(
            &format!("umsd load test {} ({})", report.run_id, report.scenario),
            ("sans-serif", 20),
        )
        .map_err(plot_err)?;
    let (top, bottom) = root.split_vertically(390);

    let mut c = ChartBuilder::on(&top)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .caption(
            "throughput (answers per second, within each phase's sending window)",
            ("sans-serif", 16),
        )
        .build_cartesian_2d(0.0..x_max, 0.0..rate_max)
        .map_err(plot_err)?;
    c.configure_mesh()
        .x_desc("s since start")
        .y_desc("req/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(plot_err)?;
    draw_lines(&mut c, &completed, &BLUE, "answered/s")?;
    draw_lines(&mut c, &failed, &RED, "non-2xx + failed/s")?;
    // target rate of each phase, as a flat line over the phase's sending window
    let targets: Vec<Vec<(f64, f64)>> = phases
        .iter()
        .map(|p| {
            vec![
                (p.start_offset_s, p.target_rate),
                (p.start_offset_s + p.duration_s, p.target_rate),
            ]
        })
        .collect();
    draw_lines(&mut c, &targets, &BLACK.mix(0.4), "target rate")?;
    // where each group of phases (R_http, R_daemon, steady, ...) and the COPY begin, at
    // the bottom of the panel, clear of the legend
    let mut marks: Vec<(f64, String)> = Vec::new();
    for p in phases {
        let group = phase_group(&p.name);
        if marks.last().is_none_or(|(_, g)| *g != group) {
            marks.push((p.start_offset_s, group));
        }
    }
    if let Some(copy) = &report.r_copy {
        marks.push((copy.start_offset_s, "R_copy".to_owned()));
    }
    for (x, label) in marks {
        c.draw_series(std::iter::once(Text::new(
            label,
            (x, rate_max * 0.04),
            ("sans-serif", 13).into_font().color(&BLACK.mix(0.7)),
        )))
        .map_err(plot_err)?;
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_err)?;

    let mut c = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .caption(
            "latency from intended send time (ms, log scale)",
            ("sans-serif", 16),
        )
        .build_cartesian_2d(0.0..x_max, (lat_min..lat_max).log_scale())
        .map_err(plot_err)?;
    c.configure_mesh()
        .x_desc("s since start")
        .y_desc("ms")
        .y_label_formatter(&|v| format!("{v}"))
        .draw()
        .map_err(plot_err)?;
    draw_lines(&mut c, &p50, &GREEN, "p50")?;
    draw_lines(&mut c, &p99, &MAGENTA, "p99")?;
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// One line of a [`Panel`]: `(seconds, value)` points.
#[derive(Debug, Clone, Default)]
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// One panel of a [`write_panels`] chart.
#[derive(Debug, Clone, Default)]
pub struct Panel {
    pub caption: String,
    pub y_desc: String,
    pub lines: Vec<Line>,
}

const PALETTE: [RGBColor; 8] = [
    BLUE,
    RED,
    GREEN,
    MAGENTA,
    CYAN,
    BLACK,
    RGBColor(255, 140, 0),
    RGBColor(128, 0, 128),
];

/// Writes a chart of stacked panels over a shared time axis (seconds since the start of
/// the measured phase), each with its own lines and linear y axis from 0.
pub fn write_panels(path: &Path, title: &str, panels: &[Panel]) -> Result<()> {
    let x_max = panels
        .iter()
        .flat_map(|p| p.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)))
        .fold(1.0f64, f64::max);
    let n = panels.len().max(1);
    let height = 60 + 300 * n as u32;
    let root = SVGBackend::new(path, (1200, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(plot_err)?;
    let areas = root.split_evenly((n, 1));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        let y_max = panel
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .filter(|v| v.is_finite())
            .fold(1.0f64, f64::max)
            * 1.1;
        let mut c = ChartBuilder::on(area)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(80)
            .caption(&panel.caption, ("sans-serif", 16))
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(plot_err)?;
        c.configure_mesh()
            .x_desc("s since start")
            .y_desc(panel.y_desc.as_str())
            .y_label_formatter(&|v| {
                if v.abs() >= 100.0 || *v == 0.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            })
            .draw()
            .map_err(plot_err)?;
        for (i, line) in panel.lines.iter().enumerate() {
            if line.points.is_empty() {
                continue;
            }
            let color = PALETTE[i % PALETTE.len()];
            draw_lines(
                &mut c,
                std::slice::from_ref(&line.points),
                &color,
                &line.label,
            )?;
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// The group a phase belongs to: its name up to " step " or " @ ".
fn phase_group(name: &str) -> String {
    let end = [" step ", " @ "]
        .iter()
        .filter_map(|sep| name.find(sep))
        .min()
        .unwrap_or(name.len());
    name[..end].to_owned()
}

fn draw_lines<DB, CT, S>(
    chart: &mut ChartContext<'_, DB, CT>,
    segments: &[Vec<(f64, f64)>],
    color: &S,
    label: &str,
) -> Result<()>
where
    DB: DrawingBackend,
    CT: CoordTranslate<From = (f64, f64)>,
    S: Color,
{
    let style = ShapeStyle {
        color: color.to_rgba(),
        filled: false,
        stroke_width: 2,
    };
    for (i, seg) in segments.iter().enumerate() {
        let drawn = chart
            .draw_series(LineSeries::new(seg.iter().copied(), style))
            .map_err(|e| anyhow::anyhow!("drawing {label}: {e:?}"))?;
        if i == 0 {
            drawn
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    Ok(())
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e:?}")
}

fn rate(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0}/s"))
}

/// The short human summary.
pub fn summary(report: &Report, out_dir: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n== umsd load test {} ({}) ==",
        report.run_id, report.scenario
    );
    if let Some(h) = &report.r_http {
        let _ = writeln!(
            s,
            "R_http   = {:>10}  max sustainable rate, POST {} ({} steps)",
            rate(h.max_rate),
            h.path,
            h.steps.len()
        );
    }
    if let Some(c) = &report.r_copy {
        let _ = writeln!(
            s,
            "R_copy   = {:>10}  binary COPY, {} messages x 3 rows in {:.2} s ({:.0} rows/s, {} connections)",
            format!("{:.0}/s", c.messages_per_second),
            c.messages,
            c.elapsed_s,
            c.rows_per_second,
            c.params.connections
        );
    }
    if report.r_ref.is_some() {
        let _ = writeln!(
            s,
            "R_ref    = {:>10}  1 / (1/R_http + 1/R_copy)",
            rate(report.r_ref)
        );
    }
    if let Some(d) = &report.r_daemon {
        let _ = writeln!(
            s,
            "R_daemon = {:>10}  max sustainable rate, POST {} ({} steps)",
            rate(d.max_rate),
            d.path,
            d.steps.len()
        );
    }
    if let Some(r) = report.ratio {
        let _ = writeln!(s, "ratio    = {r:.3}  (R_daemon / R_ref)");
    }
    if report.rounds.len() > 1 {
        let _ = writeln!(s, "rounds (the figures above are the median round's):");
        for r in &report.rounds {
            let _ = writeln!(
                s,
                "  round {}: R_http {:>8}  R_copy {:>8}  R_daemon {:>8}  ratio {}",
                r.round,
                rate(r.r_http),
                format!("{:.0}/s", r.r_copy),
                rate(r.r_daemon),
                r.ratio.map_or("-".to_owned(), |v| format!("{v:.3}"))
            );
        }
    }
    for c in &report.count_checks {
        let _ = writeln!(
            s,
            "count check {}: {} 2xx answers, {} rows in messages, {} in message_keys ({} timeouts/errors): {}",
            c.what,
            c.answered_2xx,
            c.rows_in_messages,
            c.rows_in_message_keys,
            c.unknown_fate,
            if c.ok { "OK" } else { "MISMATCH" }
        );
    }
    if let Some(st) = &report.steady {
        let what = if st.fraction_of_r_daemon > 0.0 {
            format!(
                "steady   @ {:.0}/s ({:.0} % of R_daemon)",
                st.rate,
                st.fraction_of_r_daemon * 100.0
            )
        } else {
            format!("run      @ {:.0}/s", st.rate)
        };
        let _ = writeln!(
            s,
            "{what}: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} accepted",
            st.latency.p50_ms, st.latency.p99_ms, st.latency.p999_ms, st.latency.max_ms, st.ok_2xx
        );
        if let Some(cpu) = &st.cpu {
            let us = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} µs"));
            let _ = writeln!(
                s,
                "CPU per accepted message: umsd {}, umsd+postgres {} (umsd {} cores, postgres {:.2} cores)",
                us(cpu.umsd_us_per_msg),
                us(cpu.umsd_plus_postgres_us_per_msg),
                cpu.umsd_cores
                    .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.2}")),
                cpu.postgres_cores
            );
        }
    }
    if report.scenario == "run" {
        for p in &report.phases {
            let _ = writeln!(
                s,
                "{}: target {:.0}/s, achieved {:.0}/s, {} ok, {} non-2xx, {} timeouts, {} errors; p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
                p.name,
                p.target_rate,
                p.achieved_rate,
                p.ok_2xx,
                p.non_2xx,
                p.timeouts,
                p.errors,
                p.latency.p50_ms,
                p.latency.p99_ms,
                p.latency.p999_ms
            );
        }
    }
    if let Some(f) = &report.fanout {
        s.push_str(&f.summary());
    }
    if let Some(b) = &report.backlog {
        s.push_str(&b.summary());
    }
    if let Some(c) = &report.cmpp {
        s.push_str(&c.summary());
    }
    for p in &report.problems {
        let _ = writeln!(s, "PROBLEM: {p}");
    }
    if let Some(e) = &report.error {
        let _ = writeln!(s, "ERROR: {e}");
    }
    let _ = writeln!(s, "results: {}", out_dir.display());
    s
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
    fn phase_groups_strip_step_and_rate() {
        assert_eq!(phase_group("R_http step 3 @ 3380/s"), "R_http");
        assert_eq!(phase_group("steady @ 4000/s"), "steady");
        assert_eq!(phase_group("plain"), "plain");
    }

    #[test]
    fn r_ref_is_the_harmonic_combination() {
        assert_eq!(r_ref(100.0, 100.0), Some(50.0));
        let r = r_ref(40_000.0, 120_000.0).unwrap();
        assert!((r - 30_000.0).abs() < 1e-6);
        assert_eq!(r_ref(0.0, 100.0), None);
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

    #[test]
    fn panels_are_drawn() {
        let dir = std::env::temp_dir().join(format!("umsd-lt-panels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let svg = dir.join("panels.svg");
        let panels = vec![
            Panel {
                caption: "memory".into(),
                y_desc: "MiB".into(),
                lines: vec![Line {
                    label: "RSS".into(),
                    points: vec![(0.0, 50.0), (1.0, 60.0), (2.0, 55.0)],
                }],
            },
            Panel {
                caption: "queue".into(),
                y_desc: "deliveries".into(),
                lines: vec![
                    Line {
                        label: "queued".into(),
                        points: vec![(0.0, 1e6), (2.0, 0.0)],
                    },
                    Line::default(),
                ],
            },
        ];
        write_panels(&svg, "t", &panels).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("polyline") && text.contains("RSS") && text.contains("queued"));
        write_panels(&svg, "empty", &[]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_report_still_charts() {
        let dir = std::env::temp_dir().join(format!("umsd-lt-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let svg = dir.join("chart.svg");
        write_chart(&Report::default(), &svg).unwrap();
        assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
