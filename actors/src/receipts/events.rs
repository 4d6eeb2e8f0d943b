//! What the status writer is told: receipts (by provider id or by delivery), a sender's
//! outcomes, the end of a message's work on a channel, and a final flush.

use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::domain::{ChannelCode, DeliveryState, MessagePk};
use crate::store::status::{AppliedChange, StatusChange};

/// What a receipt identifies its delivery by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReceiptKey {
    /// The provider's id as recorded at submission (per recipient: the provider's message
    /// id, or `task:recipient` for providers that answer one id for a whole batch).
    Provider(String),
    /// umsd's own delivery id and its message (inbox reads, click-tracking).
    Delivery { id: i64, message_pk: MessagePk },
}

#[derive(Debug, Clone)]
pub struct ReceiptEvent {
    pub channel: ChannelCode,
    pub key: ReceiptKey,
    /// Delivered, Undelivered, Read or Clicked.
    pub state: DeliveryState,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// Outcomes from a channel sender. Answered once they are buffered (or, when too much is
/// pending, once the next flush is done).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Record {
    pub channel: ChannelCode,
    pub changes: Vec<StatusChange>,
}

/// Receipts from a provider callback or poller. Answers `false` when too many are held.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Incoming(pub Vec<ReceiptEvent>);

/// Removes a message's dispatch row for a channel once every outcome handed over before
/// it is written, if no page was planned since `pages`. Answers whether it was removed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Finish {
    pub channel: ChannelCode,
    pub message_pk: MessagePk,
    pub pages: i32,
}

/// Writes everything pending; answered when done (used at shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushAll;

/// Status changes the writer applied, in the order they were committed — what the
/// strategy actors watch for (a delivery delivered, clicked, failed). Published after
/// each committed batch to every subscriber.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StatusApplied(pub Arc<[AppliedChange]>);

/// Subscribes to [`StatusApplied`]. A subscriber whose mailbox is full misses that batch
/// (logged), never stalls the writer: it must look at the database before acting on
/// the absence of a change. A subscriber that stopped is forgotten.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeApplied(pub Recipient<StatusApplied>);
