//! The root of the actor tree.
//!
//! ```text
//! actix System
//! └─ Supervisor (this actor; owns start-up and shutdown order, periodic upkeep)
//!    └─ Ingest   group commit, on its own arbiter, restarted by actix's Supervisor if it
//!                stops itself
//! ```
//!
//! Later stages hang the Planner, the channel senders, strategies, receipts, callbacks and
//! the scheduler under this actor. Shutdown order: the front door stops accepting first
//! (outside this tree), then [`Shutdown`] drains the ingest, then the actors stop.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::directory::Directory;
use crate::domain::ids::IdGenerator;
use crate::ingest::{Drain, Ingest, IngestConfig};
use crate::metrics as m;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub ingest: IngestConfig,
    pub retention_days: u32,
    /// How often the directory (apps, channels, grants) is re-read from the database.
    pub directory_refresh: Duration,
    /// How often day partitions are created ahead and expired ones dropped.
    pub partition_upkeep: Duration,
}

pub struct Supervisor {
    store: Store,
    directory: Arc<Directory>,
    config: SupervisorConfig,
    ingest: Option<Addr<Ingest>>,
    ingest_arbiter: Option<Arbiter>,
}

impl Supervisor {
    pub fn new(store: Store, directory: Arc<Directory>, config: SupervisorConfig) -> Self {
        Self {
            store,
            directory,
            config,
            ingest: None,
            ingest_arbiter: None,
        }
    }
}

/// Asks for the addresses the front door talks to.
#[derive(Message)]
#[rtype(result = "Option<Addr<Ingest>>")]
pub struct GetIngest;

/// Drains the ingest (every accepted request answered) and stops the tree.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let arbiter = Arbiter::new();
        let store = self.store.clone();
        let ids = Arc::new(IdGenerator::new(self.config.ingest.node_id));
        let ingest_config = self.config.ingest.clone();
        let ingest = actix::Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
            Ingest::new(store, ids, ingest_config)
        });
        self.ingest = Some(ingest);
        self.ingest_arbiter = Some(arbiter);

        ctx.run_interval(self.config.directory_refresh, |act, ctx| {
            let store = act.store.clone();
            let directory = act.directory.clone();
            ctx.spawn(
                async move {
                    if let Err(e) = directory.reload(&store).await {
                        tracing::warn!(error = %e, "directory refresh failed");
                    }
                    let status = store.pool_status();
                    metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "idle")
                        .set(status.available as f64);
                    metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "in_use")
                        .set(status.size.saturating_sub(status.available) as f64);
                    metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "waiting")
                        .set(status.waiting as f64);
                }
                .into_actor(act),
            );
        });
        ctx.run_interval(self.config.partition_upkeep, |act, ctx| {
            let store = act.store.clone();
            let keep = act.config.retention_days;
            ctx.spawn(
                async move {
                    if let Err(e) = store.ensure_partitions().await {
                        tracing::error!(error = %e, "cannot create partitions ahead");
                    }
                    match store.drop_expired_partitions(keep).await {
                        Ok(dropped) if !dropped.is_empty() => {
                            tracing::info!(?dropped, "dropped expired partitions")
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "cannot drop expired partitions"),
                    }
                }
                .into_actor(act),
            );
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(arbiter) = self.ingest_arbiter.take() {
            arbiter.stop();
        }
    }
}

impl Handler<GetIngest> for Supervisor {
    type Result = Option<Addr<Ingest>>;

    fn handle(&mut self, _: GetIngest, _: &mut Self::Context) -> Self::Result {
        self.ingest.clone()
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        let ingest = self.ingest.clone();
        Box::pin(
            async move {
                if let Some(ingest) = ingest {
                    let (tx, rx) = oneshot::channel();
                    if ingest.send(Drain(tx)).await.is_ok() {
                        let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
                    }
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
