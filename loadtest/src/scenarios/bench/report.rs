//! The figures of one `bench` round, how R_http and R_copy combine into R_ref, the
//! end-to-end figures next to them, and the verdict of one end-to-end step.

use serde::Serialize;

use super::args::E2eChannel;
use super::e2e::E2eSearch;
use crate::scenarios::pipeline::Progress;

/// One round of the bench scenario: the rates measured back to back.
#[derive(Debug, Clone, Serialize)]
pub struct RoundSummary {
    pub round: usize,
    pub r_http: Option<f64>,
    pub r_copy: f64,
    pub r_daemon: Option<f64>,
    pub r_ref: Option<f64>,
    pub ratio: Option<f64>,
    /// R_e2e per channel, in the order searched.
    pub e2e: Vec<E2eFigure>,
}

/// One channel's end-to-end rate and its ratios.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct E2eFigure {
    pub channel: E2eChannel,
    pub r_e2e: Option<f64>,
    /// R_e2e / R_ref.
    pub over_ref: Option<f64>,
    /// R_e2e / R_daemon.
    pub over_daemon: Option<f64>,
}

/// `1 / (1/a + 1/b)`: the rate of doing both things one after the other.
pub fn r_ref(r_http: f64, r_copy: f64) -> Option<f64> {
    (r_http > 0.0 && r_copy > 0.0).then(|| 1.0 / (1.0 / r_http + 1.0 / r_copy))
}

fn over(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

impl E2eFigure {
    pub fn new(
        channel: E2eChannel,
        r_e2e: Option<f64>,
        r_ref: Option<f64>,
        r_daemon: Option<f64>,
    ) -> Self {
        Self {
            channel,
            r_e2e,
            over_ref: over(r_e2e, r_ref),
            over_daemon: over(r_e2e, r_daemon),
        }
    }
}

/// The median of the values present (of an even number, the mean of the middle two).
pub fn median(values: &[Option<f64>]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().flatten().copied().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One channel's end-to-end figures over the rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct E2eMedian {
    pub channel: E2eChannel,
    /// Rounds in which a step passed.
    pub rounds_with_rate: usize,
    pub r_e2e: Option<f64>,
    pub over_ref: Option<f64>,
    pub over_daemon: Option<f64>,
}

/// Per channel, the medians of each round's figures (rounds without one are left out).
pub fn e2e_medians(rounds: &[RoundSummary]) -> Vec<E2eMedian> {
    let mut channels: Vec<E2eChannel> = Vec::new();
    for f in rounds.iter().flat_map(|r| &r.e2e) {
        if !channels.contains(&f.channel) {
            channels.push(f.channel);
        }
    }
    channels
        .into_iter()
        .map(|channel| {
            let figs: Vec<&E2eFigure> = rounds
                .iter()
                .flat_map(|r| &r.e2e)
                .filter(|f| f.channel == channel)
                .collect();
            let of = |f: &dyn Fn(&E2eFigure) -> Option<f64>| {
                median(&figs.iter().map(|x| f(x)).collect::<Vec<_>>())
            };
            E2eMedian {
                channel,
                rounds_with_rate: figs.iter().filter(|f| f.r_e2e.is_some()).count(),
                r_e2e: of(&|f| f.r_e2e),
                over_ref: of(&|f| f.over_ref),
                over_daemon: of(&|f| f.over_daemon),
            }
        })
        .collect()
}

/// The end-to-end part of `result.json`.
#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    pub channels: Vec<E2eChannel>,
    pub criteria: E2eCriteria,
    /// Every round's searches, in order.
    pub searches: Vec<E2eSearch>,
    /// Per channel, the medians over the rounds.
    pub medians: Vec<E2eMedian>,
}

/// When an end-to-end step passes, beyond the HTTP criteria.
#[derive(Debug, Clone, Serialize)]
pub struct E2eCriteria {
    /// Accept → delivered p99 at most this.
    pub p99_max_ms: f64,
    /// Every accepted message delivered within this after the step's sends end.
    pub drain_s: f64,
}

/// What one end-to-end step saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct E2eObserved {
    /// 2xx answers.
    pub accepted: u64,
    /// The step's messages in the database at the end of the drain wait.
    pub progress: Progress,
    /// Accept → delivered p99 over the delivered ones.
    pub p99_ms: Option<f64>,
}

/// The reasons an end-to-end step failed; empty when it passed. The delivery is judged
/// only when the HTTP criteria held (`http` empty): a step whose door already failed is
/// not waited for.
pub fn judge_e2e(http: &[String], o: &E2eObserved, c: &E2eCriteria) -> Vec<String> {
    if !http.is_empty() {
        return http.to_vec();
    }
    let mut why = Vec::new();
    let expected = o.accepted.max(o.progress.messages);
    if expected == 0 {
        why.push("nothing accepted".to_owned());
        return why;
    }
    if o.progress.delivered < expected {
        let mut s = format!(
            "{} of {expected} accepted messages not delivered within {:.1} s",
            expected - o.progress.delivered,
            c.drain_s
        );
        if o.progress.lost > 0 {
            s.push_str(&format!(" ({} lost: filtered or failed)", o.progress.lost));
        }
        why.push(s);
    }
    if let Some(p99) = o.p99_ms {
        if p99 > c.p99_max_ms {
            why.push(format!(
                "accept->delivered p99 {p99:.0} ms > {:.0} ms",
                c.p99_max_ms
            ));
        }
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r_ref_is_the_harmonic_combination() {
        assert_eq!(r_ref(100.0, 100.0), Some(50.0));
        let r = r_ref(40_000.0, 120_000.0).unwrap();
        assert!((r - 30_000.0).abs() < 1e-6);
        assert_eq!(r_ref(0.0, 100.0), None);
    }

    fn progress(messages: u64, delivered: u64, lost: u64) -> Progress {
        Progress {
            messages,
            delivered,
            lost,
        }
    }

    #[test]
    fn e2e_verdicts() {
        let c = E2eCriteria {
            p99_max_ms: 1000.0,
            drain_s: 5.0,
        };
        let http_fail = vec!["p99 120.0 ms > 100.0 ms".to_owned()];
        // (http reasons, accepted, progress, p99, failing reasons)
        type Row<'a> = (&'a [String], u64, Progress, Option<f64>, usize);
        let table: Vec<Row<'_>> = vec![
            (&[], 1000, progress(1000, 1000, 0), Some(250.0), 0),
            (&[], 1000, progress(1000, 1000, 0), Some(1000.0), 0),
            (&[], 1000, progress(1000, 1000, 0), Some(1000.5), 1),
            (&[], 1000, progress(1000, 999, 0), Some(250.0), 1),
            (&[], 1000, progress(1000, 990, 10), Some(2500.0), 2),
            // stored beyond the 2xx answers (a timeout that was stored): all must arrive
            (&[], 1000, progress(1002, 1000, 0), Some(10.0), 1),
            (&[], 0, progress(0, 0, 0), None, 1),
            // the door failed: only its reasons, the delivery is not judged
            (&http_fail, 1000, progress(1000, 0, 0), None, 1),
        ];
        for (http, accepted, p, p99, n) in table {
            let o = E2eObserved {
                accepted,
                progress: p,
                p99_ms: p99,
            };
            let why = judge_e2e(http, &o, &c);
            assert_eq!(why.len(), n, "{o:?}: {why:?}");
        }
        let o = E2eObserved {
            accepted: 10,
            progress: progress(10, 8, 2),
            p99_ms: Some(5.0),
        };
        let why = judge_e2e(&[], &o, &c);
        assert!(
            why[0].contains("2 of 10") && why[0].contains("2 lost"),
            "{why:?}"
        );
        assert_eq!(judge_e2e(&http_fail, &o, &c), http_fail);
    }

    #[test]
    fn medians_of_the_rounds() {
        assert_eq!(median(&[Some(3.0), None, Some(1.0), Some(2.0)]), Some(2.0));
        assert_eq!(median(&[Some(4.0), Some(1.0)]), Some(2.5));
        assert_eq!(median(&[None, None]), None);
        let round = |r: usize, inbox: Option<f64>, hook: Option<f64>| RoundSummary {
            round: r,
            r_http: Some(10_000.0),
            r_copy: 10_000.0,
            r_daemon: Some(4000.0),
            r_ref: Some(5000.0),
            ratio: Some(0.8),
            e2e: vec![
                E2eFigure::new(E2eChannel::Inbox, inbox, Some(5000.0), Some(4000.0)),
                E2eFigure::new(E2eChannel::Webhook, hook, Some(5000.0), Some(4000.0)),
            ],
        };
        let rounds = vec![
            round(1, Some(200.0), None),
            round(2, Some(400.0), Some(100.0)),
            round(3, Some(300.0), None),
        ];
        let m = e2e_medians(&rounds);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].channel, E2eChannel::Inbox);
        assert_eq!(m[0].r_e2e, Some(300.0));
        assert_eq!(m[0].rounds_with_rate, 3);
        assert_eq!(m[0].over_daemon, Some(0.075));
        assert_eq!(m[0].over_ref, Some(0.06));
        assert_eq!(m[1].r_e2e, Some(100.0));
        assert_eq!(m[1].rounds_with_rate, 1);
        let f = E2eFigure::new(E2eChannel::Inbox, Some(100.0), None, Some(0.0));
        assert_eq!((f.over_ref, f.over_daemon), (None, None));
    }
}
