//! The root of the actor tree. The folders of this crate follow it: a module per actor,
//! the providers and the store below them.
//!
//! ```text
//! actix System
//! └─ Supervisor (this actor; owns start-up and shutdown order, periodic upkeep)
//!    ├─ Ingest         group commit, on its own arbiter                   ingest.rs
//!    ├─ Planner        audiences → deliveries                             planner/
//!    ├─ Receipts       the one writer of delivery status; tells           receipts/
//!    │                 subscribers what it applied
//!    ├─ Scheduler      hands scheduled messages to the planner at their   scheduler/
//!    │                 time (also those due while umsd was down)
//!    ├─ Strategies     finds fallback deadlines due soon                  strategy/
//!    │  └─ MessageStrategy  one per message with deadlines due: sleeps
//!    │                 until one, decides it per target, sends the later
//!    │                 step through the planner's expansion
//!    ├─ AppCallbacks   posts the outbox's events to the apps' callback    app_callbacks.rs
//!    │                 URLs (Planner, Receipts, Scheduler and AppCallbacks share the
//!    │                 engine arbiter)
//!    └─ ChannelSender  one per enabled channel, spread over the channel   channel/
//!       │              arbiters; each builds its provider client (HTTP
//!       │              pool, SMTP pool) on its arbiter                    providers/
//!       └─ (sms_cmpp) CmppAccount, the channel's provider, and           providers/sms_cmpp/
//!                     CmppSession × max_connections, one persistent TCP
//!                     session each, on the sender's arbiter
//! ```
//!
//! Below the actors: `providers/` (the contract a sender calls, one module per provider,
//! and the inbound requests each provider verifies), `store/` (PostgreSQL, split by who
//! uses it), `directory.rs` (apps, channels and grants in memory, settings parsed),
//! `metrics.rs` (metric names) and `domain/` (types, no I/O).
//!
//! Ingest, Planner and Receipts run under actix's `Supervisor`, which restarts an actor
//! that stops itself. Channel senders are reconciled with the directory every second: a
//! channel that appears or is switched on gets a sender, one whose settings changed is
//! stopped gracefully (in-flight calls finish) and started again with the new settings,
//! one that is removed or switched off is stopped, and a sender that died is restarted
//! with backoff.
//!
//! Shutdown order: the front door stops accepting first (outside this tree), then
//! [`Shutdown`] drains the ingest, stops the senders (each finishes its in-flight calls and
//! closes its connections — CMPP sessions say TERMINATE), flushes the status writer, and
//! stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{oneshot, Notify};

use crate::app_callbacks::AppCallbacks;
use crate::channel::lag::DispatchLag;
use crate::channel::sender::{ChannelSender, GetState, SenderState, Stop};
use crate::channel::signals::WorkSignals;
use crate::directory::{ChannelEntry, Directory};
use crate::domain::ids::IdGenerator;
use crate::domain::Priority;
use crate::ingest::{Drain, Ingest, IngestConfig};
use crate::metrics as m;
use crate::planner::backlog::PlanBacklog;
use crate::planner::Planner;
use crate::providers::{self, context::ProviderContext};
use crate::receipts::{FlushAll, Receipts};
use crate::scheduler::{ScheduleChanged, Scheduler};
use crate::store::Store;
use crate::strategy::Strategies;

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub ingest: IngestConfig,
    pub retention_days: u32,
    /// How often the directory (apps, channels, grants) is re-read from the database.
    pub directory_refresh: Duration,
    /// How often day partitions are created ahead and expired ones dropped.
    pub partition_upkeep: Duration,
    /// Arbiters (threads) the channel senders are spread over.
    pub channel_arbiters: usize,
    /// How long a receipt naming no known delivery is tried again before it is counted.
    pub receipt_grace: Duration,
    /// Wakes the scheduler (the front door uses it after edits).
    pub schedule_changed: ScheduleChanged,
}

/// A running channel sender and what it was started from.
struct Running {
    addr: Addr<ChannelSender>,
    entry: ChannelEntry,
}

pub struct Supervisor {
    store: Store,
    directory: Arc<Directory>,
    config: SupervisorConfig,
    ingest: Option<Addr<Ingest>>,
    receipts: Option<Addr<Receipts>>,
    planner: Option<Addr<Planner>>,
    arbiters: Vec<Arbiter>,
    engine: Option<Arbiter>,
    channel_arbiters: Vec<Arbiter>,
    next_arbiter: usize,
    senders: HashMap<String, Running>,
    /// Senders being stopped for a restart: code → entry to start once stopped.
    restarting: HashMap<String, ChannelEntry>,
    /// Restart backoff for senders that died: code → (failures, not before).
    backoff: HashMap<String, (u32, Instant)>,
    signals: Arc<WorkSignals>,
    shutting_down: bool,
}

impl Supervisor {
    pub fn new(store: Store, directory: Arc<Directory>, config: SupervisorConfig) -> Self {
        Self {
            store,
            directory,
            config,
            ingest: None,
            receipts: None,
            planner: None,
            arbiters: Vec::new(),
            engine: None,
            channel_arbiters: Vec::new(),
            next_arbiter: 0,
            senders: HashMap::new(),
            restarting: HashMap::new(),
            backoff: HashMap::new(),
            signals: Arc::new(WorkSignals::default()),
            shutting_down: false,
        }
    }

    fn start_sender(&mut self, entry: ChannelEntry) {
        let Some(receipts) = self.receipts.clone() else {
            return;
        };
        if self.channel_arbiters.is_empty() {
            return;
        }
        let config = match &entry.config {
            Ok(c) => c.clone(),
            Err(e) => {
                tracing::error!(channel = %entry.code, error = %e, "channel settings are invalid; not started");
                self.backoff.insert(
                    entry.code.to_string(),
                    (u32::MAX, Instant::now() + Duration::from_secs(3600)),
                );
                return;
            }
        };
        let arbiter = &self.channel_arbiters[self.next_arbiter % self.channel_arbiters.len()];
        self.next_arbiter += 1;
        let provider_ctx = ProviderContext {
            code: config.code.clone(),
            pool_size: config.pool_size,
            tls_roots: config.tls_roots.clone(),
            store: self.store.clone(),
            receipts: receipts.clone(),
        };
        let store = self.store.clone();
        let signal = self.signals.get(&entry.code);
        let addr = ChannelSender::start_in_arbiter(&arbiter.handle(), move |_| {
            ChannelSender::new(
                config,
                store,
                receipts,
                signal,
                Box::new(move |c| providers::build(&provider_ctx, &c.provider)),
            )
        });
        tracing::info!(channel = %entry.code, r#type = entry.channel_type.as_str(), "channel sender started");
        self.senders
            .insert(entry.code.to_string(), Running { addr, entry });
    }

    /// Brings the running senders in line with the directory.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        let snapshot = self.directory.snapshot();
        let now = Instant::now();
        // Stop what is gone, switched off or changed; forget what died.
        let codes: Vec<String> = self.senders.keys().cloned().collect();
        for code in codes {
            let wanted = snapshot.channels.get(code.as_str()).filter(|c| c.enabled);
            let Some(running) = self.senders.get(&code) else {
                continue;
            };
            if !running.addr.connected() {
                self.senders.remove(&code);
                let (n, _) = self.backoff.get(&code).copied().unwrap_or((0, now));
                let wait = Duration::from_secs(1 << n.min(6));
                tracing::warn!(channel = %code, restart_in_s = wait.as_secs(), "channel sender stopped; restarting");
                self.backoff.insert(code, (n.saturating_add(1), now + wait));
                continue;
            }
            let changed = wanted.is_none_or(|w| !w.same_as(&running.entry));
            if changed {
                if let Some(running) = self.senders.remove(&code) {
                    let (tx, rx) = oneshot::channel();
                    running.addr.do_send(Stop(tx));
                    if let Some(w) = wanted {
                        self.restarting.insert(code.clone(), w.clone());
                    }
                    let code2 = code.clone();
                    ctx.spawn(
                        async move {
                            let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
                        }
                        .into_actor(self)
                        .map(move |_, act, _| {
                            if let Some(entry) = act.restarting.remove(&code2) {
                                if !act.shutting_down {
                                    act.start_sender(entry);
                                }
                            }
                        }),
                    );
                }
            }
        }
        // Start what is wanted and not running.
        for (code, entry) in &snapshot.channels {
            if !entry.enabled
                || self.senders.contains_key(code.as_str())
                || self.restarting.contains_key(code.as_str())
            {
                continue;
            }
            if let Some((n, not_before)) = self.backoff.get(code.as_str()) {
                let same_broken = *n == u32::MAX;
                if now < *not_before && !same_broken {
                    continue;
                }
                if same_broken && now < *not_before {
                    continue;
                }
            }
            self.start_sender(entry.clone());
        }
    }
}

/// Asks for the addresses the front door talks to.
#[derive(Message)]
#[rtype(result = "Option<Addr<Ingest>>")]
pub struct GetIngest;

/// Asks for the status writer (provider callbacks hand it receipts).
#[derive(Message)]
#[rtype(result = "Option<Addr<Receipts>>")]
pub struct GetReceipts;

/// Asks for the running sender of a channel (recall goes through it).
#[derive(Message)]
#[rtype(result = "Option<Addr<ChannelSender>>")]
pub struct GetSender(pub String);

/// Live state of every channel sender.
#[derive(Message)]
#[rtype(result = "HashMap<String, SenderState>")]
pub struct GetChannelStates;

/// Re-reads the directory now and reconciles the senders (after an admin change).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reload;

/// Drains the ingest (every accepted request answered) and stops the tree.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let node_id = self.config.ingest.node_id;
        let planner_wake = Arc::new(Notify::new());
        let backlog = Arc::new(PlanBacklog::default());

        let arbiter = Arbiter::new();
        let store = self.store.clone();
        let ids = Arc::new(IdGenerator::new(node_id));
        let ingest_config = self.config.ingest.clone();
        let wake = planner_wake.clone();
        let seen = backlog.clone();
        let changed = self.config.schedule_changed.clone();
        let dispatch_lag = Arc::new(DispatchLag::default());
        let lag = dispatch_lag.clone();
        let ingest = actix::Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
            Ingest::new(store, ids, ingest_config)
                .with_planner(wake, seen)
                .with_scheduler(changed)
                .with_dispatch_lag(lag)
        });
        // How far each channel's dispatch is behind, for the ingest's admission.
        ctx.run_interval(Duration::from_secs(1), move |act, ctx| {
            let store = act.store.clone();
            let lag = dispatch_lag.clone();
            ctx.spawn(
                async move {
                    match store.dispatch_oldest().await {
                        Ok(oldest) => {
                            let now = chrono::Utc::now();
                            for (code, by_priority) in &oldest {
                                for (p, t) in [Priority::High, Priority::Normal, Priority::Low]
                                    .into_iter()
                                    .zip(by_priority)
                                {
                                    let age = t.map_or(0.0, |t| {
                                        (now - t).num_milliseconds().max(0) as f64 / 1e3
                                    });
                                    metrics::gauge!(m::DISPATCH_OLDEST_SECONDS,
                                        "channel" => code.clone(), "priority" => p.as_str())
                                    .set(age);
                                }
                            }
                            lag.set(oldest);
                        }
                        Err(e) => tracing::debug!(error = %e, "cannot measure dispatch lag"),
                    }
                }
                .into_actor(act),
            );
        });
        self.ingest = Some(ingest);
        self.arbiters.push(arbiter);

        let engine = Arbiter::new();
        let store = self.store.clone();
        let grace = self.config.receipt_grace;
        let receipts = actix::Supervisor::start_in_arbiter(&engine.handle(), move |_| {
            Receipts::new(store, grace)
        });
        self.receipts = Some(receipts);
        let store = self.store.clone();
        let directory = self.directory.clone();
        let signals = self.signals.clone();
        // Delivery ids come from their own generator: message ids and delivery ids live
        // in different tables, and one generator per id space keeps each ordered.
        let delivery_ids = Arc::new(IdGenerator::new(node_id));
        let wake = planner_wake.clone();
        let seen = backlog.clone();
        let (ids, directory2, signals2) =
            (delivery_ids.clone(), directory.clone(), signals.clone());
        self.planner = Some(actix::Supervisor::start_in_arbiter(
            &engine.handle(),
            move |_| Planner::new(store, directory, delivery_ids, wake, signals, seen),
        ));
        // Later strategy steps take their delivery ids from the planner's generator.
        let store = self.store.clone();
        Strategies::start_in_arbiter(&engine.handle(), move |_| {
            Strategies::new(store, directory2, ids, signals2)
        });
        let store = self.store.clone();
        let changed = self.config.schedule_changed.clone();
        Scheduler::start_in_arbiter(&engine.handle(), move |_| {
            Scheduler::new(store, changed, planner_wake, backlog)
        });
        let store = self.store.clone();
        AppCallbacks::start_in_arbiter(&engine.handle(), move |_| AppCallbacks::new(store));
        self.engine = Some(engine);
        for _ in 0..self.config.channel_arbiters.max(1) {
            self.channel_arbiters.push(Arbiter::new());
        }
        self.reconcile(ctx);
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.reconcile(ctx));

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
        for arbiter in self
            .arbiters
            .drain(..)
            .chain(self.engine.take())
            .chain(self.channel_arbiters.drain(..))
        {
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

impl Handler<GetReceipts> for Supervisor {
    type Result = Option<Addr<Receipts>>;

    fn handle(&mut self, _: GetReceipts, _: &mut Self::Context) -> Self::Result {
        self.receipts.clone()
    }
}

impl Handler<GetSender> for Supervisor {
    type Result = Option<Addr<ChannelSender>>;

    fn handle(&mut self, GetSender(code): GetSender, _: &mut Self::Context) -> Self::Result {
        self.senders.get(&code).map(|r| r.addr.clone())
    }
}

impl Handler<GetChannelStates> for Supervisor {
    type Result = ResponseFuture<HashMap<String, SenderState>>;

    fn handle(&mut self, _: GetChannelStates, _: &mut Self::Context) -> Self::Result {
        let senders: Vec<(String, Addr<ChannelSender>)> = self
            .senders
            .iter()
            .map(|(k, r)| (k.clone(), r.addr.clone()))
            .collect();
        Box::pin(async move {
            let mut out = HashMap::new();
            for (code, addr) in senders {
                if let Ok(Ok(state)) =
                    tokio::time::timeout(Duration::from_secs(1), addr.send(GetState)).await
                {
                    out.insert(code, state);
                }
            }
            out
        })
    }
}

impl Handler<Reload> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Reload, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let directory = self.directory.clone();
        Box::pin(
            async move {
                if let Err(e) = directory.reload(&store).await {
                    tracing::warn!(error = %e, "directory reload failed");
                }
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                // A channel whose settings were just fixed may start again at once.
                act.backoff.retain(|_, (n, _)| *n != u32::MAX);
                act.reconcile(ctx)
            }),
        )
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        let ingest = self.ingest.clone();
        let receipts = self.receipts.clone();
        let senders: Vec<Addr<ChannelSender>> = self.senders.drain().map(|(_, r)| r.addr).collect();
        Box::pin(
            async move {
                if let Some(ingest) = ingest {
                    let (tx, rx) = oneshot::channel();
                    if ingest.send(Drain(tx)).await.is_ok() {
                        let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
                    }
                }
                let mut stops = Vec::new();
                for s in senders {
                    let (tx, rx) = oneshot::channel();
                    if s.send(Stop(tx)).await.is_ok() {
                        stops.push(rx);
                    }
                }
                for rx in stops {
                    let _ = tokio::time::timeout(Duration::from_secs(15), rx).await;
                }
                if let Some(receipts) = receipts {
                    let _ = tokio::time::timeout(Duration::from_secs(15), receipts.send(FlushAll))
                        .await;
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
