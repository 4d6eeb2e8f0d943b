//! What a provider's answer means for one delivery: a pure decision, taken for every
//! target of every call the sender makes, and tested by a table below.
//!
//! * accepted → the delivery leaves `queued` as `delivered` (acceptance is the delivery)
//!   or `submitted` (a receipt is to come);
//! * rate limited → back to the front of its queue with no attempt used (throttling is not
//!   the delivery's fault), and the channel pauses;
//! * retryable or auth → tried again after a wait, until `max_attempts` are used;
//! * permanent, or out of attempts → failed with the provider's code.

use std::time::Duration;

use crate::domain::DeliveryState;
use crate::providers::contract::{Attempt, ErrorClass, ProviderError};

/// What becomes of a delivery after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The provider took it; it leaves `queued` in `state`.
    Sent {
        state: DeliveryState,
        provider_id: Option<String>,
        /// Remember (channel, provider id) → delivery for the receipts to come.
        expect_receipt: Option<String>,
        /// The provider ids of the parts of a delivery sent in several, each with its
        /// own receipt.
        segments: Vec<String>,
    },
    /// Try again after the wait, counting this attempt: the provider's own wait when it
    /// named one, else the channel's backoff for `attempts`.
    Retry {
        error: ProviderError,
        after: Option<Duration>,
    },
    /// The provider is throttling: back to the front of the queue, no attempt used, and
    /// the channel pauses for `pause`.
    Throttled {
        error: ProviderError,
        pause: Duration,
    },
    /// Final: the delivery fails with the provider's code.
    Fail { error: ProviderError },
}

/// The pause after a throttle that named no wait.
pub const DEFAULT_THROTTLE: Duration = Duration::from_secs(1);

/// Decides what one attempt means. `attempts` counts this one; `max_attempts` is the
/// channel's bound. `None`: the provider client gave no result for this target.
pub fn settle(attempt: Option<Attempt>, attempts: i16, max_attempts: i16) -> Settlement {
    let attempt = attempt.unwrap_or_else(|| {
        Attempt::Failed(ProviderError::retryable(
            "no_result",
            "the provider client gave no result for this recipient",
        ))
    });
    match attempt {
        Attempt::Accepted {
            provider_id,
            delivered,
            receipts,
            segments,
        } => Settlement::Sent {
            state: if delivered {
                DeliveryState::Delivered
            } else {
                DeliveryState::Submitted
            },
            expect_receipt: if receipts { provider_id.clone() } else { None },
            segments: if receipts { segments } else { Vec::new() },
            provider_id,
        },
        Attempt::Failed(error) => match error.class {
            ErrorClass::Permanent => Settlement::Fail { error },
            ErrorClass::RateLimited => Settlement::Throttled {
                pause: error.retry_after.unwrap_or(DEFAULT_THROTTLE),
                error,
            },
            ErrorClass::Retryable | ErrorClass::Auth if attempts >= max_attempts => {
                Settlement::Fail { error }
            }
            ErrorClass::Retryable | ErrorClass::Auth => Settlement::Retry {
                after: error.retry_after,
                error,
            },
        },
    }
}

/// Providers answer in the order of the batch's targets; anything else is matched by
/// delivery id. One result (or `None`) per target, in the targets' order.
pub fn in_target_order<T>(
    targets: &[T],
    id: impl Fn(&T) -> i64,
    results: Vec<(i64, Attempt)>,
) -> Vec<Option<Attempt>> {
    let in_order =
        results.len() == targets.len() && results.iter().zip(targets).all(|(r, t)| r.0 == id(t));
    if in_order {
        return results.into_iter().map(|(_, a)| Some(a)).collect();
    }
    let mut by_id: std::collections::HashMap<i64, Attempt> = results.into_iter().collect();
    targets.iter().map(|t| by_id.remove(&id(t))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(class: ErrorClass, retry_after: Option<u64>) -> Option<Attempt> {
        let mut e = ProviderError::new(class, "c", "r");
        e.retry_after = retry_after.map(Duration::from_secs);
        Some(Attempt::Failed(e))
    }

    /// What, the attempt, attempts used with it, the channel's maximum, what it settles as.
    type Row = (&'static str, Option<Attempt>, i16, i16, Kind);
    type Kind = (&'static str, Option<u64>);

    /// What kind of settlement, with its wait, in a few characters per row.
    fn kind(s: &Settlement) -> Kind {
        match s {
            Settlement::Sent { state, .. } => (state.as_str(), None),
            Settlement::Retry { after, .. } => ("retry", after.map(|d| d.as_secs())),
            Settlement::Throttled { pause, .. } => ("throttled", Some(pause.as_secs())),
            Settlement::Fail { .. } => ("fail", None),
        }
    }

    #[test]
    fn every_answer_settles_as_the_table_says() {
        let sub = |parts: Vec<&str>| {
            Some(Attempt::submitted_in_parts(
                parts.into_iter().map(String::from).collect(),
            ))
        };
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            // what,                         attempt,                                  n, max, expected
            ("delivered on acceptance",      Some(Attempt::delivered(None)),           1, 5, ("delivered", None)),
            ("submitted, receipt to come",   Some(Attempt::submitted("p1".into())),    1, 5, ("submitted", None)),
            ("submitted in parts",           sub(vec!["a", "b"]),                      1, 5, ("submitted", None)),
            ("retryable, attempts left",     failed(ErrorClass::Retryable, None),      1, 5, ("retry", None)),
            ("retryable, provider's wait",   failed(ErrorClass::Retryable, Some(7)),   2, 5, ("retry", Some(7))),
            ("retryable, last attempt",      failed(ErrorClass::Retryable, None),      5, 5, ("fail", None)),
            ("auth, attempts left",          failed(ErrorClass::Auth, None),           1, 5, ("retry", None)),
            ("auth, out of attempts",        failed(ErrorClass::Auth, None),           9, 5, ("fail", None)),
            ("permanent at once",            failed(ErrorClass::Permanent, None),      1, 5, ("fail", None)),
            ("throttled, no wait named",     failed(ErrorClass::RateLimited, None),    1, 5, ("throttled", Some(1))),
            ("throttled, Retry-After",       failed(ErrorClass::RateLimited, Some(30)),1, 5, ("throttled", Some(30))),
            ("throttled past max attempts",  failed(ErrorClass::RateLimited, None),    9, 5, ("throttled", Some(1))),
            ("no result from the client",    None,                                     1, 5, ("retry", None)),
            ("no result, last attempt",      None,                                     1, 1, ("fail", None)),
        ];
        for (what, attempt, n, max, expected) in table {
            assert_eq!(kind(&settle(attempt, n, max)), expected, "{what}");
        }
    }

    #[test]
    fn receipts_are_expected_only_when_the_provider_sends_them() {
        let Settlement::Sent {
            expect_receipt,
            segments,
            provider_id,
            ..
        } = settle(
            Some(Attempt::submitted_in_parts(vec!["a".into(), "b".into()])),
            1,
            5,
        )
        else {
            panic!("not sent")
        };
        assert_eq!(provider_id.as_deref(), Some("a,b"));
        assert_eq!(expect_receipt.as_deref(), Some("a,b"));
        assert_eq!(segments, vec!["a".to_owned(), "b".to_owned()]);
        let Settlement::Sent { expect_receipt, .. } =
            settle(Some(Attempt::delivered(Some("x".into()))), 1, 5)
        else {
            panic!("not sent")
        };
        assert_eq!(expect_receipt, None);
    }

    #[test]
    fn results_are_matched_to_targets_in_any_order() {
        let ok = || Attempt::delivered(None);
        let got = in_target_order(&[1, 2, 3], |id| *id, vec![(3, ok()), (1, ok())]);
        assert_eq!(
            got.iter().map(Option::is_some).collect::<Vec<_>>(),
            vec![true, false, true]
        );
        let got = in_target_order(&[1, 2], |id| *id, vec![(1, ok()), (2, ok())]);
        assert!(got.iter().all(Option::is_some));
    }
}
