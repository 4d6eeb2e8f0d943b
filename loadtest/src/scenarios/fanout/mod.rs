//! The `fanout` scenario: one message → U users on one HTTP channel, compared in the same
//! run with the provider simulator alone.
//!
//! 1. **Simulator alone** (before umsd starts): `C` keep-alive connections in a closed
//!    loop post requests shaped like umsd's webhook calls (signed Standard Webhooks
//!    events of the same size) to the in-process webhook simulator for `--sim-seconds`.
//!    `R_sim` = recipients it accepted per second.
//! 2. **Through umsd**: a fresh umsd whose app is granted one webhook channel (`pool_size`
//!    = C, no rate limit) pointing at the same simulator; U users bound to
//!    `{sim}/hooks/{user}`; M messages, each to all U users, sent as fast as the API takes
//!    them; then a bounded wait until every delivery is delivered and written.
//!    `R_umsd` = deliveries / (last delivery − first accept), both from the database.
//! 3. `ratio = R_umsd / R_sim`; the rule is `ratio ≥ --min-ratio` (0.5: umsd is not the
//!    bottleneck by more than 2×) with every delivery delivered.
//!
//! A shared machine's speed drifts, so the pair is measured `--rounds` times back to back
//! (default 3; later rounds measure the simulator alone while umsd idles, and send new
//! messages to the same users) and the round with the median ratio is the result.
//!
//! Also measured: accept → submit latency per delivery (its `submitted` event minus its
//! message's `created_at`), CPU of umsd and of PostgreSQL per delivery, and a per-second
//! series from `/metrics` (deliveries, calls in flight, status writes pending, CPU).
//!
//! `--mixed`: four channels at once — webhook, WeCom and Feishu (each on its own
//! simulator) and the inbox — every user bound on each and every message sent on all
//! four; deliveries per second per channel and in total, and the webhook and Feishu
//! simulators alone for comparison (WeCom takes 1000 recipients per call, so its
//! simulator alone is not a meaningful limit; the inbox has none).
//!
//! [`args`] holds the command line, [`setup`] what happens before umsd starts (the
//! simulators and their figures alone), [`run`] the rounds through umsd ([`round`] one of
//! them), and [`report`] the figures, the rule and their rendering.

mod args;
mod report;
mod round;
mod run;
mod setup;

pub use args::FanoutArgs;
pub use report::FanoutReport;
pub use run::run;
pub use setup::{prepare, Setup};

/// Channel codes of the written config.
const HOOK: &str = "hook";
const WECOM: &str = "wecom";
const FEISHU: &str = "feishu";
const INBOX: &str = "inbox";
