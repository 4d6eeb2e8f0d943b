//! Running one phase: one worker task per connection takes the earliest request not yet
//! taken, waits for its intended time, sends it and records when it was resolved; the
//! workers' records are merged into the phase's [`PhaseResult`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{
    exchange, intended_offset, planned_requests, summarize, BodySpec, Conn, Endpoint, LoadSpec,
    Outcome, PhaseResult, Sample,
};
use crate::cpu::own_cpu_time;

/// Most distinct error descriptions kept per phase; the rest are counted under "other".
const MAX_NOTES: usize = 16;
/// How much of an error body is kept in a note.
const NOTE_BODY_CHARS: usize = 160;

/// Per-worker record, merged at the end of a phase.
#[derive(Default)]
struct WorkerLog {
    samples: Vec<Sample>,
    notes: BTreeMap<String, u64>,
    first_ok_body: Option<String>,
}

impl WorkerLog {
    fn note(&mut self, text: String) {
        if self.notes.len() < MAX_NOTES || self.notes.contains_key(&text) {
            *self.notes.entry(text).or_insert(0) += 1;
        } else {
            *self.notes.entry("other".to_owned()).or_insert(0) += 1;
        }
    }
}

/// What every worker of a phase shares.
struct Shared {
    endpoint: Endpoint,
    uri: Uri,
    host: HeaderValue,
    authorization: HeaderValue,
    content_type: HeaderValue,
    id_prefix: String,
    first_index: u64,
    body: BodySpec,
    rate: f64,
    planned: u64,
    timeout: Duration,
    t0: Instant,
    /// No request is started after this.
    send_deadline: Instant,
    next: AtomicU64,
}

impl Shared {
    fn request(&self, i: u64) -> Request<Full<Bytes>> {
        let index = self.first_index + i;
        let id = format!("{}{index}", self.id_prefix);
        let mut req = Request::new(Full::new(Bytes::from(self.body.body(&id, index))));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        let h = req.headers_mut();
        h.insert(HOST, self.host.clone());
        h.insert(AUTHORIZATION, self.authorization.clone());
        h.insert(CONTENT_TYPE, self.content_type.clone());
        req
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(NOTE_BODY_CHARS)
        .collect()
}

async fn worker(shared: Arc<Shared>, mut conn: Option<Conn>) -> WorkerLog {
    let mut log = WorkerLog::default();
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= shared.planned {
            break;
        }
        let intended = shared.t0 + intended_offset(i, shared.rate);
        if intended > Instant::now() {
            tokio::time::sleep_until(intended).await;
        }
        let sent = Instant::now();
        if sent > shared.send_deadline {
            // Out of time: leave this and every later request unsent.
            shared.next.store(shared.planned, Ordering::Relaxed);
            break;
        }
        let req = shared.request(i);
        let result =
            tokio::time::timeout(shared.timeout, exchange(&mut conn, &shared.endpoint, req)).await;
        let done = Instant::now();
        let outcome = match result {
            Ok(Ok((status, body))) => {
                if (200..300).contains(&status) {
                    if log.first_ok_body.is_none() {
                        log.first_ok_body = Some(snippet(&body));
                    }
                } else {
                    log.note(format!("HTTP {status}: {}", snippet(&body)));
                }
                Outcome::Status(status)
            }
            Ok(Err(e)) => {
                conn = None;
                log.note(e);
                Outcome::Error
            }
            Err(_) => {
                // The answer may still come: this connection cannot be reused.
                conn = None;
                log.note("timeout".to_owned());
                Outcome::Timeout
            }
        };
        log.samples.push(Sample {
            done_us: micros(done.saturating_duration_since(shared.t0)),
            latency_us: micros(done.saturating_duration_since(intended)),
            service_us: micros(done.saturating_duration_since(sent)),
            outcome,
        });
    }
    log
}

/// Runs one phase against `endpoint` and summarises it. `run_start` is the start of the
/// whole run, for the phase's offset on the common time axis.
pub async fn run_phase(
    name: &str,
    endpoint: &Endpoint,
    spec: &LoadSpec,
    run_start: Instant,
) -> Result<PhaseResult> {
    anyhow::ensure!(
        spec.rate.is_finite() && spec.rate > 0.0,
        "rate must be positive"
    );
    anyhow::ensure!(spec.connections > 0, "need at least one connection");
    let planned = planned_requests(spec.rate, spec.duration, spec.max_requests);

    // Connections are opened before the clock starts.
    let opened =
        futures_util::future::join_all((0..spec.connections).map(|_| Conn::open(endpoint))).await;
    let mut conns = Vec::with_capacity(opened.len());
    for c in opened {
        conns.push(c.map_err(|e| anyhow!("cannot open a connection to {}: {e}", endpoint.addr))?);
    }

    let cpu_before = own_cpu_time();
    let started_at = chrono::Utc::now().to_rfc3339();
    let t0 = Instant::now() + Duration::from_millis(5);
    let shared = Arc::new(Shared {
        endpoint: endpoint.clone(),
        uri: spec
            .path
            .parse()
            .with_context(|| format!("bad path {}", spec.path))?,
        host: HeaderValue::from_str(&endpoint.host).context("bad Host header")?,
        authorization: HeaderValue::from_str(&spec.authorization)
            .context("bad Authorization header")?,
        content_type: HeaderValue::from_static("application/json"),
        id_prefix: spec.id_prefix.clone(),
        first_index: spec.first_index,
        body: spec.body.clone(),
        rate: spec.rate,
        planned,
        timeout: spec.timeout,
        t0,
        send_deadline: t0 + spec.duration + spec.timeout,
        next: AtomicU64::new(0),
    });

    let mut set = JoinSet::new();
    for conn in conns {
        set.spawn(worker(Arc::clone(&shared), Some(conn)));
    }
    let mut samples = Vec::with_capacity(usize::try_from(planned).unwrap_or(0));
    let mut notes: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_ok_body = None;
    while let Some(joined) = set.join_next().await {
        let log = joined.context("load worker failed")?;
        samples.extend_from_slice(&log.samples);
        for (k, v) in log.notes {
            *notes.entry(k).or_insert(0) += v;
        }
        if first_ok_body.is_none() {
            first_ok_body = log.first_ok_body;
        }
    }
    let cpu_used = own_cpu_time().saturating_sub(cpu_before);
    let elapsed = Instant::now().saturating_duration_since(t0);

    let mut result = summarize(name, spec, planned, &samples)?;
    result.start_offset_s = t0.saturating_duration_since(run_start).as_secs_f64();
    result.started_at = started_at;
    result.client_cpu_cores = if elapsed.is_zero() {
        0.0
    } else {
        cpu_used.as_secs_f64() / elapsed.as_secs_f64()
    };
    result.notes = notes;
    result.first_ok_body = first_ok_body;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// A minimal keep-alive HTTP/1.1 server answering every request with `status` after
    /// `delay`; counts requests and connections.
    async fn mock_server(
        status: u16,
        delay: Duration,
    ) -> (SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let conns = Arc::new(AtomicU64::new(0));
        let (rq, cn) = (Arc::clone(&requests), Arc::clone(&conns));
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                cn.fetch_add(1, Ordering::Relaxed);
                let rq = Arc::clone(&rq);
                tokio::spawn(async move {
                    let mut buf: Vec<u8> = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // one request: headers, then Content-Length bytes of body
                        let head_end = loop {
                            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break p + 4;
                            }
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while buf.len() < head_end + len {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + len);
                        rq.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                        let body = r#"{"id":"msg_0000000000001","status":"accepted"}"#;
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, requests, conns)
    }

    fn spec(rate: f64, secs: f64, connections: usize, timeout_ms: u64) -> LoadSpec {
        LoadSpec {
            rate,
            duration: Duration::from_secs_f64(secs),
            max_requests: 1_000_000,
            connections,
            timeout: Duration::from_millis(timeout_ms),
            path: "/bench/messages".into(),
            authorization: "Basic ZGVtbzpkZW1vLXNlY3JldA==".into(),
            id_prefix: "lt-test-".into(),
            first_index: 0,
            body: BodySpec::inbox(),
        }
    }

    fn endpoint(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            host: addr.to_string(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn holds_the_rate_against_a_fast_server() {
        let (addr, requests, conns) = mock_server(202, Duration::ZERO).await;
        let r = run_phase(
            "fast",
            &endpoint(addr),
            &spec(1000.0, 1.0, 8, 2000),
            Instant::now(),
        )
        .await
        .unwrap();
        assert_eq!(r.planned, 1000);
        assert_eq!(r.sent, 1000);
        assert_eq!(r.ok_2xx, 1000);
        assert_eq!(r.non_2xx + r.timeouts + r.errors + r.not_sent, 0);
        assert_eq!(requests.load(Ordering::Relaxed), 1000);
        // keep-alive: one connection per worker, no more
        assert_eq!(conns.load(Ordering::Relaxed), 8);
        assert!(
            (r.achieved_rate - 1000.0).abs() < 100.0,
            "{}",
            r.achieved_rate
        );
        assert!(r.latency.p50_ms < 50.0, "{:?}", r.latency);
        assert!(r.first_ok_body.as_deref().unwrap().contains("accepted"));
        assert_eq!(r.series.iter().map(|p| p.ok_2xx).sum::<u64>(), 1000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn latency_counts_from_the_intended_time() {
        // One connection, 20 ms per answer: capacity 50/s, offered 100/s for 1 s.
        let (addr, _, _) = mock_server(202, Duration::from_millis(20)).await;
        let r = run_phase(
            "slow",
            &endpoint(addr),
            &spec(100.0, 1.0, 1, 5000),
            Instant::now(),
        )
        .await
        .unwrap();
        assert_eq!(r.ok_2xx, 100);
        // drained at the server's pace, not the offered one
        assert!(
            r.achieved_rate < 55.0 && r.achieved_rate > 25.0,
            "{}",
            r.achieved_rate
        );
        // each answer took ~20 ms once sent ...
        assert!(r.service_time.p50_ms < 40.0, "{:?}", r.service_time);
        // ... but the last requests waited ~1 s for the connection, and that counts
        assert!(r.latency.max_ms > 800.0, "{:?}", r.latency);
        assert!(r.latency.p50_ms > 300.0, "{:?}", r.latency);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timeouts_and_errors_are_counted() {
        let (addr, _, conns) = mock_server(202, Duration::from_millis(300)).await;
        let r = run_phase(
            "timeouts",
            &endpoint(addr),
            &spec(10.0, 0.5, 1, 50),
            Instant::now(),
        )
        .await
        .unwrap();
        assert_eq!(r.planned, 5);
        assert_eq!(r.timeouts, 5);
        assert_eq!(r.ok_2xx, 0);
        // a timed-out connection is not reused
        assert_eq!(conns.load(Ordering::Relaxed), 5);
        assert_eq!(r.notes.get("timeout"), Some(&5));

        let (addr, _, _) = mock_server(503, Duration::ZERO).await;
        let r = run_phase(
            "503",
            &endpoint(addr),
            &spec(100.0, 0.2, 2, 1000),
            Instant::now(),
        )
        .await
        .unwrap();
        assert_eq!(r.non_2xx, 20);
        assert_eq!(r.status_counts.get("503"), Some(&20));
        assert!(r.notes.keys().any(|k| k.starts_with("HTTP 503")));

        // nothing listening: connection refused at phase start is an error
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = l.local_addr().unwrap();
        drop(l);
        assert!(run_phase(
            "dead",
            &endpoint(dead),
            &spec(10.0, 0.2, 1, 100),
            Instant::now()
        )
        .await
        .is_err());
    }
}
