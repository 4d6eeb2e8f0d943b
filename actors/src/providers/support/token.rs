//! Access-token cache for providers that issue tokens (DingTalk, WeCom, Feishu, WeChat).
//!
//! One token per credential, shared by every channel that uses the same credential on
//! the same endpoint, whichever arbiter it runs on: one refresher at a time (callers
//! that arrive during a refresh wait for it and take its result), refreshed ahead of
//! expiry, and refreshed when the provider says the token is invalid or expired — but
//! only if the token that failed is still the current one, so a burst of failures caused
//! by one expired token refreshes it once. WeChat invalidates the previous token on every
//! fetch, which makes the single refresher a correctness matter there, not just an
//! economy.

use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures_util::future::LocalBoxFuture;
use sha2::{Digest, Sha256};

use crate::metrics as m;
use crate::providers::contract::{ErrorClass, ProviderError};

/// Fetches a fresh token: (token, lifetime).
pub type Fetch = Rc<dyn Fn() -> LocalBoxFuture<'static, Result<(String, Duration), ProviderError>>>;

/// A failed fetch is answered to the callers that waited for it for this long, instead
/// of each of them fetching again.
const FAILURE_HOLD: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    /// The token and when to refresh it.
    token: Option<(String, Instant)>,
    /// The last fetch failed: when, and why.
    failed: Option<(Instant, ProviderError)>,
}

/// One credential's token, shared across channels and threads.
#[derive(Default)]
struct Slot {
    state: Mutex<State>,
    /// Held while fetching: the single refresher.
    refresh: tokio::sync::Mutex<()>,
}

static SLOTS: LazyLock<Mutex<HashMap<String, Weak<Slot>>>> = LazyLock::new(Default::default);

fn slot_for(credential: &str) -> Arc<Slot> {
    let mut slots = SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(slot) = slots.get(credential).and_then(Weak::upgrade) {
        return slot;
    }
    slots.retain(|_, w| w.strong_count() > 0);
    let slot = Arc::new(Slot::default());
    slots.insert(credential.to_owned(), Arc::downgrade(&slot));
    slot
}

/// The key a credential's token is shared under: the provider, its endpoint, the app's
/// key and a digest of its secret (the secret itself is not kept here).
pub fn credential(provider: &str, base_url: &str, key: &str, secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = format!("{provider}|{base_url}|{key}|");
    for b in &digest[..16] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

pub struct TokenCache {
    channel: String,
    fetch: Fetch,
    slot: Arc<Slot>,
}

impl TokenCache {
    /// `credential`: see [`credential`]; channels passing the same one share the token.
    pub fn new(channel: &str, credential: &str, fetch: Fetch) -> Rc<Self> {
        Rc::new(Self {
            channel: channel.to_owned(),
            fetch,
            slot: slot_for(credential),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.slot
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn fresh(&self, now: Instant) -> Option<String> {
        match &self.state().token {
            Some((token, refresh_at)) if *refresh_at > now => Some(token.clone()),
            _ => None,
        }
    }

    /// A failure that happened while this caller waited for the refresher.
    fn recent_failure(&self, since: Instant) -> Option<ProviderError> {
        match &self.state().failed {
            Some((at, e)) if *at >= since && at.elapsed() < FAILURE_HOLD => Some(e.clone()),
            _ => None,
        }
    }

    /// The current token, fetched if there is none or it is close to expiry.
    pub async fn get(&self) -> Result<String, ProviderError> {
        if let Some(token) = self.fresh(Instant::now()) {
            return Ok(token);
        }
        let waited_from = Instant::now();
        let _refresher = self.slot.refresh.lock().await;
        // Another caller may have refreshed (or failed to) while this one waited.
        if let Some(token) = self.fresh(Instant::now()) {
            return Ok(token);
        }
        if let Some(e) = self.recent_failure(waited_from) {
            return Err(e);
        }
        self.fetch_now().await
    }

    /// The provider refused `stale`: fetch a new token unless that already happened.
    pub async fn refresh(&self, stale: &str) -> Result<String, ProviderError> {
        let waited_from = Instant::now();
        let _refresher = self.slot.refresh.lock().await;
        if let Some((token, _)) = &self.state().token {
            if token != stale {
                return Ok(token.clone());
            }
        }
        if let Some(e) = self.recent_failure(waited_from) {
            return Err(e);
        }
        self.fetch_now().await
    }

    /// Fetches a token; the caller holds the refresher.
    async fn fetch_now(&self) -> Result<String, ProviderError> {
        let result = (self.fetch)().await;
        let mut state = self.state();
        match result {
            Ok((token, ttl)) => {
                metrics::counter!(m::TOKEN_REFRESHES_TOTAL, "channel" => self.channel.clone(), "outcome" => "ok")
                    .increment(1);
                // Refresh ahead: a tenth of the lifetime, at most five minutes early.
                let early = (ttl / 10).min(Duration::from_secs(300));
                state.token = Some((token.clone(), Instant::now() + ttl.saturating_sub(early)));
                state.failed = None;
                Ok(token)
            }
            Err(e) => {
                metrics::counter!(m::TOKEN_REFRESHES_TOTAL, "channel" => self.channel.clone(), "outcome" => "error")
                    .increment(1);
                tracing::warn!(channel = %self.channel, code = %e.code, reason = %e.reason, "token fetch failed");
                state.token = None;
                state.failed = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }
}

/// Calls `call` with the current token; on an auth error, refreshes the token once and
/// calls again.
pub async fn with_token<T, F, Fut>(cache: &TokenCache, call: F) -> Result<T, ProviderError>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let token = cache.get().await?;
    match call(token.clone()).await {
        Err(e) if e.class == ErrorClass::Auth => {
            let fresh = cache.refresh(&token).await?;
            call(fresh).await
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn counting() -> (Fetch, Rc<Cell<u32>>) {
        let n = Rc::new(Cell::new(0));
        let n2 = n.clone();
        let fetch: Fetch = Rc::new(move || {
            let n = n2.clone();
            Box::pin(async move {
                n.set(n.get() + 1);
                tokio::task::yield_now().await;
                Ok((format!("t{}", n.get()), Duration::from_secs(7200)))
            })
        });
        (fetch, n)
    }

    #[actix_rt::test]
    async fn concurrent_callers_share_one_fetch_and_a_stale_token_refreshes_once() {
        let (fetch, n) = counting();
        let cache = TokenCache::new("c", "test|one", fetch);
        let (a, b) = tokio::join!(cache.get(), cache.get());
        assert_eq!(
            (a.unwrap_or_default(), b.unwrap_or_default()),
            ("t1".into(), "t1".into())
        );
        assert_eq!(n.get(), 1);
        let (a, b) = tokio::join!(cache.refresh("t1"), cache.refresh("t1"));
        assert_eq!(
            (a.unwrap_or_default(), b.unwrap_or_default()),
            ("t2".into(), "t2".into())
        );
        assert_eq!(n.get(), 2);
        // A refusal of an older token does not fetch again.
        assert_eq!(cache.refresh("t1").await.unwrap_or_default(), "t2");
        assert_eq!(n.get(), 2);
    }

    #[actix_rt::test]
    async fn channels_with_the_same_credential_share_one_token() {
        let (fetch_a, n_a) = counting();
        let (fetch_b, n_b) = counting();
        let (fetch_c, n_c) = counting();
        let same = credential("wecom", "https://qyapi.weixin.qq.com", "corp", "s3cret");
        let a = TokenCache::new("a", &same, fetch_a);
        let b = TokenCache::new("b", &same, fetch_b);
        let c = TokenCache::new(
            "c",
            &credential("wecom", "https://qyapi.weixin.qq.com", "corp", "other"),
            fetch_c,
        );
        let (ta, tb, tc) = tokio::join!(a.get(), b.get(), c.get());
        assert_eq!(ta.unwrap_or_default(), tb.unwrap_or_default());
        assert!(tc.is_ok());
        assert_eq!(
            n_a.get() + n_b.get(),
            1,
            "one fetch for the shared credential"
        );
        assert_eq!(n_c.get(), 1);
        // A refusal seen by one channel refreshes the token for both, once.
        let stale = a.get().await.unwrap_or_default();
        let (ra, rb) = tokio::join!(a.refresh(&stale), b.refresh(&stale));
        assert_eq!(ra.unwrap_or_default(), rb.unwrap_or_default());
        assert_eq!(n_a.get() + n_b.get(), 2);
    }

    #[actix_rt::test]
    async fn callers_waiting_on_a_failed_fetch_share_its_error() {
        let n = Rc::new(Cell::new(0));
        let n2 = n.clone();
        let fetch: Fetch = Rc::new(move || {
            let n = n2.clone();
            Box::pin(async move {
                n.set(n.get() + 1);
                tokio::task::yield_now().await;
                Err(ProviderError::retryable("down", "token endpoint down"))
            })
        });
        let cache = TokenCache::new("f", "test|failing", fetch);
        let (a, b, c) = tokio::join!(cache.get(), cache.get(), cache.get());
        assert!(a.is_err() && b.is_err() && c.is_err());
        assert_eq!(n.get(), 1);
    }
}
