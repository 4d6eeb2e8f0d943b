//! Recall on a channel: the sender drops what it holds of a recalled message (queued in
//! memory or waiting to be retried: the database already says `recalled`), and hands the
//! sent deliveries to its provider, which withdraws what its API can. Calls already made
//! to the provider finish; their outcomes no longer apply to the recalled deliveries.

use actix::prelude::*;

use super::sender::ChannelSender;
use crate::domain::MessagePk;
use crate::providers::contract::{RecallOutcome, RecallTarget};

/// Withdraw these sent deliveries; answered with each one's outcome by delivery id.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Vec<(i64, RecallOutcome)>")]
pub struct Withdraw(pub Vec<RecallTarget>);

/// Drop what is held of message `0`; answered with how many deliveries were dropped.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "usize")]
pub struct Forget(pub MessagePk);

impl Handler<Forget> for ChannelSender {
    type Result = usize;

    fn handle(&mut self, Forget(message): Forget, _: &mut Self::Context) -> usize {
        let queued = self.queues.forget(message);
        let before = self.delayed.len();
        self.delayed
            .retain(|d| d.entry.delivery.message_pk != message);
        queued + before - self.delayed.len()
    }
}

impl Handler<Withdraw> for ChannelSender {
    type Result = ResponseFuture<Vec<(i64, RecallOutcome)>>;

    fn handle(&mut self, Withdraw(targets): Withdraw, _: &mut Self::Context) -> Self::Result {
        match &self.provider {
            Some(provider) => provider.recall(targets),
            None => Box::pin(async move {
                targets
                    .into_iter()
                    .map(|t| {
                        (
                            t.delivery_id,
                            RecallOutcome::Kept("channel_not_running".into()),
                        )
                    })
                    .collect()
            }),
        }
    }
}
