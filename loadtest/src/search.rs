//! Finding the maximum sustainable rate: the rate schedule (step up geometrically, step
//! down if even the first rate fails, then bisect between the last passing and the first
//! failing rate) and the pass/fail rule of one step. Pure logic, driven by the scenarios.

use serde::Serialize;

use crate::openloop::PhaseResult;

/// How the search moves.
#[derive(Debug, Clone, Serialize)]
pub struct SearchParams {
    /// First rate tried (req/s).
    pub start_rate: f64,
    /// Each step up multiplies the rate by this (> 1); each step down divides by it.
    pub factor: f64,
    /// Stepping down stops below this rate.
    pub min_rate: f64,
    /// Never tried above this rate.
    pub max_rate: f64,
    /// Bisection steps after the first failure above a pass.
    pub bisect_steps: u32,
    /// Upper bound on steps in all.
    pub max_steps: u32,
}

/// When a step passes.
#[derive(Debug, Clone, Serialize)]
pub struct Criteria {
    /// Achieved throughput must be at least this fraction of the target rate.
    pub min_throughput_ratio: f64,
    /// p99 latency (from intended time) must not exceed this.
    pub p99_max_ms: f64,
}

/// The reasons a step failed; empty when it passed.
pub fn judge(r: &PhaseResult, c: &Criteria) -> Vec<String> {
    let mut why = Vec::new();
    if r.achieved_rate < c.min_throughput_ratio * r.target_rate {
        why.push(format!(
            "throughput {:.0}/s < {:.0} % of {:.0}/s",
            r.achieved_rate,
            c.min_throughput_ratio * 100.0,
            r.target_rate
        ));
    }
    if r.non_2xx > 0 {
        why.push(format!("{} non-2xx answers", r.non_2xx));
    }
    if r.timeouts > 0 {
        why.push(format!("{} timeouts", r.timeouts));
    }
    if r.errors > 0 {
        why.push(format!("{} connection errors", r.errors));
    }
    if r.not_sent > 0 {
        why.push(format!("{} requests never sent (out of time)", r.not_sent));
    }
    if r.latency.p99_ms > c.p99_max_ms {
        why.push(format!(
            "p99 {:.1} ms > {:.1} ms",
            r.latency.p99_ms, c.p99_max_ms
        ));
    }
    why
}

/// The state of one search. Call [`RateSearch::next_rate`], run a step at that rate,
/// [`RateSearch::record`] the verdict, until `next_rate` is `None`.
#[derive(Debug, Clone)]
pub struct RateSearch {
    p: SearchParams,
    last_pass: Option<f64>,
    first_fail: Option<f64>,
    steps: u32,
    bisections: u32,
    next: Option<f64>,
}

impl RateSearch {
    pub fn new(p: SearchParams) -> Self {
        let valid = p.start_rate.is_finite()
            && p.start_rate > 0.0
            && p.factor > 1.0
            && p.max_rate >= p.min_rate
            && p.max_steps > 0;
        let first = p
            .start_rate
            .clamp(p.min_rate.max(f64::MIN_POSITIVE), p.max_rate);
        Self {
            next: valid.then_some(first),
            p,
            last_pass: None,
            first_fail: None,
            steps: 0,
            bisections: 0,
        }
    }

    /// The rate of the next step, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        self.next
    }

    /// The highest rate that passed.
    pub fn best(&self) -> Option<f64> {
        self.last_pass
    }

    /// The lowest rate that failed.
    pub fn first_fail(&self) -> Option<f64> {
        self.first_fail
    }

    /// Records the verdict of a step at `rate` and decides the next rate.
    pub fn record(&mut self, rate: f64, passed: bool) {
        let bracketed = self.last_pass.is_some() && self.first_fail.is_some();
        self.steps += 1;
        if bracketed {
            self.bisections += 1;
        }
        if passed {
            self.last_pass = Some(self.last_pass.map_or(rate, |r| r.max(rate)));
        } else {
            self.first_fail = Some(self.first_fail.map_or(rate, |r| r.min(rate)));
        }
        self.next = self.decide();
    }

    fn decide(&self) -> Option<f64> {
        if self.steps >= self.p.max_steps {
            return None;
        }
        match (self.last_pass, self.first_fail) {
            // Everything passed so far: step up.
            (Some(pass), None) => {
                if pass >= self.p.max_rate {
                    None
                } else {
                    Some((pass * self.p.factor).min(self.p.max_rate))
                }
            }
            // Nothing passed yet: step down.
            (None, Some(fail)) => {
                let r = fail / self.p.factor;
                (r >= self.p.min_rate).then_some(r)
            }
            // Bracketed: bisect while steps remain and the bracket is wider than 1 %.
            (Some(pass), Some(fail)) => {
                if self.bisections >= self.p.bisect_steps || fail <= pass * 1.01 {
                    None
                } else {
                    Some((pass + fail) / 2.0)
                }
            }
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SearchParams {
        SearchParams {
            start_rate: 2000.0,
            factor: 1.3,
            min_rate: 100.0,
            max_rate: 1_000_000.0,
            bisect_steps: 2,
            max_steps: 30,
        }
    }

    /// Runs a search against a system that sustains exactly `capacity`.
    fn run(p: SearchParams, capacity: f64) -> (Vec<f64>, Option<f64>) {
        let mut s = RateSearch::new(p);
        let mut tried = Vec::new();
        while let Some(r) = s.next_rate() {
            tried.push(r);
            s.record(r, r <= capacity);
        }
        (tried, s.best())
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6 * b.max(1.0)
    }

    #[test]
    fn steps_up_then_bisects_twice() {
        let (tried, best) = run(params(), 5000.0);
        // 2000, 2600, 3380, 4394, 5712.2 (fail), then two bisections.
        let expect_up = [2000.0, 2600.0, 3380.0, 4394.0, 5712.2];
        for (t, e) in tried.iter().zip(expect_up) {
            assert!(close(*t, e), "{tried:?}");
        }
        assert_eq!(tried.len(), 7, "{tried:?}");
        let mid1 = (4394.0 + 5712.2) / 2.0; // 5053.1: fails
        assert!(close(tried[5], mid1));
        let mid2 = (4394.0 + mid1) / 2.0; // 4723.55: passes
        assert!(close(tried[6], mid2));
        assert!(close(best.unwrap(), mid2));
    }

    #[test]
    fn steps_down_when_the_start_fails() {
        let (tried, best) = run(params(), 1000.0);
        // 2000 f, 1538 f, 1183 f, 910 p, then bisect (910, 1183) twice.
        assert!(close(tried[1], 2000.0 / 1.3));
        assert!(close(tried[3], 2000.0 / 1.3 / 1.3 / 1.3));
        assert_eq!(tried.len(), 6, "{tried:?}");
        let b = best.unwrap();
        assert!(b <= 1000.0 && b > 900.0, "{b}");
    }

    #[test]
    fn gives_up_below_min_rate() {
        let (tried, best) = run(params(), 10.0);
        assert_eq!(best, None);
        assert!(tried.iter().all(|r| *r >= 100.0), "{tried:?}");
        assert!(tried.last().unwrap() / 1.3 < 100.0);
    }

    #[test]
    fn stops_at_max_rate_and_max_steps() {
        let mut p = params();
        p.max_rate = 3000.0;
        let (tried, best) = run(p.clone(), 1e9);
        assert_eq!(tried.len(), 3, "{tried:?}"); // 2000, 2600, 3000 (capped)
        assert!(close(best.unwrap(), 3000.0));

        p.max_rate = 1e12;
        p.max_steps = 4;
        let (tried, _) = run(p, 1e12);
        assert_eq!(tried.len(), 4);
    }

    #[test]
    fn no_bisection_when_disabled() {
        let mut p = params();
        p.bisect_steps = 0;
        let (tried, best) = run(p, 3000.0);
        assert_eq!(tried.len(), 3, "{tried:?}"); // 2000, 2600, 3380 (fails), no bisection
        assert!(close(best.unwrap(), 2600.0));
    }

    #[test]
    fn invalid_params_do_nothing() {
        let mut p = params();
        p.factor = 1.0;
        assert_eq!(RateSearch::new(p).next_rate(), None);
    }

    fn phase(target: f64, achieved: f64, p99: f64) -> PhaseResult {
        use crate::openloop::{summarize, LoadSpec};
        let spec = LoadSpec {
            rate: target,
            duration: std::time::Duration::from_secs(1),
            max_requests: 10,
            connections: 1,
            timeout: std::time::Duration::from_secs(1),
            path: "/x".into(),
            authorization: String::new(),
            id_prefix: String::new(),
            first_index: 0,
            body: crate::openloop::BodySpec::inbox(),
        };
        let mut r = summarize("t", &spec, 0, &[]).unwrap();
        r.achieved_rate = achieved;
        r.latency.p99_ms = p99;
        r
    }

    #[test]
    fn judge_applies_every_rule() {
        let c = Criteria {
            min_throughput_ratio: 0.97,
            p99_max_ms: 100.0,
        };
        assert!(judge(&phase(1000.0, 975.0, 99.0), &c).is_empty());
        assert_eq!(judge(&phase(1000.0, 960.0, 99.0), &c).len(), 1);
        assert_eq!(judge(&phase(1000.0, 1000.0, 101.0), &c).len(), 1);
        let mut r = phase(1000.0, 1000.0, 1.0);
        r.non_2xx = 1;
        r.timeouts = 2;
        r.errors = 3;
        r.not_sent = 4;
        assert_eq!(judge(&r, &c).len(), 4);
    }
}
