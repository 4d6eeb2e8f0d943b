//! Versioned schema migrations, embedded in the binary and applied in order at start (and by
//! `umsd migrate`). A migration is a plain SQL file in `migrations/`; once released it is
//! never edited, only followed by a new one.

use super::StoreError;

/// (version, name, SQL), in order.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../../../migrations/0001_init.sql")),
    (
        2,
        "delivery",
        include_str!("../../../migrations/0002_delivery.sql"),
    ),
    (
        3,
        "dispatch",
        include_str!("../../../migrations/0003_dispatch.sql"),
    ),
    (4, "cmpp", include_str!("../../../migrations/0004_cmpp.sql")),
    (
        5,
        "callbacks",
        include_str!("../../../migrations/0005_callbacks.sql"),
    ),
    (6, "sent", include_str!("../../../migrations/0006_sent.sql")),
    (
        7,
        "queues",
        include_str!("../../../migrations/0007_queues.sql"),
    ),
    (
        8,
        "schedule",
        include_str!("../../../migrations/0008_schedule.sql"),
    ),
    (
        9,
        "receipt_windows",
        include_str!("../../../migrations/0009_receipt_windows.sql"),
    ),
    (
        10,
        "strategies",
        include_str!("../../../migrations/0010_strategies.sql"),
    ),
];

/// Arbitrary but fixed key for the advisory lock that serialises migrating nodes.
const LOCK_KEY: i64 = 0x0075_6d73_646d_6967;

/// Applies every migration not yet recorded in `schema_migrations`; returns how many ran.
pub async fn run(client: &mut tokio_postgres::Client) -> Result<usize, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = apply_missing(client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn apply_missing(client: &mut tokio_postgres::Client) -> Result<usize, StoreError> {
    let rows = client
        .query("SELECT version FROM schema_migrations", &[])
        .await?;
    let done: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    if let Some(newer) = done
        .iter()
        .find(|v| !MIGRATIONS.iter().any(|(m, _, _)| m == *v))
    {
        return Err(StoreError::Data(format!(
            "the database has schema version {newer}, which this umsd does not know; \
             run a newer umsd"
        )));
    }
    let mut applied = 0;
    for (version, name, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied migration");
        applied += 1;
    }
    Ok(applied)
}

/// The highest migration this binary knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.iter().map(|(v, _, _)| *v).max().unwrap_or(0)
}

/// True when the database's schema is at [`latest_version`].
pub async fn is_current(client: &tokio_postgres::Client) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?;
    Ok(row.get::<_, i32>(0) == latest_version())
}
