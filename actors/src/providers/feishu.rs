//! Feishu / Lark bot messages: `POST /open-apis/im/v1/messages?receive_id_type=…`, one
//! recipient per call, the tenant access token from
//! `/open-apis/auth/v3/tenant_access_token/internal` cached per channel.
//!
//! Each call carries `uuid` = the delivery id: Feishu sends at most one message per uuid
//! an hour, which makes a re-send after a crash safe. Acceptance is the delivery (Feishu
//! has no delivery receipt); the `im.message.message_read_v1` event later marks it read.
//! Business errors are HTTP 400 with a body `code`; gateway throttling is HTTP 429 with
//! code 99991400 and `x-ogw-ratelimit-reset`.
//!
//! Recall is `DELETE /open-apis/im/v1/messages/{message_id}` (tenant token), one call per
//! message, within the tenant's limit (24 h by default): past it Feishu answers 230009.

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};

use super::context::ProviderContext;
use super::contract::{
    all, Attempt, Batch, BuildError, ErrorClass, Inbound, InboundError, InboundRequest, Provider,
    ProviderError, ProviderReceipt, RecallOutcome, RecallTarget, Reply,
};
use super::support::http::{
    call, content_text, default_timeout_ms, http_client, token_answer, Answer,
};
use super::support::recall;
use super::support::token::{credential, with_token, Fetch, TokenCache};
use crate::domain::DeliveryState;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "default_base")]
    pub base_url: String,
    pub app_id: String,
    pub app_secret: String,
    #[serde(default = "default_id_type")]
    pub receive_id_type: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_base() -> String {
    "https://open.feishu.cn".into()
}

fn default_id_type() -> String {
    "open_id".into()
}

/// Classifies a Feishu answer that is not a success.
pub fn classify(a: &Answer) -> ProviderError {
    let code = a.errcode();
    let msg = a.errmsg();
    let c = if code == 0 {
        a.status.as_u16().to_string()
    } else {
        code.to_string()
    };
    match code {
        99991663 | 99991661 | 99991664 => ProviderError::new(ErrorClass::Auth, c, msg),
        99991400 | 230020 | 11232 => {
            ProviderError::rate_limited(c, msg, a.seconds("x-ogw-ratelimit-reset"))
        }
        230049 => ProviderError::retryable(c, msg),
        0 if a.status.as_u16() == 429 => {
            ProviderError::rate_limited(c, msg, a.seconds("x-ogw-ratelimit-reset"))
        }
        0 if a.status.is_server_error() => ProviderError::retryable(c, msg),
        _ if a.status.is_server_error() => ProviderError::retryable(c, msg),
        _ => ProviderError::permanent(c, msg),
    }
}

pub struct Feishu {
    client: reqwest::Client,
    base: Rc<str>,
    id_type: Rc<str>,
    tokens: Rc<TokenCache>,
    channel: Rc<str>,
    /// Recall calls in flight at once: the channel's pool size.
    pool: usize,
}

impl Feishu {
    pub fn new(ctx: &ProviderContext, s: &Settings) -> Result<Self, BuildError> {
        let client = http_client(ctx, Duration::from_millis(s.timeout_ms))?;
        let base: Rc<str> = s.base_url.trim_end_matches('/').into();
        let credential = credential("feishu", &base, &s.app_id, &s.app_secret);
        let fetch: Fetch = {
            let client = client.clone();
            let base = base.clone();
            let body = json!({"app_id": s.app_id, "app_secret": s.app_secret});
            Rc::new(move || {
                let req = client
                    .post(format!(
                        "{base}/open-apis/auth/v3/tenant_access_token/internal"
                    ))
                    .json(&body);
                Box::pin(async move {
                    let a = call(req).await?;
                    let checked = if a.status.is_success() && a.errcode() == 0 {
                        Ok(())
                    } else {
                        Err(classify(&a))
                    };
                    token_answer(&a, checked, "tenant_access_token", "expire")
                })
            })
        };
        Ok(Self {
            client,
            base,
            id_type: s.receive_id_type.as_str().into(),
            tokens: TokenCache::new(&ctx.code, &credential, fetch),
            channel: ctx.code.as_str().into(),
            pool: ctx.pool_size.max(1),
        })
    }
}

/// (msg_type, content string): a provider-native `card` (interactive), or `text`.
fn message(content: &Value) -> Option<(&'static str, String)> {
    if let Some(card) = content.get("card") {
        return Some(("interactive", card.to_string()));
    }
    content_text(content).map(|t| ("text", json!({ "text": t }).to_string()))
}

/// "Message can only be recalled within one days": past the tenant's recall limit.
const RECALL_TOO_OLD: &str = "230009";

/// `{base}/open-apis/im/v1/messages/{id}`, the id escaped as one path segment.
fn message_url(base: &str, id: &str) -> Option<reqwest::Url> {
    let mut url = reqwest::Url::parse(&format!("{base}/open-apis/im/v1/messages")).ok()?;
    url.path_segments_mut().ok()?.push(id);
    Some(url)
}

impl Feishu {
    /// Recalls one message the bot sent.
    fn recall_message(&self, id: String) -> impl Future<Output = RecallOutcome> + 'static {
        let client = self.client.clone();
        let url = message_url(&self.base, &id);
        let tokens = self.tokens.clone();
        let channel = self.channel.clone();
        async move {
            let Some(url) = url else {
                return RecallOutcome::Kept("invalid_provider_id".into());
            };
            let result = recall::retrying(|| {
                with_token(&tokens, |token| {
                    let req = client.delete(url.clone()).bearer_auth(token);
                    async move {
                        let a = call(req).await?;
                        if a.status.is_success() && a.errcode() == 0 {
                            Ok(())
                        } else {
                            Err(classify(&a))
                        }
                    }
                })
            })
            .await;
            recall::outcome(result, &channel, &id, Some(RECALL_TOO_OLD))
        }
    }
}

impl Provider for Feishu {
    /// One call per message, at most the channel's pool size at once.
    fn recall(
        &self,
        targets: Vec<RecallTarget>,
    ) -> LocalBoxFuture<'static, Vec<(i64, RecallOutcome)>> {
        let (groups, kept) = recall::group(targets, |p| p);
        let calls = groups
            .into_iter()
            .map(|(id, ids)| (ids, self.recall_message(id)))
            .collect();
        recall::fan_out(calls, kept, self.pool)
    }

    fn send(&self, batch: Batch) -> LocalBoxFuture<'static, Vec<(i64, Attempt)>> {
        let client = self.client.clone();
        let base = self.base.clone();
        let tokens = self.tokens.clone();
        let id_type = self.id_type.clone();
        Box::pin(async move {
            let Some((msg_type, content)) = message(&batch.content) else {
                return all(
                    &batch,
                    Attempt::Failed(ProviderError::permanent(
                        "no_content",
                        "feishu content needs `text` or `card`",
                    )),
                );
            };
            let mut out = Vec::with_capacity(batch.targets.len());
            for t in &batch.targets {
                let body = json!({
                    "receive_id": t.address, "msg_type": msg_type, "content": content,
                    "uuid": format!("dlv_{}", t.delivery_id),
                });
                let result = with_token(&tokens, |token| {
                    let req = client
                        .post(format!("{base}/open-apis/im/v1/messages"))
                        .query(&[("receive_id_type", &*id_type)])
                        .bearer_auth(token)
                        .json(&body);
                    async move {
                        let a = call(req).await?;
                        if a.status.is_success() && a.errcode() == 0 {
                            Ok(a)
                        } else {
                            Err(classify(&a))
                        }
                    }
                })
                .await;
                let attempt = match result {
                    Err(e) => Attempt::Failed(e),
                    Ok(a) => match a.body.pointer("/data/message_id").and_then(Value::as_str) {
                        Some(id) => Attempt::Accepted {
                            provider_id: Some(id.to_owned()),
                            delivered: true,
                            receipts: true,
                            segments: Vec::new(),
                        },
                        None => Attempt::delivered(None),
                    },
                };
                out.push((t.delivery_id, attempt));
            }
            out
        })
    }
}

/// A Feishu event subscription: `url_verification` is answered with its challenge;
/// `im.message.message_read_v1` marks the listed messages read.
pub fn inbound(req: &InboundRequest<'_>) -> Result<Inbound, InboundError> {
    let v: Value = serde_json::from_slice(req.body)
        .map_err(|e| InboundError::Malformed(format!("not JSON: {e}")))?;
    if v["type"] == "url_verification" {
        return Ok(Inbound {
            receipts: Vec::new(),
            reply: Reply::Json(json!({"challenge": v["challenge"]})),
        });
    }
    let mut receipts = Vec::new();
    if v.pointer("/header/event_type").and_then(Value::as_str) == Some("im.message.message_read_v1")
    {
        for id in v
            .pointer("/event/message_id_list")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            receipts.push(ProviderReceipt::new(id, DeliveryState::Read, None));
        }
    }
    Ok(Inbound {
        receipts,
        reply: Reply::Json(json!({})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: Value) -> Answer {
        Answer {
            status: reqwest::StatusCode::from_u16(status).unwrap_or_default(),
            headers: reqwest::header::HeaderMap::new(),
            body,
        }
    }

    #[test]
    fn recall_refusals_map_to_reasons() {
        let reason =
            |status, body| recall::reason(&classify(&answer(status, body)), Some(RECALL_TOO_OLD));
        assert_eq!(
            reason(
                400,
                json!({"code": 230009, "msg": "Message can only be recalled within one days."})
            ),
            "recall_window_passed"
        );
        assert_eq!(
            reason(
                400,
                json!({"code": 230026, "msg": "No permission to recall this message."})
            ),
            "provider_error:230026"
        );
        assert_eq!(reason(503, Value::Null), "provider_error:503");
        assert_eq!(
            recall::reason(
                &ProviderError::retryable("transport", "reset"),
                Some(RECALL_TOO_OLD)
            ),
            "transport"
        );
    }
}
