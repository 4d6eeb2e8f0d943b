//! umsd's engine: domain types, the PostgreSQL store, and the actor tree that moves
//! accepted messages through the pipeline. The front door (the `umsd` crate) depends on
//! this crate, never the other way round.

pub mod callbacks;
pub mod channel;
pub mod cmpp;
pub mod directory;
pub mod domain;
pub mod ingest;
pub mod metrics;
pub mod planner;
pub mod providers;
pub mod receipts;
pub mod store;
pub mod supervisor;
