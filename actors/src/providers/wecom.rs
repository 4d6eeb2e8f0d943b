//! WeCom (Enterprise WeChat) app messages: `POST /cgi-bin/message/send` with up to 1000
//! recipients per call (`touser` joined by `|`), the access token from `/cgi-bin/gettoken`
//! cached per channel.
//!
//! WeCom answers HTTP 200 with `errcode` for business errors, and reports a partial failure
//! inside a success: the recipients listed in `invaliduser` / `unlicenseduser` fail
//! (permanently), the others are delivered. WeCom has no delivery receipts, so acceptance
//! is the delivery.
//!
//! Recall is `POST /cgi-bin/message/recall` with the `msgid` of the send: one call takes
//! the message back from every recipient of that call (from their WeCom clients; copies
//! shown through the WeChat plugin stay). WeCom recalls only messages of the last 24 h.

use std::collections::HashSet;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};

use super::context::ProviderContext;
use super::contract::{
    all, Attempt, Batch, BuildError, ErrorClass, Provider, ProviderError, RecallOutcome,
    RecallTarget,
};
use super::support::http::{
    call, check_errcode, content_text, default_timeout_ms, http_client, token_answer, Answer,
};
use super::support::recall;
use super::support::token::{credential, with_token, Fetch, TokenCache};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "default_base")]
    pub base_url: String,
    pub corpid: String,
    pub corpsecret: String,
    pub agentid: i64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_base() -> String {
    "https://qyapi.weixin.qq.com".into()
}

pub struct Wecom {
    client: reqwest::Client,
    base: Rc<str>,
    agentid: i64,
    tokens: Rc<TokenCache>,
    channel: Rc<str>,
    /// Recall calls in flight at once: the channel's pool size.
    pool: usize,
}

/// Classifies a WeCom `errcode` (nonzero).
pub fn classify(code: i64, msg: &str) -> ProviderError {
    let c = code.to_string();
    match code {
        40014 | 42001 | 41001 => ProviderError::new(ErrorClass::Auth, c, msg),
        45009 | 45033 => ProviderError::rate_limited(c, msg, None),
        -1 => ProviderError::retryable(c, msg),
        _ => ProviderError::permanent(c, msg),
    }
}

fn check(a: &Answer) -> Result<(), ProviderError> {
    check_errcode(a, classify)
}

impl Wecom {
    pub fn new(ctx: &ProviderContext, s: &Settings) -> Result<Self, BuildError> {
        let client = http_client(ctx, Duration::from_millis(s.timeout_ms))?;
        let base: Rc<str> = s.base_url.trim_end_matches('/').into();
        let credential = credential("wecom", &base, &s.corpid, &s.corpsecret);
        let fetch: Fetch = {
            let client = client.clone();
            let base = base.clone();
            let (corpid, secret) = (s.corpid.clone(), s.corpsecret.clone());
            Rc::new(move || {
                let req = client
                    .get(format!("{base}/cgi-bin/gettoken"))
                    .query(&[("corpid", corpid.as_str()), ("corpsecret", secret.as_str())]);
                Box::pin(async move {
                    let a = call(req).await?;
                    token_answer(&a, check(&a), "access_token", "expires_in")
                })
            })
        };
        Ok(Self {
            client,
            base,
            agentid: s.agentid,
            tokens: TokenCache::new(&ctx.code, &credential, fetch),
            channel: ctx.code.as_str().into(),
            pool: ctx.pool_size.max(1),
        })
    }
}

/// The message body for a content object: a provider-native `card` (a `textcard`), or
/// `text`.
fn message(content: &Value) -> Option<(&'static str, Value)> {
    if let Some(card) = content.get("card") {
        return Some(("textcard", card.clone()));
    }
    content_text(content).map(|t| ("text", json!({ "content": t })))
}

/// The errcode the simulator answers for a message past the 24 h recall limit. WeCom
/// documents the limit but not its code (providers-2.md §5): until it is confirmed, this
/// is the simulator's, and any other refusal is reported with its own code.
const RECALL_TOO_OLD: &str = "301099";

impl Wecom {
    /// Recalls one message from all its recipients.
    fn recall_message(&self, msgid: String) -> impl Future<Output = RecallOutcome> + 'static {
        let client = self.client.clone();
        let base = self.base.clone();
        let tokens = self.tokens.clone();
        let channel = self.channel.clone();
        async move {
            let body = json!({ "msgid": msgid });
            let result = recall::retrying(|| {
                with_token(&tokens, |token| {
                    let req = client
                        .post(format!("{base}/cgi-bin/message/recall"))
                        .query(&[("access_token", token)])
                        .json(&body);
                    async move {
                        let a = call(req).await?;
                        check(&a)
                    }
                })
            })
            .await;
            recall::outcome(result, &channel, &msgid, Some(RECALL_TOO_OLD))
        }
    }
}

impl Provider for Wecom {
    fn max_batch(&self) -> usize {
        1000
    }

    /// One call per `msgid`, at most the channel's pool size at once; each message's
    /// outcome is that of every target it went to.
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
        let agentid = self.agentid;
        Box::pin(async move {
            let Some((msgtype, payload)) = message(&batch.content) else {
                return all(
                    &batch,
                    Attempt::Failed(ProviderError::permanent(
                        "no_content",
                        "wecom content needs `text` or `card`",
                    )),
                );
            };
            let touser: Vec<&str> = batch.targets.iter().map(|t| t.address.as_str()).collect();
            let mut body = json!({
                "touser": touser.join("|"),
                "msgtype": msgtype,
                "agentid": agentid,
            });
            body[msgtype] = payload;
            let result = with_token(&tokens, |token| {
                let req = client
                    .post(format!("{base}/cgi-bin/message/send"))
                    .query(&[("access_token", token)])
                    .json(&body);
                async move {
                    let a = call(req).await?;
                    check(&a)?;
                    Ok(a)
                }
            })
            .await;
            match result {
                Err(e) => all(&batch, Attempt::Failed(e)),
                Ok(a) => {
                    let mut invalid: HashSet<String> = HashSet::new();
                    for key in ["invaliduser", "unlicenseduser"] {
                        if let Some(list) = a.body.get(key).and_then(Value::as_str) {
                            invalid.extend(
                                list.split('|')
                                    .filter(|s| !s.is_empty())
                                    .map(str::to_lowercase),
                            );
                        }
                    }
                    let msgid = a
                        .body
                        .get("msgid")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    batch
                        .targets
                        .iter()
                        .map(|t| {
                            let attempt = if invalid.contains(&t.address.to_lowercase()) {
                                Attempt::Failed(ProviderError::permanent(
                                    "invaliduser",
                                    "WeCom listed the recipient as invalid or unlicensed",
                                ))
                            } else {
                                Attempt::delivered(msgid.clone())
                            };
                            (t.delivery_id, attempt)
                        })
                        .collect()
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_refusals_map_to_reasons() {
        let reason = |e: ProviderError| recall::reason(&e, Some(RECALL_TOO_OLD));
        assert_eq!(reason(classify(301099, "too old")), "recall_window_passed");
        assert_eq!(
            reason(classify(40058, "invalid msgid")),
            "provider_error:40058"
        );
        assert_eq!(
            reason(ProviderError::retryable("connect", "refused")),
            "transport"
        );
    }
}
