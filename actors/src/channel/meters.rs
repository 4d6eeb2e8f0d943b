//! A channel sender's metric handles, registered once: the hot path records through them
//! without building labels or looking series up. Counts gathered while settling a call
//! are added once per call ([`Tally`]).

use crate::domain::{ChannelType, Priority};
use crate::metrics as m;
use crate::providers::contract::ErrorClass;

/// One value per error class, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ByClass<T> {
    pub retryable: T,
    pub rate_limited: T,
    pub auth: T,
    pub permanent: T,
}

impl<T> ByClass<T> {
    pub fn new(mut f: impl FnMut(ErrorClass) -> T) -> Self {
        Self {
            retryable: f(ErrorClass::Retryable),
            rate_limited: f(ErrorClass::RateLimited),
            auth: f(ErrorClass::Auth),
            permanent: f(ErrorClass::Permanent),
        }
    }

    pub fn get_mut(&mut self, class: ErrorClass) -> &mut T {
        match class {
            ErrorClass::Retryable => &mut self.retryable,
            ErrorClass::RateLimited => &mut self.rate_limited,
            ErrorClass::Auth => &mut self.auth,
            ErrorClass::Permanent => &mut self.permanent,
        }
    }

    /// Each class with its value.
    pub fn iter(&self) -> impl Iterator<Item = (ErrorClass, &T)> {
        [
            (ErrorClass::Retryable, &self.retryable),
            (ErrorClass::RateLimited, &self.rate_limited),
            (ErrorClass::Auth, &self.auth),
            (ErrorClass::Permanent, &self.permanent),
        ]
        .into_iter()
    }
}

/// The outcomes of one call's targets, counted before they are added to the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub delivered: u64,
    pub submitted: u64,
    /// Failed attempts, by class (final or not).
    pub errors: ByClass<u64>,
    /// Attempts that will be made again, by the class of the error that caused them.
    pub retries: ByClass<u64>,
}

pub struct Meters {
    queue_high: metrics::Gauge,
    queue_normal: metrics::Gauge,
    queue_low: metrics::Gauge,
    pub in_flight: metrics::Gauge,
    pub rate_wait: metrics::Histogram,
    pub request_duration: metrics::Histogram,
    pub accept_to_submit: metrics::Histogram,
    delivered: metrics::Counter,
    submitted: metrics::Counter,
    errors: ByClass<metrics::Counter>,
    /// Permanent errors are never retried; the series exists for the other classes.
    retries: ByClass<Option<metrics::Counter>>,
}

impl Meters {
    pub fn new(code: &str, ty: ChannelType) -> Self {
        let outcome = |outcome: &'static str| {
            metrics::counter!(m::DELIVERY_OUTCOMES_TOTAL,
                "channel" => code.to_owned(), "type" => ty.as_str(), "outcome" => outcome)
        };
        let depth = |p: Priority| {
            metrics::gauge!(m::CHANNEL_QUEUE_DEPTH,
                "channel" => code.to_owned(), "priority" => p.as_str())
        };
        Self {
            queue_high: depth(Priority::High),
            queue_normal: depth(Priority::Normal),
            queue_low: depth(Priority::Low),
            in_flight: metrics::gauge!(m::CHANNEL_IN_FLIGHT, "channel" => code.to_owned()),
            rate_wait: metrics::histogram!(m::CHANNEL_RATE_WAIT_SECONDS, "channel" => code.to_owned()),
            request_duration: metrics::histogram!(m::PROVIDER_REQUEST_DURATION_SECONDS,
                "channel" => code.to_owned(), "type" => ty.as_str()),
            accept_to_submit: metrics::histogram!(m::ACCEPT_TO_SUBMIT_SECONDS, "channel" => code.to_owned()),
            delivered: outcome("delivered"),
            submitted: outcome("submitted"),
            errors: ByClass::new(|class| outcome(class.as_str())),
            retries: ByClass::new(|class| {
                (class != ErrorClass::Permanent).then(|| {
                    metrics::counter!(m::DELIVERY_RETRIES_TOTAL,
                        "channel" => code.to_owned(), "class" => class.as_str())
                })
            }),
        }
    }

    pub fn queue_depth(&self, p: Priority) -> &metrics::Gauge {
        match p {
            Priority::High => &self.queue_high,
            Priority::Normal => &self.queue_normal,
            Priority::Low => &self.queue_low,
        }
    }

    /// Adds a call's tally to the counters (only the ones that moved).
    pub fn record(&self, t: &Tally) {
        let add = |c: &metrics::Counter, n: u64| {
            if n > 0 {
                c.increment(n);
            }
        };
        add(&self.delivered, t.delivered);
        add(&self.submitted, t.submitted);
        for ((_, counter), (_, n)) in self.errors.iter().zip(t.errors.iter()) {
            add(counter, *n);
        }
        for ((_, counter), (_, n)) in self.retries.iter().zip(t.retries.iter()) {
            if let Some(c) = counter {
                add(c, *n);
            }
        }
    }
}
