//! umsd's engine: the actor tree that moves accepted messages through the pipeline, the
//! provider clients it sends through, the PostgreSQL store, and the domain types below
//! them all. The front door (the `umsd` crate) depends on this crate, never the other way
//! round.
//!
//! Actors (children of the [`supervisor`], whose doc comment draws the tree): [`ingest`],
//! [`planner`], [`channel`] (one sender per channel), [`receipts`], [`app_callbacks`].
//! Below them: [`providers`] (the contract and one module per provider), [`store`] (split
//! by who uses it), [`directory`] (apps, channels and grants in memory), [`metrics`]
//! (metric names) and [`domain`].

pub mod app_callbacks;
pub mod channel;
pub mod directory;
pub mod domain;
pub mod ingest;
pub mod metrics;
pub mod planner;
pub mod providers;
pub mod receipts;
pub mod scheduler;
pub mod store;
pub mod strategy;
pub mod supervisor;

/// An error with its causes, `outer: inner: root`, for logs and operators.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
