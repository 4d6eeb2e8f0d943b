//! What the providers that can withdraw a message share: targets grouped by the id one
//! recall call names (a task or message covers several recipients), the calls run a
//! pool at a time, retried only when the provider says to try again, and a refusal turned
//! into the reason the recall report counts.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use futures_util::stream::{self, StreamExt};

use crate::providers::contract::{ErrorClass, ProviderError, RecallOutcome, RecallTarget};

/// Calls per recalled id: the first, and retries of an answer that says to try again (not
/// of a timeout: that call may have landed).
const ATTEMPTS: u32 = 3;
const BACKOFF: Duration = Duration::from_millis(250);
const MAX_WAIT: Duration = Duration::from_secs(2);

/// Delivery ids by the id one recall call names.
pub type ByCall = BTreeMap<String, Vec<i64>>;

/// Outcomes by delivery id, as [`Provider::recall`](crate::providers::contract::Provider::recall) answers.
pub type Outcomes = Vec<(i64, RecallOutcome)>;

/// The part of a provider id before `:` — providers that answer one id for a whole batch
/// record `id:recipient` per target.
pub fn before_colon(pid: &str) -> &str {
    pid.split_once(':').map_or(pid, |(id, _)| id)
}

/// Targets grouped by `call_id` of their provider id; those without one are answered
/// `no_provider_id` at once.
pub fn group(targets: Vec<RecallTarget>, call_id: impl Fn(&str) -> &str) -> (ByCall, Outcomes) {
    let mut calls = ByCall::new();
    let mut kept = Vec::new();
    for t in targets {
        match t.provider_id.as_deref().filter(|p| !p.is_empty()) {
            Some(pid) => calls
                .entry(call_id(pid).to_owned())
                .or_default()
                .push(t.delivery_id),
            None => kept.push((t.delivery_id, RecallOutcome::Kept("no_provider_id".into()))),
        }
    }
    (calls, kept)
}

/// Runs `calls`, `pool` at a time; each call's outcome is that of every target it names.
pub fn fan_out<F>(
    calls: Vec<(Vec<i64>, F)>,
    kept: Outcomes,
    pool: usize,
) -> LocalBoxFuture<'static, Outcomes>
where
    F: Future<Output = RecallOutcome> + 'static,
{
    Box::pin(async move {
        let mut out = kept;
        let calls = calls
            .into_iter()
            .map(|(ids, call)| async move { (ids, call.await) });
        let done: Vec<_> = stream::iter(calls)
            .buffer_unordered(pool.max(1))
            .collect()
            .await;
        for (ids, outcome) in done {
            out.extend(ids.into_iter().map(|id| (id, outcome.clone())));
        }
        out
    })
}

/// Calls `call` until it succeeds, fails for good, or [`ATTEMPTS`] are used.
pub async fn retrying<T, F, Fut>(call: F) -> Result<T, ProviderError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e)
                if attempt < ATTEMPTS
                    && matches!(e.class, ErrorClass::Retryable | ErrorClass::RateLimited)
                    && e.code != "timeout" =>
            {
                let wait = e.retry_after.unwrap_or(BACKOFF * attempt);
                tokio::time::sleep(wait.min(MAX_WAIT)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Why a recall was refused, as the report counts it; `too_old` is the provider's code for
/// a message past its recall window.
pub fn reason(e: &ProviderError, too_old: Option<&str>) -> String {
    match e.code.as_str() {
        code if Some(code) == too_old => "recall_window_passed".into(),
        "timeout" | "connect" | "transport" => "transport".into(),
        code => format!("provider_error:{code}"),
    }
}

/// The outcome of one recall call, a refusal logged with the id it named.
pub fn outcome(
    result: Result<(), ProviderError>,
    channel: &str,
    id: &str,
    too_old: Option<&str>,
) -> RecallOutcome {
    match result {
        Ok(()) => RecallOutcome::Withdrawn,
        Err(e) => {
            tracing::warn!(channel, id, code = %e.code, reason = %e.reason,
                "the provider refused to withdraw a message");
            RecallOutcome::Kept(reason(&e, too_old))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn target(id: i64, pid: Option<&str>) -> RecallTarget {
        RecallTarget {
            delivery_id: id,
            app_id: 1,
            provider_id: pid.map(str::to_owned),
            address: None,
        }
    }

    #[test]
    fn targets_are_grouped_by_the_id_one_call_names() {
        let targets = || {
            vec![
                target(1, Some("t1:u1")),
                target(2, Some("t1:u2")),
                target(3, Some("t2:u3")),
                target(4, None),
                target(5, Some("")),
            ]
        };
        let no_id = RecallOutcome::Kept("no_provider_id".into());
        let (calls, kept) = group(targets(), before_colon);
        let calls: Vec<_> = calls.into_iter().collect();
        assert_eq!(calls, [("t1".into(), vec![1, 2]), ("t2".into(), vec![3])]);
        assert_eq!(kept, [(4, no_id.clone()), (5, no_id)]);
        let (calls, _) = group(targets(), |p| p);
        assert_eq!(calls.len(), 3, "each provider id its own call");
    }

    #[test]
    fn refusals_map_to_reasons() {
        let too_old = Some("230009");
        let table = [
            (
                ProviderError::permanent("230009", "too old"),
                "recall_window_passed",
            ),
            (
                ProviderError::permanent("40058", "bad id"),
                "provider_error:40058",
            ),
            (ProviderError::retryable("connect", "refused"), "transport"),
            (ProviderError::retryable("timeout", "slow"), "transport"),
        ];
        for (e, want) in table {
            assert_eq!(reason(&e, too_old), want, "{e:?}");
        }
        assert_eq!(
            reason(&ProviderError::permanent("230009", "x"), None),
            "provider_error:230009"
        );
    }

    #[actix_rt::test]
    async fn calls_are_retried_when_the_provider_says_so_and_only_then() {
        let n = Cell::new(0);
        let throttled = || {
            n.set(n.get() + 1);
            let answer = if n.get() < 3 {
                Err(ProviderError::rate_limited(
                    "x",
                    "slow down",
                    Some(Duration::from_millis(1)),
                ))
            } else {
                Ok(())
            };
            async move { answer }
        };
        assert!(retrying(throttled).await.is_ok());
        assert_eq!(n.get(), 3);
        for e in [
            ProviderError::retryable("timeout", "may have landed"),
            ProviderError::permanent("1", "no"),
        ] {
            let tries = Cell::new(0);
            let r: Result<(), _> = retrying(|| {
                tries.set(tries.get() + 1);
                let e = e.clone();
                async move { Err(e) }
            })
            .await;
            assert!(r.is_err());
            assert_eq!(tries.get(), 1, "{e:?}");
        }
    }

    #[actix_rt::test]
    async fn every_target_of_a_call_gets_its_outcome() {
        let calls = vec![
            (
                vec![1, 2],
                Box::pin(async { RecallOutcome::Withdrawn }) as LocalBoxFuture<'static, _>,
            ),
            (vec![3], Box::pin(async { RecallOutcome::Kept("x".into()) })),
        ];
        let mut out = fan_out(
            calls,
            vec![(4, RecallOutcome::Kept("no_provider_id".into()))],
            1,
        )
        .await;
        out.sort_by_key(|o| o.0);
        assert_eq!(
            out,
            [
                (1, RecallOutcome::Withdrawn),
                (2, RecallOutcome::Withdrawn),
                (3, RecallOutcome::Kept("x".into())),
                (4, RecallOutcome::Kept("no_provider_id".into())),
            ]
        );
    }
}
