//! What `strategy` reads back: the message and its deadline rows while it waits, and at
//! the end its deliveries counted per step, each target's lateness, the wall times, umsd's
//! own strategy counters, and the exact checks over them.

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, Row};
use umsd_actors::domain::DeliveryState;
use umsd_actors::metrics as m;

use super::args::StrategyArgs;
use super::report::{Check, Counts, Lateness, MetricFigures, WallTimes};
use super::INBOX;
use crate::metrics::Scrape;

/// Column `i` of a row, its type or NULL-ness checked rather than assumed.
pub(super) fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i)
        .with_context(|| format!("column {i} of the database's answer"))
}

/// A counter or gauge of the scrape summed over its series (0, not -0, when absent).
pub(super) fn metric(s: &Scrape, name: &str) -> f64 {
    s.sum(name, &[]) + 0.0
}

/// The message's pk and accept time.
pub(super) async fn message_of(
    db: &Client,
    app_id: i32,
    message_id: &str,
) -> Result<(i64, DateTime<Utc>)> {
    let row = db
        .query_opt(
            "SELECT m.id, m.created_at FROM message_keys k
               JOIN messages m ON m.app_id = k.app_id AND m.id = k.id
              WHERE k.app_id = $1 AND k.message_id = $2",
            &[&app_id, &message_id],
        )
        .await
        .context("finding the message")?
        .ok_or_else(|| anyhow!("the accepted message {message_id} is not in the database"))?;
    Ok((col(&row, 0)?, col(&row, 1)?))
}

/// The message's deadline rows: how many, the earliest and the latest due.
pub(super) async fn timer_rows(
    db: &Client,
    pk: i64,
) -> Result<(i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>)> {
    let row = db
        .query_one(
            "SELECT count(*), min(due_at), max(due_at) FROM strategy_timers WHERE message_pk = $1",
            &[&pk],
        )
        .await
        .context("reading strategy_timers")?;
    Ok((col(&row, 0)?, col(&row, 1)?, col(&row, 2)?))
}

/// Whether step 1 is still being planned (the message is in `message_queue`).
pub(super) async fn planning(db: &Client, pk: i64) -> Result<bool> {
    db.query_one(
        "SELECT EXISTS (SELECT 1 FROM message_queue WHERE id = $1)",
        &[&pk],
    )
    .await
    .context("reading message_queue")
    .and_then(|r| col(&r, 0))
}

/// Step-2 deliveries not final yet.
pub(super) async fn step2_pending(db: &Client, pk: i64) -> Result<i64> {
    let pending = DeliveryState::codes(DeliveryState::is_pending);
    db.query_one(
        "SELECT count(*) FROM deliveries WHERE message_pk = $1 AND step = 2 AND state = ANY($2)",
        &[&pk, &pending],
    )
    .await
    .context("counting pending step-2 deliveries")
    .and_then(|r| col(&r, 0))
}

/// The message's deliveries, counted (see [`Counts`]); `delivered` are the delivered
/// states' codes.
pub(super) async fn counts(
    db: &Client,
    pk: i64,
    within_s: u32,
    delivered: &[i16],
) -> Result<Counts> {
    let within = f64::from(within_s);
    let pending = DeliveryState::codes(DeliveryState::is_pending);
    let r = db
        .query_one(
            "WITH s1 AS (
                 SELECT state = ANY($2) AS delivered,
                        coalesce(state = ANY($2) AND sent_at <= created_at
                                 + make_interval(secs => $3::float8), false) AS in_time,
                        address IS NOT NULL AS addressed, reason, fell_back_at
                   FROM deliveries WHERE message_pk = $1 AND step = 1)
             SELECT count(*),
                    count(*) FILTER (WHERE reason = 'no_address'),
                    count(*) FILTER (WHERE addressed),
                    count(*) FILTER (WHERE delivered AND fell_back_at IS NULL),
                    count(*) FILTER (WHERE fell_back_at IS NOT NULL),
                    count(*) FILTER (WHERE addressed AND NOT in_time),
                    count(*) FILTER (WHERE in_time AND fell_back_at IS NOT NULL),
                    count(*) FILTER (WHERE delivered AND NOT in_time AND fell_back_at IS NULL)
               FROM s1",
            &[&pk, &delivered, &within],
        )
        .await
        .context("counting step-1 deliveries")?;
    let mut c = Counts {
        targets: col(&r, 0)?,
        no_address: col(&r, 1)?,
        addressed: col(&r, 2)?,
        settled: col(&r, 3)?,
        held: col(&r, 4)?,
        bound_late: col(&r, 5)?,
        delivered_but_held: col(&r, 6)?,
        late_but_settled: col(&r, 7)?,
        ..Counts::default()
    };
    let r = db
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE state = ANY($2)),
                    count(*) FILTER (WHERE state = ANY($3)),
                    count(*) FILTER (WHERE channel_code <> $4)
               FROM deliveries WHERE message_pk = $1 AND step = 2",
            &[&pk, &delivered, &pending, &INBOX],
        )
        .await
        .context("counting step-2 deliveries")?;
    (
        c.fired,
        c.fired_delivered,
        c.fired_pending,
        c.fired_elsewhere,
    ) = (col(&r, 0)?, col(&r, 1)?, col(&r, 2)?, col(&r, 3)?);
    for row in db
        .query(
            "SELECT step, count(*) FROM (
                 SELECT step, user_id FROM deliveries WHERE message_pk = $1 AND step IN (1, 2)
                  GROUP BY step, user_id HAVING count(*) > 1) d
              GROUP BY step",
            &[&pk],
        )
        .await
        .context("counting users with more than one delivery on a step")?
    {
        let (step, n): (i16, i64) = (col(&row, 0)?, col(&row, 1)?);
        match step {
            1 => c.step1_duplicates = n,
            _ => c.duplicates = n,
        }
    }
    c.target_users = db
        .query_one(
            "SELECT count(DISTINCT user_id) FROM deliveries WHERE message_pk = $1 AND step = 1",
            &[&pk],
        )
        .await
        .context("counting step-1 users")
        .and_then(|r| col(&r, 0))?;
    c.timers_left = timer_rows(db, pk).await?.0;
    Ok(c)
}

/// Per-target lateness of step 2, and how many went out before their deadline.
pub(super) async fn lateness(db: &Client, pk: i64, within_s: u32) -> Result<(Lateness, i64)> {
    let r = db
        .query_one(
            "SELECT count(*),
                    percentile_cont(ARRAY[0.5, 0.99]::float8[]) WITHIN GROUP (ORDER BY l),
                    max(l), min(l), count(*) FILTER (WHERE l < 0)
               FROM (SELECT extract(epoch FROM s2.created_at - s1.created_at)::float8 - $2 AS l
                       FROM deliveries s2
                       JOIN deliveries s1 ON s1.message_pk = s2.message_pk
                                         AND s1.user_id = s2.user_id AND s1.step = 1
                      WHERE s2.message_pk = $1 AND s2.step = 2) x",
            &[&pk, &f64::from(within_s)],
        )
        .await
        .context("reading the lateness of step 2")?;
    let pcts: Option<Vec<Option<f64>>> = col(&r, 1)?;
    let pct = |i: usize| {
        pcts.as_ref()
            .and_then(|p| p.get(i).copied().flatten())
            .map(|s| s * 1000.0)
    };
    let ms = |v: Option<f64>| v.map(|s| s * 1000.0);
    Ok((
        Lateness {
            count: col(&r, 0)?,
            p50_ms: pct(0),
            p99_ms: pct(1),
            max_ms: ms(col(&r, 2)?),
            min_ms: ms(col(&r, 3)?),
        },
        col(&r, 4)?,
    ))
}

/// Wall times from the accept (see [`WallTimes`]).
pub(super) async fn wall_times(
    db: &Client,
    pk: i64,
    accepted: DateTime<Utc>,
    within_s: u32,
    delivered: &[i16],
) -> Result<WallTimes> {
    let r = db
        .query_one(
            "SELECT max(created_at) FILTER (WHERE step = 1),
                    max(sent_at) FILTER (WHERE step = 1 AND state = ANY($2)),
                    min(created_at) FILTER (WHERE step = 1),
                    min(created_at) FILTER (WHERE step = 2),
                    max(created_at) FILTER (WHERE step = 2),
                    max(sent_at) FILTER (WHERE step = 2 AND state = ANY($2))
               FROM deliveries WHERE message_pk = $1 AND step IN (1, 2)",
            &[&pk, &delivered],
        )
        .await
        .context("reading the wall times")?;
    let mut at = [None; 6];
    for (i, v) in at.iter_mut().enumerate() {
        let t: Option<DateTime<Utc>> = col(&r, i)?;
        *v = t
            .and_then(|t| (t - accepted).num_microseconds())
            .map(|us| us as f64 / 1e6);
    }
    let within = f64::from(within_s);
    Ok(WallTimes {
        step1_planned_s: at[0],
        step1_delivered_s: at[1],
        first_deadline_s: at[2].map(|s| s + within),
        last_deadline_s: at[0].map(|s| s + within),
        step2_first_s: at[3],
        step2_planned_s: at[4],
        step2_delivered_s: at[5],
        timers_empty_s: None,
        done_s: None,
    })
}

pub(super) fn metric_figures(s: &Scrape) -> MetricFigures {
    let name = m::STRATEGY_TIMER_LATENESS_SECONDS;
    let count = metric(s, &format!("{name}_count"));
    let sum = metric(s, &format!("{name}_sum"));
    MetricFigures {
        timers_fired: metric(s, m::STRATEGY_TIMERS_FIRED_TOTAL),
        fallbacks: metric(s, m::STRATEGY_FALLBACKS_TOTAL),
        settled: metric(s, m::STRATEGY_SETTLED_TOTAL),
        lateness_count: count,
        lateness_sum_s: sum,
        lateness_mean_ms: (count > 0.0).then(|| sum / count * 1000.0),
    }
}

/// The exact checks over the counts (and umsd's counters, when `/metrics` answered).
pub(super) fn checks(
    a: &StrategyArgs,
    c: &Counts,
    early: i64,
    mf: Option<&MetricFigures>,
) -> Vec<Check> {
    let users = i64::try_from(a.users).unwrap_or(i64::MAX);
    let unbound = i64::try_from(a.users - a.bound_users()).unwrap_or(i64::MAX);
    let mut out = vec![
        Check::new("step-1 deliveries = users", c.targets, users),
        Check::new(
            "users with more than one step-1 delivery = 0",
            c.step1_duplicates,
            0,
        ),
        Check::new(
            "no_address = users without a binding",
            c.no_address,
            unbound,
        ),
        Check::new("fired = held", c.fired, c.held),
        Check::new("fired + settled = users", c.fired + c.settled, users),
        Check::new(
            "users with more than one step-2 delivery = 0",
            c.duplicates,
            0,
        ),
        Check::new(
            "held = users without a binding + bound users not delivered in time",
            c.held,
            unbound + c.bound_late,
        ),
        Check::new(
            "step-2 deliveries delivered = fired",
            c.fired_delivered,
            c.fired,
        ),
        Check::new(
            "step-2 deliveries not on the inbox = 0",
            c.fired_elsewhere,
            0,
        ),
        Check::new("step 2 out before its deadline = 0", early, 0),
        Check::new("deadline rows left = 0", c.timers_left, 0),
    ];
    if let Some(mf) = mf {
        out.push(Check::new(
            "umsd_strategy_fallbacks_total = fired",
            mf.fallbacks as i64,
            c.fired,
        ));
        out.push(Check::new(
            "umsd_strategy_settled_total = settled",
            mf.settled as i64,
            c.settled,
        ));
    }
    out
}
