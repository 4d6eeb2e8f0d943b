//! The provider simulators the delivery scenarios run inside the harness (`umsd-sim`), and
//! the simulators-alone measurement: `C` keep-alive HTTP/1.1 connections in a closed loop
//! (each sends its next request as soon as the previous one is answered) posting requests
//! shaped like umsd's own calls to that provider, for a fixed time. Its rate — recipients
//! the simulator accepted per second — is what the simulator can take on this machine with
//! nothing else in the way, the reference umsd's delivery rate is compared with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;
use umsd_sim::{Kind, SimConfig, SimHandle};

use crate::cpu;
use crate::openloop::{self, Conn, Endpoint};

/// Longest wait for one answer of the closed loop.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Most distinct error descriptions kept.
const MAX_NOTES: usize = 16;

/// Starts a simulator of `kind` on a free loopback port: default credentials, no rate
/// limit, every recipient delivered.
pub fn start(kind: Kind, threads: usize) -> Result<SimHandle> {
    let cfg = SimConfig {
        kind,
        threads: threads.max(1),
        rate_per_second: None,
        ..SimConfig::new(kind)
    };
    umsd_sim::start(cfg).with_context(|| format!("starting the {kind} simulator"))
}

/// The user id of user `i` (`u0000`, `u0001`, …).
pub fn user_id(i: usize) -> String {
    format!("u{i:04}")
}

/// The webhook URL user `i` is bound to on the webhook simulator at `base`.
pub fn hook_url(base: &str, user: &str) -> String {
    format!("{base}/hooks/{user}")
}

/// The `body` of every webhook message, in both phases.
pub fn webhook_body() -> Value {
    json!({
        "event": "order.shipped",
        "order": "A-10023",
        "text": "Your order A-10023 has shipped and will arrive on Tuesday.",
    })
}

/// The text of every WeCom and Feishu message.
pub const IM_TEXT: &str = "Your order A-10023 has shipped and will arrive on Tuesday.";

/// A webhook event of the shape umsd posts (`type`, `timestamp`, `data` with the message
/// id, delivery id, user id and the message's body).
pub fn webhook_event(delivery_id: u64, user: &str, body: &Value) -> String {
    let now = chrono::Utc::now();
    json!({
        "type": "message",
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": {
            "id": format!("msg_{:013}", delivery_id / 1000),
            "delivery_id": (7_000_000_000_000_000u64 + delivery_id).to_string(),
            "user_id": user,
            "body": body,
        }
    })
    .to_string()
}

/// What one simulator took on its own.
#[derive(Debug, Clone, Serialize)]
pub struct SimAlone {
    pub kind: String,
    pub connections: usize,
    pub seconds: f64,
    pub elapsed_s: f64,
    pub requests_ok: u64,
    pub non_2xx: u64,
    pub errors: u64,
    /// Growth of the simulator's `recipients_accepted` over the phase.
    pub recipients_accepted: u64,
    /// Recipients accepted per second: R_sim.
    pub rate: f64,
    /// CPU of the harness process (load generator and simulator) over the phase.
    pub harness_cpu_cores: f64,
    /// Cores the whole machine kept busy over the phase (other processes included).
    pub machine_busy_cores: Option<f64>,
    /// umsd's and its PostgreSQL's CPU over the phase, when umsd runs (idle, between
    /// rounds).
    pub umsd_cores: Option<f64>,
    pub postgres_cores: Option<f64>,
    pub notes: BTreeMap<String, u64>,
}

/// Builds request `i` of a closed loop.
type MakeRequest = Box<dyn Fn(u64) -> Result<Request<Full<Bytes>>> + Send + Sync>;

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint {
        addr,
        host: addr.to_string(),
    }
}

fn header(v: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(v).map_err(|e| anyhow!("header value {v:?}: {e}"))
}

fn post(
    host: &HeaderValue,
    path: &str,
    body: String,
    headers: &[(&'static str, String)],
) -> Result<Request<Full<Bytes>>> {
    let mut req = Request::new(Full::new(Bytes::from(body)));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = path
        .parse::<Uri>()
        .map_err(|e| anyhow!("path {path}: {e}"))?;
    let h = req.headers_mut();
    h.insert(HOST, host.clone());
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (k, v) in headers {
        h.insert(*k, header(v)?);
    }
    Ok(req)
}

/// Requests like umsd's webhook calls: one signed event per recipient.
fn webhook_requests(sim: &SimHandle, users: usize) -> Result<MakeRequest> {
    let secret = sim.config().app_secret;
    if umsd_sim::sign::standard_webhooks_key(&secret).is_none() {
        bail!("the webhook simulator's secret is not a whsec_ secret");
    }
    let host = header(&sim.addr().to_string())?;
    let body = webhook_body();
    let users = users.max(1);
    Ok(Box::new(move |i| {
        let user = user_id(i as usize % users);
        let event = webhook_event(i, &user, &body);
        let id = format!("dlv_{}", 7_000_000_000_000_000u64 + i);
        let ts = chrono::Utc::now().timestamp();
        let signature = umsd_sim::sign::standard_webhooks(&secret, &id, ts, event.as_bytes())
            .ok_or_else(|| anyhow!("signing failed"))?;
        post(
            &host,
            &format!("/hooks/{user}"),
            event,
            &[
                ("webhook-id", id),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", signature),
            ],
        )
    }))
}

/// Requests like umsd's Feishu calls: one message per recipient with a tenant token and a
/// `uuid`.
async fn feishu_requests(sim: &SimHandle, users: usize) -> Result<MakeRequest> {
    let cfg = sim.config();
    let answer: Value = crate::http_builder()
        .build()?
        .post(format!(
            "{}/open-apis/auth/v3/tenant_access_token/internal",
            sim.url()
        ))
        .json(&json!({"app_id": cfg.app_key, "app_secret": cfg.app_secret}))
        .timeout(ANSWER_TIMEOUT)
        .send()
        .await
        .context("Feishu simulator token")?
        .json()
        .await
        .context("Feishu simulator token answer")?;
    let token = answer["tenant_access_token"]
        .as_str()
        .ok_or_else(|| anyhow!("Feishu simulator gave no token: {answer}"))?
        .to_owned();
    let host = header(&sim.addr().to_string())?;
    let bearer = format!("Bearer {token}");
    let content = json!({ "text": IM_TEXT }).to_string();
    let users = users.max(1);
    Ok(Box::new(move |i| {
        let body = json!({
            "receive_id": user_id(i as usize % users),
            "msg_type": "text",
            "content": content,
            "uuid": format!("dlv_{}", 7_000_000_000_000_000u64 + i),
        })
        .to_string();
        let mut req = post(
            &host,
            "/open-apis/im/v1/messages?receive_id_type=open_id",
            body,
            &[],
        )?;
        req.headers_mut().insert(AUTHORIZATION, header(&bearer)?);
        Ok(req)
    }))
}

/// Whether the simulators-alone measurement exists for this kind (per-recipient HTTP
/// calls: webhook and Feishu).
pub fn measurable_alone(kind: Kind) -> bool {
    matches!(kind, Kind::Webhook | Kind::Feishu)
}

/// The simulator alone: `connections` keep-alive connections in a closed loop for
/// `duration`, requests shaped like umsd's to `users` distinct recipients.
pub async fn alone(
    sim: &SimHandle,
    users: usize,
    connections: usize,
    duration: Duration,
) -> Result<SimAlone> {
    let make = match sim.kind() {
        Kind::Webhook => webhook_requests(sim, users)?,
        Kind::Feishu => feishu_requests(sim, users).await?,
        other => bail!("no simulator-alone measurement for {other}"),
    };
    let ep = endpoint(sim.addr());
    let before = sim.stats().recipients_accepted;
    let cpu0 = cpu::own_cpu_time();
    let machine0 = crate::cpu::machine_ticks();
    let t0 = Instant::now();
    let shared = Arc::new(LoopShared {
        ep,
        deadline: t0 + duration,
        next: AtomicU64::new(0),
        make,
    });
    let mut set = JoinSet::new();
    for _ in 0..connections.max(1) {
        set.spawn(closed_loop_worker(shared.clone()));
    }
    let mut total = LoopCounts::default();
    while let Some(r) = set.join_next().await {
        let c = r.context("closed-loop worker")?;
        total.ok += c.ok;
        total.non_2xx += c.non_2xx;
        total.errors += c.errors;
        for (k, v) in c.notes {
            let n = total.notes.len();
            let key = if n < MAX_NOTES || total.notes.contains_key(&k) {
                k
            } else {
                "other".to_owned()
            };
            *total.notes.entry(key).or_insert(0) += v;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu::own_cpu_time().saturating_sub(cpu0).as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let machine = crate::cpu::machine_busy_cores(machine0, crate::cpu::machine_ticks(), cores);
    let accepted = sim.stats().recipients_accepted.saturating_sub(before);
    Ok(SimAlone {
        kind: sim.kind().to_string(),
        connections: connections.max(1),
        seconds: duration.as_secs_f64(),
        elapsed_s: elapsed,
        requests_ok: total.ok,
        non_2xx: total.non_2xx,
        errors: total.errors,
        recipients_accepted: accepted,
        rate: if elapsed > 0.0 {
            accepted as f64 / elapsed
        } else {
            0.0
        },
        harness_cpu_cores: if elapsed > 0.0 { cpu / elapsed } else { 0.0 },
        machine_busy_cores: machine,
        umsd_cores: None,
        postgres_cores: None,
        notes: total.notes,
    })
}

struct LoopShared {
    ep: Endpoint,
    deadline: Instant,
    next: AtomicU64,
    make: MakeRequest,
}

#[derive(Default)]
struct LoopCounts {
    ok: u64,
    non_2xx: u64,
    errors: u64,
    notes: BTreeMap<String, u64>,
}

impl LoopCounts {
    fn note(&mut self, text: String) {
        if self.notes.len() < MAX_NOTES || self.notes.contains_key(&text) {
            *self.notes.entry(text).or_insert(0) += 1;
        } else {
            *self.notes.entry("other".to_owned()).or_insert(0) += 1;
        }
    }
}

async fn closed_loop_worker(shared: Arc<LoopShared>) -> LoopCounts {
    let mut counts = LoopCounts::default();
    let mut conn: Option<Conn> = None;
    while Instant::now() < shared.deadline {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        let req = match (shared.make)(i) {
            Ok(r) => r,
            Err(e) => {
                counts.errors += 1;
                counts.note(format!("{e:#}"));
                break;
            }
        };
        match tokio::time::timeout(
            ANSWER_TIMEOUT,
            openloop::exchange(&mut conn, &shared.ep, req),
        )
        .await
        {
            Ok(Ok((status, body))) => {
                if (200..300).contains(&status) {
                    counts.ok += 1;
                } else {
                    counts.non_2xx += 1;
                    let text: String = String::from_utf8_lossy(&body).chars().take(160).collect();
                    counts.note(format!("HTTP {status}: {text}"));
                }
            }
            Ok(Err(e)) => {
                conn = None;
                counts.errors += 1;
                counts.note(e);
            }
            Err(_) => {
                conn = None;
                counts.errors += 1;
                counts.note("timeout".to_owned());
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_events_look_like_umsds() {
        let e: Value = serde_json::from_str(&webhook_event(42, "u0042", &webhook_body())).unwrap();
        assert_eq!(e["type"], "message");
        assert_eq!(e["data"]["user_id"], "u0042");
        assert_eq!(e["data"]["body"]["order"], "A-10023");
        assert!(e["data"]["delivery_id"].as_str().unwrap().len() >= 16);
        assert_eq!(user_id(7), "u0007");
        assert_eq!(
            hook_url("http://127.0.0.1:9", "u0007"),
            "http://127.0.0.1:9/hooks/u0007"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn webhook_simulator_alone_accepts_signed_requests() {
        let sim = start(Kind::Webhook, 1).unwrap();
        let r = alone(&sim, 10, 2, Duration::from_millis(300))
            .await
            .unwrap();
        assert!(r.requests_ok > 0, "{r:?}");
        assert_eq!(r.non_2xx + r.errors, 0, "{r:?}");
        assert_eq!(r.recipients_accepted, r.requests_ok);
        assert!(r.rate > 0.0);
        assert_eq!(sim.stats().token_rejected, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn feishu_simulator_alone_accepts_requests() {
        let sim = start(Kind::Feishu, 1).unwrap();
        let r = alone(&sim, 10, 2, Duration::from_millis(300))
            .await
            .unwrap();
        assert!(r.requests_ok > 0, "{r:?}");
        assert_eq!(r.non_2xx + r.errors, 0, "{r:?}");
        assert_eq!(r.recipients_accepted, r.requests_ok);
    }
}
