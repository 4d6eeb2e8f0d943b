//! `Planner`: turns committed messages into deliveries.
//!
//! For each message in `message_queue` (high priority first) it expands the audience —
//! user ids, tags, a segment, a broadcast, or direct addresses — resolves each user's
//! address on each channel through their bindings (the narrowest scope that matches wins:
//! `channel:<code>`, then `app`, then `all`), and writes one delivery per (target, channel)
//! in one transaction with the queue rows the channel senders pull. Targets that cannot be
//! sent are written too, with the reason, so the funnel can show where they were lost:
//! `unknown_user`, `user_disabled`, `channel_disabled` (not effective) and `no_address`
//! (effective, but nothing to send to).
//!
//! Large audiences are planned a page of users at a time, each page its own transaction,
//! with the progress saved in the queue row, so a restart resumes where it stopped and a
//! broadcast never holds more than one page in memory. It never sends anything itself.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use tokio::sync::Notify;

use crate::channel::signals::WorkSignals;
use crate::directory::Directory;
use crate::domain::ids::IdGenerator;
use crate::domain::send::SendRequest;
use crate::domain::{ChannelCode, DeliveryState, MessagePk};
use crate::metrics as m;

mod targets;

use crate::store::plan::{NewDelivery, PlanJob, ResolvedUser};
use crate::store::{Store, StoreError};
pub use targets::address_for;
use targets::{resolve_channels, with_unknown, PlanChannel};

/// Users planned per transaction for paged audiences (tags, segments, broadcast).
pub const PAGE_USERS: usize = 1000;

/// Plans the messages that are due. The ingest's nudge and a once-a-second look (for
/// scheduled messages, which fall due without one) send it; a pass that planned something
/// sends it again at once.
#[derive(Message)]
#[rtype(result = "()")]
struct PlanDue;

/// Plans more targets of a message already accepted: deliveries on `channel` for `users`
/// (what a strategy's later step asks for). The users are resolved as at first planning —
/// addresses by binding scope, losses written with their reasons — and the queued
/// deliveries go to the channel's sender at once. Answered with what was written, one
/// per user.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<PlannedTarget>, PlanError>")]
pub struct PlanTargets {
    pub app_id: i32,
    pub message: MessagePk,
    pub channel: ChannelCode,
    pub users: Vec<String>,
}

/// One delivery [`PlanTargets`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTarget {
    pub user_id: String,
    pub delivery_id: i64,
    /// `Queued`, or `Filtered` / `Failed` with `reason` when the target was lost.
    pub state: DeliveryState,
    pub reason: Option<&'static str>,
}

/// Why more targets could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("no message {0} of this app")]
    UnknownMessage(MessagePk),
    #[error("no channel `{0}`")]
    UnknownChannel(ChannelCode),
    #[error("the store failed")]
    Store(#[from] StoreError),
}

pub struct Planner {
    work: Arc<Work>,
    wake: Arc<Notify>,
    /// A pass is running.
    busy: bool,
    /// Another pass was asked for while one ran.
    again: bool,
}

impl Planner {
    pub fn new(
        store: Store,
        directory: Arc<Directory>,
        ids: Arc<IdGenerator>,
        wake: Arc<Notify>,
        signals: Arc<WorkSignals>,
    ) -> Self {
        Self {
            work: Arc::new(Work {
                store,
                directory,
                ids,
                signals,
            }),
            wake,
            busy: false,
            again: false,
        }
    }
}

impl Actor for Planner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let wake = self.wake.clone();
        let me = ctx.address();
        ctx.spawn(
            async move {
                loop {
                    let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
                    if me.try_send(PlanDue).is_err() && !me.connected() {
                        break;
                    }
                }
            }
            .into_actor(self),
        );
        ctx.notify(PlanDue);
    }
}

impl Handler<PlanDue> for Planner {
    type Result = ();

    fn handle(&mut self, _: PlanDue, ctx: &mut Self::Context) {
        if self.busy {
            self.again = true;
            return;
        }
        self.busy = true;
        self.again = false;
        let work = self.work.clone();
        ctx.spawn(
            async move { work.pass().await }
                .into_actor(self)
                .map(|result, act, ctx| {
                    act.busy = false;
                    match result {
                        Ok(n) if n > 0 || act.again => ctx.notify(PlanDue),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %crate::error_chain(&e), "planning failed; retrying");
                            ctx.notify_later(PlanDue, Duration::from_secs(1));
                        }
                    }
                }),
        );
    }
}

impl Handler<PlanTargets> for Planner {
    type Result = ResponseFuture<Result<Vec<PlannedTarget>, PlanError>>;

    fn handle(&mut self, msg: PlanTargets, _: &mut Self::Context) -> Self::Result {
        let work = self.work.clone();
        Box::pin(async move { work.plan_targets(msg).await })
    }
}

impl actix::Supervised for Planner {
    fn restarting(&mut self, _: &mut Self::Context) {
        tracing::warn!("planner restarting");
    }
}

struct Work {
    store: Store,
    directory: Arc<Directory>,
    ids: Arc<IdGenerator>,
    signals: Arc<WorkSignals>,
}

impl Work {
    /// Plans one page of each due message; returns how many messages it touched.
    async fn pass(&self) -> Result<usize, StoreError> {
        let jobs = self.store.next_plan_jobs(64).await?;
        let n = jobs.len();
        for job in jobs {
            self.plan(job).await?;
        }
        Ok(n)
    }

    async fn plan(&self, job: PlanJob) -> Result<(), StoreError> {
        let snapshot = self.directory.snapshot();
        let request: SendRequest = match serde_json::from_str(&job.request) {
            Ok(r) => r,
            Err(e) => {
                // Cannot happen for a request this build validated; an older build's
                // request that no longer parses is dropped rather than retried forever.
                tracing::error!(id = %job.id, error = %e, "stored request does not parse");
                return self.store.write_plan(&job, &[], None).await;
            }
        };
        let channels = resolve_channels(&snapshot, job.app_id, &job.channels);
        let mut out = Vec::new();
        let mut next = None;
        let audience = &request.audience;
        if let Some(addresses) = &audience.addresses {
            for (code, list) in addresses {
                let Some(ch) = channels.iter().find(|c| &c.code == code) else {
                    continue;
                };
                for addr in list {
                    out.push(self.delivery(ch, None, Some(addr.clone())));
                }
            }
        } else {
            let users = if let Some(ids) = &audience.user_ids {
                let found = self.store.resolve_users(job.app_id, ids).await?;
                with_unknown(ids, found)
            } else if let Some(segment) = &audience.segment {
                let members = self
                    .store
                    .segment_members(job.app_id, segment)
                    .await?
                    .unwrap_or_default();
                let after = job.cursor.clone().unwrap_or_default();
                let page: Vec<String> = members
                    .into_iter()
                    .filter(|u| *u > after)
                    .take(PAGE_USERS)
                    .collect();
                if page.len() == PAGE_USERS {
                    next = page.last().cloned();
                }
                let found = self.store.resolve_users(job.app_id, &page).await?;
                with_unknown(&page, found)
            } else {
                let (any, all) = match &audience.tags {
                    Some(t) => (t.any.as_deref(), t.all.as_deref()),
                    None => (None, None),
                };
                let after = job.cursor.clone().unwrap_or_default();
                let page = self
                    .store
                    .page_users(job.app_id, any, all, &after, PAGE_USERS as i64)
                    .await?;
                if page.len() == PAGE_USERS {
                    next = page.last().map(|u| u.user_id.clone());
                }
                page.into_iter()
                    .map(|u| (u.user_id.clone(), Some(u)))
                    .collect()
            };
            for (user_id, user) in users {
                for ch in &channels {
                    out.push(self.user_delivery(ch, &user_id, user.as_ref()));
                }
            }
        }
        self.store.write_plan(&job, &out, next.as_deref()).await?;

        self.counted(&out);
        if job.cursor.is_none() {
            metrics::counter!(m::PLANNER_MESSAGES_TOTAL, "priority" => job.priority.as_str())
                .increment(1);
            let lag = Utc::now() - job.id.created_at();
            metrics::histogram!(m::PLANNER_LAG_SECONDS)
                .record(lag.num_microseconds().unwrap_or(0) as f64 / 1e6);
        }
        Ok(())
    }

    /// Plans more targets of a message on one channel (see [`PlanTargets`]).
    async fn plan_targets(&self, t: PlanTargets) -> Result<Vec<PlannedTarget>, PlanError> {
        let message = self
            .store
            .planned_message(t.app_id, t.message)
            .await?
            .ok_or(PlanError::UnknownMessage(t.message))?;
        let snapshot = self.directory.snapshot();
        if !snapshot.channels.contains_key(t.channel.as_str()) {
            return Err(PlanError::UnknownChannel(t.channel));
        }
        let channels = resolve_channels(&snapshot, t.app_id, &[t.channel.to_string()]);
        let found = self.store.resolve_users(t.app_id, &t.users).await?;
        let mut out = Vec::with_capacity(t.users.len());
        for (user_id, user) in with_unknown(&t.users, found) {
            for ch in &channels {
                out.push(self.user_delivery(ch, &user_id, user.as_ref()));
            }
        }
        self.store.write_targets(&message, &out).await?;
        self.counted(&out);
        Ok(out
            .into_iter()
            .map(|d| PlannedTarget {
                user_id: d.user_id.unwrap_or_default(),
                delivery_id: d.id,
                state: d.state,
                reason: d.reason,
            })
            .collect())
    }

    /// Wakes the senders of the channels that got queued deliveries, and counts the
    /// targets per (channel, outcome), not per delivery.
    fn counted(&self, out: &[NewDelivery]) {
        let mut counts: std::collections::HashMap<(&str, &'static str), u64> =
            std::collections::HashMap::new();
        for d in out {
            let outcome = if d.state == DeliveryState::Queued {
                "queued"
            } else {
                d.reason.unwrap_or("other")
            };
            *counts
                .entry((d.channel_code.as_str(), outcome))
                .or_default() += 1;
        }
        let mut woken = HashSet::new();
        for ((channel, outcome), n) in counts {
            if outcome == "queued" && woken.insert(channel) {
                self.signals.wake(channel);
            }
            metrics::counter!(m::PLANNER_TARGETS_TOTAL,
                "channel" => channel.to_owned(), "outcome" => outcome)
            .increment(n);
        }
    }

    fn delivery(
        &self,
        ch: &PlanChannel,
        user_id: Option<String>,
        addr: Option<String>,
    ) -> NewDelivery {
        let (state, reason) = if !ch.usable {
            (DeliveryState::Filtered, Some("channel_disabled"))
        } else {
            (DeliveryState::Queued, None)
        };
        NewDelivery {
            id: self.ids.next_id(),
            channel_code: ch.code.clone(),
            user_id,
            address: addr,
            state,
            reason,
        }
    }

    fn user_delivery(
        &self,
        ch: &PlanChannel,
        user_id: &str,
        user: Option<&ResolvedUser>,
    ) -> NewDelivery {
        let lost = |state, reason| NewDelivery {
            id: self.ids.next_id(),
            channel_code: ch.code.clone(),
            user_id: Some(user_id.to_owned()),
            address: None,
            state,
            reason: Some(reason),
        };
        let Some(user) = user else {
            return lost(DeliveryState::Filtered, "unknown_user");
        };
        if !user.enabled {
            return lost(DeliveryState::Filtered, "user_disabled");
        }
        if !ch.usable {
            return lost(DeliveryState::Filtered, "channel_disabled");
        }
        match address_for(user, &ch.code, ch.channel_type) {
            Some(addr) => self.delivery(ch, Some(user_id.to_owned()), Some(addr)),
            None => lost(DeliveryState::Failed, "no_address"),
        }
    }
}
