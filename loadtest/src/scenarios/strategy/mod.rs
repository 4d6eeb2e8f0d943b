//! The `strategy` scenario: a fallback strategy at scale — one broadcast to a million
//! users, step 1 on a webhook channel, step 2 on the inbox for every target not delivered
//! on step 1 within `--within-s`.
//!
//! 1. **Users**: one webhook channel `hook` against the webhook simulator, rate-limited to
//!    `--channel-rate` (5000/s, `--pool-size` 32), and the inbox channel `inbox`, both
//!    granted to the app. U users (`--users`, 1 000 000) created through
//!    `POST /v1/users/batch` (1000 per request, `--user-concurrency` requests in flight);
//!    a share of them (`--delivered-share`, 0.2, spread evenly) bound to
//!    `{sim}/hooks/u<n>` — their step 1 is delivered in time — the rest with no binding, so
//!    their step 1 is lost as `no_address` and they must fall back.
//! 2. **Send**: the strategy `hook-then-inbox` (step 1 `hook`; step 2 `inbox` when not
//!    delivered on step 1 within `--within-s`, 180) and ONE message with
//!    `"audience": {"broadcast": true}` and that strategy.
//! 3. **Sampling**, every `--sample-ms` (1000) from the send on: umsd's RSS (`VmRSS`), the
//!    gauge `umsd_strategy_timers_pending`, the deadline rows of the message in
//!    `strategy_timers`, whether step 1 is still being planned (its `message_queue` row),
//!    the simulator's deliveries, the fallback counters and CPU. Phase `pending` lasts
//!    until the first deadline, `firing` from then on. Bounded waits: step 1 planned within
//!    `--plan-wait-s` (900) of the send; no deadline left and every step-2 delivery final
//!    within `--fire-wait-s` (600) of the last deadline.
//! 4. **Outcome** from the database: targets (step-1 deliveries), settled (delivered, not
//!    fallen back), held (`fell_back_at` set), fired (step-2 deliveries), users with more
//!    than one step-2 delivery; exact checks fired = held, fired + settled = U,
//!    duplicates = 0, held = users without a binding + bound users not delivered within
//!    their deadline. Per target lateness (its step-2 delivery's `created_at` minus its
//!    step-1 delivery's `created_at` + within): p50/p99/max, next to the lateness
//!    histogram's count and sum per deadline row from `/metrics`. RSS peak and at the end
//!    of each phase; wall times from the accept (step 1 planned, delivered, deadlines,
//!    step 2 delivered). PASS when every check holds, the RSS peak ≤ `--max-rss-mb` (300)
//!    and the lateness p99 ≤ `--max-p99-ms` (100).
//!
//! [`args`] holds the command line, [`setup`] the simulator and the daemon's config,
//! [`run`] the users, the send and the sampled wait, [`outcome`] what is read back from
//! the database and `/metrics` (and the exact checks), and [`report`] the figures, the
//! rules and their rendering.

mod args;
mod outcome;
mod report;
mod run;
mod setup;

pub use args::StrategyArgs;
pub use report::StrategyReport;
pub use run::run;
pub use setup::{prepare, Setup};

/// Code of the webhook channel (step 1).
const HOOK: &str = "hook";
/// Code of the inbox channel (step 2).
const INBOX: &str = "inbox";
/// The strategy the message is sent with.
const STRATEGY_ID: &str = "hook-then-inbox";
