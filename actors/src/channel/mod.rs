//! Channels: one [`ChannelSender`](sender::ChannelSender) actor per configured channel, and
//! what it is made of, one file per stage:
//!
//! * [`config`]: the channel's settings, parsed once;
//! * [`sender`]: the actor itself — its state, its messages, and what a finished call
//!   changes;
//! * [`work`]: the messages with work on the channel, and which to pull next (pure);
//! * [`pull`]: pulling queued deliveries from PostgreSQL, within the backlog's room;
//! * [`queues`]: the three priority queues in memory, with aging;
//! * [`pace`]: starting calls as the limiter and the concurrency bound allow;
//! * [`limiter`]: the rate limiter;
//! * [`settle`]: what a provider's answer means for each delivery (a pure decision);
//! * [`retry`]: backoff, and the retries waiting for it;
//! * [`meters`]: the sender's metric handles;
//! * [`signals`]: the planner's "work was queued" wake-ups;
//! * [`lag`]: how far each channel's dispatch is behind, for the ingest's admission.
//!
//! The provider contract the sender calls lives apart, in [`crate::providers::contract`].

pub mod config;
pub mod lag;
pub mod limiter;
pub mod meters;
pub mod pace;
pub mod pull;
pub mod queues;
pub mod retry;
pub mod sender;
pub mod settle;
pub mod signals;
pub mod withdraw;
pub mod work;
