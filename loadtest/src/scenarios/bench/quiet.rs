//! Waiting until the daemon has worked off what earlier phases left behind, so that no
//! measured phase shares the machine with the planner and the senders still busy with
//! the previous one.
//!
//! Quiet means: no message due for planning in `message_queue`, no row in
//! `dispatch_queue`, nothing held or in flight in the channel senders and no status write
//! pending (the gauges `umsd_channel_queue_depth`, `umsd_channel_in_flight` and
//! `umsd_status_pending`, when `/metrics` answers), and — checked only once all of that
//! holds, as it scans the day's deliveries — no delivery created since the run began still
//! in state `queued`. It must hold for `--quiet-settle-ms` on end. The wait is bounded by
//! `--quiet-timeout-s`; a wait that runs out is recorded as a problem and the run goes on.

use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;
use tokio_postgres::Client;
use umsd_actors::domain::DeliveryState;
use umsd_actors::metrics as m;

use crate::metrics;
use crate::scenarios::Ctx;

/// What is still to do, as one poll saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueState {
    /// `message_queue` rows due within a minute (scheduled messages further ahead are
    /// not work yet).
    pub message_queue: i64,
    pub dispatch_queue: i64,
    /// Deliveries the channel senders hold, calls in flight, status writes pending
    /// (`None` when `/metrics` did not answer).
    pub held: Option<f64>,
    pub in_flight: Option<f64>,
    pub status_pending: Option<f64>,
    /// Deliveries created since the run began still `queued`; counted only once
    /// everything above is empty.
    pub queued_deliveries: Option<i64>,
}

/// Nothing in the queues, the senders or the status writer (a gauge that was not read
/// does not hold the wait up).
pub fn queues_empty(s: &QueueState) -> bool {
    let idle = |g: Option<f64>| g.is_none_or(|v| v < 0.5);
    s.message_queue == 0
        && s.dispatch_queue == 0
        && idle(s.held)
        && idle(s.in_flight)
        && idle(s.status_pending)
}

/// Quiet: the queues are empty and no delivery is left `queued`.
pub fn is_quiet(s: &QueueState) -> bool {
    queues_empty(s) && s.queued_deliveries == Some(0)
}

/// One wait, as recorded in `result.json`.
#[derive(Debug, Clone, Serialize)]
pub struct QuietWait {
    /// The phase it came before.
    pub before: String,
    pub waited_s: f64,
    /// `false`: the timeout ran out first.
    pub quiet: bool,
    /// The last poll.
    pub last: QueueState,
}

/// The waiter: its own database connection and HTTP client.
pub struct Quiet {
    db: Client,
    http: reqwest::Client,
    base_url: String,
    /// Deliveries created from here on are looked at.
    since: DateTime<Utc>,
    timeout: Duration,
    settle: Duration,
}

impl Quiet {
    pub fn new(
        db: Client,
        base_url: &str,
        since: DateTime<Utc>,
        timeout: Duration,
        settle: Duration,
    ) -> Result<Self> {
        Ok(Self {
            db,
            http: crate::http_builder()
                .timeout(Duration::from_secs(2))
                .build()?,
            base_url: base_url.to_owned(),
            since,
            timeout,
            settle,
        })
    }

    async fn poll(&self) -> Result<QueueState> {
        let row = self
            .db
            .query_one(
                "SELECT (SELECT count(*) FROM message_queue
                          WHERE not_before <= now() + interval '1 minute'),
                        (SELECT count(*) FROM dispatch_queue)",
                &[],
            )
            .await
            .context("counting the work queues")?;
        let mut s = QueueState {
            message_queue: row.get(0),
            dispatch_queue: row.get(1),
            ..Default::default()
        };
        if let Ok(scrape) = metrics::scrape(&self.http, &self.base_url).await {
            s.held = Some(scrape.sum(m::CHANNEL_QUEUE_DEPTH, &[]));
            s.in_flight = Some(scrape.sum(m::CHANNEL_IN_FLIGHT, &[]));
            s.status_pending = Some(scrape.sum(m::STATUS_PENDING, &[]));
        }
        if queues_empty(&s) {
            let row = self
                .db
                .query_one(
                    "SELECT count(*) FROM deliveries WHERE created_at >= $1 AND state = $2",
                    &[&self.since, &DeliveryState::Queued.as_i16()],
                )
                .await
                .context("counting queued deliveries")?;
            s.queued_deliveries = Some(row.get(0));
        }
        Ok(s)
    }

    /// Waits until quiet has held for the settle time, or the timeout.
    pub async fn wait(&self, before: &str) -> Result<QuietWait> {
        let t0 = Instant::now();
        let deadline = t0 + self.timeout;
        let mut quiet_since: Option<Instant> = None;
        let mut next_note = t0 + Duration::from_secs(10);
        loop {
            let s = self.poll().await?;
            let now = Instant::now();
            let quiet = is_quiet(&s);
            if quiet {
                let since = *quiet_since.get_or_insert(now);
                if now.duration_since(since) >= self.settle {
                    return Ok(self.done(before, t0, true, s));
                }
            } else {
                quiet_since = None;
            }
            if now >= deadline {
                return Ok(self.done(before, t0, false, s));
            }
            if now >= next_note {
                next_note = now + Duration::from_secs(10);
                eprintln!(
                    "[quiet] before {before}: {:.0} s, {} messages to plan, {} dispatch rows, \
                     {} held",
                    now.duration_since(t0).as_secs_f64(),
                    s.message_queue,
                    s.dispatch_queue,
                    s.held.map_or("?".to_owned(), |h| format!("{h:.0}"))
                );
            }
            let pause = if queues_empty(&s) { 200 } else { 1000 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    /// [`Quiet::wait`], recorded in the report (a wait that ran out also as a problem).
    pub async fn wait_recorded(&self, ctx: &mut Ctx, before: &str) -> Result<QuietWait> {
        let w = self.wait(before).await?;
        if !w.quiet {
            ctx.report.problems.push(format!(
                "quiet wait before {before}: the daemon was still busy after {:.0} s \
                 ({} messages to plan, {} dispatch rows, {} deliveries queued); the phase \
                 shared the machine with that work",
                w.waited_s,
                w.last.message_queue,
                w.last.dispatch_queue,
                w.last
                    .queued_deliveries
                    .map_or("?".to_owned(), |n| n.to_string())
            ));
        }
        ctx.report.quiet_waits.push(w.clone());
        Ok(w)
    }

    fn done(&self, before: &str, t0: Instant, quiet: bool, last: QueueState) -> QuietWait {
        let waited_s = t0.elapsed().as_secs_f64();
        eprintln!(
            "[quiet] before {before}: {} after {waited_s:.1} s",
            if quiet { "quiet" } else { "STILL BUSY" }
        );
        QuietWait {
            before: before.to_owned(),
            waited_s,
            quiet,
            last,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_needs_every_queue_empty() {
        let empty = QueueState {
            queued_deliveries: Some(0),
            ..Default::default()
        };
        assert!(is_quiet(&empty));
        // gauges that were not read do not hold the wait up; read ones must be zero
        let cases: Vec<(QueueState, bool, bool)> = vec![
            (
                QueueState {
                    message_queue: 3,
                    ..empty.clone()
                },
                false,
                false,
            ),
            (
                QueueState {
                    dispatch_queue: 1,
                    ..empty.clone()
                },
                false,
                false,
            ),
            (
                QueueState {
                    held: Some(12.0),
                    ..empty.clone()
                },
                false,
                false,
            ),
            (
                QueueState {
                    in_flight: Some(1.0),
                    ..empty.clone()
                },
                false,
                false,
            ),
            (
                QueueState {
                    status_pending: Some(4.0),
                    ..empty.clone()
                },
                false,
                false,
            ),
            (
                QueueState {
                    held: Some(0.0),
                    in_flight: Some(0.0),
                    status_pending: Some(0.0),
                    ..empty.clone()
                },
                true,
                true,
            ),
            (
                QueueState {
                    queued_deliveries: Some(5),
                    ..empty.clone()
                },
                true,
                false,
            ),
            (
                QueueState {
                    queued_deliveries: None,
                    ..empty.clone()
                },
                true,
                false,
            ),
        ];
        for (s, empty_queues, quiet) in cases {
            assert_eq!(queues_empty(&s), empty_queues, "{s:?}");
            assert_eq!(is_quiet(&s), quiet, "{s:?}");
        }
    }
}
