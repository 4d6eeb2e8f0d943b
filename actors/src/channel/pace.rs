//! Pacing a channel: calls start while fewer than `pool_size` are in flight and a
//! governor GCRA limiter allows them, counted per recipient (a batch call to 1000
//! recipients takes 1000 permits; a long SMS one per segment). The limiter runs at half
//! its rate for a while after the provider throttles. When it says wait, the sender
//! schedules itself for that instant.

use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::Instant;

use actix::prelude::*;
use chrono::Utc;
use governor::clock::Clock;

use super::queues::Entry;
use super::sender::{CallDone, ChannelSender, UNACKED_MAX};
use crate::providers::contract::{all, Attempt, Batch, Provider, ProviderError, Target};

impl ChannelSender {
    /// Starts the calls the limiter and the concurrency bound allow.
    pub(super) fn pump(&mut self, ctx: &mut Context<Self>) {
        let Some(provider) = self.provider.clone() else {
            return;
        };
        let now = Instant::now();
        if let Some(until) = self.paused_until {
            if until > now {
                self.pump_later(ctx, until);
                return;
            }
            self.paused_until = None;
        }
        // Retries that are due go back to their queue (in front: they waited already).
        while self.delayed.peek().is_some_and(|d| d.due <= now) {
            if let Some(d) = self.delayed.pop() {
                self.queues.push_front(d.entry);
            }
        }
        if let Some(next) = self.delayed.peek().map(|d| d.due) {
            self.pump_later(ctx, next);
        }
        let max_batch = provider.max_batch().max(1);
        while self.in_flight < self.config.pool_size
            && self.stopping.is_none()
            && self.unacked < UNACKED_MAX
        {
            let cap = self
                .limiter
                .as_ref()
                .map_or(max_batch, |l| max_batch.min(l.burst as usize));
            let Some((n, message_pk)) = self.queues.peek_batch(now, cap) else {
                break;
            };
            if let Some(l) = &self.limiter {
                let cost = self.works.get_mut(&message_pk).map_or(1, |w| match w.cost {
                    Some(c) => c,
                    None => {
                        let c = w
                            .content
                            .as_ref()
                            .map_or(1, |(content, _)| provider.cost(content).max(1));
                        if w.content_loaded {
                            w.cost = Some(c);
                        }
                        c
                    }
                });
                // A batch never asks for more than the burst, or it would wait forever.
                let permits = (n as u32).saturating_mul(cost).min(l.burst);
                let permits = NonZeroU32::new(permits).unwrap_or(NonZeroU32::MIN);
                match l.limiter.check_n(permits) {
                    Ok(Ok(())) => {}
                    Ok(Err(not_until)) => {
                        let wait = not_until.wait_time_from(self.clock.now());
                        self.rate_wait_since.get_or_insert(now);
                        self.pump_later(ctx, now + wait);
                        break;
                    }
                    Err(_) => {
                        // More permits than the burst: cannot happen with `cap` above.
                        break;
                    }
                }
            }
            if let Some(since) = self.rate_wait_since.take() {
                self.meters
                    .rate_wait
                    .record(now.duration_since(since).as_secs_f64());
            }
            let entries = self.queues.take_batch(now, n);
            self.dispatch(&provider, entries);
        }
        self.gauges();
        if self.more_in_db && self.held() < self.config.backlog / 2 {
            self.refill(ctx);
        }
    }

    pub(super) fn pump_later(&mut self, ctx: &mut Context<Self>, at: Instant) {
        if let Some((when, handle)) = self.pump_at {
            if when <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = at.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(wait, |act, ctx| {
            act.pump_at = None;
            act.pump(ctx);
        });
        self.pump_at = Some((at, handle));
    }

    /// Starts one provider call for consecutive entries of one message.
    fn dispatch(&mut self, provider: &Rc<dyn Provider>, entries: Vec<Entry>) {
        let Some(first) = entries.first() else {
            return;
        };
        let message_pk = first.delivery.message_pk;
        let priority = first.delivery.priority;
        let Some((content, expires)) = self.works.get(&message_pk).and_then(|w| w.content.clone())
        else {
            return;
        };
        let expired = expires.is_some_and(|t| t <= Utc::now());
        let batch = Batch {
            message_pk,
            priority,
            content: content.clone(),
            targets: entries
                .iter()
                .map(|e| Target {
                    delivery_id: e.delivery.delivery_id,
                    app_id: e.delivery.app_id,
                    user_id: e.delivery.user_id.clone(),
                    address: e.delivery.address.clone(),
                })
                .collect(),
        };
        self.in_flight += 1;
        self.in_flight_targets += entries.len();
        let started = Instant::now();
        let fut = if expired {
            // Past its `ttl_seconds`: failed without a provider call.
            let results = all(
                &batch,
                Attempt::Failed(ProviderError::permanent(
                    "expired",
                    "the message's ttl_seconds passed before it could be sent",
                )),
            );
            Box::pin(std::future::ready(results))
        } else {
            provider.send(batch)
        };
        // The call runs as its own task on this arbiter and reports through the sender's
        // completion stream, so a completion wakes the actor once instead of every call
        // in flight being polled again.
        let done = self.done_tx.clone();
        actix::spawn(async move {
            let results = fut.await;
            let _ = done.send(CallDone {
                entries,
                results,
                elapsed: started.elapsed(),
            });
        });
    }
}
