//! The `bench` scenario: in one run, against one daemon,
//!
//! 1. `R_http` — maximum sustainable rate of `POST /bench/messages` (HTTP, auth, parsing,
//!    validation; nothing stored);
//! 2. `R_copy` — binary COPY throughput of the same rows into the same tables;
//! 3. `R_daemon` — maximum sustainable rate of durable accepts on `POST /v1/messages`,
//!    then checked against the database (rows under the search's prefix = 2xx answers);
//! 4. `ratio = R_daemon / R_ref` with `R_ref = 1 / (1/R_http + 1/R_copy)`;
//! 5. a steady run at a fraction of R_daemon with p50/p99/p99.9 and CPU-µs per accepted
//!    message (umsd alone and umsd + PostgreSQL), also count-checked.
//!
//! [`args`] holds the command line, [`run`] the rounds and the steady run, and [`report`]
//! the figures of a round; the run's record and printed summary are shared with the other
//! open-loop scenarios (`crate::report`).

mod args;
mod report;
mod run;

pub use args::BenchArgs;
pub use report::RoundSummary;
pub use run::run;
