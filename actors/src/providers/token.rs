//! Access-token cache for providers that issue tokens (DingTalk, WeCom, Feishu, WeChat).
//!
//! One cache per channel (so per credential): one refresher at a time (concurrent callers
//! share the refresh in progress), refreshed ahead of expiry, and refreshed when the
//! provider says the token is invalid or expired — but only if the token that failed is
//! still the current one, so a burst of failures caused by one expired token refreshes it
//! once. WeChat invalidates the previous token on every fetch, which makes the single
//! refresher a correctness matter there, not just an economy.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::future::{LocalBoxFuture, Shared};
use futures_util::FutureExt;

use crate::channel::{ErrorClass, ProviderError};
use crate::metrics as m;

/// Fetches a fresh token: (token, lifetime).
pub type Fetch = Rc<dyn Fn() -> LocalBoxFuture<'static, Result<(String, Duration), ProviderError>>>;

type Pending = Shared<LocalBoxFuture<'static, Result<String, ProviderError>>>;

struct State {
    token: Option<(String, Instant)>,
    pending: Option<Pending>,
}

pub struct TokenCache {
    channel: String,
    fetch: Fetch,
    state: RefCell<State>,
}

impl TokenCache {
    pub fn new(channel: &str, fetch: Fetch) -> Rc<Self> {
        Rc::new(Self {
            channel: channel.to_owned(),
            fetch,
            state: RefCell::new(State {
                token: None,
                pending: None,
            }),
        })
    }

    /// The current token, fetched if there is none or it is close to expiry.
    pub async fn get(self: &Rc<Self>) -> Result<String, ProviderError> {
        let now = Instant::now();
        let fut = {
            let state = self.state.borrow();
            if let Some((token, refresh_at)) = &state.token {
                if *refresh_at > now {
                    return Ok(token.clone());
                }
            }
            state.pending.clone()
        };
        match fut {
            Some(f) => f.await,
            None => self.start_refresh().await,
        }
    }

    /// The provider refused `stale`: fetch a new token unless that already happened.
    pub async fn refresh(self: &Rc<Self>, stale: &str) -> Result<String, ProviderError> {
        let fut = {
            let mut state = self.state.borrow_mut();
            if let Some((token, _)) = &state.token {
                if token != stale {
                    return Ok(token.clone());
                }
            }
            state.token = None;
            state.pending.clone()
        };
        match fut {
            Some(f) => f.await,
            None => self.start_refresh().await,
        }
    }

    fn start_refresh(self: &Rc<Self>) -> Pending {
        let me = self.clone();
        let fetch = self.fetch.clone();
        let fut: LocalBoxFuture<'static, Result<String, ProviderError>> = Box::pin(async move {
            let result = fetch().await;
            let mut state = me.state.borrow_mut();
            state.pending = None;
            match result {
                Ok((token, ttl)) => {
                    metrics::counter!(m::TOKEN_REFRESHES_TOTAL, "channel" => me.channel.clone(), "outcome" => "ok")
                        .increment(1);
                    // Refresh ahead: a tenth of the lifetime, at most five minutes early.
                    let early = (ttl / 10).min(Duration::from_secs(300));
                    state.token = Some((token.clone(), Instant::now() + ttl.saturating_sub(early)));
                    Ok(token)
                }
                Err(e) => {
                    metrics::counter!(m::TOKEN_REFRESHES_TOTAL, "channel" => me.channel.clone(), "outcome" => "error")
                        .increment(1);
                    tracing::warn!(channel = %me.channel, code = %e.code, reason = %e.reason, "token fetch failed");
                    Err(e)
                }
            }
        });
        let shared = fut.shared();
        self.state.borrow_mut().pending = Some(shared.clone());
        shared
    }
}

/// Calls `call` with the current token; on an auth error, refreshes the token once and
/// calls again.
pub async fn with_token<T, F, Fut>(cache: &Rc<TokenCache>, call: F) -> Result<T, ProviderError>
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
        let cache = TokenCache::new("c", fetch);
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
}
