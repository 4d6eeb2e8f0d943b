//! The open-loop load generator.
//!
//! Request `i` of a phase is *intended* at `t0 + i / rate`, whatever happened to the
//! requests before it. A fixed set of `C` keep-alive HTTP/1.1 connections carries the load,
//! one worker task per connection, wrk2-style: a free worker takes the earliest request not
//! yet taken, waits for its intended time if that is still ahead, sends it and waits for
//! the answer. A request that had to wait for a free connection is therefore sent late, and
//! its latency is still measured from its intended time (coordinated omission corrected).
//!
//! Every phase is bounded: at most `rate × duration` (and at most `max_requests`) requests,
//! none started later than `duration + timeout` after `t0`, each answered within `timeout`
//! or counted as a timeout. Latencies are recorded in microseconds into `hdrhistogram`s
//! (3 significant digits); the per-second series buckets answers by the second they
//! arrived in.
//!
//! This module holds what a phase is asked to do ([`LoadSpec`]) and the request schedule;
//! [`body`] builds each request's body, [`phase`] runs it, [`conn`] carries it, and
//! [`result`] is what it measured.

mod body;
mod conn;
mod phase;
mod result;

use std::net::SocketAddr;
use std::time::Duration;

pub use body::{message_body, user_of, BodySpec, ContentKind, DEFAULT_USERS};
pub(crate) use conn::{exchange, Conn};
pub use phase::run_phase;
pub use result::{
    new_histogram, summarize, LatencySummary, Outcome, PhaseResult, Sample, SecondPoint,
};

/// Where the load goes: a loopback socket address and the `Host` header to send.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub host: String,
}

/// One phase of load: a fixed arrival rate for a bounded time.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Intended requests per second.
    pub rate: f64,
    /// Length of the sending window.
    pub duration: Duration,
    /// Upper bound on the requests of this phase, whatever rate × duration says.
    pub max_requests: u64,
    /// Keep-alive connections (and worker tasks).
    pub connections: usize,
    /// Longest wait for one answer; also how long after the window a late request may
    /// still be started.
    pub timeout: Duration,
    /// Request path, e.g. `/v1/messages`.
    pub path: String,
    /// The `Authorization` header value.
    pub authorization: String,
    /// Prefix of every `message_id` of this phase; request `i` gets
    /// `<prefix><first_index + i>`.
    pub id_prefix: String,
    pub first_index: u64,
    /// What each request's body looks like (channel, content, priority).
    pub body: BodySpec,
}

/// How many requests a phase plans: `ceil(rate × duration)`, at most `max_requests`.
pub fn planned_requests(rate: f64, duration: Duration, max_requests: u64) -> u64 {
    if !(rate.is_finite() && rate > 0.0) {
        return 0;
    }
    let n = (rate * duration.as_secs_f64()).ceil();
    if n >= max_requests as f64 {
        max_requests
    } else {
        n as u64
    }
}

/// When request `i` is intended, relative to the phase start: `i / rate`.
pub fn intended_offset(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spaces_requests_evenly() {
        assert_eq!(intended_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(intended_offset(1, 1000.0), Duration::from_millis(1));
        assert_eq!(intended_offset(2500, 1000.0), Duration::from_millis(2500));
        // 3 per second: the third request is at 2/3 s.
        let d = intended_offset(2, 3.0).as_secs_f64();
        assert!((d - 2.0 / 3.0).abs() < 1e-9);
        // the schedule is monotonic at awkward rates
        let rate = 2197.3;
        let mut prev = Duration::ZERO;
        for i in 1..10_000 {
            let t = intended_offset(i, rate);
            assert!(t > prev);
            prev = t;
        }
    }

    #[test]
    fn planned_count_is_rate_times_duration_capped() {
        assert_eq!(
            planned_requests(2000.0, Duration::from_secs(5), 1_000_000),
            10_000
        );
        assert_eq!(
            planned_requests(2600.5, Duration::from_secs(2), 1_000_000),
            5201
        );
        assert_eq!(planned_requests(2000.0, Duration::from_secs(5), 300), 300);
        assert_eq!(planned_requests(0.0, Duration::from_secs(5), 300), 0);
        assert_eq!(planned_requests(f64::NAN, Duration::from_secs(5), 300), 0);
        assert_eq!(planned_requests(1e12, Duration::from_secs(3600), 77), 77);
    }
}
