//! What became of a group of one-user messages behind the door, read from the database.
//!
//! The messages are found by their `message_id` prefix in `message_keys` and joined to
//! their delivery on one channel by `message_pk`. Per message: its accept time
//! (`messages.created_at`, the time of the id assigned at ingest just before the group
//! commit), when its delivery was planned (`deliveries.created_at`, the time of the
//! delivery's id) and when its first outcome was recorded (`deliveries.sent_at`, with
//! `sent_state`). A message counts as delivered when that first outcome is `submitted` or
//! `delivered` (for the inbox and webhooks acceptance is the delivery).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use umsd_actors::domain::DeliveryState;

use crate::db::KeyPrefix;

/// One message and its delivery on the channel (if it has been planned).
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub accept: DateTime<Utc>,
    pub planned: Option<DateTime<Utc>>,
    pub sent: Option<DateTime<Utc>>,
    pub sent_state: Option<i16>,
    pub state: Option<i16>,
}

/// Percentiles of a set of latencies (nearest rank), in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Nearest-rank percentiles of `values` (sorted in place); `None` when there are none.
pub fn percentiles(values: &mut [f64]) -> Option<Percentiles> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let at = |q: f64| {
        let rank = (q * n as f64).ceil() as usize;
        values[rank.clamp(1, n) - 1]
    };
    Some(Percentiles {
        count: n as u64,
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: values[n - 1],
    })
}

/// The first outcome counts as delivered: `submitted` or `delivered`.
pub fn is_delivered(sent_state: Option<i16>) -> bool {
    sent_state.is_some_and(|s| {
        s == DeliveryState::Submitted.as_i16() || s == DeliveryState::Delivered.as_i16()
    })
}

/// The delivery is settled without being delivered (lost at planning, failed, recalled).
fn is_lost(t: &Timing) -> bool {
    !is_delivered(t.sent_state)
        && t.state
            .and_then(DeliveryState::from_i16)
            .is_some_and(|s| !s.is_pending())
}

/// What became of the messages under one prefix on one channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pipeline {
    /// Messages stored under the prefix.
    pub messages: u64,
    /// With a delivery on the channel.
    pub planned: u64,
    /// Whose first outcome was `submitted` or `delivered`.
    pub delivered: u64,
    /// Settled without being delivered (filtered at planning, failed, recalled).
    pub lost: u64,
    /// The deliveries' current states by name.
    pub states: BTreeMap<String, u64>,
    /// Accept → planned, over the planned messages.
    pub accept_to_planned: Option<Percentiles>,
    /// Accept → first outcome `submitted`/`delivered`, over the delivered messages.
    pub accept_to_delivered: Option<Percentiles>,
    pub first_accept: Option<DateTime<Utc>>,
    pub last_accept: Option<DateTime<Utc>>,
    pub last_delivered: Option<DateTime<Utc>>,
    /// From the last accept to the last delivery.
    pub last_accept_to_last_delivery_s: Option<f64>,
}

fn ms_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a)
        .num_microseconds()
        .map_or(f64::MAX, |us| us as f64 / 1000.0)
}

/// The figures of a set of timings (pure).
pub fn summarize(timings: &[Timing]) -> Pipeline {
    let mut planned = Vec::new();
    let mut delivered = Vec::new();
    let mut p = Pipeline {
        messages: timings.len() as u64,
        ..Default::default()
    };
    for t in timings {
        p.first_accept = Some(p.first_accept.map_or(t.accept, |f| f.min(t.accept)));
        p.last_accept = Some(p.last_accept.map_or(t.accept, |l| l.max(t.accept)));
        if let Some(at) = t.planned {
            planned.push(ms_between(t.accept, at));
        }
        if let Some(state) = t.state {
            let name = DeliveryState::from_i16(state).map_or("unknown", DeliveryState::as_str);
            *p.states.entry(name.to_owned()).or_insert(0) += 1;
        }
        match t.sent {
            Some(at) if is_delivered(t.sent_state) => {
                delivered.push(ms_between(t.accept, at));
                p.last_delivered = Some(p.last_delivered.map_or(at, |l| l.max(at)));
            }
            _ if is_lost(t) => p.lost += 1,
            _ => {}
        }
    }
    p.planned = planned.len() as u64;
    p.delivered = delivered.len() as u64;
    p.accept_to_planned = percentiles(&mut planned);
    p.accept_to_delivered = percentiles(&mut delivered);
    p.last_accept_to_last_delivery_s = match (p.last_accept, p.last_delivered) {
        (Some(a), Some(d)) => Some(ms_between(a, d) / 1000.0),
        _ => None,
    };
    p
}

/// The SQL condition on the keys and the parameters after `app_id` (and `channel`).
fn key_args(key: &KeyPrefix) -> (String, Vec<String>) {
    key.condition("k.message_id", 3)
}

/// Every message under the prefix with its (first) delivery on `channel`.
pub async fn read(db: &Client, app_id: i32, key: &KeyPrefix, channel: &str) -> Result<Vec<Timing>> {
    let (cond, args) = key_args(key);
    let sql = format!(
        "SELECT DISTINCT ON (k.id) m.created_at, d.created_at, d.sent_at, d.sent_state, d.state
           FROM message_keys k
           JOIN messages m ON m.app_id = k.app_id AND m.id = k.id AND m.created_at = k.created_at
           LEFT JOIN deliveries d ON d.message_pk = k.id AND d.created_at >= k.created_at
                                 AND d.channel_code = $2
          WHERE k.app_id = $1 AND {cond}
          ORDER BY k.id, d.id"
    );
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&app_id, &channel];
    params.extend(args.iter().map(|a| a as &(dyn ToSql + Sync)));
    let rows = db
        .query(&sql, &params)
        .await
        .context("reading the messages' deliveries")?;
    Ok(rows
        .into_iter()
        .map(|r| Timing {
            accept: r.get(0),
            planned: r.get(1),
            sent: r.get(2),
            sent_state: r.get(3),
            state: r.get(4),
        })
        .collect())
}

/// How far the messages under a prefix have got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub messages: u64,
    pub delivered: u64,
    pub lost: u64,
}

impl Progress {
    /// Nothing more will happen to `expected` messages: each is delivered or lost.
    pub fn settled(&self, expected: u64) -> bool {
        self.delivered + self.lost >= expected.max(self.messages)
    }
}

/// Counts the messages under the prefix, the delivered ones and the lost ones.
pub async fn progress(
    db: &Client,
    app_id: i32,
    key: &KeyPrefix,
    channel: &str,
) -> Result<Progress> {
    let (cond, args) = key.condition("k.message_id", 7);
    let sql = format!(
        "SELECT count(DISTINCT k.id),
                count(DISTINCT k.id) FILTER (WHERE d.sent_state IN ($3, $4)),
                count(DISTINCT k.id) FILTER (WHERE coalesce(d.sent_state, -1) NOT IN ($3, $4)
                                               AND d.state NOT IN ($5, $6, $3))
           FROM message_keys k
           LEFT JOIN deliveries d ON d.message_pk = k.id AND d.created_at >= k.created_at
                                 AND d.channel_code = $2
          WHERE k.app_id = $1 AND {cond}"
    );
    let (sub, del, planned, queued) = (
        DeliveryState::Submitted.as_i16(),
        DeliveryState::Delivered.as_i16(),
        DeliveryState::Planned.as_i16(),
        DeliveryState::Queued.as_i16(),
    );
    let mut params: Vec<&(dyn ToSql + Sync)> =
        vec![&app_id, &channel, &sub, &del, &planned, &queued];
    params.extend(args.iter().map(|a| a as &(dyn ToSql + Sync)));
    let row = db
        .query_one(&sql, &params)
        .await
        .context("counting delivered messages")?;
    let n = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    Ok(Progress {
        messages: n(0),
        delivered: n(1),
        lost: n(2),
    })
}

/// Polls [`progress`] until `expected` messages (or every stored one, if more) are
/// settled, or `max` has passed; answers the last progress and the seconds waited.
pub async fn wait_settled(
    db: &Client,
    app_id: i32,
    key: &KeyPrefix,
    channel: &str,
    expected: u64,
    max: Duration,
) -> Result<(Progress, f64)> {
    let t0 = Instant::now();
    let deadline = t0 + max;
    loop {
        let p = progress(db, app_id, key, channel).await?;
        let now = Instant::now();
        if p.settled(expected) || now >= deadline {
            return Ok((p, now.duration_since(t0).as_secs_f64()));
        }
        let pause = Duration::from_millis(250).min(deadline.duration_since(now));
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn ms(v: i64) -> DateTime<Utc> {
        t0() + chrono::Duration::milliseconds(v)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=1000).rev().map(f64::from).collect();
        let p = percentiles(&mut v).unwrap();
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50_ms, 500.0);
        assert_eq!(p.p90_ms, 900.0);
        assert_eq!(p.p99_ms, 990.0);
        assert_eq!(p.p999_ms, 999.0);
        assert_eq!(p.max_ms, 1000.0);
        let p = percentiles(&mut [7.0]).unwrap();
        assert_eq!((p.p50_ms, p.p99_ms, p.max_ms), (7.0, 7.0, 7.0));
        // 10 values: p99 is the largest, p90 the 9th
        let mut v: Vec<f64> = (1..=10).map(f64::from).collect();
        let p = percentiles(&mut v).unwrap();
        assert_eq!((p.p50_ms, p.p90_ms, p.p99_ms), (5.0, 9.0, 10.0));
        assert_eq!(percentiles(&mut []), None);
    }

    #[test]
    fn summary_of_timings() {
        let sub = Some(DeliveryState::Submitted.as_i16());
        let del = Some(DeliveryState::Delivered.as_i16());
        let timings = vec![
            // delivered 40 ms after the accept, planned after 10 ms
            Timing {
                accept: ms(0),
                planned: Some(ms(10)),
                sent: Some(ms(40)),
                sent_state: del,
                state: del,
            },
            // submitted (a webhook's acceptance) 100 ms after its accept
            Timing {
                accept: ms(500),
                planned: Some(ms(520)),
                sent: Some(ms(600)),
                sent_state: sub,
                state: del,
            },
            // planned, still queued
            Timing {
                accept: ms(900),
                planned: Some(ms(950)),
                sent: None,
                sent_state: None,
                state: Some(DeliveryState::Queued.as_i16()),
            },
            // not planned yet
            Timing {
                accept: ms(1000),
                planned: None,
                sent: None,
                sent_state: None,
                state: None,
            },
            // lost at planning (unknown user)
            Timing {
                accept: ms(300),
                planned: Some(ms(305)),
                sent: None,
                sent_state: None,
                state: Some(DeliveryState::Filtered.as_i16()),
            },
            // failed at the provider
            Timing {
                accept: ms(400),
                planned: Some(ms(401)),
                sent: Some(ms(450)),
                sent_state: Some(DeliveryState::Failed.as_i16()),
                state: Some(DeliveryState::Failed.as_i16()),
            },
        ];
        let p = summarize(&timings);
        assert_eq!(p.messages, 6);
        assert_eq!(p.planned, 5);
        assert_eq!(p.delivered, 2);
        assert_eq!(p.lost, 2);
        assert_eq!(p.states.get("delivered"), Some(&2));
        assert_eq!(p.states.get("queued"), Some(&1));
        let d = p.accept_to_delivered.clone().unwrap();
        assert_eq!((d.count, d.p50_ms, d.max_ms), (2, 40.0, 100.0));
        let pl = p.accept_to_planned.clone().unwrap();
        assert_eq!((pl.count, pl.p50_ms, pl.max_ms), (5, 10.0, 50.0));
        assert_eq!(p.first_accept, Some(ms(0)));
        assert_eq!(p.last_accept, Some(ms(1000)));
        assert_eq!(p.last_delivered, Some(ms(600)));
        // the last delivery came before the last accept
        assert_eq!(p.last_accept_to_last_delivery_s, Some(-0.4));
        assert_eq!(summarize(&[]), Pipeline::default());
    }

    #[test]
    fn settled_counts_every_stored_message() {
        let p = Progress {
            messages: 10,
            delivered: 9,
            lost: 1,
        };
        assert!(p.settled(10));
        assert!(p.settled(8));
        assert!(!p.settled(11));
        let p = Progress {
            messages: 12,
            delivered: 10,
            lost: 0,
        };
        // two stored beyond the 2xx answers (timed out, yet stored): wait for them too
        assert!(!p.settled(10));
    }
}
