//! The outcome of a delivery scenario's messages, read back from the database: deliveries
//! per channel and state, delivery times, accept → submit latency, and what is still
//! queued.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;
use umsd_actors::domain::DeliveryState;

/// Name of a `deliveries.state` value.
pub fn state_name(state: i16) -> &'static str {
    DeliveryState::from_i16(state).map_or("unknown", DeliveryState::as_str)
}

/// Deliveries per second between the first accept and the last delivery.
pub fn rate(count: u64, first_accept: DateTime<Utc>, last: DateTime<Utc>) -> Option<f64> {
    let secs = (last - first_accept).num_microseconds()? as f64 / 1e6;
    (secs > 0.0 && count > 0).then(|| count as f64 / secs)
}

/// The accept times of the run's messages.
#[derive(Debug, Clone, Serialize)]
pub struct Accepts {
    pub messages: i64,
    pub first: Option<DateTime<Utc>>,
    pub last: Option<DateTime<Utc>>,
}

pub async fn accepts(db: &Client, app_id: i32, prefix: &str) -> Result<Accepts> {
    let row = db
        .query_one(
            "SELECT count(*), min(created_at), max(created_at) FROM messages
              WHERE app_id = $1 AND starts_with(message_id, $2)",
            &[&app_id, &prefix],
        )
        .await
        .context("reading accept times")?;
    Ok(Accepts {
        messages: row.get(0),
        first: row.get(1),
        last: row.get(2),
    })
}

/// Accept → submit latency percentiles: each delivery's first `submitted` or `delivered`
/// event (the provider's answer) minus its message's acceptance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubmitLatency {
    pub count: i64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// One channel's (or, with `channel: None`, every channel's) deliveries from the events.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelEvents {
    pub channel: Option<String>,
    pub submitted: i64,
    pub delivered: i64,
    pub first_delivered: Option<DateTime<Utc>>,
    pub last_delivered: Option<DateTime<Utc>>,
    pub accept_to_submit: SubmitLatency,
}

/// Per channel and in total: submitted and delivered events, the last delivery time, and
/// the accept → submit latency (each delivery's `submitted` event minus its message's
/// `created_at`).
pub async fn channel_events(db: &Client, app_id: i32, prefix: &str) -> Result<Vec<ChannelEvents>> {
    let rows = db
        .query(
            // A delivery is submitted at its `submitted` event, or — where acceptance is the
            // delivery (webhook, inbox, WeCom, Feishu, email) — at its `delivered` event.
            // The first outcome is in the delivery's `sent_*` columns, later ones (a
            // receipt's `delivered`) are event rows; `least` skips NULLs.
            "WITH ev AS (
                 SELECT d.channel_code, m.created_at,
                        least(CASE WHEN d.sent_state IN ($3, $4) THEN d.sent_at END,
                              min(e.at) FILTER (WHERE e.state IN ($3, $4))) AS submitted_at,
                        least(CASE WHEN d.sent_state = $4 THEN d.sent_at END,
                              min(e.at) FILTER (WHERE e.state = $4)) AS delivered_at
                   FROM messages m
                   JOIN deliveries d ON d.message_pk = m.id
                   LEFT JOIN delivery_events e
                          ON e.message_pk = d.message_pk AND e.delivery_id = d.id
                  WHERE m.app_id = $1 AND starts_with(m.message_id, $2)
                  GROUP BY d.channel_code, d.id, d.sent_state, d.sent_at, m.created_at)
             SELECT channel_code,
                    count(submitted_at),
                    count(delivered_at),
                    min(delivered_at),
                    max(delivered_at),
                    percentile_cont(ARRAY[0.5, 0.9, 0.99]::float8[]) WITHIN GROUP
                        (ORDER BY extract(epoch FROM submitted_at - created_at)::float8)
                        FILTER (WHERE submitted_at IS NOT NULL),
                    max(extract(epoch FROM submitted_at - created_at)::float8),
                    GROUPING(channel_code)
               FROM ev
              GROUP BY GROUPING SETS ((channel_code), ())
              ORDER BY 8 DESC, 1",
            &[
                &app_id,
                &prefix,
                &DeliveryState::Submitted.as_i16(),
                &DeliveryState::Delivered.as_i16(),
            ],
        )
        .await
        .context("reading delivery events")?;
    let mut out = Vec::new();
    for r in rows {
        let grouping: i32 = r.get(7);
        let pcts: Option<Vec<Option<f64>>> = r.get(5);
        let pct = |i: usize| {
            pcts.as_ref()
                .and_then(|p| p.get(i).copied().flatten())
                .map(|s| s * 1000.0)
        };
        let submitted: i64 = r.get(1);
        out.push(ChannelEvents {
            channel: if grouping == 0 { r.get(0) } else { None },
            submitted,
            delivered: r.get(2),
            first_delivered: r.get(3),
            last_delivered: r.get(4),
            accept_to_submit: SubmitLatency {
                count: submitted,
                p50_ms: pct(0),
                p90_ms: pct(1),
                p99_ms: pct(2),
                max_ms: r.get::<_, Option<f64>>(6).map(|s| s * 1000.0),
            },
        });
    }
    Ok(out)
}

/// Deliveries of the run's messages per channel and state name.
pub async fn state_counts(
    db: &Client,
    app_id: i32,
    prefix: &str,
) -> Result<BTreeMap<String, BTreeMap<String, i64>>> {
    let rows = db
        .query(
            "SELECT d.channel_code, d.state, count(*)
               FROM messages m JOIN deliveries d ON d.message_pk = m.id
              WHERE m.app_id = $1 AND starts_with(m.message_id, $2)
              GROUP BY 1, 2",
            &[&app_id, &prefix],
        )
        .await
        .context("counting deliveries by state")?;
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for r in rows {
        let channel: String = r.get(0);
        let state: i16 = r.get(1);
        let n: i64 = r.get(2);
        *out.entry(channel)
            .or_default()
            .entry(state_name(state).to_owned())
            .or_insert(0) += n;
    }
    Ok(out)
}

/// Deliveries in a final state, over every channel of a [`state_counts`] answer.
pub fn final_count(states: &BTreeMap<String, BTreeMap<String, i64>>) -> u64 {
    let done: i64 = states
        .values()
        .flat_map(|m| m.iter())
        .filter(|(s, _)| is_final(s))
        .map(|(_, n)| *n)
        .sum();
    u64::try_from(done).unwrap_or(0)
}

/// Final states (nothing more is to be sent or reported for the delivery): every state
/// but planned, queued and submitted (`DeliveryState::is_pending`).
pub fn is_final(state: &str) -> bool {
    DeliveryState::ALL
        .iter()
        .any(|s| s.as_str() == state && !s.is_pending())
}

/// Deliveries waiting to be sent: `deliveries` in state `queued` (a sequential scan; the
/// senders' work table, `dispatch_queue`, has one row per message and channel, not per
/// delivery).
pub async fn queued_deliveries(db: &Client) -> Result<i64> {
    Ok(db
        .query_one(
            "SELECT count(*) FROM deliveries WHERE state = $1",
            &[&DeliveryState::Queued.as_i16()],
        )
        .await
        .context("counting queued deliveries")?
        .get(0))
}

/// Rows in `dispatch_queue`: (channel, message) pairs with work left.
pub async fn dispatch_rows(db: &Client) -> Result<i64> {
    Ok(db
        .query_one("SELECT count(*) FROM dispatch_queue", &[])
        .await
        .context("counting dispatch_queue")?
        .get(0))
}
