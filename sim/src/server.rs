//! The HTTP side of a simulator: its thread and runtime, the accept loop, fault injection
//! in front of the provider handlers, and the `/_sim/` control surface.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;

use crate::http::{self, Req, Resp};
use crate::state::{Fault, Sim};
use crate::{providers, receipts, Faults, SimConfig, SimHandle};

/// Largest request body read; JPush/JSMS batches stay far below.
const MAX_BODY: usize = 16 << 20;
/// How long a `timeout_next` request is held before its connection is closed.
const HOLD: Duration = Duration::from_secs(60);
/// Pushed receipts waiting for their delay; beyond it they are counted as dropped.
const PUSH_QUEUE: usize = 200_000;

pub(crate) fn start(cfg: SimConfig) -> io::Result<SimHandle> {
    let listener = std::net::TcpListener::bind(cfg.listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads.max(1))
        .thread_name(format!("sim-{}", cfg.kind))
        .enable_all()
        .build()?;

    let (push_tx, push_rx) = match &cfg.callback_url {
        Some(_) => {
            let (tx, rx) = tokio::sync::mpsc::channel(PUSH_QUEUE);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let tls = if cfg.tls {
        Some(crate::tls::self_signed("localhost")?)
    } else {
        None
    };
    let (acceptor, cert_pem) = match tls {
        Some((a, pem)) => (Some(a), Some(pem)),
        None => (None, None),
    };
    let sim = Arc::new(Sim::new(cfg, push_tx));
    let (stop_tx, stop_rx) = watch::channel(false);

    let thread_sim = Arc::clone(&sim);
    let thread = std::thread::Builder::new()
        .name(format!("sim-{}-{}", thread_sim.cfg.kind, addr.port()))
        .spawn(move || {
            runtime.block_on(async move {
                if let (Some(rx), Some(url)) = (push_rx, thread_sim.cfg.callback_url.clone()) {
                    tokio::spawn(receipts::run(Arc::clone(&thread_sim), rx, url));
                }
                match TcpListener::from_std(listener) {
                    Ok(l) => accept_loop(l, thread_sim, acceptor, stop_rx).await,
                    Err(e) => tracing::error!(error = %e, "simulator listener unusable"),
                }
            });
            // Held (timeout fault) and idle keep-alive connections are cancelled here.
            runtime.shutdown_timeout(Duration::from_millis(200));
        })?;

    Ok(SimHandle {
        addr,
        cert_pem,
        sim,
        stop: stop_tx,
        thread: Some(thread),
    })
}

async fn accept_loop(
    listener: TcpListener,
    sim: Arc<Sim>,
    acceptor: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let sim = Arc::clone(&sim);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve(sim, stream).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => serve(sim, tls).await,
                    Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                },
            }
        });
    }
}

/// Serves one connection (plain or TLS).
async fn serve<S>(sim: Arc<Sim>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Fired by the drop/timeout faults to close the socket without answering.
    let abort = Arc::new(Notify::new());
    let svc_abort = Arc::clone(&abort);
    let svc = service_fn(move |req| {
        let sim = Arc::clone(&sim);
        let abort = Arc::clone(&svc_abort);
        async move { Ok::<_, Infallible>(dispatch(sim, abort, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        _ = abort.notified() => {}
    }
}

async fn dispatch(sim: Arc<Sim>, abort: Arc<Notify>, req: Request<Incoming>) -> Resp {
    let control = req.uri().path().starts_with("/_sim/");
    if !control {
        sim.counters.requests.inc();
        let latency = sim
            .faults
            .latency_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return http::plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let req = Req {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body,
    };
    if control {
        return control_surface(&sim, &req);
    }
    let kind = sim.cfg.kind;
    if providers::is_send(kind, &req) {
        sim.counters.send_requests.inc();
        if let Some(fault) = sim.faults.next() {
            sim.counters.faults_injected.inc();
            match fault {
                Fault::Drop => {
                    abort.notify_one();
                    return std::future::pending().await;
                }
                Fault::Timeout => {
                    tokio::time::sleep(HOLD).await;
                    abort.notify_one();
                    return std::future::pending().await;
                }
                Fault::RateLimit => {
                    sim.counters.rate_limited.inc();
                    return providers::fault_reply(kind, fault, &sim);
                }
                _ => return providers::fault_reply(kind, fault, &sim),
            }
        }
    }
    providers::handle(kind, &sim, &req)
}

fn control_surface(sim: &Sim, req: &Req) -> Resp {
    let to_json = |v: serde_json::Result<serde_json::Value>| match v {
        Ok(v) => http::ok(&v),
        Err(_) => http::plain(StatusCode::INTERNAL_SERVER_ERROR, "serialization failed"),
    };
    match (&req.method, req.path()) {
        (&Method::GET, "/_sim/stats") => to_json(serde_json::to_value(sim.counters.snapshot())),
        (&Method::GET, "/_sim/received") => {
            let limit = req
                .query("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(1000);
            to_json(serde_json::to_value(sim.received(limit)))
        }
        (&Method::GET, "/_sim/recalls") => to_json(serde_json::to_value(sim.recalls.log())),
        (&Method::GET, "/_sim/faults") => to_json(serde_json::to_value(sim.faults.snapshot())),
        (&Method::POST, "/_sim/faults") => match serde_json::from_slice::<Faults>(&req.body) {
            Ok(f) => {
                sim.set_faults(&f);
                to_json(serde_json::to_value(sim.faults.snapshot()))
            }
            Err(e) => http::json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": e.to_string() }),
            ),
        },
        (&Method::GET, "/_sim/config") => to_json(serde_json::to_value(&sim.cfg)),
        _ => http::not_found(),
    }
}
