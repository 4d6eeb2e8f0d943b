//! SUBMIT rates from the simulator's timestamps of accepted SUBMITs: over their whole
//! span, in a window, the busiest window, per-bin series; and the rate limit's rule.

use std::collections::BTreeMap;

use serde::Serialize;

/// Allowed error of the measured rate against `--rate`.
pub const RATE_TOLERANCE: f64 = 0.05;
/// The burst the rate window skips.
pub(super) const RATE_SKIP_MS: u64 = 1000;

/// Times per second between the first and the last of `times_ms` (ascending):
/// `(n − 1) / (last − first)`.
pub fn span_rate(times_ms: &[u64]) -> Option<f64> {
    let (first, last) = (*times_ms.first()?, *times_ms.last()?);
    (last > first).then(|| (times_ms.len() - 1) as f64 * 1000.0 / (last - first) as f64)
}

/// Times per second in `[start, start + len)`; `None` when the times end before the window
/// does (the window is not covered).
pub fn window_rate(times_ms: &[u64], start_ms: u64, len_ms: u64) -> Option<f64> {
    let end = start_ms.checked_add(len_ms)?;
    if len_ms == 0 || times_ms.last().is_none_or(|&l| l < end) {
        return None;
    }
    let n = times_ms
        .iter()
        .filter(|&&t| t >= start_ms && t < end)
        .count();
    Some(n as f64 * 1000.0 / len_ms as f64)
}

/// The most times in any window `[t, t + len)` starting at a time `t ≥ from_ms` and
/// ending by the last time (so the times cover it); `None` if there is no such window.
pub fn max_window_count(times_ms: &[u64], from_ms: u64, len_ms: u64) -> Option<usize> {
    let last = *times_ms.last()?;
    let start = times_ms.partition_point(|&t| t < from_ms);
    let mut best = None;
    let mut j = start;
    for (i, &t) in times_ms.iter().enumerate().skip(start) {
        let end = t.checked_add(len_ms)?;
        if end > last.saturating_add(1) {
            break;
        }
        j = j.max(i);
        while j < times_ms.len() && times_ms[j] < end {
            j += 1;
        }
        best = best.max(Some(j - i));
    }
    best
}

/// Times per second in bins of `bin_ms` from `origin_ms` on, as points `(seconds since
/// origin at the middle of the bin, count per second)`, empty bins between included.
pub fn rate_series(times_ms: &[u64], origin_ms: u64, bin_ms: u64) -> Vec<(f64, f64)> {
    let bin_ms = bin_ms.max(1);
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for &t in times_ms.iter().filter(|&&t| t >= origin_ms) {
        *counts.entry((t - origin_ms) / bin_ms).or_insert(0) += 1;
    }
    let (Some(&first), Some(&last)) = (counts.keys().next(), counts.keys().next_back()) else {
        return Vec::new();
    };
    let per_s = 1000.0 / bin_ms as f64;
    (first..=last)
        .map(|b| {
            let mid = (b as f64 + 0.5) * bin_ms as f64 / 1000.0;
            (mid, counts.get(&b).copied().unwrap_or(0) as f64 * per_s)
        })
        .collect()
}

/// `measured / configured − 1` and whether it is within [`RATE_TOLERANCE`].
pub fn rate_verdict(measured: f64, configured: f64) -> (f64, bool) {
    let err = measured / configured - 1.0;
    // (a hair of slack so that exactly ±5 % passes despite rounding)
    (err, err.abs() <= RATE_TOLERANCE + 1e-12)
}

/// The rate limit's accuracy on `smsrate`.
#[derive(Debug, Clone, Serialize)]
pub struct RateCheck {
    pub configured: f64,
    pub sessions: usize,
    /// The window starts this long after the first accepted SUBMIT.
    pub skip_s: f64,
    pub window_s: f64,
    /// The rule's figure: SUBMITs per second in the window.
    pub measured: Option<f64>,
    /// `measured / configured − 1`.
    pub error: Option<f64>,
    pub tolerance: f64,
    /// `error` within `tolerance`.
    pub pass: bool,
    /// Everything after the skipped start: from `skip_s` after the first SUBMIT to the
    /// last, per second.
    pub steady_rate: Option<f64>,
    pub steady_error: Option<f64>,
    /// The busiest window of `window_s` after the skipped start (fully covered by the
    /// SUBMITs), per second, and its error: a burst the limiter allows in mid-run shows
    /// here even when the rule's window misses it.
    pub worst_window_rate: Option<f64>,
    pub worst_window_error: Option<f64>,
    /// The most SUBMITs in any one second after the skipped start.
    pub peak_1s: Option<usize>,
}

/// The rate figures of one rate-limited channel from its accepted SUBMITs' times
/// (ascending); `None` without SUBMITs.
pub fn rate_check(
    times_ms: &[u64],
    configured: f64,
    sessions: usize,
    skip_ms: u64,
    window_ms: u64,
) -> Option<RateCheck> {
    let from = times_ms.first()?.checked_add(skip_ms)?;
    let measured = window_rate(times_ms, from, window_ms);
    let error = |r: Option<f64>| r.map(|m| rate_verdict(m, configured).0);
    let steady = &times_ms[times_ms.partition_point(|&t| t < from)..];
    let steady_rate = span_rate(steady);
    let worst_window_rate =
        max_window_count(times_ms, from, window_ms).map(|n| n as f64 * 1000.0 / window_ms as f64);
    Some(RateCheck {
        configured,
        sessions,
        skip_s: skip_ms as f64 / 1000.0,
        window_s: window_ms as f64 / 1000.0,
        measured,
        error: error(measured),
        tolerance: RATE_TOLERANCE,
        pass: measured.is_some_and(|m| rate_verdict(m, configured).1),
        steady_rate,
        steady_error: error(steady_rate),
        worst_window_rate,
        worst_window_error: error(worst_window_rate),
        peak_1s: max_window_count(times_ms, from, 1000),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_from_timestamps() {
        // 11 SUBMITs 100 ms apart: 10 gaps in 1 s
        let t: Vec<u64> = (0..11).map(|i| 5_000 + i * 100).collect();
        assert_eq!(span_rate(&t), Some(10.0));
        assert_eq!(span_rate(&[7]), None);
        assert_eq!(span_rate(&[]), None);
        // a burst of 50 in the first second, then 500/s for 12 s
        let mut t: Vec<u64> = (0..50).map(|i| 1_000 + i).collect();
        t.extend((0..6000).map(|i| 2_000 + i * 2));
        assert_eq!(window_rate(&t, 2_000, 10_000), Some(500.0));
        // from the first SUBMIT: the burst of 50 and 9 s at 500/s
        assert_eq!(window_rate(&t, 1_000, 10_000), Some(455.0));
        // a window the SUBMITs do not cover
        assert_eq!(window_rate(&t, 2_000, 20_000), None);
        assert_eq!(window_rate(&t, 2_000, 0), None);
        let (err, pass) = rate_verdict(524.0, 500.0);
        assert!((err - 0.048).abs() < 1e-12 && pass);
        assert!(!rate_verdict(474.0, 500.0).1);
        assert!(rate_verdict(475.0, 500.0).1);
    }

    #[test]
    fn rate_checks_see_a_mid_run_burst() {
        // 10 per second for 30 s after a burst of 30, and 10 extra in second 20
        let mut t: Vec<u64> = (0..30).map(|i| i * 10).collect();
        t.extend((0..300).map(|i| 1_000 + i * 100));
        t.extend((0..10).map(|i| 20_000 + i * 10));
        t.sort_unstable();
        assert_eq!(max_window_count(&t, 1_000, 1_000), Some(20));
        assert_eq!(max_window_count(&t, 1_000, 10_000), Some(110));
        // the burst at the start is skipped
        assert_eq!(max_window_count(&t, 0, 1_000), Some(30));
        // no window of 40 s fits
        assert_eq!(max_window_count(&t, 1_000, 40_000), None);
        assert_eq!(max_window_count(&[], 0, 1_000), None);
        let r = rate_check(&t, 10.0, 4, 1_000, 10_000).unwrap();
        // the rule's window (1 s to 11 s) misses the extra ten
        assert_eq!(r.measured, Some(10.0));
        assert!(r.pass);
        assert_eq!(r.worst_window_rate, Some(11.0));
        assert!((r.worst_window_error.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(r.peak_1s, Some(20));
        // 310 SUBMITs from 1.0 s to 30.9 s
        let steady = r.steady_rate.unwrap();
        assert!((steady - 309.0 / 29.9).abs() < 1e-9, "{steady}");
        assert!(rate_check(&[], 10.0, 4, 1_000, 10_000).is_none());
    }

    #[test]
    fn rate_series_bins() {
        let t = [1_000, 1_200, 1_999, 3_500, 900];
        assert_eq!(
            rate_series(&t, 1_000, 1000),
            vec![(0.5, 3.0), (1.5, 0.0), (2.5, 1.0)]
        );
        // 100 ms bins: counts x 10 per second, starting at the first non-empty bin
        assert_eq!(
            rate_series(&[1_250, 1_260, 1_450], 1_000, 100),
            vec![(0.25, 20.0), (0.35, 0.0), (0.45, 10.0)]
        );
        assert!(rate_series(&[], 0, 100).is_empty());
    }
}
