//! How long the scheduler sleeps: a pure decision, tested below.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The longest sleep: messages scheduled by another node sharing the database, which
/// cannot wake this one, are found at most this late.
pub const IDLE: Duration = Duration::from_secs(1);

/// How long to sleep at `now` when the earliest message waiting is due at `next`.
pub fn next_wake(now: DateTime<Utc>, next: Option<DateTime<Utc>>) -> Duration {
    match next {
        None => IDLE,
        Some(t) if t <= now => Duration::ZERO,
        Some(t) => (t - now).to_std().map_or(IDLE, |d| d.min(IDLE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheduler_sleeps_until_the_next_time_or_a_second() {
        let now = Utc::now();
        let ms = chrono::Duration::milliseconds;
        let table = [
            (None, IDLE),
            (Some(now - ms(5)), Duration::ZERO),
            (Some(now), Duration::ZERO),
            (Some(now + ms(250)), Duration::from_millis(250)),
            (Some(now + ms(1000)), IDLE),
            (Some(now + chrono::Duration::days(3)), IDLE),
        ];
        for (next, want) in table {
            assert_eq!(next_wake(now, next), want, "{next:?}");
        }
    }
}
