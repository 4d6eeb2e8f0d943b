//! Small HTTP utilities shared by the provider modules: the buffered request, response
//! builders, query and Basic-auth parsing.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Response, StatusCode, Uri};
use serde_json::Value;

pub(crate) type Resp = Response<Full<Bytes>>;

/// A request with its body read.
pub(crate) struct Req {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub(crate) fn path(&self) -> &str {
        self.uri.path()
    }

    pub(crate) fn is(&self, method: &Method, path: &str) -> bool {
        self.method == method && self.uri.path() == path
    }

    /// First value of a query parameter, percent-decoded.
    pub(crate) fn query(&self, key: &str) -> Option<String> {
        query_param(self.uri.query()?, key).map(Cow::into_owned)
    }

    pub(crate) fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether `Authorization: Basic base64(key:secret)` matches.
    pub(crate) fn basic_auth_is(&self, key: &str, secret: &str) -> bool {
        let Some(v) = self.header("authorization") else {
            return false;
        };
        let Some(enc) = v
            .strip_prefix("Basic ")
            .or_else(|| v.strip_prefix("basic "))
        else {
            return false;
        };
        let Ok(dec) = B64.decode(enc.trim()) else {
            return false;
        };
        dec.strip_prefix(key.as_bytes())
            .and_then(|rest| rest.strip_prefix(b":"))
            .is_some_and(|s| s == secret.as_bytes())
    }
}

pub(crate) fn query_param<'a>(query: &'a str, key: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn build(status: StatusCode, content_type: &'static str, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub(crate) fn json(status: StatusCode, v: &Value) -> Resp {
    json_bytes(status, Bytes::from(v.to_string()))
}

pub(crate) fn json_bytes(status: StatusCode, body: Bytes) -> Resp {
    build(status, "application/json; charset=utf-8", body)
}

pub(crate) fn ok(v: &Value) -> Resp {
    json(StatusCode::OK, v)
}

pub(crate) fn plain(status: StatusCode, text: &'static str) -> Resp {
    build(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(text.as_bytes()),
    )
}

pub(crate) fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

pub(crate) fn not_found() -> Resp {
    plain(StatusCode::NOT_FOUND, "404 page not found")
}

pub(crate) fn unavailable() -> Resp {
    plain(StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable")
}

pub(crate) fn with_header(mut r: Resp, name: &'static str, value: impl ToString) -> Resp {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        r.headers_mut().insert(HeaderName::from_static(name), v);
    }
    r
}

/// A JSON value as a string: strings as they are, numbers in decimal.
pub(crate) fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A JSON value as an integer: numbers, or strings holding one.
pub(crate) fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}
