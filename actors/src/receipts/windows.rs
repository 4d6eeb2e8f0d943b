//! Receipt windows: a delivery submitted to a provider that reports delivery and still
//! `submitted` when its channel's window closes becomes `unknown` — final, a loss of its
//! own (`no_receipt`), so its message can reach `done`. A receipt that comes later still
//! applies (see `write.rs`, late receipts).
//!
//! The waits are rows (`store/windows.rs`), taken in due order once a second: the change
//! is written through the same path as every other (callbacks, subscribers), and the rows
//! are deleted after it committed, so a crash in between only repeats a change that then
//! finds the delivery moved on.

use std::collections::HashMap;

use actix::prelude::*;
use chrono::Utc;

use super::write::write;
use super::{Receipts, NO_RECEIPT};
use crate::domain::{ChannelCode, DeliveryState};
use crate::metrics as m;
use crate::store::status::StatusChange;

/// Most wait rows (each a status write's submissions on one channel) closed per round.
const CLOSE_BATCH: i64 = 20;

impl Receipts {
    /// Closes the windows that are due (one batch; again at once if it was full).
    pub(super) fn close_windows(&mut self, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.closing = true;
        let store = self.store.clone();
        let grace = self.grace;
        let callback_apps = self.callback_apps.clone();
        let work = async move {
            let now = Utc::now();
            let overdue = store.overdue_receipts(now, CLOSE_BATCH).await?;
            let mut channel_of: HashMap<i64, ChannelCode> = HashMap::new();
            let changes: Vec<(ChannelCode, StatusChange)> = overdue
                .iter()
                .filter_map(|w| Some((ChannelCode::parse(&w.channel).ok()?, w)))
                .flat_map(|(channel, w)| w.deliveries.iter().map(move |d| (channel.clone(), *d)))
                .map(|(channel, (delivery_id, message_pk))| {
                    channel_of.insert(delivery_id, channel.clone());
                    (
                        channel,
                        StatusChange {
                            delivery_id,
                            message_pk,
                            state: DeliveryState::Unknown,
                            from: &[DeliveryState::Submitted],
                            provider_id: None,
                            code: Some(NO_RECEIPT.into()),
                            reason: Some("no receipt within the channel's receipt window".into()),
                            attempts: 0,
                            expect_receipt: None,
                            segments: Vec::new(),
                            receipt_by: None,
                            at: now,
                        },
                    )
                })
                .collect();
            let applied = if changes.is_empty() {
                Vec::new()
            } else {
                write(&store, &changes, Vec::new(), grace, &callback_apps, true)
                    .await
                    .map_err(|(e, _)| e)?
                    .1
            };
            let ids: Vec<i64> = overdue.iter().map(|w| w.id).collect();
            store.forget_receipt_waits(&ids).await?;
            let mut closed: HashMap<ChannelCode, u64> = HashMap::new();
            for a in &applied {
                if let Some(ch) = channel_of.get(&a.delivery_id) {
                    *closed.entry(ch.clone()).or_default() += 1;
                }
            }
            Ok::<_, crate::store::StoreError>((overdue.len() as i64, applied, closed))
        };
        ctx.spawn(work.into_actor(self).map(|result, act, ctx| {
            act.closing = false;
            match result {
                Ok((taken, applied, closed)) => {
                    for (ch, n) in closed {
                        metrics::counter!(m::RECEIPT_WINDOWS_CLOSED_TOTAL, "channel" => ch.to_string())
                            .increment(n);
                    }
                    act.publish(applied);
                    if taken == CLOSE_BATCH {
                        act.close_windows(ctx);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot close receipt windows; will retry"),
            }
        }));
    }
}
