//! SUBMIT → SUBMIT_RESP latency from cumulative histogram buckets, as umsd exports it on
//! `/metrics`; the client loop's exact latencies go through the same buckets so that the
//! two compare like for like.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::metrics::Scrape;

/// The buckets umsd exports `umsd_cmpp_submit_resp_seconds` with.
pub use umsd_actors::metrics::LATENCY_BUCKETS;

/// The bucket series of `umsd_cmpp_submit_resp_seconds`.
pub(super) fn submit_resp_buckets() -> String {
    format!("{}_bucket", umsd_actors::metrics::CMPP_SUBMIT_RESP_SECONDS)
}

/// Percentiles interpolated within cumulative histogram buckets, ms.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BucketLatency {
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl BucketLatency {
    pub fn of(buckets: &[(f64, f64)]) -> Self {
        let ms = |q| bucket_quantile(buckets, q).map(|s| s * 1000.0);
        Self {
            count: buckets.last().map_or(0, |b| b.1.max(0.0) as u64),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
        }
    }
}

/// The `q` quantile of cumulative buckets `(upper bound, observations ≤ it)` sorted by
/// bound, the last one `+Inf`: as Prometheus's `histogram_quantile`, linear within the
/// bucket the rank falls in (the first bucket starts at 0); a rank in the `+Inf` bucket
/// gives the highest finite bound.
pub fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if !(total > 0.0 && (0.0..=1.0).contains(&q)) {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, cum) in buckets {
        if cum >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = cum - below;
            let frac = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (le - lower) * frac);
        }
        (lower, below) = (le, cum);
    }
    Some(lower)
}

/// The cumulative buckets of one histogram in a scrape, sorted by bound.
pub fn scrape_buckets(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = scrape
        .matching(name, labels)
        .filter_map(|s| {
            let le = match s.labels.get("le")?.as_str() {
                "+Inf" => f64::INFINITY,
                v => v.parse().ok()?,
            };
            Some((le, s.value))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// An HdrHistogram of µs as cumulative buckets with the given bounds (seconds) and `+Inf`.
pub(super) fn hdr_buckets(h: &Histogram<u64>, bounds_s: &[f64]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = bounds_s
        .iter()
        .map(|&b| {
            let us = (b * 1e6).round() as u64;
            (b, h.count_between(0, us) as f64)
        })
        .collect();
    out.push((f64::INFINITY, h.len() as f64));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openloop;

    #[test]
    fn quantiles_from_buckets() {
        // 100 observations: 10 ≤ 1 ms, 50 in (1, 2] ms, 30 in (2, 4] ms, 10 above 4 ms
        let b = [
            (0.001, 10.0),
            (0.002, 60.0),
            (0.004, 90.0),
            (f64::INFINITY, 100.0),
        ];
        let q = |x| bucket_quantile(&b, x).unwrap();
        assert!((q(0.05) - 0.0005).abs() < 1e-12); // half-way into the first bucket, from 0
        assert!((q(0.5) - 0.0018).abs() < 1e-12); // 40 of 50 into (1, 2]
        assert!((q(0.9) - 0.004).abs() < 1e-12); // the top of (2, 4]
        assert_eq!(q(0.99), 0.004); // in +Inf: the highest finite bound
        assert_eq!(
            bucket_quantile(&[(0.001, 0.0), (f64::INFINITY, 0.0)], 0.5),
            None
        );
        assert_eq!(bucket_quantile(&[], 0.5), None);
        assert_eq!(bucket_quantile(&b, 1.5), None);
        let l = BucketLatency::of(&b);
        assert_eq!(l.count, 100);
        assert!((l.p50_ms.unwrap() - 1.8).abs() < 1e-9);
    }

    #[test]
    fn buckets_from_a_scrape_and_from_hdr() {
        let s = Scrape::parse(
            "umsd_cmpp_submit_resp_seconds_bucket{channel=\"sms1\",le=\"+Inf\"} 4\n\
             umsd_cmpp_submit_resp_seconds_bucket{channel=\"sms1\",le=\"0.001\"} 3\n\
             umsd_cmpp_submit_resp_seconds_bucket{channel=\"sms1\",le=\"0.0005\"} 1\n\
             umsd_cmpp_submit_resp_seconds_bucket{channel=\"sms4\",le=\"0.0005\"} 9\n",
        );
        let b = scrape_buckets(&s, &submit_resp_buckets(), &[("channel", "sms1")]);
        assert_eq!(b, vec![(0.0005, 1.0), (0.001, 3.0), (f64::INFINITY, 4.0)]);
        let mut h = openloop::new_histogram().unwrap();
        for us in [50, 200, 200, 700, 30_000] {
            h.record(us).unwrap();
        }
        let b = hdr_buckets(&h, &[0.0001, 0.00025, 0.001]);
        assert_eq!(
            b,
            vec![
                (0.0001, 1.0),
                (0.00025, 3.0),
                (0.001, 4.0),
                (f64::INFINITY, 5.0)
            ]
        );
    }
}
