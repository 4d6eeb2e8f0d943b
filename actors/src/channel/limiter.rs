//! The channel's rate limiter: governor's GCRA, counted per recipient, halved for a while
//! after the provider throttles.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// How long a throttled channel runs at half its rate.
pub const SLOW_FOR: Duration = Duration::from_secs(30);

pub struct Limiter {
    pub limiter: DefaultDirectRateLimiter,
    /// Most permits one check may ask for: a batch never asks for more, or it would wait
    /// forever.
    pub burst: u32,
}

/// A limiter for `rate` per second with `burst` (default: one second's worth); `None`
/// when the channel has no rate.
pub fn limiter(rate: Option<f64>, burst: Option<u32>) -> Option<Limiter> {
    let rate = rate.filter(|r| r.is_finite() && *r > 0.0)?;
    let burst = burst.unwrap_or(rate.ceil() as u32).max(1);
    let period = Duration::from_secs_f64(1.0 / rate);
    let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst)?);
    Some(Limiter {
        limiter: RateLimiter::direct(quota),
        burst,
    })
}

/// The limiter after a throttle: half the rate, half the burst.
pub fn slowed(rate: Option<f64>, burst: Option<u32>) -> Option<Limiter> {
    limiter(rate.map(|r| r / 2.0), burst.map(|b| (b / 2).max(1)))
}
