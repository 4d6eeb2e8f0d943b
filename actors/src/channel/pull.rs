//! Pulling work from PostgreSQL into the sender's memory: first the list of messages with
//! work on the channel (`dispatch_queue`, high priority first, going on from where the
//! last listing stopped, so the messages already pulled and about to finish are not
//! listed again and again; it starts over when more urgent work is queued, a page is
//! added to a message, and once a second), then, in one query, the next queued
//! deliveries of each — at most `backlog` held (plus headroom for high
//! priority); the rest wait in the database. Each message's content for the channel is
//! read once and shared by its deliveries. A message whose deliveries are all pulled and
//! settled leaves the dispatch queue through the status writer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;

use super::sender::ChannelSender;
use super::work::{plan_pull, Content, MessageWork, Want, DISPATCH_ROWS, HIGH_HEADROOM};
use crate::domain::send::SendRequest;
use crate::domain::{DeliveryState, MessagePk, Priority};
use crate::receipts::{Finish, Record};
use crate::store::dispatch::{DispatchRow, QueuedDelivery};
use crate::store::status::StatusChange;
use crate::store::StoreError;

/// What one pull brought back.
pub struct Pulled {
    /// The messages listed, and the first one left out for room.
    rows: Vec<DispatchRow>,
    left_out: Option<usize>,
    wants: Vec<Want>,
    deliveries: Vec<QueuedDelivery>,
    contents: HashMap<MessagePk, Option<Content>>,
    /// Every message with work was listed and got its share.
    listed_all: bool,
}

impl ChannelSender {
    /// Pulls queued deliveries from the database while there is room: lists the messages
    /// with work, decides what to pull of each against what it holds (in the actor, so
    /// nothing is copied), then pulls.
    pub(super) fn refill(&mut self, ctx: &mut Context<Self>) {
        if self.provider.is_none() || self.stopping.is_some() {
            return;
        }
        if self.pulling {
            self.pull_again = true;
            return;
        }
        if self.room().1 == 0 {
            return;
        }
        self.pulling = true;
        self.pull_again = false;
        let store = self.store.clone();
        let code = self.config.code.clone();
        let after = self.list_after;
        let list = async move { store.dispatch_rows(&code, after, DISPATCH_ROWS).await };
        ctx.spawn(list.into_actor(self).map(|result, act, ctx| match result {
            Ok(rows) => act.pull_listed(rows, ctx),
            Err(e) => act.pull_failed(e, ctx),
        }));
    }

    /// Room in memory: (for normal and low priority, for high priority).
    fn room(&self) -> (usize, usize) {
        let held = self.held();
        let backlog = self.config.backlog;
        (
            backlog.saturating_sub(held),
            (backlog + HIGH_HEADROOM).saturating_sub(held),
        )
    }

    fn pull_failed(&mut self, e: StoreError, ctx: &mut Context<Self>) {
        self.pulling = false;
        self.list_after = None;
        tracing::warn!(channel = %self.config.code, error = %e, "cannot pull queued deliveries");
        ctx.run_later(Duration::from_secs(1), |act, ctx| act.refill(ctx));
        self.gauges();
        self.pump(ctx);
    }

    /// Pulls the next deliveries of the listed messages that have room.
    fn pull_listed(&mut self, rows: Vec<DispatchRow>, ctx: &mut Context<Self>) {
        let (room, high_room) = self.room();
        let works = &self.works;
        let (wants, left_out) = plan_pull(
            &rows,
            |pk| works.get(&pk).map(|w| (w.after, w.drained_at)),
            room,
            high_room,
        );
        let need: Vec<(i32, MessagePk)> = wants
            .iter()
            .filter(|w| !works.get(&w.0.message_pk).is_some_and(|k| k.content_loaded))
            .map(|w| (w.0.app_id, w.0.message_pk))
            .collect();
        let listed_all = rows.len() < DISPATCH_ROWS as usize && left_out.is_none();
        let store = self.store.clone();
        let code = self.config.code.clone();
        let channel_type = self.config.channel_type;
        let work = async move {
            let deliveries = store.pull_deliveries(&code, &wants).await?;
            let requests = if need.is_empty() {
                HashMap::new()
            } else {
                store.message_requests(&need).await?
            };
            let mut contents = HashMap::new();
            for (pk, text) in requests {
                let value = serde_json::from_str::<SendRequest>(&text)
                    .ok()
                    .and_then(|r| {
                        let expires = r
                            .ttl_seconds
                            .map(|t| pk.created_at() + chrono::Duration::seconds(i64::from(t)));
                        r.content_for(&code, channel_type)
                            .map(|c| (Arc::new(c.clone()), expires))
                    });
                contents.insert(pk, value);
            }
            Ok::<_, StoreError>(Pulled {
                rows,
                left_out,
                wants,
                deliveries,
                contents,
                listed_all,
            })
        };
        ctx.spawn(work.into_actor(self).map(|result, act, ctx| match result {
            Ok(pulled) => {
                act.pulling = false;
                act.take_pull(pulled, ctx);
                act.gauges();
                act.pump(ctx);
            }
            Err(e) => act.pull_failed(e, ctx),
        }));
    }

    /// Takes a pull's result into memory.
    fn take_pull(&mut self, pulled: Pulled, ctx: &mut Context<Self>) {
        let Pulled {
            rows,
            left_out,
            wants,
            deliveries,
            mut contents,
            listed_all,
        } = pulled;
        let now = Instant::now();
        let mut counts: HashMap<MessagePk, (usize, i64)> = HashMap::new();
        for d in &deliveries {
            let c = counts.entry(d.message_pk).or_insert((0, 0));
            c.0 += 1;
            c.1 = c.1.max(d.delivery_id);
        }
        let mut full = !listed_all;
        for (row, _, lim) in &wants {
            let w = self
                .works
                .entry(row.message_pk)
                .or_insert_with(|| MessageWork::new(*row));
            w.row = *row;
            if let Some(c) = contents.remove(&row.message_pk) {
                w.content = c;
                w.content_loaded = true;
            }
            let (n, max_id) = counts.get(&row.message_pk).copied().unwrap_or((0, 0));
            w.after = w.after.max(max_id);
            if (n as i64) < *lim {
                w.drained_at = Some(row.pages);
                self.maybe_done.insert(row.message_pk);
            } else {
                full = true;
            }
        }
        self.list_after = next_listing(&rows, left_out, self.list_after, |pk| {
            self.works
                .get(&pk)
                .is_some_and(|w| w.drained_at == Some(w.row.pages))
        });
        let mut unsendable = Vec::new();
        for d in deliveries {
            match self.works.get_mut(&d.message_pk) {
                Some(w) if w.content.is_some() => {
                    w.held += 1;
                    self.queues.push(d, now);
                }
                _ => unsendable.push(d),
            }
        }
        if !unsendable.is_empty() {
            self.fail_unsendable(unsendable);
        }
        self.more_in_db = full || self.pull_again;
        // Pull again at once only while the backlog is less than half full; past that,
        // `pump` pulls when it falls below half, so pulls come in large pages instead of
        // a small one each time a few calls end.
        if self.more_in_db && self.held() < self.config.backlog / 2 {
            ctx.run_later(Duration::from_millis(1), |act, ctx| act.refill(ctx));
        }
        self.finish_drained(ctx);
    }

    /// Messages whose queued deliveries are all pulled and settled leave the dispatch
    /// queue. The status writer removes the row after every outcome recorded before it,
    /// and only if no page was planned since; otherwise the message is pulled again.
    pub(super) fn finish_drained(&mut self, ctx: &mut Context<Self>) {
        if self.maybe_done.is_empty() {
            return;
        }
        // A candidate that is not done now becomes one again when its last held delivery
        // settles (`release`) or a pull finds it drained (`take_pull`).
        let works = &self.works;
        let done: Vec<(MessagePk, i32)> = self
            .maybe_done
            .drain()
            .filter_map(|pk| {
                let w = works.get(&pk)?;
                (w.held == 0 && !w.finishing && w.drained_at == Some(w.row.pages))
                    .then_some((pk, w.row.pages))
            })
            .collect();
        if !done.is_empty() && !self.pending.is_empty() {
            // The writer removes the row only after the outcomes it received before the
            // request: hand them over first.
            self.flush_changes(ctx);
        }
        for (pk, pages) in done {
            if let Some(w) = self.works.get_mut(&pk) {
                w.finishing = true;
            }
            let finish = self.receipts.send(Finish {
                channel: self.config.code.clone(),
                message_pk: pk,
                pages,
            });
            ctx.spawn(finish.into_actor(self).map(move |answer, act, ctx| {
                match answer {
                    Ok(true) => {
                        act.works.remove(&pk);
                    }
                    Ok(false) => {
                        // A page was planned meanwhile: list it again and pull.
                        if let Some(w) = act.works.get_mut(&pk) {
                            w.finishing = false;
                            w.drained_at = None;
                        }
                        act.list_after = None;
                        act.more_in_db = true;
                        act.refill(ctx);
                    }
                    Err(_) => {
                        if let Some(w) = act.works.get_mut(&pk) {
                            w.finishing = false;
                            act.maybe_done.insert(pk);
                        }
                    }
                }
            }));
        }
    }

    /// Deliveries whose message has no content for this channel (or is gone): failed.
    fn fail_unsendable(&mut self, rows: Vec<QueuedDelivery>) {
        let at = Utc::now();
        let changes = rows
            .into_iter()
            .map(|r| StatusChange {
                delivery_id: r.delivery_id,
                message_pk: r.message_pk,
                state: DeliveryState::Failed,
                from: &[DeliveryState::Queued],
                provider_id: None,
                receipt_by: None,
                code: Some("no_content".into()),
                reason: Some("the message has no content for this channel".into()),
                attempts: r.attempts,
                expect_receipt: None,
                segments: Vec::new(),
                at,
            })
            .collect();
        self.receipts.do_send(Record {
            channel: self.config.code.clone(),
            changes,
        });
    }
}

/// Where the next listing goes on from: after every listed message that is settled —
/// found drained — up to the first that may hold more (left out for room, or pulled up to
/// its limit). What sorts before that is known (held, or finishing); the listing starts
/// over when that may change (see `Woken`).
fn next_listing(
    rows: &[DispatchRow],
    left_out: Option<usize>,
    was: Option<(Priority, MessagePk)>,
    drained: impl Fn(MessagePk) -> bool,
) -> Option<(Priority, MessagePk)> {
    let stop = left_out.unwrap_or(rows.len());
    let settled = rows[..stop]
        .iter()
        .take_while(|r| drained(r.message_pk))
        .count();
    match settled {
        0 => was,
        n => Some((rows[n - 1].priority, rows[n - 1].message_pk)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pk: i64) -> DispatchRow {
        DispatchRow {
            message_pk: MessagePk(pk),
            priority: Priority::Normal,
            app_id: 1,
            pages: 1,
        }
    }

    #[test]
    fn the_listing_goes_on_after_settled_messages_only() {
        let rows: Vec<DispatchRow> = (1..=5).map(row).collect();
        let at = |pk| Some((Priority::Normal, MessagePk(pk)));
        let was = at(0);
        type Row<'a> = (
            &'a str,
            Option<usize>,
            &'a [i64],
            Option<(Priority, MessagePk)>,
        );
        let table: &[Row] = &[
            ("all drained", None, &[1, 2, 3, 4, 5], at(5)),
            (
                "stops before one that may hold more",
                None,
                &[1, 2, 4, 5],
                at(2),
            ),
            (
                "stops before one left out",
                Some(3),
                &[1, 2, 3, 4, 5],
                at(3),
            ),
            ("the first may hold more: stays", None, &[2, 3], was),
        ];
        for (name, left_out, drained, want) in table {
            let got = next_listing(&rows, *left_out, was, |pk| drained.contains(&pk.0));
            assert_eq!(&got, want, "{name}");
        }
    }
}
