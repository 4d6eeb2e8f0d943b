//! `AppCallbacks`: posts the events in `callback_outbox` to the apps' callback URLs, signed
//! like Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature` with the
//! endpoint's `whsec_` secret), and retries failures with exponential backoff.
//!
//! Events are written to the outbox in the same transaction as what they report, so
//! nothing is lost across a crash; an event is claimed for a lease while it is posted and
//! deleted once the endpoint answers 2xx, so it may be posted twice (its `webhook-id`
//! stays the same) but never dropped before `MAX_ATTEMPTS`.

use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;

use crate::metrics as m;
use crate::providers::contract::SettingsError;
use crate::providers::webhook::{secret_key, sign};
use crate::store::app_callbacks::Due;
use crate::store::Store;

/// How often the outbox is looked at when it was empty.
const POLL: Duration = Duration::from_millis(200);
/// Events claimed (and posted concurrently) at once.
const BATCH: i64 = 64;
/// How long a claimed event is left alone by other pollers.
const LEASE: Duration = Duration::from_secs(60);
/// Posts before an event is given up.
const MAX_ATTEMPTS: i16 = 12;
/// The longest wait between two posts of an event.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct AppCallbacks {
    store: Store,
    client: Option<reqwest::Client>,
    busy: bool,
}

impl AppCallbacks {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            client: None,
            busy: false,
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        if self.busy {
            return;
        }
        self.busy = true;
        let store = self.store.clone();
        let work = async move {
            let due = store.claim_callbacks(BATCH, LEASE).await?;
            let n = due.len();
            let results = join_all(due.into_iter().map(|d| post(&client, d))).await;
            let mut done = Vec::new();
            let mut retries = Vec::new();
            for (d, ok) in results {
                let attempts = d.attempts.saturating_add(1);
                let outcome = if ok {
                    done.push(d.id);
                    "delivered"
                } else if d.secret.is_none() {
                    done.push(d.id);
                    "dropped"
                } else if attempts >= MAX_ATTEMPTS {
                    tracing::warn!(url = %d.url, event = %d.event_id, attempts,
                        "callback given up after its last attempt");
                    done.push(d.id);
                    "dropped"
                } else {
                    retries.push((d.id, attempts, backoff(attempts)));
                    "retried"
                };
                metrics::counter!(m::CALLBACKS_TOTAL, "outcome" => outcome).increment(1);
            }
            store.delete_callbacks(&done).await?;
            store.retry_callbacks(&retries).await?;
            Ok::<usize, crate::store::StoreError>(n)
        };
        ctx.spawn(work.into_actor(self).map(|res, act, ctx| {
            act.busy = false;
            match res {
                // A full batch: there may be more due now.
                Ok(n) if n as i64 == BATCH => act.poll(ctx),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "callback outbox unavailable"),
            }
        }));
    }
}

/// The wait before the next post after `attempts` failed ones: 1 s doubling, ±20 %.
fn backoff(attempts: i16) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(0);
    Duration::from_secs(1)
        .saturating_mul(1u32 << exp)
        .min(MAX_BACKOFF)
        .mul_f64(rand::random_range(0.8..1.2))
}

/// Posts one event; answers whether the endpoint took it (2xx).
async fn post(client: &reqwest::Client, d: Due) -> (Due, bool) {
    let Some(key) = d.secret.as_deref().and_then(|s| secret_key(s).ok()) else {
        return (d, false);
    };
    let ts = chrono::Utc::now().timestamp();
    let signature = sign(&key, &d.event_id, ts, d.body.as_bytes());
    let res = client
        .post(&d.url)
        .header("content-type", "application/json")
        .header("webhook-id", &d.event_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(d.body.clone())
        .send()
        .await;
    let ok = match res {
        Ok(r) => {
            let ok = r.status().is_success();
            let _ = crate::providers::support::http::read_limited(r, 64 * 1024).await;
            ok
        }
        Err(e) => {
            tracing::debug!(url = %d.url, error = %e, "callback post failed");
            false
        }
    };
    (d, ok)
}

/// Whether `url` can be a callback endpoint: absolute http or https with a host.
pub fn is_callback_url(url: &str) -> bool {
    url.len() <= 2048
        && reqwest::Url::parse(url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// Why a test event got no answer.
#[derive(Debug, thiserror::Error)]
pub enum TestPostError {
    #[error(transparent)]
    Secret(#[from] SettingsError),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// Posts a signed `test` event to an endpoint (`POST /v1/callbacks/test`): its HTTP status,
/// or why no answer came.
pub async fn post_test(url: &str, secret: &str) -> Result<u16, TestPostError> {
    crate::providers::support::tls::init();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let now = chrono::Utc::now();
    let id = format!("test_{}", now.timestamp_millis());
    let body = serde_json::json!({
        "type": "test",
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": {},
    })
    .to_string();
    let key = secret_key(secret)?;
    let res = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", now.timestamp().to_string())
        .header(
            "webhook-signature",
            sign(&key, &id, now.timestamp(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await?;
    Ok(res.status().as_u16())
}

impl Actor for AppCallbacks {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        crate::providers::support::tls::init();
        match reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => self.client = Some(c),
            Err(e) => {
                tracing::error!(error = %e, "cannot build the callback HTTP client");
                return;
            }
        }
        ctx.run_interval(POLL, |act, ctx| act.poll(ctx));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b1 = backoff(1);
        assert!(b1 >= Duration::from_millis(800) && b1 <= Duration::from_millis(1200));
        let b4 = backoff(4);
        assert!(b4 >= Duration::from_millis(6400) && b4 <= Duration::from_millis(9600));
        assert!(backoff(30) <= MAX_BACKOFF.mul_f64(1.2));
    }
}
