//! `chart.svg`: throughput and latency over the whole run for the scenarios driven by the
//! open-loop generator ([`write_chart`]), or stacked panels of a delivery scenario's own
//! sampled series ([`write_panels`]).

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use super::Report;
use crate::openloop::{PhaseResult, SecondPoint};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_groups_strip_step_and_rate() {
        assert_eq!(phase_group("R_http step 3 @ 3380/s"), "R_http");
        assert_eq!(phase_group("steady @ 4000/s"), "steady");
        assert_eq!(phase_group("plain"), "plain");
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
