//! What one phase measured: each request's record, latency percentiles from
//! `hdrhistogram`s (µs, 3 significant digits), the per-second series by the second each
//! request was resolved in, and the phase's summary.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::LoadSpec;

/// Highest latency a histogram holds (one hour, in µs); larger values saturate.
pub const HIST_MAX_US: u64 = 3_600_000_000;

/// An empty latency histogram: 1 µs … 1 h, 3 significant digits.
pub fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).map_err(|e| anyhow!("histogram: {e:?}"))
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer with this status.
    Status(u16),
    /// No answer within the timeout.
    Timeout,
    /// Connection or protocol error.
    Error,
}

/// One request's record. Times are µs since the phase start `t0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When the request was resolved (answer, timeout or error).
    pub done_us: u64,
    /// From its intended time to `done` (coordinated-omission corrected).
    pub latency_us: u64,
    /// From the moment it was actually sent to `done`.
    pub service_us: u64,
    pub outcome: Outcome,
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// One second of a phase, by the second the requests were resolved in.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SecondPoint {
    /// Seconds since the phase start (this point covers `[second, second + 1)`).
    pub second: u64,
    /// Requests answered with an HTTP status.
    pub completed: u64,
    pub ok_2xx: u64,
    pub non_2xx: u64,
    /// Timeouts and connection errors.
    pub failed: u64,
    /// Latency percentiles of everything resolved in this second; `None` when nothing was.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Buckets samples by the second they were resolved in, from second 0 to the last one.
pub fn per_second_series(samples: &[Sample]) -> Result<Vec<SecondPoint>> {
    let Some(last) = samples.iter().map(|s| s.done_us / 1_000_000).max() else {
        return Ok(Vec::new());
    };
    let n = usize::try_from(last + 1)?;
    let mut hists = Vec::with_capacity(n);
    let mut points = Vec::with_capacity(n);
    for second in 0..=last {
        hists.push(new_histogram()?);
        points.push(SecondPoint {
            second,
            completed: 0,
            ok_2xx: 0,
            non_2xx: 0,
            failed: 0,
            p50_ms: None,
            p99_ms: None,
        });
    }
    for s in samples {
        let idx = usize::try_from(s.done_us / 1_000_000)?;
        let (Some(p), Some(h)) = (points.get_mut(idx), hists.get_mut(idx)) else {
            continue;
        };
        match s.outcome {
            Outcome::Status(code) => {
                p.completed += 1;
                if (200..300).contains(&code) {
                    p.ok_2xx += 1;
                } else {
                    p.non_2xx += 1;
                }
            }
            Outcome::Timeout | Outcome::Error => p.failed += 1,
        }
        h.saturating_record(s.latency_us.max(1));
    }
    for (p, h) in points.iter_mut().zip(&hists) {
        if !h.is_empty() {
            p.p50_ms = Some(h.value_at_quantile(0.50) as f64 / 1000.0);
            p.p99_ms = Some(h.value_at_quantile(0.99) as f64 / 1000.0);
        }
    }
    Ok(points)
}

/// Rate at which answers came back: `(n − 1) / (last − first)` over the answered
/// requests. Unbiased by the latency of the first and last answer: a server that keeps up
/// yields the offered rate, one that falls behind yields the rate it drained at.
pub fn achieved_rate(samples: &[Sample]) -> f64 {
    let mut n = 0u64;
    let mut first = u64::MAX;
    let mut last = 0u64;
    for s in samples {
        if matches!(s.outcome, Outcome::Status(_)) {
            n += 1;
            first = first.min(s.done_us);
            last = last.max(s.done_us);
        }
    }
    if n < 2 || last <= first {
        return 0.0;
    }
    (n - 1) as f64 / ((last - first) as f64 / 1e6)
}

/// Everything measured in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    pub name: String,
    pub path: String,
    pub target_rate: f64,
    pub duration_s: f64,
    /// Seconds from the start of the whole run to this phase's `t0`.
    pub start_offset_s: f64,
    pub started_at: String,
    pub connections: usize,
    pub planned: u64,
    pub sent: u64,
    /// Planned requests never started because the phase ran out of time.
    pub not_sent: u64,
    /// Answered with an HTTP status.
    pub completed: u64,
    pub ok_2xx: u64,
    pub non_2xx: u64,
    pub timeouts: u64,
    pub errors: u64,
    pub status_counts: BTreeMap<String, u64>,
    /// See [`achieved_rate`].
    pub achieved_rate: f64,
    /// From `t0` to the last resolved request.
    pub elapsed_s: f64,
    /// From intended time to answer, all resolved requests.
    pub latency: LatencySummary,
    /// From actual send to answer.
    pub service_time: LatencySummary,
    /// The harness's own CPU use during the phase, in cores (to tell a saturated client).
    pub client_cpu_cores: f64,
    /// Error descriptions and how often each was seen.
    pub notes: BTreeMap<String, u64>,
    /// The first 2xx body, as a sample of what the target answers.
    pub first_ok_body: Option<String>,
    pub series: Vec<SecondPoint>,
}

/// Builds a phase result from its samples (pure; timing context is filled by the caller).
pub fn summarize(
    name: &str,
    spec: &LoadSpec,
    planned: u64,
    samples: &[Sample],
) -> Result<PhaseResult> {
    let mut latency = new_histogram()?;
    let mut service = new_histogram()?;
    let mut status_counts: BTreeMap<String, u64> = BTreeMap::new();
    let (mut completed, mut ok, mut non_2xx, mut timeouts, mut errors) = (0, 0, 0, 0, 0);
    let mut last_done = 0;
    for s in samples {
        latency.saturating_record(s.latency_us.max(1));
        service.saturating_record(s.service_us.max(1));
        last_done = last_done.max(s.done_us);
        match s.outcome {
            Outcome::Status(code) => {
                completed += 1;
                if (200..300).contains(&code) {
                    ok += 1;
                } else {
                    non_2xx += 1;
                }
                *status_counts.entry(code.to_string()).or_insert(0) += 1;
            }
            Outcome::Timeout => timeouts += 1,
            Outcome::Error => errors += 1,
        }
    }
    let sent = samples.len() as u64;
    Ok(PhaseResult {
        name: name.to_owned(),
        path: spec.path.clone(),
        target_rate: spec.rate,
        duration_s: spec.duration.as_secs_f64(),
        start_offset_s: 0.0,
        started_at: String::new(),
        connections: spec.connections,
        planned,
        sent,
        not_sent: planned.saturating_sub(sent),
        completed,
        ok_2xx: ok,
        non_2xx,
        timeouts,
        errors,
        status_counts,
        achieved_rate: achieved_rate(samples),
        elapsed_s: last_done as f64 / 1e6,
        latency: LatencySummary::of(&latency),
        service_time: LatencySummary::of(&service),
        client_cpu_cores: 0.0,
        notes: BTreeMap::new(),
        first_ok_body: None,
        series: per_second_series(samples)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ok(done_us: u64, latency_us: u64) -> Sample {
        Sample {
            done_us,
            latency_us,
            service_us: latency_us,
            outcome: Outcome::Status(202),
        }
    }

    #[test]
    fn series_buckets_by_completion_second() {
        let mut samples = Vec::new();
        // second 0: 100 answers at 1..100 ms latency
        for i in 1..=100u64 {
            samples.push(ok(i * 1000, i * 1000));
        }
        // second 2: one 503, one timeout, one 202 with 50 ms
        samples.push(Sample {
            done_us: 2_100_000,
            latency_us: 5_000,
            service_us: 5_000,
            outcome: Outcome::Status(503),
        });
        samples.push(Sample {
            done_us: 2_200_000,
            latency_us: 900_000,
            service_us: 900_000,
            outcome: Outcome::Timeout,
        });
        samples.push(ok(2_300_000, 50_000));

        let s = per_second_series(&samples).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].completed, 100);
        assert_eq!(s[0].ok_2xx, 100);
        let p50 = s[0].p50_ms.unwrap();
        let p99 = s[0].p99_ms.unwrap();
        assert!((p50 - 50.0).abs() < 0.1, "{p50}");
        assert!((p99 - 99.0).abs() < 0.1, "{p99}");
        // an empty second has no percentiles
        assert_eq!(s[1].completed, 0);
        assert_eq!(s[1].p50_ms, None);
        assert_eq!(s[2].completed, 2);
        assert_eq!(s[2].ok_2xx, 1);
        assert_eq!(s[2].non_2xx, 1);
        assert_eq!(s[2].failed, 1);
        // the timeout's latency is part of that second's percentiles
        assert!(s[2].p99_ms.unwrap() > 800.0);
        assert!(per_second_series(&[]).unwrap().is_empty());
    }

    #[test]
    fn achieved_rate_ignores_first_and_last_latency() {
        // 1000 requests at 1000/s, each answered 40 ms after it was intended.
        let samples: Vec<Sample> = (0..1000).map(|i| ok(i * 1000 + 40_000, 40_000)).collect();
        let r = achieved_rate(&samples);
        assert!((r - 1000.0).abs() < 1.0, "{r}");
        // a server that drains at 500/s although 1000/s were offered
        let slow: Vec<Sample> = (0..1000).map(|i| ok(i * 2000 + 1000, i * 1000)).collect();
        let r = achieved_rate(&slow);
        assert!((r - 500.0).abs() < 1.0, "{r}");
        assert_eq!(achieved_rate(&samples[..1]), 0.0);
    }

    #[test]
    fn summary_counts_outcomes() {
        let spec = LoadSpec {
            rate: 100.0,
            duration: Duration::from_secs(1),
            max_requests: 1000,
            connections: 2,
            timeout: Duration::from_secs(1),
            path: "/bench/messages".into(),
            authorization: "Basic x".into(),
            id_prefix: "lt-".into(),
            first_index: 0,
            body: crate::openloop::BodySpec::inbox(),
        };
        let mut samples: Vec<Sample> = (0..90).map(|i| ok(i * 10_000, 2_000)).collect();
        samples.push(Sample {
            done_us: 950_000,
            latency_us: 1_000,
            service_us: 1_000,
            outcome: Outcome::Error,
        });
        samples.push(Sample {
            done_us: 960_000,
            latency_us: 1_000,
            service_us: 1_000,
            outcome: Outcome::Status(200),
        });
        let r = summarize("t", &spec, 100, &samples).unwrap();
        assert_eq!(r.planned, 100);
        assert_eq!(r.sent, 92);
        assert_eq!(r.not_sent, 8);
        assert_eq!(r.completed, 91);
        assert_eq!(r.ok_2xx, 91);
        assert_eq!(r.errors, 1);
        assert_eq!(r.status_counts.get("202"), Some(&90));
        assert_eq!(r.status_counts.get("200"), Some(&1));
        assert!((r.latency.p50_ms - 2.0).abs() < 0.01);
    }
}
