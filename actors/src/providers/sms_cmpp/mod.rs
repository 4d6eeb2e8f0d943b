//! SMS over CMPP 2.0 / 3.0: the `sms_cmpp` channel type.
//!
//! ```text
//! ChannelSender (queues, limiter, retries; counts one permit per SUBMIT)
//! └─ CmppAccount (the channel's Provider: splits text into segments, hands them to the
//!    │            sessions through one shared queue, turns their answers into outcomes)
//!    ├─ CmppSession 1 ─ TCP ─┐
//!    ├─ …                    ├─ ISMG
//!    └─ CmppSession N ─ TCP ─┘   (N = max_connections)
//! ```
//!
//! Each session is an actor owning one persistent TCP connection: it logs in, takes
//! segments from the account's queue while its window has room, matches SUBMIT_RESP by
//! Sequence_Id, resends after the response timeout, pauses on Result 8 (flow control) and
//! puts the segment back without losing who waits for it, keeps the link alive with
//! ACTIVE_TEST, answers every DELIVER, and reconnects with backoff after a drop — the
//! segments it had in flight go back to the queue and are resubmitted. Status reports go
//! to `Receipts` keyed by the Msg_Id inside the report; MO messages are stored.
//!
//! All of an account's actors live on its sender's arbiter (one thread), so they share
//! the queue through `Rc`; nothing here blocks that thread.

mod account;
mod session;
pub mod settings;
mod shared;

pub use account::{submit_template, CmppAccount};
