//! The PostgreSQL store: the system of record. Everything a restart must not lose is
//! written here before anyone is told "accepted".
//!
//! This module owns the connection pool and SQL; it never decides policy (what to accept,
//! when to retry) — callers do.

pub mod app_callbacks;
pub mod directory;
pub mod dispatch;
pub mod fallback;
pub mod history;
pub mod inbox;
pub mod ingest;
pub mod layout;
pub mod listing;

pub mod migrate;
pub mod mo;
pub mod partitions;
pub mod plan;
pub mod recall;
pub mod schedule;
pub mod status;
pub mod strategies;
pub mod users;
pub mod windows;

use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, Timeouts,
};
use tokio_postgres::NoTls;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Pool(#[from] PoolError),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("data error: {0}")]
    Data(String),
}

impl StoreError {
    /// True when the database could not be reached at all, as opposed to a statement that
    /// failed on a working connection.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
            StoreError::Db(e) => e.is_closed() || e.code().is_none(),
            StoreError::Data(_) => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_size: usize,
    pub wait_timeout: Duration,
    pub connect_timeout: Duration,
}

/// A cheap-to-clone handle on the connection pool.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("status", &self.pool.status())
            .finish()
    }
}

impl Store {
    /// Builds the pool; connections are opened lazily, so this never blocks on the server.
    pub fn new(
        mut pg: tokio_postgres::Config,
        settings: &PoolSettings,
    ) -> Result<Self, StoreError> {
        pg.connect_timeout(settings.connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("umsd");
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.max_size)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(settings.wait_timeout),
                create: Some(settings.connect_timeout),
                recycle: Some(settings.connect_timeout),
            })
            .build()
            .map_err(|e| StoreError::Data(format!("cannot build the pool: {e}")))?;
        Ok(Self { pool })
    }

    pub async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}

/// Makes a transaction that changes rows it names by key (a batch of ids joined from
/// `unnest`) find them through their indexes.
///
/// Those statements are prepared once per connection and, after a few runs, executed
/// with a generic plan chosen from the statistics of that moment. Chosen while a day
/// partition was young (small, or not analysed yet), it is a hash join over a sequential
/// scan of the whole partition, kept for the connection's life: each write of a few rows
/// then reads every row of the day, and the cost grows through the day. Looking rows up
/// by key is right at every size for these batches (at most a few thousand keys).
pub(crate) async fn by_key(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
    tx.batch_execute(
        "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; \
         SET LOCAL enable_mergejoin = off",
    )
    .await?;
    Ok(())
}

impl Store {
    /// `SELECT 1` with a deadline: used by `/readyz`.
    pub async fn ping(&self, deadline: Duration) -> bool {
        let probe = async {
            let c = self.client().await?;
            c.simple_query("SELECT 1").await?;
            Ok::<_, StoreError>(())
        };
        matches!(tokio::time::timeout(deadline, probe).await, Ok(Ok(())))
    }

    /// Closes the pool: idle connections are dropped, new checkouts fail. Called at
    /// shutdown before the embedded cluster is stopped.
    pub fn close(&self) {
        self.pool.close();
    }

    pub fn pool_status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }
}
