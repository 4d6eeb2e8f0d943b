//! Domain types: the vocabulary of `DESIGN.md` as Rust types, below the store and the
//! actors. Values from the network are parsed into these at the edge; inside the engine
//! they carry their guarantees. Nothing here does I/O.

pub mod app;
pub mod channel;
pub mod delivery;
pub mod ids;
pub mod message;
pub mod send;
pub mod strategy;
pub mod user;

pub use channel::{ChannelCode, ChannelType};
pub use delivery::DeliveryState;
pub use ids::{IdempotencyKey, MessagePk};
pub use message::{MessageStatus, Priority};
