//! R_copy: how many messages per second PostgreSQL itself absorbs when the same three rows
//! the daemon writes per accepted send (`messages`, `message_keys`, `message_queue`) arrive
//! by binary `COPY` in big transactions — the database-side ceiling the daemon's group
//! commit is compared against.
//!
//! The rows are built before the clock starts (same JSON body as the HTTP sends); then
//! `connections` connections take chunks in turn, each chunk one transaction written by
//! the store's own `umsd_actors::store::layout::copy_messages` — the very `COPY`s the
//! daemon's group commit runs, so the two cannot drift apart. Ids are negative (the daemon's are
//! positive and time-ordered), ascending within a run, and `message_id`s carry a prefix of
//! their own, so nothing collides with the daemon's rows; the copied rows are deleted
//! afterwards, whether the copy succeeded or not.
//!
//! One deliberate difference from the daemon's rows: `message_queue.not_before` is set a
//! day ahead, so that a planner running in the daemon never takes the copied rows as work
//! while they exist. The column is unindexed, so this costs the same to write.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use umsd_actors::domain::{MessagePk, MessageStatus, Priority};
use umsd_actors::store::layout::{copy_messages, CopyStatements, MessageRows};

use crate::db::{self, DbTarget};
use crate::openloop::message_body;

/// Copied ids of one run lie in `[base, base + messages)`; runs are this far apart per
/// millisecond of start time, which also bounds `messages`.
const IDS_PER_MS: i64 = 1 << 20;
/// 2020-01-01T00:00:00Z in Unix milliseconds; keeps the bases far from overflow.
const EPOCH_MS: i64 = 1_577_836_800_000;

#[derive(Debug, Clone, Serialize)]
pub struct CopyParams {
    pub messages: u64,
    pub chunk: u64,
    pub connections: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct CopyResult {
    pub params: CopyParams,
    pub id_range: (i64, i64),
    pub message_id_prefix: String,
    pub messages: u64,
    /// Rows written in all (3 per message).
    pub rows: u64,
    pub chunks: u64,
    pub elapsed_s: f64,
    /// Messages (= sets of 3 rows) per second.
    pub messages_per_second: f64,
    pub rows_per_second: f64,
    /// Slowest single chunk transaction.
    pub max_chunk_ms: f64,
    /// Seconds from the start of the run to the first COPY (set by the scenario).
    pub start_offset_s: f64,
    pub cleanup: Cleanup,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Cleanup {
    pub deleted_messages: u64,
    pub deleted_message_keys: u64,
    pub deleted_message_queue: u64,
    pub elapsed_s: f64,
    /// Rows of the id range still present after the delete (must be 0).
    pub left_over: u64,
}

/// One prebuilt row set.
struct Row {
    id: i64,
    message_id: String,
    request: String,
    hash: [u8; 32],
}

/// A cheap, deterministic stand-in for the body hash (any 32 bytes will do here).
pub fn fake_hash(i: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut x = i ^ 0x9e37_79b9_7f4a_7c15;
    for chunk in out.chunks_mut(8) {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes());
    }
    out
}

/// The first id of a run started at `unix_ms`: negative, and `IDS_PER_MS` apart per ms.
pub fn id_base(unix_ms: i64) -> i64 {
    -((unix_ms - EPOCH_MS).max(1).saturating_mul(IDS_PER_MS))
}

/// Chunk `k` of `n` messages in chunks of `size`: the index range it covers.
pub fn chunk_range(k: u64, size: u64, n: u64) -> std::ops::Range<u64> {
    let start = (k * size).min(n);
    start..(start + size).min(n)
}

/// Writes one chunk in one transaction, through the store's own row layout (the same
/// three `COPY`s the daemon's group commit runs).
async fn copy_chunk(
    client: &mut tokio_postgres::Client,
    stmts: &CopyStatements,
    app_id: i32,
    rows: &[Row],
) -> Result<()> {
    let created_at: DateTime<Utc> = Utc::now();
    let not_before = created_at + chrono::Duration::days(1);
    let channels = ["inbox".to_owned()];
    let messages: Vec<MessageRows<'_>> = rows
        .iter()
        .map(|r| MessageRows {
            id: MessagePk(r.id),
            app_id,
            message_id: Some(&r.message_id),
            priority: Priority::Normal,
            status: MessageStatus::Accepted,
            send_at: None,
            expires_at: None,
            channels: &channels,
            request_json: &r.request,
            strategy: None,
            body_hash: &r.hash,
            not_before,
            node_id: 0,
            // The ids are negative (before umsd's epoch): the rows go in today's partition.
            created_at,
        })
        .collect();
    let tx = client.transaction().await?;
    copy_messages(&tx, stmts, &messages).await?;
    tx.commit().await?;
    Ok(())
}

/// Copies `params.messages` messages, measures, and deletes them again.
pub async fn run(
    target: &DbTarget,
    app_id: i32,
    prefix: &str,
    params: &CopyParams,
) -> Result<CopyResult> {
    anyhow::ensure!(params.chunk > 0, "--copy-chunk must be at least 1");
    anyhow::ensure!(
        params.connections > 0,
        "--copy-connections must be at least 1"
    );
    anyhow::ensure!(
        params.messages > 0 && params.messages < IDS_PER_MS as u64,
        "--copy-messages must be between 1 and {}",
        IDS_PER_MS - 1
    );
    let base = id_base(Utc::now().timestamp_millis());
    let last = base + params.messages as i64 - 1;

    // Build every row before the clock starts.
    let n_chunks = params.messages.div_ceil(params.chunk);
    let mut chunks: Vec<Vec<Row>> = Vec::with_capacity(usize::try_from(n_chunks)?);
    for k in 0..n_chunks {
        let rows = chunk_range(k, params.chunk, params.messages)
            .map(|i| {
                let message_id = format!("{prefix}{i}");
                Row {
                    id: base + i as i64,
                    request: message_body(&message_id, i),
                    message_id,
                    hash: fake_hash(i),
                }
            })
            .collect();
        chunks.push(rows);
    }
    let chunks = Arc::new(chunks);

    let mut clients = Vec::with_capacity(params.connections);
    for _ in 0..params.connections {
        clients.push(db::connect(target).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in clients {
        let chunks = Arc::clone(&chunks);
        let next = Arc::clone(&next);
        tasks.spawn(async move {
            let stmts = CopyStatements::prepare(&client).await?;
            let mut slowest = Duration::ZERO;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(rows) = chunks.get(k) else {
                    return Ok::<_, anyhow::Error>(slowest);
                };
                let t = Instant::now();
                copy_chunk(&mut client, &stmts, app_id, rows)
                    .await
                    .with_context(|| format!("copying chunk {k}"))?;
                slowest = slowest.max(t.elapsed());
            }
        });
    }
    let mut outcome: Result<Duration> = Ok(Duration::ZERO);
    while let Some(joined) = tasks.join_next().await {
        let r = joined.context("copy task failed").and_then(|r| r);
        outcome = match (outcome, r) {
            (Ok(a), Ok(b)) => Ok(a.max(b)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
    }
    let elapsed = started.elapsed();
    drop(chunks);

    // Clean up whatever was written, also after a failure.
    let cleanup = cleanup(target, app_id, base, last).await;
    let slowest = outcome?;
    let cleanup = cleanup?;
    let secs = elapsed.as_secs_f64();
    Ok(CopyResult {
        params: params.clone(),
        id_range: (base, last),
        message_id_prefix: prefix.to_owned(),
        messages: params.messages,
        rows: params.messages * 3,
        chunks: n_chunks,
        elapsed_s: secs,
        messages_per_second: params.messages as f64 / secs,
        rows_per_second: (params.messages * 3) as f64 / secs,
        max_chunk_ms: slowest.as_secs_f64() * 1000.0,
        start_offset_s: 0.0,
        cleanup,
    })
}

/// Deletes the copied id range from the three tables and checks nothing is left.
pub async fn cleanup(target: &DbTarget, app_id: i32, first: i64, last: i64) -> Result<Cleanup> {
    let started = Instant::now();
    let mut client = db::connect(target).await?;
    let tx = client.transaction().await?;
    let deleted_messages = tx
        .execute(
            "DELETE FROM messages WHERE id BETWEEN $1 AND $2",
            &[&first, &last],
        )
        .await
        .context("deleting copied messages")?;
    let deleted_message_keys = tx
        .execute(
            "DELETE FROM message_keys WHERE app_id = $1 AND id BETWEEN $2 AND $3",
            &[&app_id, &first, &last],
        )
        .await
        .context("deleting copied message_keys")?;
    let deleted_message_queue = tx
        .execute(
            "DELETE FROM message_queue WHERE id BETWEEN $1 AND $2",
            &[&first, &last],
        )
        .await
        .context("deleting copied message_queue rows")?;
    tx.commit().await?;
    let left: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM messages WHERE id BETWEEN $1 AND $2)
                  + (SELECT count(*) FROM message_keys WHERE id BETWEEN $1 AND $2)
                  + (SELECT count(*) FROM message_queue WHERE id BETWEEN $1 AND $2)",
            &[&first, &last],
        )
        .await?
        .get(0);
    Ok(Cleanup {
        deleted_messages,
        deleted_message_keys,
        deleted_message_queue,
        elapsed_s: started.elapsed().as_secs_f64(),
        left_over: u64::try_from(left).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_message_once() {
        let n: u64 = 25_001;
        let size = 10_000;
        let k = n.div_ceil(size);
        assert_eq!(k, 3);
        let ranges: Vec<_> = (0..k).map(|i| chunk_range(i, size, n)).collect();
        assert_eq!(ranges, vec![0..10_000, 10_000..20_000, 20_000..25_001]);
        assert_eq!(chunk_range(5, size, n), n..n);
    }

    #[test]
    fn ids_are_negative_and_runs_do_not_overlap() {
        let now = 1_750_000_000_000i64;
        let a = id_base(now);
        let b = id_base(now + 1);
        assert!(a < 0);
        assert!(a + IDS_PER_MS - 1 < 0);
        // the later run starts lower; the earlier run's range ends before it reaches b's
        assert!(b + IDS_PER_MS - 1 < a);
        // far from overflow for centuries
        assert!(id_base(4_102_444_800_000) > i64::MIN / 2);
    }

    #[test]
    fn fake_hash_is_32_distinct_bytes() {
        let a = fake_hash(1);
        let b = fake_hash(2);
        assert_ne!(a, b);
        assert_eq!(a, fake_hash(1));
        assert!(a.iter().any(|x| *x != 0));
    }

    /// Against a throwaway PostgreSQL cluster with umsd's schema and an app `demo`.
    #[tokio::test]
    async fn copies_counts_and_cleans_up() {
        let root = std::env::temp_dir().join(format!("loadtest-copy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let pg = umsd::embedded_pg::EmbeddedPg::start(
            &root,
            &umsd::embedded_pg::EmbeddedOptions {
                fsync: false,
                shared_buffers: "64MB".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let outcome = tokio::spawn({
            let pg = pg.clone();
            async move { copy_against(pg).await }
        })
        .await;
        pg.stop_immediately();
        let _ = std::fs::remove_dir_all(&root);
        outcome.unwrap();
    }

    async fn copy_against(pg: umsd::embedded_pg::EmbeddedPg) {
        umsd::embedded_pg::ensure_database(&pg, "umsd")
            .await
            .unwrap();
        let store = umsd_actors::store::Store::new(
            pg.pg_config("umsd"),
            &umsd_actors::store::PoolSettings {
                max_size: 2,
                wait_timeout: std::time::Duration::from_secs(5),
                connect_timeout: std::time::Duration::from_secs(5),
            },
        )
        .unwrap();
        let mut c = store.client().await.unwrap();
        let c: &mut tokio_postgres::Client = &mut c;
        umsd_actors::store::migrate::run(c).await.unwrap();
        store.ensure_partitions().await.unwrap();
        store
            .bootstrap(
                &[],
                &[umsd_actors::store::directory::AppSpec {
                    key: "demo".into(),
                    name: "demo".into(),
                    secret: "demo-secret".into(),
                    enabled: true,
                    grants: vec![],
                }],
            )
            .await
            .unwrap();
        let target = DbTarget::Embedded {
            socket_dir: pg.data_dir().to_owned(),
        };
        let client = db::connect(&target).await.unwrap();
        let app_id = db::app_id(&client, "demo").await.unwrap();
        let prefix = format!("cp-test-{}-", std::process::id());
        let params = CopyParams {
            messages: 25_001,
            chunk: 10_000,
            connections: 2,
        };
        let r = run(&target, app_id, &prefix, &params).await.unwrap();
        assert_eq!(r.chunks, 3);
        assert_eq!(r.cleanup.deleted_messages, 25_001);
        assert_eq!(r.cleanup.deleted_message_keys, 25_001);
        assert_eq!(r.cleanup.deleted_message_queue, 25_001);
        assert_eq!(r.cleanup.left_over, 0);
        assert!(r.messages_per_second > 0.0);
        // nothing left under the prefix either
        let c = db::count_check(&client, "t", app_id, &prefix, 0, 0)
            .await
            .unwrap();
        assert!(c.ok, "{c:?}");
        // a mismatch is reported as such
        let c = db::count_check(&client, "t", app_id, &prefix, 3, 0)
            .await
            .unwrap();
        assert!(!c.ok);
    }
}
