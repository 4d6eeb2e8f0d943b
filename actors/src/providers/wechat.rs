//! WeChat Official Account template messages:
//! `POST /cgi-bin/message/template/send`, one recipient (openid) per call, the access
//! token from `/cgi-bin/token` (or `/cgi-bin/stable_token`) cached per channel. Fetching a
//! token invalidates the previous one, so the cache's single refresher matters here.
//!
//! `client_msg_id` = the delivery id makes a re-send after a crash safe. Results arrive as
//! `TEMPLATESENDJOBFINISH` XML events at `/callbacks/{code}`, matched by `MsgID`.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};

use super::context::ProviderContext;
use super::contract::{
    all, Attempt, Batch, BuildError, ErrorClass, Inbound, InboundError, InboundRequest, Provider,
    ProviderError, ProviderReceipt, Reply,
};
use super::support::http::{
    call, check_errcode, default_timeout_ms, http_client, token_answer, Answer,
};
use super::support::sha1_hex;
use super::support::token::{credential, with_token, Fetch, TokenCache};
use crate::domain::DeliveryState;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "default_base")]
    pub base_url: String,
    pub appid: String,
    pub secret: String,
    /// Use `/cgi-bin/stable_token` (no invalidation race between several fetchers).
    #[serde(default)]
    pub stable_token: bool,
    /// The token configured for the account's server URL, to verify event signatures.
    #[serde(default)]
    pub callback_token: Option<String>,
    /// How long the channel pauses on 45009 (the account's daily quota is spent):
    /// minutes, not seconds, are what help there.
    #[serde(default = "default_quota_pause")]
    pub quota_pause_seconds: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_base() -> String {
    "https://api.weixin.qq.com".into()
}

fn default_quota_pause() -> u64 {
    60
}

/// Classifies a WeChat `errcode` (nonzero); `quota_pause` is the wait after 45009.
pub fn classify(code: i64, msg: &str, quota_pause: Duration) -> ProviderError {
    let c = code.to_string();
    match code {
        40001 | 40014 | 42001 | 41001 => ProviderError::new(ErrorClass::Auth, c, msg),
        45009 => ProviderError::rate_limited(c, msg, Some(quota_pause)),
        -1 => ProviderError::retryable(c, msg),
        _ => ProviderError::permanent(c, msg),
    }
}

fn check(a: &Answer, quota_pause: Duration) -> Result<(), ProviderError> {
    check_errcode(a, |code, msg| classify(code, msg, quota_pause))
}

pub struct Wechat {
    quota_pause: Duration,
    client: reqwest::Client,
    base: Rc<str>,
    tokens: Rc<TokenCache>,
}

impl Wechat {
    pub fn new(ctx: &ProviderContext, s: &Settings) -> Result<Self, BuildError> {
        let client = http_client(ctx, Duration::from_millis(s.timeout_ms))?;
        let base: Rc<str> = s.base_url.trim_end_matches('/').into();
        let credential = credential(
            if s.stable_token {
                "wechat_oa:stable"
            } else {
                "wechat_oa"
            },
            &base,
            &s.appid,
            &s.secret,
        );
        let fetch: Fetch = {
            let client = client.clone();
            let base = base.clone();
            let (appid, secret, stable) = (s.appid.clone(), s.secret.clone(), s.stable_token);
            Rc::new(move || {
                let req = if stable {
                    client
                        .post(format!("{base}/cgi-bin/stable_token"))
                        .json(&json!({
                            "grant_type": "client_credential", "appid": appid, "secret": secret,
                        }))
                } else {
                    client.get(format!("{base}/cgi-bin/token")).query(&[
                        ("grant_type", "client_credential"),
                        ("appid", appid.as_str()),
                        ("secret", secret.as_str()),
                    ])
                };
                Box::pin(async move {
                    let a = call(req).await?;
                    let checked = check(&a, Duration::ZERO);
                    token_answer(&a, checked, "access_token", "expires_in")
                })
            })
        };
        Ok(Self {
            quota_pause: Duration::from_secs(s.quota_pause_seconds),
            client,
            base,
            tokens: TokenCache::new(&ctx.code, &credential, fetch),
        })
    }
}

impl Provider for Wechat {
    fn send(&self, batch: Batch) -> LocalBoxFuture<'static, Vec<(i64, Attempt)>> {
        let client = self.client.clone();
        let base = self.base.clone();
        let tokens = self.tokens.clone();
        let quota_pause = self.quota_pause;
        Box::pin(async move {
            let c = &batch.content;
            let Some(template_id) = c.get("template_id").cloned() else {
                return all(
                    &batch,
                    Attempt::Failed(ProviderError::permanent(
                        "no_content",
                        "wechat_oa content needs `template_id`",
                    )),
                );
            };
            let mut out = Vec::with_capacity(batch.targets.len());
            for t in &batch.targets {
                let mut body = json!({
                    "touser": t.address,
                    "template_id": template_id,
                    "data": c.get("data").cloned().unwrap_or_else(|| json!({})),
                    "client_msg_id": format!("dlv_{}", t.delivery_id),
                });
                if let Some(url) = c.get("url") {
                    body["url"] = url.clone();
                }
                let result = with_token(&tokens, |token| {
                    let req = client
                        .post(format!("{base}/cgi-bin/message/template/send"))
                        .query(&[("access_token", token)])
                        .json(&body);
                    async move {
                        let a = call(req).await?;
                        check(&a, quota_pause)?;
                        Ok(a)
                    }
                })
                .await;
                let attempt = match result {
                    Err(e) => Attempt::Failed(e),
                    Ok(a) => match &a.body["msgid"] {
                        Value::Number(n) => Attempt::submitted(n.to_string()),
                        Value::String(s) => Attempt::submitted(s.clone()),
                        _ => Attempt::delivered(None),
                    },
                };
                out.push((t.delivery_id, attempt));
            }
            out
        })
    }
}

/// The value of `<tag>` in a WeChat XML event (CDATA or plain text).
pub fn xml_field<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    let v = xml[start..end].trim();
    Some(
        v.strip_prefix("<![CDATA[")
            .and_then(|v| v.strip_suffix("]]>"))
            .unwrap_or(v),
    )
}

/// WeChat's server-URL signature: sha1 of the sorted (token, timestamp, nonce). Without
/// a `callback_token` configured, nothing is checked.
pub fn signature_ok(s: &Settings, q: &HashMap<String, String>) -> bool {
    let Some(token) = s.callback_token.as_deref() else {
        return true;
    };
    let mut parts = [
        token,
        q.get("timestamp").map_or("", String::as_str),
        q.get("nonce").map_or("", String::as_str),
    ];
    parts.sort_unstable();
    q.get("signature")
        .is_some_and(|sig| sig.eq_ignore_ascii_case(&sha1_hex(&parts.concat())))
}

/// A WeChat event push: `TEMPLATESENDJOBFINISH` XML events report a template message's
/// fate (`success`, `failed:user block`, `failed:system failed`); others are
/// acknowledged and ignored. WeChat expects `success` as the answer.
pub fn inbound(s: &Settings, req: &InboundRequest<'_>) -> Result<Inbound, InboundError> {
    if !signature_ok(s, &req.query_map()) {
        return Err(InboundError::BadSignature);
    }
    let xml = String::from_utf8_lossy(req.body);
    let mut receipts = Vec::new();
    if xml_field(&xml, "Event") == Some("TEMPLATESENDJOBFINISH") {
        let id = xml_field(&xml, "MsgID").unwrap_or("");
        let status = xml_field(&xml, "Status").unwrap_or("");
        receipts.push(match status {
            "success" => ProviderReceipt::new(id, DeliveryState::Delivered, None),
            "failed:user block" => {
                ProviderReceipt::new(id, DeliveryState::Undelivered, Some("user_block"))
            }
            _ => ProviderReceipt::new(id, DeliveryState::Undelivered, Some("system_failed")),
        });
    }
    Ok(Inbound {
        receipts,
        reply: Reply::Text("success".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cdata_and_plain_fields() {
        let xml = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><MsgID>200163836</MsgID>\
                   <Status><![CDATA[failed:user block]]></Status></xml>";
        assert_eq!(xml_field(xml, "MsgID"), Some("200163836"));
        assert_eq!(xml_field(xml, "Status"), Some("failed:user block"));
        assert_eq!(xml_field(xml, "Event"), None);
    }
}
