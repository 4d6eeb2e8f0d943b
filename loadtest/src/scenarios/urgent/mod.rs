//! The `urgent` scenario: a high-priority message stays urgent behind a huge backlog.
//!
//! 1. **Backlog**: one webhook channel against the webhook simulator, rate-limited to
//!    `--channel-rate` (2000/s, so a backlog of 1 000 000 takes minutes), U users
//!    (`--users`, 1000) bound to `{sim}/hooks/u{n}`, and M messages (`--backlog-messages`,
//!    1000) each to all of them — U × M queued deliveries, submitted as `backlog` does;
//!    then a bounded wait (`--ready-wait-s`) until the planner has planned them all and
//!    the sender is submitting them.
//! 2. **Stream**: for `--seconds` (30), an open-loop stream of one-user messages on the
//!    same channel at `--rate` (200/s), and beside it every `--high-every-ms` (250) one
//!    message with `"priority": "high"` to one user on that channel.
//! 3. **Outcome**: after a bounded wait (`--drain-s`) for the high messages, each one's
//!    accept → submitted latency from the database (`deliveries.sent_at` minus
//!    `messages.created_at`): p50/p99/max and count; PASS when every high message was
//!    submitted and p99 ≤ `--max-p99-ms` (1000). Also the normal stream's accept →
//!    submitted (those that got through) and the backlog's drain rate during the stream.
//!
//! [`args`] holds the command line, [`setup`] the simulator and the daemon's config,
//! [`run`] the three steps, and [`report`] the figures, the rule and their rendering.

mod args;
mod report;
mod run;
mod setup;

pub use args::UrgentArgs;
pub use report::UrgentReport;
pub use run::run;
pub use setup::{prepare, Setup};

/// Code of the one channel of the written config.
const CHANNEL: &str = "hook";
