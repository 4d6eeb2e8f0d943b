//! JPush v3 app push: `POST /v3/push` with up to 1000 registration ids per call, HTTP Basic
//! auth (`app_key:master_secret`, no token). Errors are non-200 answers with
//! `{"error":{"code","message"}}`; 2002 / HTTP 429 is throttling with
//! `X-Rate-Limit-Reset`. Delivery is pulled from the report API
//! (`POST /v3/status/message`, see `poll.rs`): 0 delivered, 1 not delivered, 2 not a
//! registration id of the app.
//!
//! Withdraw is `DELETE /v3/push/{msg_id}`: one call per push, for all its registration
//! ids. It stops what JPush has not delivered yet and removes shown notifications not yet
//! clicked (where the device's SDK can). JPush's time limit for it is unconfirmed.

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};

use super::context::ProviderContext;
use super::contract::{
    all, Attempt, Batch, BuildError, Provider, ProviderError, RecallOutcome, RecallTarget,
};
use super::support::http::{call, default_timeout_ms, http_client, Answer};
use super::support::poll::{provider_id, Answers, Poller, Query};
use super::support::recall;
use crate::domain::DeliveryState;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "default_base")]
    pub base_url: String,
    #[serde(default = "default_report")]
    pub report_url: String,
    pub app_key: String,
    pub master_secret: String,
    /// Send iOS notifications to the production APNs environment.
    #[serde(default)]
    pub apns_production: bool,
    /// Offline storage time in seconds (JPush default one day).
    #[serde(default)]
    pub time_to_live: Option<u64>,
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_base() -> String {
    "https://api.jpush.cn".into()
}

fn default_report() -> String {
    "https://report.jpush.cn".into()
}

fn default_poll_ms() -> u64 {
    5000
}

/// Classifies a JPush answer that is not a success.
pub fn classify(a: &Answer) -> ProviderError {
    let code = a
        .body
        .pointer("/error/code")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let msg = a.errmsg();
    let c = if code == 0 {
        a.status.as_u16().to_string()
    } else {
        code.to_string()
    };
    match (code, a.status.as_u16()) {
        (2002, _) | (_, 429) => {
            ProviderError::rate_limited(c, msg, a.seconds("x-rate-limit-reset"))
        }
        (1000 | 1030, _) => ProviderError::retryable(c, msg),
        (_, s) if s >= 500 => ProviderError::retryable(c, msg),
        _ => ProviderError::permanent(c, msg),
    }
}

pub struct Jpush {
    client: reqwest::Client,
    base: Rc<str>,
    key: Rc<str>,
    secret: Rc<str>,
    apns_production: bool,
    ttl: Option<u64>,
    poller: Rc<Poller>,
    channel: Rc<str>,
    /// Withdraw calls in flight at once: the channel's pool size.
    pool: usize,
}

impl Jpush {
    pub fn new(ctx: &ProviderContext, s: &Settings) -> Result<Self, BuildError> {
        let client = http_client(ctx, Duration::from_millis(s.timeout_ms))?;
        let report: Rc<str> = s.report_url.trim_end_matches('/').into();
        let query: Query = {
            let client = client.clone();
            let (key, secret) = (s.app_key.clone(), s.master_secret.clone());
            Rc::new(move |task: String, rids: Vec<String>| {
                let req = client
                    .post(format!("{report}/v3/status/message"))
                    .basic_auth(&key, Some(&secret))
                    .json(&json!({"msg_id": number_or_string(&task), "registration_ids": rids}));
                Box::pin(async move {
                    let a = call(req).await?;
                    if !a.status.is_success() {
                        return Err(classify(&a));
                    }
                    Ok(statuses(&a.body))
                })
            })
        };
        let poller = Poller::start(ctx, Duration::from_millis(s.poll_interval_ms), query);
        Ok(Self {
            client,
            base: s.base_url.trim_end_matches('/').into(),
            key: s.app_key.as_str().into(),
            secret: s.master_secret.as_str().into(),
            apns_production: s.apns_production,
            ttl: s.time_to_live,
            poller: Rc::new(poller),
            channel: ctx.code.as_str().into(),
            pool: ctx.pool_size.max(1),
        })
    }
}

/// JPush ids are numbers in the API but answered as strings: send them back as numbers
/// when they are.
fn number_or_string(id: &str) -> Value {
    id.parse::<i64>().map_or_else(|_| json!(id), |n| json!(n))
}

fn statuses(body: &Value) -> Answers {
    let Some(map) = body.as_object() else {
        return Vec::new();
    };
    map.iter()
        .filter_map(|(rid, v)| {
            let s = v.get("status")?.as_i64()?;
            let (state, code) = match s {
                0 => (DeliveryState::Delivered, None),
                1 => (DeliveryState::Undelivered, Some("not_delivered")),
                2 => (DeliveryState::Undelivered, Some("not_in_app")),
                3 => (DeliveryState::Undelivered, Some("not_a_target")),
                // 4: a system error at JPush; ask again later.
                _ => return None,
            };
            Some((rid.clone(), state, code.map(str::to_owned)))
        })
        .collect()
}

/// `{base}/v3/push/{msg_id}`, the id escaped as one path segment.
fn push_url(base: &str, msg_id: &str) -> Option<reqwest::Url> {
    let mut url = reqwest::Url::parse(&format!("{base}/v3/push")).ok()?;
    url.path_segments_mut().ok()?.push(msg_id);
    Some(url)
}

impl Jpush {
    /// Withdraws one push from all its registration ids.
    fn withdraw(&self, msg_id: String) -> impl Future<Output = RecallOutcome> + 'static {
        let client = self.client.clone();
        let url = push_url(&self.base, &msg_id);
        let (key, secret) = (self.key.clone(), self.secret.clone());
        let channel = self.channel.clone();
        async move {
            let Some(url) = url else {
                return RecallOutcome::Kept("invalid_provider_id".into());
            };
            let result = recall::retrying(|| {
                let req = client.delete(url.clone()).basic_auth(&*key, Some(&*secret));
                async move {
                    let a = call(req).await?;
                    if a.status.is_success() {
                        Ok(())
                    } else {
                        Err(classify(&a))
                    }
                }
            })
            .await;
            recall::outcome(result, &channel, &msg_id, None)
        }
    }
}

impl Provider for Jpush {
    fn max_batch(&self) -> usize {
        1000
    }

    /// One call per push, at most the channel's pool size at once; each push's outcome is
    /// that of every target it went to.
    fn recall(
        &self,
        targets: Vec<RecallTarget>,
    ) -> LocalBoxFuture<'static, Vec<(i64, RecallOutcome)>> {
        let (groups, kept) = recall::group(targets, recall::before_colon);
        let calls = groups
            .into_iter()
            .map(|(id, ids)| (ids, self.withdraw(id)))
            .collect();
        recall::fan_out(calls, kept, self.pool)
    }

    fn send(&self, batch: Batch) -> LocalBoxFuture<'static, Vec<(i64, Attempt)>> {
        let c = &batch.content;
        let alert = c
            .get("alert")
            .or_else(|| c.get("text"))
            .cloned()
            .unwrap_or(Value::Null);
        let title = c.get("title").cloned().unwrap_or(Value::Null);
        let extras = c.get("extras").cloned().unwrap_or_else(|| json!({}));
        let rids: Vec<&str> = batch.targets.iter().map(|t| t.address.as_str()).collect();
        let mut options = json!({
            "sendno": (batch.message_pk.0 % 1_000_000_000).max(1),
            "apns_production": self.apns_production,
        });
        if let Some(ttl) = self.ttl {
            options["time_to_live"] = json!(ttl);
        }
        let body = json!({
            "platform": "all",
            "audience": {"registration_id": rids},
            "notification": {
                "alert": alert,
                "android": {"alert": alert, "title": title, "extras": extras},
                "ios": {"alert": alert, "extras": extras},
            },
            "options": options,
        });
        let req = self
            .client
            .post(format!("{}/v3/push", self.base))
            .basic_auth(&*self.key, Some(&*self.secret))
            .json(&body);
        let poller = self.poller.clone();
        Box::pin(async move {
            if alert.is_null() {
                return all(
                    &batch,
                    Attempt::Failed(ProviderError::permanent(
                        "no_content",
                        "jpush content needs `alert`",
                    )),
                );
            }
            let a = match call(req).await {
                Ok(a) => a,
                Err(e) => return all(&batch, Attempt::Failed(e)),
            };
            if !a.status.is_success() {
                return all(&batch, Attempt::Failed(classify(&a)));
            }
            let msg_id = match &a.body["msg_id"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => {
                    return all(
                        &batch,
                        Attempt::Failed(ProviderError::retryable(
                            "no_msg_id",
                            "push answered no msg_id",
                        )),
                    )
                }
            };
            poller.track(
                &msg_id,
                batch.targets.iter().map(|t| t.address.clone()).collect(),
            );
            batch
                .targets
                .iter()
                .map(|t| {
                    (
                        t.delivery_id,
                        Attempt::submitted(provider_id(&msg_id, &t.address)),
                    )
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withdraw_refusals_map_to_reasons() {
        let a = Answer {
            status: reqwest::StatusCode::BAD_REQUEST,
            headers: reqwest::header::HeaderMap::new(),
            body: json!({"error": {"code": 1003, "message": "msgid don't exist"}}),
        };
        assert_eq!(recall::reason(&classify(&a), None), "provider_error:1003");
        assert_eq!(
            recall::reason(&ProviderError::retryable("connect", "refused"), None),
            "transport"
        );
    }
}
