//! What the delivery scenarios (`fanout`, `backlog`) share: the daemon config they write
//! (the load-test app granted channels that point at in-process simulators), creating
//! users with bindings, submitting messages as fast as the API takes them, and reading
//! the outcome back from the database (per-channel counts, delivery times, accept→submit
//! latency).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::TargetArgs;

/// One `settings` value of a channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    Str(String),
    Int(i64),
}

/// One `[[channels]]` entry of the written config.
#[derive(Debug, Clone)]
pub struct ChannelDef {
    pub code: String,
    pub channel_type: &'static str,
    /// `None`: umsd's default.
    pub pool_size: Option<usize>,
    /// `None`: no rate limit.
    pub rate_per_second: Option<f64>,
    pub settings: Vec<(&'static str, Setting)>,
}

/// A TOML basic string (JSON string escaping is valid TOML).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The config of a started umsd: the load-test app granted every channel, the channels
/// (with a rate limit only where one is given), nothing else.
pub fn config_text(app_key: &str, app_secret: &str, channels: &[ChannelDef]) -> String {
    let mut s = String::from("# Written by umsd-loadtest.\nadmin_token = \"demo-admin\"\n\n");
    let grants: Vec<String> = channels.iter().map(|c| toml_str(&c.code)).collect();
    let _ = writeln!(
        s,
        "[[apps]]\nkey = {}\nname = \"Load test\"\nsecret = {}\ngrants = [{}]\n",
        toml_str(app_key),
        toml_str(app_secret),
        grants.join(", ")
    );
    for c in channels {
        let _ = writeln!(
            s,
            "[[channels]]\ncode = {}\ntype = {}",
            toml_str(&c.code),
            toml_str(c.channel_type)
        );
        if let Some(p) = c.pool_size {
            let _ = writeln!(s, "pool_size = {p}");
        }
        if let Some(r) = c.rate_per_second {
            let _ = writeln!(s, "rate_per_second = {r:?}");
        }
        if !c.settings.is_empty() {
            let items: Vec<String> = c
                .settings
                .iter()
                .map(|(k, v)| match v {
                    Setting::Str(t) => format!("{k} = {}", toml_str(t)),
                    Setting::Int(n) => format!("{k} = {n}"),
                })
                .collect();
            let _ = writeln!(s, "settings = {{ {} }}", items.join(", "));
        }
        s.push('\n');
    }
    s
}

/// The delivery scenarios write their own config with channels pointing at simulators
/// they start, so they need a daemon they start themselves.
pub fn require_started_daemon(t: &TargetArgs, scenario: &str) -> Result<()> {
    if t.target.is_some() || t.umsd_config.is_some() {
        bail!(
            "{scenario} starts its own umsd (its channels point at simulators the harness \
             starts): --target and --umsd-config are not supported"
        );
    }
    if t.database_url.is_some() || t.umsd_pid.is_some() {
        bail!("{scenario}: --database-url and --umsd-pid only go with --target");
    }
    Ok(())
}

/// The daemon's HTTP API as the load-test app.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base_url: String,
    pub app_key: String,
    pub app_secret: String,
}

/// Longest wait for one API answer.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of a send answered 429/503 or lost in transport (the same `message_id`, so a
/// retry never sends a message twice).
const SEND_RETRIES: u32 = 50;

impl Api {
    pub fn new(base_url: &str, app_key: &str, app_secret: &str) -> Result<Api> {
        Ok(Api {
            client: crate::http_builder()
                .timeout(API_TIMEOUT)
                .pool_max_idle_per_host(64)
                .build()?,
            base_url: base_url.to_owned(),
            app_key: app_key.to_owned(),
            app_secret: app_secret.to_owned(),
        })
    }

    /// Creates (or replaces) users through `POST /v1/users/batch`, 1000 per request;
    /// every row must be stored.
    pub async fn put_users(&self, rows: Vec<Value>) -> Result<usize> {
        let mut stored = 0usize;
        for chunk in rows.chunks(1000) {
            let resp = self
                .client
                .post(format!("{}/v1/users/batch", self.base_url))
                .basic_auth(&self.app_key, Some(&self.app_secret))
                .json(&json!({ "users": chunk }))
                .send()
                .await
                .context("POST /v1/users/batch")?;
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("POST /v1/users/batch answered {status}: {body}");
            }
            let failed = body["failed"].as_u64().unwrap_or(0);
            if failed > 0 {
                let first = body["results"]
                    .as_array()
                    .and_then(|r| r.iter().find(|x| x["status"] == "error"))
                    .cloned()
                    .unwrap_or(Value::Null);
                bail!("POST /v1/users/batch: {failed} rows refused, e.g. {first}");
            }
            stored += usize::try_from(body["stored"].as_u64().unwrap_or(0))?;
        }
        Ok(stored)
    }

    /// Sends one message body, retrying on 429/503 and transport errors.
    async fn send_one(&self, body: String) -> Result<u32> {
        let mut retries = 0u32;
        loop {
            let result = self
                .client
                .post(format!("{}/v1/messages", self.base_url))
                .basic_auth(&self.app_key, Some(&self.app_secret))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let why = match result {
                Ok(resp) if resp.status().is_success() => return Ok(retries),
                Ok(resp) if matches!(resp.status().as_u16(), 429 | 503) => {
                    format!("answered {}", resp.status())
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    bail!(
                        "POST /v1/messages answered {status}: {}",
                        text.chars().take(300).collect::<String>()
                    );
                }
                Err(e) => format!("{e}"),
            };
            retries += 1;
            if retries > SEND_RETRIES {
                bail!("POST /v1/messages: gave up after {SEND_RETRIES} retries ({why})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// How the messages were submitted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SendSummary {
    pub messages: u64,
    pub concurrency: usize,
    /// Retried requests (429/503 or transport errors).
    pub retries: u64,
    /// From the first request to the last answer.
    pub elapsed_s: f64,
    pub messages_per_second: f64,
}

/// Builds message `i`'s body.
pub type MakeBody = Arc<dyn Fn(usize) -> String + Send + Sync>;

/// Submits `count` messages with `concurrency` requests in flight; `accepted` counts the
/// answered ones as they come (for progress sampling).
pub async fn send_messages(
    api: Api,
    count: usize,
    concurrency: usize,
    make: MakeBody,
    accepted: Arc<AtomicU64>,
) -> Result<SendSummary> {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (api, make, next, accepted) =
            (api.clone(), make.clone(), next.clone(), accepted.clone());
        set.spawn(async move {
            let mut retries = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<u64, anyhow::Error>(retries);
                }
                retries += u64::from(api.send_one(make(i)).await?);
                accepted.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut retries = 0;
    while let Some(r) = set.join_next().await {
        retries += r.context("send worker")??;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    Ok(SendSummary {
        messages: count as u64,
        concurrency: concurrency.max(1),
        retries,
        elapsed_s: elapsed,
        messages_per_second: if elapsed > 0.0 {
            count as f64 / elapsed
        } else {
            0.0
        },
    })
}

/// A send request to `users` on `channels` with `content` (keyed by channel code).
pub fn message_body(
    message_id: &str,
    users: &[String],
    channels: &[&str],
    content: &Value,
) -> String {
    json!({
        "message_id": message_id,
        "audience": { "user_ids": users },
        "channels": channels,
        "content": content,
    })
    .to_string()
}

/// Name of a `deliveries.state` value.
pub fn state_name(state: i16) -> &'static str {
    match state {
        0 => "planned",
        1 => "filtered",
        2 => "queued",
        3 => "submitted",
        4 => "failed",
        5 => "delivered",
        6 => "undelivered",
        7 => "clicked",
        8 => "recalled",
        9 => "read",
        _ => "unknown",
    }
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
                        least(CASE WHEN d.sent_state IN (3, 5) THEN d.sent_at END,
                              min(e.at) FILTER (WHERE e.state IN (3, 5))) AS submitted_at,
                        least(CASE WHEN d.sent_state = 5 THEN d.sent_at END,
                              min(e.at) FILTER (WHERE e.state = 5)) AS delivered_at
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
            &[&app_id, &prefix],
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

/// Final states (nothing more will happen to the delivery): failed, delivered,
/// undelivered, clicked, recalled, read — and filtered.
pub fn is_final(state: &str) -> bool {
    matches!(
        state,
        "filtered" | "failed" | "delivered" | "undelivered" | "clicked" | "recalled" | "read"
    )
}

/// Deliveries waiting to be sent: `deliveries` in state `queued` (a sequential scan; the
/// senders' work table, `dispatch_queue`, has one row per message and channel, not per
/// delivery).
pub async fn queued_deliveries(db: &Client) -> Result<i64> {
    Ok(db
        .query_one("SELECT count(*) FROM deliveries WHERE state = 2", &[])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_config_loads_in_umsd() {
        let channels = vec![
            ChannelDef {
                code: "hook".into(),
                channel_type: "webhook",
                pool_size: Some(32),
                rate_per_second: None,
                settings: vec![(
                    "secret",
                    Setting::Str(umsd_sim::Kind::Webhook.default_app_secret().into()),
                )],
            },
            ChannelDef {
                code: "wecom".into(),
                channel_type: "wecom",
                pool_size: None,
                rate_per_second: Some(500.0),
                settings: vec![
                    ("base_url", Setting::Str("http://127.0.0.1:9".into())),
                    ("corpid", Setting::Str("sim-key".into())),
                    ("corpsecret", Setting::Str("sim \"secret\"".into())),
                    ("agentid", Setting::Int(1)),
                ],
            },
            ChannelDef {
                code: "inbox".into(),
                channel_type: "inbox",
                pool_size: Some(8),
                rate_per_second: None,
                settings: vec![],
            },
        ];
        let text = config_text("demo", "demo-secret", &channels);
        let path = std::env::temp_dir().join(format!("umsd-lt-config-{}.toml", std::process::id()));
        std::fs::write(&path, &text).unwrap();
        let cfg = umsd::config::Config::load(Some(&path), &Default::default());
        std::fs::remove_file(&path).unwrap();
        let cfg = cfg.unwrap_or_else(|e| panic!("{e}\n{text}"));
        let specs = cfg.channel_specs();
        assert_eq!(specs.len(), 3, "{text}");
        assert_eq!(specs[0].pool_size, Some(32));
        assert_eq!(specs[0].rate_per_second, None);
        assert_eq!(specs[1].rate_per_second, Some(500.0));
        assert_eq!(specs[1].settings["corpsecret"], "sim \"secret\"");
        assert_eq!(specs[1].settings["agentid"], 1);
        assert_eq!(specs[2].pool_size, Some(8));
        let apps = cfg.app_specs();
        assert_eq!(apps[0].grants, vec!["hook", "wecom", "inbox"]);
    }

    #[test]
    fn rates_and_states() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let t1 = t0 + chrono::Duration::milliseconds(2500);
        assert_eq!(rate(5000, t0, t1), Some(2000.0));
        assert_eq!(rate(5000, t1, t0), None);
        assert_eq!(rate(0, t0, t1), None);
        assert_eq!(state_name(5), "delivered");
        assert_eq!(state_name(3), "submitted");
        assert!(is_final("delivered") && is_final("failed") && !is_final("queued"));
        let body: Value = serde_json::from_str(&message_body(
            "fo-1",
            &["u0000".into(), "u0001".into()],
            &["hook"],
            &json!({"hook": {"body": {"a": 1}}}),
        ))
        .unwrap();
        assert_eq!(body["audience"]["user_ids"][1], "u0001");
        assert_eq!(body["content"]["hook"]["body"]["a"], 1);
    }
}
