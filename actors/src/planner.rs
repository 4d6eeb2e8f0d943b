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

use crate::channel::WorkSignals;
use crate::directory::{Directory, Snapshot};
use crate::domain::ids::{id_time, IdGenerator};
use crate::domain::send::SendRequest;
use crate::domain::{ChannelType, DeliveryState};
use crate::metrics as m;
use crate::store::deliveries::{NewDelivery, PlanJob, ResolvedUser};
use crate::store::{Store, StoreError};

/// Users planned per transaction for paged audiences (tags, segments, broadcast).
pub const PAGE_USERS: usize = 1000;

pub struct Planner {
    store: Store,
    directory: Arc<Directory>,
    ids: Arc<IdGenerator>,
    wake: Arc<Notify>,
    signals: Arc<WorkSignals>,
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
            store,
            directory,
            ids,
            wake,
            signals,
        }
    }
}

impl Actor for Planner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let work = Work {
            store: self.store.clone(),
            directory: self.directory.clone(),
            ids: self.ids.clone(),
            signals: self.signals.clone(),
        };
        let wake = self.wake.clone();
        ctx.spawn(
            async move {
                loop {
                    match work.pass().await {
                        Ok(0) => {
                            // Idle: wait for the ingest's nudge, or look again in a second
                            // (scheduled messages fall due without one).
                            let _ =
                                tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "planning failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
            .into_actor(self),
        );
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
                tracing::error!(id = job.id, error = %e, "stored request does not parse");
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

        // Counted per (channel, outcome), not per delivery.
        let mut counts: std::collections::HashMap<(&str, &'static str), u64> =
            std::collections::HashMap::new();
        for d in &out {
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
        if job.cursor.is_none() {
            metrics::counter!(m::PLANNER_MESSAGES_TOTAL, "priority" => job.priority.as_str())
                .increment(1);
            let lag = Utc::now() - id_time(job.id);
            metrics::histogram!(m::PLANNER_LAG_SECONDS)
                .record(lag.num_microseconds().unwrap_or(0) as f64 / 1e6);
        }
        Ok(())
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

/// A message's channel as the planner sees it.
struct PlanChannel {
    code: String,
    channel_type: ChannelType,
    /// Configured, switched on, granted to the app and not switched off by it.
    usable: bool,
}

fn resolve_channels(snapshot: &Snapshot, app_id: i32, codes: &[String]) -> Vec<PlanChannel> {
    let app = snapshot.apps.values().find(|a| a.id == app_id);
    codes
        .iter()
        .map(|code| {
            let channel = snapshot.channels.get(code);
            let granted = app
                .and_then(|a| a.grants.get(code))
                .copied()
                .unwrap_or(false);
            PlanChannel {
                code: code.clone(),
                channel_type: channel.map_or(ChannelType::Inbox, |c| c.channel_type),
                usable: granted
                    && app.is_some_and(|a| a.enabled)
                    && channel.is_some_and(|c| c.enabled),
            }
        })
        .collect()
}

/// Pairs every requested id with its user, `None` for ids that are not users.
fn with_unknown(ids: &[String], found: Vec<ResolvedUser>) -> Vec<(String, Option<ResolvedUser>)> {
    let mut by_id: std::collections::HashMap<String, ResolvedUser> =
        found.into_iter().map(|u| (u.user_id.clone(), u)).collect();
    let mut seen = HashSet::new();
    ids.iter()
        .filter(|id| seen.insert(id.as_str()))
        .map(|id| (id.clone(), by_id.remove(id)))
        .collect()
}

/// The user's address on a channel: the binding of the channel type's binding type with
/// the narrowest matching scope. The inbox is addressed by the user id itself.
pub fn address_for(user: &ResolvedUser, code: &str, ty: ChannelType) -> Option<String> {
    let Some(binding_type) = ty.binding_type() else {
        return Some(user.user_id.clone());
    };
    let channel_scope = format!("channel:{code}");
    let rank = |scope: &str| {
        if scope == channel_scope {
            Some(0)
        } else if scope == "app" {
            Some(1)
        } else if scope == "all" {
            Some(2)
        } else {
            None
        }
    };
    user.bindings
        .iter()
        .filter(|(t, _, _)| t == binding_type)
        .filter_map(|(_, v, s)| rank(s).map(|r| (r, v)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, v)| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(bindings: &[(&str, &str, &str)]) -> ResolvedUser {
        ResolvedUser {
            user_id: "u1".into(),
            enabled: true,
            bindings: bindings
                .iter()
                .map(|(t, v, s)| (t.to_string(), v.to_string(), s.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_narrowest_scope_wins() {
        let u = user(&[
            ("email", "all@x.io", "all"),
            ("email", "app@x.io", "app"),
            ("email", "ch@x.io", "channel:mail2"),
        ]);
        assert_eq!(
            address_for(&u, "mail2", ChannelType::Email).as_deref(),
            Some("ch@x.io")
        );
        assert_eq!(
            address_for(&u, "mail1", ChannelType::Email).as_deref(),
            Some("app@x.io")
        );
        let u = user(&[
            ("email", "all@x.io", "all"),
            ("phone", "+8613800138000", "all"),
        ]);
        assert_eq!(
            address_for(&u, "mail1", ChannelType::Email).as_deref(),
            Some("all@x.io")
        );
        assert_eq!(address_for(&u, "push", ChannelType::Jpush), None);
        assert_eq!(
            address_for(&u, "inbox", ChannelType::Inbox).as_deref(),
            Some("u1")
        );
    }
}
