//! The `bench` scenario: in one run, against one daemon,
//!
//! 1. `R_http` — maximum sustainable rate of `POST /bench/messages` (HTTP, auth, parsing,
//!    validation; nothing stored);
//! 2. `R_copy` — binary COPY throughput of the same rows into the same tables;
//! 3. `R_daemon` — maximum sustainable rate of durable accepts on `POST /v1/messages`,
//!    then checked against the database (rows under the search's prefix = 2xx answers);
//! 4. `ratio = R_daemon / R_ref` with `R_ref = 1 / (1/R_http + 1/R_copy)`;
//! 5. `R_e2e` per channel (the inbox, and a webhook channel against the webhook
//!    simulator) — the highest rate at which every accepted message is also delivered
//!    within a bounded wait, with accept → delivered p99 within a bound; next to it
//!    `R_e2e / R_ref` and `R_e2e / R_daemon`;
//! 6. a steady run at a fraction of R_e2e_inbox (or R_daemon) with p50/p99/p99.9, accept →
//!    planned and accept → delivered from the database, and CPU-µs per delivered message
//!    (umsd alone and umsd + PostgreSQL), also count-checked.
//!
//! Every measured search and phase starts only once the daemon has worked off what the
//! earlier ones left ([`quiet`]).
//!
//! [`args`] holds the command line, [`setup`] the webhook simulator and the config,
//! [`run`] the rounds, [`round`] one of them, [`e2e`] the end-to-end search, [`steady`]
//! the steady run, and [`report`] the figures of a round and the end-to-end verdict; the
//! run's record and printed summary are shared with the other open-loop scenarios
//! (`crate::report`).

mod args;
mod e2e;
mod quiet;
mod report;
mod round;
mod run;
mod setup;
mod steady;

pub use args::BenchArgs;
pub use quiet::QuietWait;
pub use report::{E2eReport, RoundSummary};
pub use run::run;
pub use setup::{prepare, Setup};
