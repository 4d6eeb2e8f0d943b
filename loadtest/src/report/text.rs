//! The short human summary printed at the end of a run.

use std::fmt::Write as _;
use std::path::Path;

use super::{Report, SteadySummary};
use crate::scenarios::pipeline::Percentiles;

/// A figure with `digits` decimals, or `n/a` when there is none.
pub fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
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
    if let Some(e) = &report.e2e {
        for m in &e.medians {
            let _ = writeln!(
                s,
                "R_e2e_{:<8} = {:>10}  median over {} of {} rounds; R_e2e/R_ref {}, R_e2e/R_daemon {} \
                 (delivered within {:.1} s, accept->delivered p99 <= {:.0} ms)",
                m.channel.name(),
                rate(m.r_e2e),
                m.rounds_with_rate,
                report.rounds.len(),
                opt(m.over_ref, 3),
                opt(m.over_daemon, 3),
                e.criteria.drain_s,
                e.criteria.p99_max_ms
            );
        }
    }
    if report.rounds.len() > 1 || report.e2e.is_some() {
        let _ = writeln!(
            s,
            "rounds (the figures above are the median round's, R_e2e the medians):"
        );
        for r in &report.rounds {
            let _ = write!(
                s,
                "  round {}: R_http {:>8}  R_copy {:>8}  R_daemon {:>8}  ratio {}",
                r.round,
                rate(r.r_http),
                format!("{:.0}/s", r.r_copy),
                rate(r.r_daemon),
                opt(r.ratio, 3)
            );
            for f in &r.e2e {
                let _ = write!(
                    s,
                    "  R_e2e_{} {:>7} ({} of R_ref, {} of R_daemon)",
                    f.channel.name(),
                    rate(f.r_e2e),
                    opt(f.over_ref, 3),
                    opt(f.over_daemon, 3)
                );
            }
            s.push('\n');
        }
    }
    if !report.quiet_waits.is_empty() {
        let total: f64 = report.quiet_waits.iter().map(|w| w.waited_s).sum();
        let longest = report
            .quiet_waits
            .iter()
            .max_by(|a, b| a.waited_s.total_cmp(&b.waited_s));
        let busy = report.quiet_waits.iter().filter(|w| !w.quiet).count();
        let _ = writeln!(
            s,
            "quiet waits: {} in {:.0} s{}; {} ran out",
            report.quiet_waits.len(),
            total,
            longest.map_or(String::new(), |w| format!(
                ", longest {:.1} s before {}",
                w.waited_s, w.before
            )),
            busy
        );
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
        steady(&mut s, st);
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
    if let Some(u) = &report.urgent {
        s.push_str(&u.summary());
    }
    if let Some(st) = &report.strategy {
        s.push_str(&st.summary());
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

/// `p50 … ms, p90 …, p99 …, p99.9 …, max …` of a set of latencies.
pub fn percentiles(p: Option<&Percentiles>) -> String {
    p.map_or_else(
        || "n/a".to_owned(),
        |p| {
            format!(
                "p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, p99.9 {:.0} ms, max {:.0} ms ({})",
                p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms, p.count
            )
        },
    )
}

fn steady(s: &mut String, st: &SteadySummary) {
    let what = match &st.basis {
        Some(basis) => format!(
            "steady   @ {:.0}/s ({:.0} % of {basis})",
            st.rate,
            st.fraction * 100.0
        ),
        None => format!("run      @ {:.0}/s", st.rate),
    };
    let _ = writeln!(
        s,
        "{what}: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} accepted",
        st.latency.p50_ms, st.latency.p99_ms, st.latency.p999_ms, st.latency.max_ms, st.ok_2xx
    );
    if let Some(p) = &st.pipeline {
        let _ = writeln!(
            s,
            "  accept->planned:   {}\n  accept->delivered: {}",
            percentiles(p.accept_to_planned.as_ref()),
            percentiles(p.accept_to_delivered.as_ref())
        );
        let _ = writeln!(
            s,
            "  delivered {} of {} ({} lost); last accept -> last delivery {} s",
            p.delivered,
            p.messages.max(st.ok_2xx),
            p.lost,
            opt(p.last_accept_to_last_delivery_s, 2)
        );
    }
    if let Some(cpu) = &st.cpu {
        let us = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} µs"));
        let per = if st.pipeline.is_some() {
            "delivered"
        } else {
            "accepted"
        };
        let _ = writeln!(
            s,
            "CPU per {per} message: umsd {}, umsd+postgres {} (umsd {} cores, postgres {:.2} cores over {:.1} s)",
            us(cpu.umsd_us_per_msg),
            us(cpu.umsd_plus_postgres_us_per_msg),
            opt(cpu.umsd_cores, 2),
            cpu.postgres_cores,
            cpu.window_s
        );
    }
}
