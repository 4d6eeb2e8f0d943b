//! `MessageStrategy`: the actor of one message whose strategy has deadlines due soon. It
//! holds the message's steps and its earliest deadline, sleeps until then, decides what
//! is due (`run.rs`), and goes on to the next deadline — or stops when the next one is
//! far off (the root starts it again in time) or there is none left. What it holds is
//! per message, never per target: the targets and their deadlines stay in PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::run::{look, Loaded, LookError, Work};
use crate::domain::strategy::Step;
use crate::domain::MessagePk;
use crate::store::plan::PlannedMessage;
use crate::store::StoreError;

/// Looks again after a database error this much later.
const RETRY: Duration = Duration::from_secs(1);
/// A decision that lost a race with a receipt is retried at once, at most this often in
/// a row before waiting [`RETRY`].
const RACE_TRIES: usize = 5;

/// A deadline of the message at `0` (sent by the root when it finds one).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Due(pub DateTime<Utc>);

/// The actor of message `0` stopped.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Idle(pub MessagePk);

pub struct MessageStrategy {
    work: Arc<Work>,
    id: MessagePk,
    app_id: i32,
    loaded: Option<Arc<Loaded>>,
    /// The earliest deadline it knows of.
    next: DateTime<Utc>,
    armed: Option<SpawnHandle>,
    busy: bool,
    /// How far ahead it keeps running; a later next deadline stops it.
    horizon: chrono::Duration,
    root: Recipient<Idle>,
}

impl MessageStrategy {
    pub fn new(
        work: Arc<Work>,
        id: MessagePk,
        app_id: i32,
        next: DateTime<Utc>,
        horizon: chrono::Duration,
        root: Recipient<Idle>,
    ) -> Self {
        Self {
            work,
            id,
            app_id,
            loaded: None,
            next,
            armed: None,
            busy: false,
            horizon,
            root,
        }
    }

    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.armed.take() {
            ctx.cancel_future(h);
        }
        let wait = (self.next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        self.armed = Some(ctx.run_later(wait, |act, ctx| {
            act.armed = None;
            act.look(ctx);
        }));
    }

    fn look(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let work = self.work.clone();
        let (id, app_id) = (self.id, self.app_id);
        let loaded = self.loaded.clone();
        ctx.spawn(
            async move {
                let loaded = match loaded {
                    Some(l) => l,
                    None => match load(&work, app_id, id).await? {
                        Some(l) => Arc::new(l),
                        None => return Ok((None, None)),
                    },
                };
                let mut tries = 0;
                loop {
                    match look(&work, &loaded, Utc::now()).await {
                        Ok(looked) if looked.more => tries = 0,
                        Ok(_) => break,
                        Err(LookError::Raced) if tries < RACE_TRIES => tries += 1,
                        Err(LookError::Raced) => {
                            return Ok((
                                Some(loaded),
                                Some(
                                    Utc::now()
                                        + chrono::Duration::from_std(RETRY).unwrap_or_default(),
                                ),
                            ))
                        }
                        Err(LookError::Store(e)) => return Err(e),
                    }
                }
                let next = work.store.next_message_deadline(id).await?;
                Ok::<_, StoreError>((Some(loaded), next))
            }
            .into_actor(self)
            .map(|result, act, ctx| {
                act.busy = false;
                match result {
                    Ok((loaded, next)) => {
                        if loaded.is_some() {
                            act.loaded = loaded;
                        }
                        match next {
                            Some(next) if next - Utc::now() <= act.horizon => {
                                act.next = next;
                                act.arm(ctx);
                            }
                            _ => ctx.stop(),
                        }
                    }
                    Err(e) => {
                        tracing::warn!(message = %act.id, error = %crate::error_chain(&e),
                            "cannot decide strategy deadlines; retrying");
                        act.next =
                            Utc::now() + chrono::Duration::from_std(RETRY).unwrap_or_default();
                        act.arm(ctx);
                    }
                }
            }),
        );
    }
}

/// The message's steps; `None` (and its deadlines dropped) when it is gone or has none.
async fn load(work: &Work, app_id: i32, id: MessagePk) -> Result<Option<Loaded>, StoreError> {
    let found = work.store.message_steps(app_id, id).await?;
    let parsed = found.as_ref().and_then(|m| {
        let text = m.steps.as_deref()?;
        match serde_json::from_str::<Vec<Step>>(text) {
            Ok(steps) => Some(steps),
            Err(e) => {
                tracing::error!(message = %id, error = %e, "stored strategy does not parse");
                None
            }
        }
    });
    match (found, parsed) {
        (Some(m), Some(steps)) => Ok(Some(Loaded {
            message: PlannedMessage {
                id,
                app_id,
                priority: m.priority,
            },
            steps,
        })),
        _ => {
            let n = work.store.drop_timers(id).await?;
            tracing::warn!(message = %id, timers = n,
                "strategy deadlines of a message without a strategy dropped");
            Ok(None)
        }
    }
}

impl Actor for MessageStrategy {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.arm(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.root.do_send(Idle(self.id));
    }
}

impl Handler<Due> for MessageStrategy {
    type Result = ();

    fn handle(&mut self, Due(at): Due, ctx: &mut Self::Context) {
        if at < self.next || self.armed.is_none() && !self.busy {
            self.next = at.min(self.next);
            self.arm(ctx);
        }
    }
}
