//! How far planning is behind, shared by the planner (which measures it) and the ingest
//! (which stops accepting new work past the configured bounds, so that an accepted message
//! is one umsd can deliver in reasonable time), with the admission rule as a pure function.
//!
//! The figures are kept in atomics: the planner counts the due, unplanned messages in
//! `message_queue` every second (which also counts other nodes' work); in between, the
//! ingest adds the messages it commits and the planner subtracts the ones it finishes, so
//! a burst is seen at once rather than a second later.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::Priority;

/// The planner's backlog: due messages not planned yet, and the oldest one's due time.
#[derive(Debug, Default)]
pub struct PlanBacklog {
    unplanned: AtomicI64,
    /// Unix milliseconds when the oldest unplanned message fell due; 0 when there is none.
    oldest_ms: AtomicI64,
}

impl PlanBacklog {
    /// A measurement: `unplanned` due messages, the oldest due at `oldest`.
    pub fn set(&self, unplanned: i64, oldest: Option<DateTime<Utc>>) {
        self.unplanned.store(unplanned.max(0), Ordering::Relaxed);
        self.oldest_ms.store(
            oldest.map_or(0, |t| t.timestamp_millis()),
            Ordering::Relaxed,
        );
    }

    /// `n` messages were committed and are due now.
    pub fn added(&self, n: usize, now: DateTime<Utc>) {
        if n == 0 {
            return;
        }
        self.unplanned.fetch_add(n as i64, Ordering::Relaxed);
        let _ = self.oldest_ms.compare_exchange(
            0,
            now.timestamp_millis(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// `n` messages were fully planned.
    pub fn planned(&self, n: usize) {
        let left = self.unplanned.fetch_sub(n as i64, Ordering::Relaxed) - n as i64;
        if left <= 0 {
            self.unplanned.store(0, Ordering::Relaxed);
            self.oldest_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Due messages not planned yet.
    pub fn unplanned(&self) -> u64 {
        self.unplanned.load(Ordering::Relaxed).max(0) as u64
    }

    /// How long the oldest unplanned message has been due (zero when none is).
    pub fn lag(&self, now: DateTime<Utc>) -> Duration {
        match self.oldest_ms.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            ms => Duration::from_millis((now.timestamp_millis() - ms).max(0) as u64),
        }
    }
}

/// Past these, new sends are refused: at most `max_unplanned` messages wait to be planned,
/// and none for longer than `max_lag`. Zero means no bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_unplanned: u64,
    pub max_lag: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_unplanned: 100_000,
            max_lag: Duration::from_secs(10),
        }
    }
}

/// Whether a send is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admit,
    Refuse {
        retry_after: Duration,
        behind: Behind,
    },
}

/// Which bound planning is past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behind {
    /// This many due messages wait to be planned.
    Unplanned(u64),
    /// The oldest due message has waited this long.
    Lag(Duration),
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Behind::Unplanned(n) => write!(f, "{n} accepted messages are waiting to be planned"),
            Behind::Lag(d) => write!(
                f,
                "the oldest accepted message has waited {:.1} s to be planned",
                d.as_secs_f64()
            ),
        }
    }
}

/// The admission rule. High-priority sends are admitted up to twice the bounds: they are
/// planned ahead of the backlog, so they still go out soon. The answer's `Retry-After` is
/// the time the excess lag should take to work off (1–30 s), or 1 s when only the count is
/// past its bound.
pub fn admit(unplanned: u64, lag: Duration, bounds: Bounds, priority: Priority) -> Admission {
    let factor: u32 = if priority == Priority::High { 2 } else { 1 };
    if bounds.max_lag > Duration::ZERO && lag > bounds.max_lag * factor {
        let excess = lag - bounds.max_lag * factor;
        return Admission::Refuse {
            retry_after: Duration::from_secs(excess.as_secs().clamp(1, 30)),
            behind: Behind::Lag(lag),
        };
    }
    if bounds.max_unplanned > 0 && unplanned >= bounds.max_unplanned * u64::from(factor) {
        return Admission::Refuse {
            retry_after: Duration::from_secs(1),
            behind: Behind::Unplanned(unplanned),
        };
    }
    Admission::Admit
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn admission_follows_the_table() {
        let b = Bounds {
            max_unplanned: 1000,
            max_lag: S(10),
        };
        let off = Bounds {
            max_unplanned: 0,
            max_lag: Duration::ZERO,
        };
        use Priority::*;
        let refuse = |secs, behind| Admission::Refuse {
            retry_after: S(secs),
            behind,
        };
        let table: &[(u64, Duration, Bounds, Priority, Admission)] = &[
            (0, S(0), b, Normal, Admission::Admit),
            (999, S(10), b, Normal, Admission::Admit),
            (1000, S(0), b, Normal, refuse(1, Behind::Unplanned(1000))),
            (1000, S(0), b, Low, refuse(1, Behind::Unplanned(1000))),
            (1999, S(0), b, High, Admission::Admit),
            (2000, S(0), b, High, refuse(1, Behind::Unplanned(2000))),
            (5, S(11), b, Normal, refuse(1, Behind::Lag(S(11)))),
            (5, S(25), b, Normal, refuse(15, Behind::Lag(S(25)))),
            (5, S(500), b, Normal, refuse(30, Behind::Lag(S(500)))),
            (5, S(19), b, High, Admission::Admit),
            // the lag is named first when both are past
            (5000, S(12), b, Normal, refuse(2, Behind::Lag(S(12)))),
            (u64::MAX, S(100_000), off, Normal, Admission::Admit),
        ];
        for (i, (n, lag, bounds, p, want)) in table.iter().enumerate() {
            assert_eq!(&admit(*n, *lag, *bounds, *p), want, "row {i}");
        }
    }

    #[test]
    fn the_estimate_follows_commits_and_plans() {
        let b = PlanBacklog::default();
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        assert_eq!(b.lag(t0), Duration::ZERO);
        b.added(10, t0);
        b.added(5, t0 + chrono::Duration::seconds(3));
        assert_eq!(b.unplanned(), 15);
        // the oldest stays the first commit's time
        assert_eq!(b.lag(t0 + chrono::Duration::seconds(4)), S(4));
        b.planned(15);
        assert_eq!((b.unplanned(), b.lag(t0)), (0, Duration::ZERO));
        b.set(7, Some(t0));
        assert_eq!(b.unplanned(), 7);
        b.planned(9);
        assert_eq!(b.unplanned(), 0);
    }
}
