//! The front door: a thin actix-web layer. It authenticates, parses, validates, hands
//! work to the actors and answers; it holds no state of its own beyond handles.

pub mod admin;
pub mod app_callbacks;
pub mod auth;
pub mod error;
pub mod history;
pub mod inbound;
pub mod inbox;
pub mod messages;
pub mod mo;
pub mod ops;
pub mod recall;
pub mod schedule;
pub mod strategies;
pub mod users;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use actix::Addr;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use umsd_actors::directory::Directory;
use umsd_actors::domain::ids::IdGenerator;
use umsd_actors::ingest::Ingest;
use umsd_actors::metrics as m;
use umsd_actors::receipts::Receipts;
use umsd_actors::scheduler::ScheduleChanged;
use umsd_actors::store::Store;
use umsd_actors::supervisor::Supervisor;

use error::ApiError;

/// Shared by every worker.
pub struct AppState {
    pub store: Store,
    pub directory: Arc<Directory>,
    pub ingest: Addr<Ingest>,
    pub supervisor: Addr<Supervisor>,
    pub receipts: Addr<Receipts>,
    pub admin_token: String,
    pub ready: Arc<AtomicBool>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Ids for the benchmark null route (never stored).
    pub bench_ids: IdGenerator,
    /// Days of history kept: how far ahead a send may be scheduled.
    pub retention_days: u32,
    /// Tells the scheduler that a scheduled message's time changed.
    pub schedule_changed: ScheduleChanged,
    /// How long after its creation a message can be recalled.
    pub recall_window: chrono::Duration,
}

pub fn configure(cfg: &mut web::ServiceConfig, bench: bool) {
    cfg.configure(messages::routes)
        .configure(history::routes)
        .configure(schedule::routes)
        .configure(recall::routes)
        .configure(strategies::routes)
        .configure(users::routes)
        .configure(inbox::routes)
        .configure(mo::routes)
        .configure(app_callbacks::routes)
        .configure(inbound::routes)
        .configure(admin::routes)
        .configure(ops::routes);
    if bench {
        cfg.configure(messages::bench_routes);
    }
}

/// Fallback for unknown paths, in the API's error shape.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such endpoint".into()))
}

/// Counts every request by route pattern, method and status, and times it.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let res = next.call(req).await?;
    let status = res.status().as_u16().to_string();
    metrics::histogram!(m::HTTP_REQUEST_DURATION_SECONDS, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(m::HTTP_REQUESTS_TOTAL, "route" => route, "method" => method, "status" => status)
        .increment(1);
    Ok(res)
}
