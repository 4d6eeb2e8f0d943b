//! The `cmpp` scenario: umsd's `sms_cmpp` channel against the ISMG simulator, compared in
//! the same run with the simulator driven by a minimal client loop, and the accuracy of
//! the channel's rate limit across sessions.
//!
//! 1. **Simulator alone** (before umsd starts): a minimal CMPP 3.0 client in the harness
//!    (`Framed<TcpStream, CmppCodec>`) logs in, keeps `--window` SUBMITs outstanding per
//!    connection, reads the SUBMIT_RESPs and answers the report DELIVERs, for
//!    `--sim-seconds`, with 1 and with 4 connections, each against a fresh simulator (no
//!    rate limit). Figures: SUBMITs accepted per second and SUBMIT → SUBMIT_RESP latency
//!    (exact, and interpolated from umsd's histogram buckets for a like-for-like
//!    comparison).
//! 2. **Through umsd**: three channels, each on its own simulator so their counts stay
//!    apart: `sms1` (1 session), `sms4` (4 sessions), both without a rate limit, and
//!    `smsrate` (4 sessions, `rate_per_second` = `--rate`). U users bound to a phone number
//!    each; M messages, each to all of them, first on `sms1` until the simulator has
//!    accepted every SUBMIT and every delivery is final in the database, then on `sms4`,
//!    then on `smsrate`. Figures per channel: SUBMITs per second between the simulator's
//!    first and last accepted SUBMIT, its ratio to the simulator alone with as many
//!    connections, SUBMIT → SUBMIT_RESP percentiles interpolated from the buckets of
//!    `umsd_cmpp_submit_resp_seconds{channel}` on `/metrics`, and CPU per SUBMIT.
//! 3. **Rate limit**: on `smsrate`, the SUBMITs the simulator accepted in a window of
//!    `--rate-window-s` (10 s) starting one second after the first (the limiter's burst
//!    comes first), divided by the window; PASS when within ±5 % of `--rate`. Also: the
//!    rate from there to the last SUBMIT, the busiest such window and the busiest second,
//!    which show a burst in mid-run that the rule's window may miss.
//!
//! [`args`] holds the command line, [`setup`] what happens before umsd starts (with
//! [`alone`], the harness's own CMPP client against the simulator), [`run`] the channels
//! through umsd, [`buckets`] the latency percentiles from histogram buckets, [`rates`] the
//! SUBMIT rates and the rate rule, and [`report`] the figures and their rendering.

mod alone;
mod args;
mod buckets;
mod rates;
mod report;
mod run;
mod setup;

pub use args::CmppArgs;
pub use report::CmppReport;
pub use run::run;
pub use setup::{prepare, Setup};

/// `src_id` of the channels' SUBMITs and of the client loop's.
const SRC_ID: &str = "10690001";
