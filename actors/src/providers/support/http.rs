//! What the HTTP providers share: their client, reading an answer to a bound, and the
//! shapes of answer most Chinese IM and push APIs use (`errcode`/`errmsg` in a 200, token
//! endpoints).

use std::time::Duration;

use serde_json::Value;

use super::tls;
use crate::providers::context::ProviderContext;
use crate::providers::contract::{BuildError, ErrorClass, ProviderError};

/// The HTTP client every HTTP provider uses: keep-alive pool sized to the channel's
/// concurrency, a request timeout, no redirects (a redirect is an error, not a delivery).
pub fn http_client(
    ctx: &ProviderContext,
    timeout: Duration,
) -> Result<reqwest::Client, BuildError> {
    tls::init();
    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(ctx.pool_size.max(1))
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none());
    if !ctx.tls_roots.is_empty() {
        builder = builder.tls_certs_merge(ctx.tls_roots.iter().cloned());
    }
    builder.build().map_err(BuildError::HttpClient)
}

pub fn default_timeout_ms() -> u64 {
    10_000
}

/// An HTTP answer read whole: status, headers, and the body as JSON (`Null` when it is
/// not JSON).
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

/// A header as seconds (`Retry-After`, rate-limit reset headers), at most an hour.
pub fn header_seconds(headers: &reqwest::header::HeaderMap, name: &str) -> Option<Duration> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

impl Answer {
    /// A header as seconds (`Retry-After`, rate-limit reset headers).
    pub fn seconds(&self, name: &str) -> Option<Duration> {
        header_seconds(&self.headers, name)
    }

    /// `errcode` (DingTalk, WeCom, WeChat) or `code` (Feishu) of the body; 0 when absent.
    pub fn errcode(&self) -> i64 {
        self.body
            .get("errcode")
            .or_else(|| self.body.get("code"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }

    pub fn errmsg(&self) -> String {
        self.body
            .get("errmsg")
            .or_else(|| self.body.get("msg"))
            .or_else(|| self.body.pointer("/error/message"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    }
}

/// Largest provider answer read; a longer one is a retryable `answer_too_large`.
const MAX_ANSWER: usize = 1 << 20;

/// Reads an answer's body, at most `limit` bytes. Reading it to the end also lets the
/// connection go back to the pool.
pub async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ProviderError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ProviderError::transport(&e))?
    {
        if out.len() + chunk.len() > limit {
            return Err(ProviderError::retryable(
                "answer_too_large",
                format!("the provider's answer is longer than {limit} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Sends a request and reads the answer; a transport failure is a retryable error.
pub async fn call(req: reqwest::RequestBuilder) -> Result<Answer, ProviderError> {
    let resp = req.send().await.map_err(|e| ProviderError::transport(&e))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = read_limited(resp, MAX_ANSWER).await?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// The text of a message's content for chat-like channels: `text`, else `body`.
pub fn content_text(content: &Value) -> Option<String> {
    content
        .get("text")
        .or_else(|| content.get("body"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Checks an answer of the providers that report business errors as HTTP 200 with a
/// nonzero `errcode` (DingTalk, WeCom, WeChat): 5xx is retryable, other non-2xx
/// permanent, and a nonzero `errcode` is classified by the provider's `classify`.
pub fn check_errcode(
    a: &Answer,
    classify: impl Fn(i64, &str) -> ProviderError,
) -> Result<(), ProviderError> {
    let status = a.status.as_u16().to_string();
    if a.status.is_server_error() {
        return Err(ProviderError::retryable(status, "server error"));
    }
    if !a.status.is_success() {
        return Err(ProviderError::permanent(status, "unexpected HTTP status"));
    }
    match a.errcode() {
        0 => Ok(()),
        code => Err(classify(code, &a.errmsg())),
    }
}

/// Reads a token endpoint's answer: `checked` is the provider's verdict on it, `token` and
/// `ttl` the fields holding the token and its lifetime in seconds. A refused credential at
/// the token endpoint is configuration, not something another refresh fixes: permanent.
pub fn token_answer(
    a: &Answer,
    checked: Result<(), ProviderError>,
    token: &str,
    ttl: &str,
) -> Result<(String, Duration), ProviderError> {
    checked.map_err(|mut e| {
        if e.class == ErrorClass::Auth {
            e.class = ErrorClass::Permanent;
        }
        e
    })?;
    let value = a.body[token].as_str().unwrap_or_default().to_owned();
    if value.is_empty() {
        return Err(ProviderError::retryable(
            "no_token",
            format!("the token endpoint answered no `{token}`"),
        ));
    }
    let ttl = a.body[ttl].as_u64().unwrap_or(7200);
    Ok((value, Duration::from_secs(ttl)))
}
