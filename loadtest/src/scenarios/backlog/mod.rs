//! The `backlog` scenario: umsd's memory while a large backlog drains.
//!
//! U users (default 1000) bound on a WeCom channel whose simulator takes 1000 recipients
//! per call, so the provider is cheap and the drain measures umsd and PostgreSQL; M
//! messages (default 1000), each to all U users → U × M deliveries (default 1 000 000).
//! The messages are sent with bounded concurrency; from the first send on, every second:
//! umsd's RSS (`VmRSS`), the queue depth (`SELECT count(*) FROM deliveries WHERE state =
//! 2`, deliveries still queued, and the `dispatch_queue` rows), the recipients the
//! simulator accepted (delivered), and a few `/metrics` gauges — until nothing is queued
//! and every delivery is delivered, or the deadline.
//!
//! Figures: RSS at the start of the drain (the first sample after the last message was
//! accepted), its peak during the drain and at the end; the drain rate; CPU per delivery.
//! Rule: the peak during the drain stays within start × 1.25 + 64 MiB (memory flat).
//!
//! [`args`] holds the command line, [`setup`] the simulator and the daemon's config,
//! [`run`] the sends and the sampled drain, and [`report`] the figures, the memory rule
//! and their rendering.

mod args;
mod report;
mod run;
mod setup;

pub use args::BacklogArgs;
pub use report::BacklogReport;
pub use run::run;
pub use setup::{prepare, Setup};

/// Code of the one channel of the written config.
const CHANNEL: &str = "wecom";
