//! `Strategies`: runs fallback strategies. It finds the messages whose deadlines fall due
//! within [`HORIZON`] (once a second, in PostgreSQL) and gives each a `MessageStrategy`
//! actor (`message.rs`) that sleeps until the deadline and decides it (`run.rs`, by the
//! pure rules of `judge.rs` and `domain/strategy/decide.rs`).
//!
//! Deadlines are rows of `strategy_timers`, one per batch of targets (a planning page, or
//! the targets a step went out for together) and later step — never one per target, and
//! nothing per target in memory. They survive a crash: after a restart every deadline
//! still pending is found on the first look and decided, late by the time umsd was down.
//! Each is decided exactly once: the decision, the later step's deliveries and the
//! removal of the deadline are one transaction, under the message's lock.

mod judge;
mod message;
mod run;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;

use crate::channel::signals::WorkSignals;
use crate::directory::Directory;
use crate::domain::ids::IdGenerator;
use crate::domain::MessagePk;
use crate::metrics as m;
use crate::store::Store;
use message::{Due, Idle, MessageStrategy};
use run::Work;

/// How often the root looks for deadlines due soon.
const POLL: Duration = Duration::from_secs(1);
/// How far ahead a message's actor is started (and kept running).
const HORIZON: Duration = Duration::from_secs(5);
/// Most message actors at once; more messages due wait for a later look.
const MAX_ACTIVE: usize = 2000;
/// How often the pending deadlines are counted for the gauge.
const COUNT_EVERY: Duration = Duration::from_secs(5);

pub struct Strategies {
    work: Arc<Work>,
    active: HashMap<MessagePk, Addr<MessageStrategy>>,
    polling: bool,
}

impl Strategies {
    pub fn new(
        store: Store,
        directory: Arc<Directory>,
        ids: Arc<IdGenerator>,
        signals: Arc<WorkSignals>,
    ) -> Self {
        Self {
            work: Arc::new(Work {
                store,
                directory,
                ids,
                signals,
            }),
            active: HashMap::new(),
            polling: false,
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.polling {
            return;
        }
        self.polling = true;
        let store = self.work.store.clone();
        let horizon = chrono::Duration::from_std(HORIZON).unwrap_or_default();
        ctx.spawn(
            async move {
                store
                    .messages_due(Utc::now() + horizon, MAX_ACTIVE as i64)
                    .await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.polling = false;
                let due = match result {
                    Ok(due) => due,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot look for strategy deadlines");
                        return;
                    }
                };
                for d in due {
                    if let Some(addr) = act.active.get(&d.message_pk) {
                        addr.do_send(Due(d.due_at));
                    } else if act.active.len() < MAX_ACTIVE {
                        let addr = MessageStrategy::new(
                            act.work.clone(),
                            d.message_pk,
                            d.app_id,
                            d.due_at,
                            horizon,
                            ctx.address().recipient(),
                        )
                        .start();
                        act.active.insert(d.message_pk, addr);
                    }
                }
            }),
        );
    }
}

impl Actor for Strategies {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.poll(ctx);
        ctx.run_interval(POLL, |act, ctx| act.poll(ctx));
        ctx.run_interval(COUNT_EVERY, |act, ctx| {
            let store = act.work.store.clone();
            ctx.spawn(
                async move {
                    if let Ok(n) = store.timers_pending().await {
                        metrics::gauge!(m::STRATEGY_TIMERS_PENDING).set(n as f64);
                    }
                }
                .into_actor(act),
            );
        });
    }
}

impl Handler<Idle> for Strategies {
    type Result = ();

    fn handle(&mut self, Idle(id): Idle, _: &mut Self::Context) {
        self.active.remove(&id);
    }
}
