//! When a message with a `send_at` goes out: at once, or scheduled — or not at all, when
//! the time is too far in the past or beyond what the history keeps.

use chrono::{DateTime, Duration, Utc};

/// How far a `send_at` may lie in the past and still be sent at once (clocks of callers
/// differ; a time a little behind ours means "now").
pub const SEND_AT_TOLERANCE_SECONDS: i64 = 60;

/// The clock a send is validated against.
#[derive(Debug, Clone, Copy)]
pub struct SendClock {
    pub now: DateTime<Utc>,
    /// The latest `send_at` accepted, counted from `now`.
    pub max_ahead: Duration,
}

impl SendClock {
    /// The clock for a daemon that keeps `retention_days` of history. A message's record
    /// lives in the day partition of its acceptance, dropped `retention_days` after that
    /// day ends; scheduling at most a day less ahead (at least one day) leaves its record,
    /// funnel and deliveries readable for a day after it went out.
    pub fn with_retention(now: DateTime<Utc>, retention_days: u32) -> Self {
        Self {
            now,
            max_ahead: Duration::days(i64::from(retention_days.saturating_sub(1).max(1))),
        }
    }
}

/// What a `send_at` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Due now (or within the tolerance behind now): planned at once.
    Now,
    /// Scheduled: waits until then.
    At(DateTime<Utc>),
}

/// Why a `send_at` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Past,
    TooFarAhead,
}

/// Decides what `send_at` means against `clock`.
pub fn when(send_at: DateTime<Utc>, clock: SendClock) -> Result<When, Refused> {
    if send_at < clock.now - Duration::seconds(SEND_AT_TOLERANCE_SECONDS) {
        Err(Refused::Past)
    } else if send_at > clock.now + clock.max_ahead {
        Err(Refused::TooFarAhead)
    } else if send_at <= clock.now {
        Ok(When::Now)
    } else {
        Ok(When::At(send_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_at_decides_by_the_table() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time");
        let clock = SendClock {
            now,
            max_ahead: Duration::days(6),
        };
        let s = Duration::seconds;
        let table = [
            (now - s(3600 * 24 * 365 * 6), Err(Refused::Past)),
            (now - s(61), Err(Refused::Past)),
            (now - s(60), Ok(When::Now)),
            (now - s(1), Ok(When::Now)),
            (now, Ok(When::Now)),
            (now + s(1), Ok(When::At(now + s(1)))),
            (
                now + Duration::days(6),
                Ok(When::At(now + Duration::days(6))),
            ),
            (now + Duration::days(6) + s(1), Err(Refused::TooFarAhead)),
        ];
        for (send_at, want) in table {
            assert_eq!(when(send_at, clock), want, "send_at {send_at}");
        }
    }

    #[test]
    fn retention_leaves_a_day_after_sending() {
        let now = Utc::now();
        let days = |r| SendClock::with_retention(now, r).max_ahead.num_days();
        assert_eq!((days(1), days(2), days(7), days(60)), (1, 1, 6, 59));
    }
}
