//! Pushed receipts: JSMS delivery reports (signed form posts), WeChat
//! `TEMPLATESENDJOBFINISH` XML events and Feishu `im.message.message_read_v1` events,
//! sent to the configured callback URL once the receipt delay has passed, with a few
//! short retries. Pull-style receipts (DingTalk, JPush) live with their providers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::state::{now_ms, random_hex, Sim};

/// Concurrent callback requests per simulator.
const IN_FLIGHT: usize = 64;
/// Pause before each retry of a failed push. The real JSMS waits 3 min, 1 h and 12 h;
/// short here so tests and demos see the retries.
const RETRY_BACKOFF: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
];
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// One receipt to push.
pub(crate) enum Push {
    /// JSMS `SMS_REPORT`; status 4001 delivered, 4004 not delivered.
    Jsms {
        msg_id: u64,
        phone: String,
        status: u32,
    },
    /// WeChat template job result.
    Wechat {
        openid: String,
        msg_id: u64,
        status: &'static str,
    },
    /// Feishu read event for one message.
    FeishuRead {
        reader_id: serde_json::Value,
        message_id: String,
    },
}

pub(crate) struct Pending {
    pub due: Instant,
    pub push: Push,
}

/// Push queued receipts as they fall due. The delay is the same for every receipt of a
/// simulator, so the queue is already in due order.
pub(crate) async fn run(sim: Arc<Sim>, mut rx: mpsc::Receiver<Pending>, url: String) {
    crate::init_tls();
    let client = match reqwest::Client::builder().timeout(PUSH_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "callback client unavailable; receipts are not pushed");
            return;
        }
    };
    let url: Arc<str> = url.into();
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(p) = rx.recv().await {
        tokio::time::sleep_until(p.due.into()).await;
        // Waiting for a permit here keeps a slow callback from piling up tasks; the
        // bounded queue behind absorbs (and finally drops) the excess.
        let Ok(first) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        tokio::spawn(deliver(
            Arc::clone(&sim),
            client.clone(),
            Arc::clone(&url),
            p.push,
            Arc::clone(&permits),
            first,
        ));
    }
}

async fn deliver(
    sim: Arc<Sim>,
    client: reqwest::Client,
    url: Arc<str>,
    push: Push,
    permits: Arc<Semaphore>,
    first: OwnedSemaphorePermit,
) {
    let mut permit = Some(first);
    for attempt in 0..=RETRY_BACKOFF.len() {
        if let Some(pause) = attempt.checked_sub(1).and_then(|i| RETRY_BACKOFF.get(i)) {
            tokio::time::sleep(*pause).await;
        }
        let _permit = match permit.take() {
            Some(p) => p,
            None => match Arc::clone(&permits).acquire_owned().await {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        // Rendered per attempt: a retry carries a fresh nonce, timestamp and signature.
        let (content_type, body) = render(&sim, &push);
        let sent = client
            .post(&*url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                sim.counters.receipts_pushed.inc();
                return;
            }
            Ok(r) => tracing::debug!(status = %r.status(), "receipt push refused"),
            Err(e) => tracing::debug!(error = %e, "receipt push failed"),
        }
        sim.counters.receipts_push_failed.inc();
    }
    sim.counters.receipts_dropped.inc();
}

fn render(sim: &Sim, push: &Push) -> (&'static str, String) {
    match push {
        Push::Jsms {
            msg_id,
            phone,
            status,
        } => (
            "application/x-www-form-urlencoded",
            jsms_form(
                &sim.cfg.app_key,
                &sim.cfg.app_secret,
                *msg_id,
                phone,
                *status,
            ),
        ),
        Push::Wechat {
            openid,
            msg_id,
            status,
        } => (
            "text/xml; charset=utf-8",
            wechat_xml(&sim.cfg.app_key, openid, *msg_id, status),
        ),
        Push::FeishuRead {
            reader_id,
            message_id,
        } => (
            "application/json; charset=utf-8",
            feishu_read_event(&sim.cfg.app_key, reader_id, message_id),
        ),
    }
}

fn jsms_form(app_key: &str, secret: &str, msg_id: u64, phone: &str, status: u32) -> String {
    let nonce = rand::rng()
        .random_range(1_000_000_000u64..i64::MAX as u64)
        .to_string();
    let ts = now_ms();
    let timestamp = ts.to_string();
    let data = serde_json::json!({
        "msgId": msg_id.to_string(),
        "status": status,
        "receiveTime": ts,
        "phone": phone,
    })
    .to_string();
    form_urlencoded::Serializer::new(String::new())
        .append_pair("nonce", &nonce)
        .append_pair("timestamp", &timestamp)
        .append_pair(
            "signature",
            &crate::sign::jsms_callback(app_key, secret, &nonce, &timestamp),
        )
        .append_pair("type", "SMS_REPORT")
        .append_pair("data", &data)
        .finish()
}

fn wechat_xml(app_key: &str, openid: &str, msg_id: u64, status: &str) -> String {
    let created = now_ms() / 1000;
    format!(
        "<xml><ToUserName><![CDATA[gh_{app_key}]]></ToUserName>\
         <FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{created}</CreateTime>\
         <MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>\
         <MsgID>{msg_id}</MsgID>\
         <Status><![CDATA[{status}]]></Status></xml>"
    )
}

fn feishu_read_event(app_id: &str, reader_id: &serde_json::Value, message_id: &str) -> String {
    let now = now_ms().to_string();
    serde_json::json!({
        "schema": "2.0",
        "header": {
            "event_id": random_hex(16),
            "event_type": "im.message.message_read_v1",
            "create_time": now,
            "token": "",
            "app_id": app_id,
            "tenant_key": "sim-tenant",
        },
        "event": {
            "reader": {
                "reader_id": reader_id,
                "read_time": now,
                "tenant_key": "sim-tenant",
            },
            "message_id_list": [message_id],
        },
    })
    .to_string()
}
