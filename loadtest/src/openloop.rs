//! The open-loop load generator.
//!
//! Request `i` of a phase is *intended* at `t0 + i / rate`, whatever happened to the
//! requests before it. A fixed set of `C` keep-alive HTTP/1.1 connections carries the load,
//! one worker task per connection, wrk2-style: a free worker takes the earliest request not
//! yet taken, waits for its intended time if that is still ahead, sends it and waits for
//! the answer. A request that had to wait for a free connection is therefore sent late, and
//! its latency is still measured from its intended time (coordinated omission corrected).
//!
//! Every phase is bounded: at most `rate × duration` (and at most `max_requests`) requests,
//! none started later than `duration + timeout` after `t0`, each answered within `timeout`
//! or counted as a timeout. Latencies are recorded in microseconds into `hdrhistogram`s
//! (3 significant digits); the per-second series buckets answers by the second they
//! arrived in.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Highest latency a histogram holds (one hour, in µs); larger values saturate.
pub const HIST_MAX_US: u64 = 3_600_000_000;
/// Most distinct error descriptions kept per phase; the rest are counted under "other".
const MAX_NOTES: usize = 16;
/// How much of an error body is kept in a note.
const NOTE_BODY_CHARS: usize = 160;

/// An empty latency histogram: 1 µs … 1 h, 3 significant digits.
pub fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).map_err(|e| anyhow!("histogram: {e:?}"))
}

/// Where the load goes: a loopback socket address and the `Host` header to send.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub host: String,
}

/// One phase of load: a fixed arrival rate for a bounded time.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Intended requests per second.
    pub rate: f64,
    /// Length of the sending window.
    pub duration: Duration,
    /// Upper bound on the requests of this phase, whatever rate × duration says.
    pub max_requests: u64,
    /// Keep-alive connections (and worker tasks).
    pub connections: usize,
    /// Longest wait for one answer; also how long after the window a late request may
    /// still be started.
    pub timeout: Duration,
    /// Request path, e.g. `/v1/messages`.
    pub path: String,
    /// The `Authorization` header value.
    pub authorization: String,
    /// Prefix of every `message_id` of this phase; request `i` gets
    /// `<prefix><first_index + i>`.
    pub id_prefix: String,
    pub first_index: u64,
}

/// How many requests a phase plans: `ceil(rate × duration)`, at most `max_requests`.
pub fn planned_requests(rate: f64, duration: Duration, max_requests: u64) -> u64 {
    if !(rate.is_finite() && rate > 0.0) {
        return 0;
    }
    let n = (rate * duration.as_secs_f64()).ceil();
    if n >= max_requests as f64 {
        max_requests
    } else {
        n as u64
    }
}

/// When request `i` is intended, relative to the phase start: `i / rate`.
pub fn intended_offset(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// The JSON body of request `i`, used both for HTTP sends and for the copied rows so the
/// two write the same bytes.
pub fn message_body(message_id: &str, i: u64) -> String {
    format!(
        concat!(
            r#"{{"message_id":"{id}","audience":{{"user_ids":["u{user}"]}},"channels":["inbox"],"#,
            r#""content":{{"inbox":{{"title":"Order shipped","body":"Your order {order} has shipped"}}}}}}"#
        ),
        id = message_id,
        user = i % 10_000,
        order = i,
    )
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer with this status.
    Status(u16),
    /// No answer within the timeout.
    Timeout,
    /// Connection or protocol error.
    Error,
}

/// One request's record. Times are µs since the phase start `t0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When the request was resolved (answer, timeout or error).
    pub done_us: u64,
    /// From its intended time to `done` (coordinated-omission corrected).
    pub latency_us: u64,
    /// From the moment it was actually sent to `done`.
    pub service_us: u64,
    pub outcome: Outcome,
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// One second of a phase, by the second the requests were resolved in.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SecondPoint {
    /// Seconds since the phase start (this point covers `[second, second + 1)`).
    pub second: u64,
    /// Requests answered with an HTTP status.
    pub completed: u64,
    pub ok_2xx: u64,
    pub non_2xx: u64,
    /// Timeouts and connection errors.
    pub failed: u64,
    /// Latency percentiles of everything resolved in this second; `None` when nothing was.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Buckets samples by the second they were resolved in, from second 0 to the last one.
pub fn per_second_series(samples: &[Sample]) -> Result<Vec<SecondPoint>> {
    let Some(last) = samples.iter().map(|s| s.done_us / 1_000_000).max() else {
        return Ok(Vec::new());
    };
    let n = usize::try_from(last + 1)?;
    let mut hists = Vec::with_capacity(n);
    let mut points = Vec::with_capacity(n);
    for second in 0..=last {
        hists.push(new_histogram()?);
        points.push(SecondPoint {
            second,
            completed: 0,
            ok_2xx: 0,
            non_2xx: 0,
            failed: 0,
            p50_ms: None,
            p99_ms: None,
        });
    }
    for s in samples {
        let idx = usize::try_from(s.done_us / 1_000_000)?;
        let (Some(p), Some(h)) = (points.get_mut(idx), hists.get_mut(idx)) else {
            continue;
        };
        match s.outcome {
            Outcome::Status(code) => {
                p.completed += 1;
                if (200..300).contains(&code) {
                    p.ok_2xx += 1;
                } else {
                    p.non_2xx += 1;
                }
            }
            Outcome::Timeout | Outcome::Error => p.failed += 1,
        }
        h.saturating_record(s.latency_us.max(1));
    }
    for (p, h) in points.iter_mut().zip(&hists) {
        if !h.is_empty() {
            p.p50_ms = Some(h.value_at_quantile(0.50) as f64 / 1000.0);
            p.p99_ms = Some(h.value_at_quantile(0.99) as f64 / 1000.0);
        }
    }
    Ok(points)
}

/// Rate at which answers came back: `(n − 1) / (last − first)` over the answered
/// requests. Unbiased by the latency of the first and last answer: a server that keeps up
/// yields the offered rate, one that falls behind yields the rate it drained at.
pub fn achieved_rate(samples: &[Sample]) -> f64 {
    let mut n = 0u64;
    let mut first = u64::MAX;
    let mut last = 0u64;
    for s in samples {
        if matches!(s.outcome, Outcome::Status(_)) {
            n += 1;
            first = first.min(s.done_us);
            last = last.max(s.done_us);
        }
    }
    if n < 2 || last <= first {
        return 0.0;
    }
    (n - 1) as f64 / ((last - first) as f64 / 1e6)
}

/// Everything measured in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    pub name: String,
    pub path: String,
    pub target_rate: f64,
    pub duration_s: f64,
    /// Seconds from the start of the whole run to this phase's `t0`.
    pub start_offset_s: f64,
    pub started_at: String,
    pub connections: usize,
    pub planned: u64,
    pub sent: u64,
    /// Planned requests never started because the phase ran out of time.
    pub not_sent: u64,
    /// Answered with an HTTP status.
    pub completed: u64,
    pub ok_2xx: u64,
    pub non_2xx: u64,
    pub timeouts: u64,
    pub errors: u64,
    pub status_counts: BTreeMap<String, u64>,
    /// See [`achieved_rate`].
    pub achieved_rate: f64,
    /// From `t0` to the last resolved request.
    pub elapsed_s: f64,
    /// From intended time to answer, all resolved requests.
    pub latency: LatencySummary,
    /// From actual send to answer.
    pub service_time: LatencySummary,
    /// The harness's own CPU use during the phase, in cores (to tell a saturated client).
    pub client_cpu_cores: f64,
    /// Error descriptions and how often each was seen.
    pub notes: BTreeMap<String, u64>,
    /// The first 2xx body, as a sample of what the target answers.
    pub first_ok_body: Option<String>,
    pub series: Vec<SecondPoint>,
}

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
        let mut req = Request::new(Full::new(Bytes::from(message_body(&id, index))));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        let h = req.headers_mut();
        h.insert(HOST, self.host.clone());
        h.insert(AUTHORIZATION, self.authorization.clone());
        h.insert(CONTENT_TYPE, self.content_type.clone());
        req
    }
}

/// One keep-alive HTTP/1.1 connection; its driver task ends with it.
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Conn {
    async fn open(ep: &Endpoint) -> Result<Conn, String> {
        let stream = TcpStream::connect(ep.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender, driver })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Sends one request on the worker's connection, opening a new one if it was closed.
pub(crate) async fn exchange(
    conn: &mut Option<Conn>,
    ep: &Endpoint,
    req: Request<Full<Bytes>>,
) -> Result<(u16, Bytes), String> {
    if conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
        *conn = Some(Conn::open(ep).await?);
    }
    let Some(c) = conn.as_mut() else {
        return Err("no connection".to_owned());
    };
    c.sender
        .ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    let resp = c
        .sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("read body: {e}"))?
        .to_bytes();
    Ok((status, body))
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

/// CPU time (user + system) this process has used so far.
pub fn own_cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
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

/// Builds a phase result from its samples (pure; timing context is filled by the caller).
pub fn summarize(
    name: &str,
    spec: &LoadSpec,
    planned: u64,
    samples: &[Sample],
) -> Result<PhaseResult> {
    let mut latency = new_histogram()?;
    let mut service = new_histogram()?;
    let mut status_counts: BTreeMap<String, u64> = BTreeMap::new();
    let (mut completed, mut ok, mut non_2xx, mut timeouts, mut errors) = (0, 0, 0, 0, 0);
    let mut last_done = 0;
    for s in samples {
        latency.saturating_record(s.latency_us.max(1));
        service.saturating_record(s.service_us.max(1));
        last_done = last_done.max(s.done_us);
        match s.outcome {
            Outcome::Status(code) => {
                completed += 1;
                if (200..300).contains(&code) {
                    ok += 1;
                } else {
                    non_2xx += 1;
                }
                *status_counts.entry(code.to_string()).or_insert(0) += 1;
            }
            Outcome::Timeout => timeouts += 1,
            Outcome::Error => errors += 1,
        }
    }
    let sent = samples.len() as u64;
    Ok(PhaseResult {
        name: name.to_owned(),
        path: spec.path.clone(),
        target_rate: spec.rate,
        duration_s: spec.duration.as_secs_f64(),
        start_offset_s: 0.0,
        started_at: String::new(),
        connections: spec.connections,
        planned,
        sent,
        not_sent: planned.saturating_sub(sent),
        completed,
        ok_2xx: ok,
        non_2xx,
        timeouts,
        errors,
        status_counts,
        achieved_rate: achieved_rate(samples),
        elapsed_s: last_done as f64 / 1e6,
        latency: LatencySummary::of(&latency),
        service_time: LatencySummary::of(&service),
        client_cpu_cores: 0.0,
        notes: BTreeMap::new(),
        first_ok_body: None,
        series: per_second_series(samples)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(done_us: u64, latency_us: u64) -> Sample {
        Sample {
            done_us,
            latency_us,
            service_us: latency_us,
            outcome: Outcome::Status(202),
        }
    }

    #[test]
    fn schedule_spaces_requests_evenly() {
        assert_eq!(intended_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(intended_offset(1, 1000.0), Duration::from_millis(1));
        assert_eq!(intended_offset(2500, 1000.0), Duration::from_millis(2500));
        // 3 per second: the third request is at 2/3 s.
        let d = intended_offset(2, 3.0).as_secs_f64();
        assert!((d - 2.0 / 3.0).abs() < 1e-9);
        // the schedule is monotonic at awkward rates
        let rate = 2197.3;
        let mut prev = Duration::ZERO;
        for i in 1..10_000 {
            let t = intended_offset(i, rate);
            assert!(t > prev);
            prev = t;
        }
    }

    #[test]
    fn planned_count_is_rate_times_duration_capped() {
        assert_eq!(
            planned_requests(2000.0, Duration::from_secs(5), 1_000_000),
            10_000
        );
        assert_eq!(
            planned_requests(2600.5, Duration::from_secs(2), 1_000_000),
            5201
        );
        assert_eq!(planned_requests(2000.0, Duration::from_secs(5), 300), 300);
        assert_eq!(planned_requests(0.0, Duration::from_secs(5), 300), 0);
        assert_eq!(planned_requests(f64::NAN, Duration::from_secs(5), 300), 0);
        assert_eq!(planned_requests(1e12, Duration::from_secs(3600), 77), 77);
    }

    #[test]
    fn bodies_are_valid_json_with_the_id() {
        let b = message_body("lt-x-7", 7);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["message_id"], "lt-x-7");
        assert_eq!(v["audience"]["user_ids"][0], "u7");
        assert_eq!(v["channels"][0], "inbox");
        assert_eq!(v["content"]["inbox"]["body"], "Your order 7 has shipped");
    }

    #[test]
    fn series_buckets_by_completion_second() {
        let mut samples = Vec::new();
        // second 0: 100 answers at 1..100 ms latency
        for i in 1..=100u64 {
            samples.push(ok(i * 1000, i * 1000));
        }
        // second 2: one 503, one timeout, one 202 with 50 ms
        samples.push(Sample {
            done_us: 2_100_000,
            latency_us: 5_000,
            service_us: 5_000,
            outcome: Outcome::Status(503),
        });
        samples.push(Sample {
            done_us: 2_200_000,
            latency_us: 900_000,
            service_us: 900_000,
            outcome: Outcome::Timeout,
        });
        samples.push(ok(2_300_000, 50_000));

        let s = per_second_series(&samples).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].completed, 100);
        assert_eq!(s[0].ok_2xx, 100);
        let p50 = s[0].p50_ms.unwrap();
        let p99 = s[0].p99_ms.unwrap();
        assert!((p50 - 50.0).abs() < 0.1, "{p50}");
        assert!((p99 - 99.0).abs() < 0.1, "{p99}");
        // an empty second has no percentiles
        assert_eq!(s[1].completed, 0);
        assert_eq!(s[1].p50_ms, None);
        assert_eq!(s[2].completed, 2);
        assert_eq!(s[2].ok_2xx, 1);
        assert_eq!(s[2].non_2xx, 1);
        assert_eq!(s[2].failed, 1);
        // the timeout's latency is part of that second's percentiles
        assert!(s[2].p99_ms.unwrap() > 800.0);
        assert!(per_second_series(&[]).unwrap().is_empty());
    }

    #[test]
    fn achieved_rate_ignores_first_and_last_latency() {
        // 1000 requests at 1000/s, each answered 40 ms after it was intended.
        let samples: Vec<Sample> = (0..1000).map(|i| ok(i * 1000 + 40_000, 40_000)).collect();
        let r = achieved_rate(&samples);
        assert!((r - 1000.0).abs() < 1.0, "{r}");
        // a server that drains at 500/s although 1000/s were offered
        let slow: Vec<Sample> = (0..1000).map(|i| ok(i * 2000 + 1000, i * 1000)).collect();
        let r = achieved_rate(&slow);
        assert!((r - 500.0).abs() < 1.0, "{r}");
        assert_eq!(achieved_rate(&samples[..1]), 0.0);
    }

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

    #[test]
    fn summary_counts_outcomes() {
        let spec = LoadSpec {
            rate: 100.0,
            duration: Duration::from_secs(1),
            max_requests: 1000,
            connections: 2,
            timeout: Duration::from_secs(1),
            path: "/bench/messages".into(),
            authorization: "Basic x".into(),
            id_prefix: "lt-".into(),
            first_index: 0,
        };
        let mut samples: Vec<Sample> = (0..90).map(|i| ok(i * 10_000, 2_000)).collect();
        samples.push(Sample {
            done_us: 950_000,
            latency_us: 1_000,
            service_us: 1_000,
            outcome: Outcome::Error,
        });
        samples.push(Sample {
            done_us: 960_000,
            latency_us: 1_000,
            service_us: 1_000,
            outcome: Outcome::Status(200),
        });
        let r = summarize("t", &spec, 100, &samples).unwrap();
        assert_eq!(r.planned, 100);
        assert_eq!(r.sent, 92);
        assert_eq!(r.not_sent, 8);
        assert_eq!(r.completed, 91);
        assert_eq!(r.ok_2xx, 91);
        assert_eq!(r.errors, 1);
        assert_eq!(r.status_counts.get("202"), Some(&90));
        assert_eq!(r.status_counts.get("200"), Some(&1));
        assert!((r.latency.p50_ms - 2.0).abs() < 0.01);
    }
}
