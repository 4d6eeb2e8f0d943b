//! A customer's webhook endpoint: accepts `POST` on any path and verifies the Standard
//! Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`) with the
//! configured `whsec_…` secret. 204 on success, 401 on a bad signature, 429 with
//! `Retry-After` when over its rate.

use hyper::{Method, StatusCode};

use crate::http::{self, Req, Resp};
use crate::state::{now_ms, Fault, Sim};
use crate::Kind;

/// Clock tolerance of the reference verifier.
const TOLERANCE_SECS: i64 = 300;

pub(super) fn is_send(req: &Req) -> bool {
    req.method == Method::POST
}

pub(super) fn fault(f: Fault) -> Resp {
    match f {
        Fault::RateLimit => http::with_header(
            http::plain(StatusCode::TOO_MANY_REQUESTS, "too many requests"),
            "retry-after",
            1,
        ),
        Fault::Busy => http::with_header(http::unavailable(), "retry-after", 1),
        Fault::Permanent => http::plain(StatusCode::BAD_REQUEST, "rejected"),
        Fault::Fail | Fault::Drop | Fault::Timeout => http::unavailable(),
    }
}

pub(super) fn handle(sim: &Sim, req: &Req) -> Resp {
    if req.method != Method::POST {
        return http::plain(StatusCode::METHOD_NOT_ALLOWED, "POST only");
    }
    let Some(id) = verify(&sim.cfg.app_secret, req, now_ms() / 1000) else {
        sim.counters.token_rejected.inc();
        return http::plain(StatusCode::UNAUTHORIZED, "invalid signature");
    };
    if let Some(r) = super::over_rate(Kind::Webhook, sim) {
        return r;
    }
    sim.accept([(req.path().to_owned(), id)], &req.body);
    http::empty(StatusCode::NO_CONTENT)
}

/// The `webhook-id` of a correctly signed, fresh request.
fn verify(secret: &str, req: &Req, now_secs: u64) -> Option<String> {
    let id = req.header("webhook-id")?;
    let ts_text = req.header("webhook-timestamp")?;
    let ts: i64 = ts_text.trim().parse().ok()?;
    let now = i64::try_from(now_secs).ok()?;
    if (now - ts).abs() > TOLERANCE_SECS {
        return None;
    }
    let expected = crate::sign::standard_webhooks(secret, id, ts, &req.body)?;
    req.header("webhook-signature")?
        .split(' ')
        .any(|s| s == expected)
        .then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use hyper::{HeaderMap, Uri};

    fn req(sig: &str) -> Req {
        let mut headers = HeaderMap::new();
        headers.insert(
            "webhook-id",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk".parse().unwrap(),
        );
        headers.insert("webhook-timestamp", "1649367553".parse().unwrap());
        headers.insert("webhook-signature", sig.parse().unwrap());
        Req {
            method: Method::POST,
            uri: Uri::from_static("/hook"),
            headers,
            body: Bytes::from_static(br#"{"email":"test@example.com","username":"test_user"}"#),
        }
    }

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    #[test]
    fn spec_vector_verifies() {
        let id = verify(SECRET, &req(SIG), 1649367553 + 10);
        assert_eq!(id.as_deref(), Some("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"));
        // One good entry among several (key rotation) is enough.
        let rotated = format!("v1,AAAA {SIG}");
        assert!(verify(SECRET, &req(&rotated), 1649367553).is_some());
    }

    #[test]
    fn tampered_or_stale_is_refused() {
        assert!(verify(
            SECRET,
            &req("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkx="),
            1649367553
        )
        .is_none());
        assert!(verify(SECRET, &req(SIG), 1649367553 + 301).is_none());
        assert!(verify(SECRET, &req(SIG), 1649367553 - 301).is_none());
    }
}
