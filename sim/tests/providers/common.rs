//! Shared test fixtures: starting simulators, an HTTP client, polling, and a tiny
//! callback receiver that records what the simulators push.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use umsd_sim::{Kind, SimConfig, SimHandle};

pub const DELAY_MS: u64 = 100;

pub fn config(kind: Kind) -> SimConfig {
    SimConfig {
        threads: 1,
        receipt_delay_ms: DELAY_MS,
        ..SimConfig::new(kind)
    }
}

pub fn start(cfg: SimConfig) -> SimHandle {
    umsd_sim::start(cfg).unwrap()
}

pub fn client() -> reqwest::Client {
    umsd_sim::init_tls();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

pub async fn get_json(c: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let r = c.get(url).send().await.unwrap();
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    (status, r.json().await.unwrap())
}

pub async fn post_json(c: &reqwest::Client, url: &str, body: &Value) -> (StatusCode, Value) {
    let r = c.post(url).json(body).send().await.unwrap();
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    (status, r.json().await.unwrap())
}

/// Poll `f` every 20 ms until it yields `Some`, for at most 5 s.
pub async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("condition not reached within 5 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request a simulator pushed to us.
#[derive(Debug)]
pub struct Captured {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A callback endpoint on the test's runtime. The first `fail_first` requests get 500.
pub struct Receiver {
    pub addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<Captured>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let seen = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        let seen = Arc::clone(&seen);
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let _ = tx.send(Captured {
                                path: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            });
                            let status = if seen.fetch_add(1, Ordering::SeqCst) < fail_first {
                                StatusCode::INTERNAL_SERVER_ERROR
                            } else {
                                StatusCode::OK
                            };
                            let mut r = Response::new(Full::new(Bytes::from_static(b"success")));
                            *r.status_mut() = status;
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, rx }
    }

    pub fn url(&self) -> String {
        format!("http://{}/callback", self.addr)
    }

    /// The next pushed request, waiting at most 5 s.
    pub async fn next(&mut self) -> Captured {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("no callback within 5 s")
            .expect("receiver closed")
    }

    /// Nothing more arrives within `d`.
    pub async fn quiet_for(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.rx.recv()).await.is_err()
    }
}

/// Parse an `application/x-www-form-urlencoded` body into pairs.
pub fn form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// The value of one form field.
pub fn field<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no field {key}"))
}
