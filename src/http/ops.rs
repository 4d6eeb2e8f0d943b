//! Operations endpoints: `/metrics`, `/healthz`, `/readyz`, `/openapi.json`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;
use umsd_actors::metrics as m;
use umsd_actors::supervisor::GetChannelStates;

use super::AppState;

/// The OpenAPI document, kept beside the code it describes.
const OPENAPI: &str = include_str!("openapi.json");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/openapi.json", web::get().to(openapi));
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 when the database answers, migrations are applied and the actors run; else 503
/// with the failing checks. Channels with a configuration problem (e.g. a gateway refusing
/// the credentials) are listed under `channel_problems`: they do not make umsd unready,
/// since it still accepts and queues messages for them.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let started = state.ready.load(Ordering::Acquire);
    let database = state.store.ping(Duration::from_secs(2)).await;
    let ingest = state.ingest.connected();
    let ready = started && database && ingest;
    metrics::gauge!(m::READY).set(if ready { 1.0 } else { 0.0 });
    let states = state
        .supervisor
        .send(GetChannelStates)
        .timeout(Duration::from_secs(2))
        .await
        .unwrap_or_default();
    let problems: serde_json::Map<String, serde_json::Value> = states
        .into_iter()
        .filter_map(|(code, s)| s.problem.map(|p| (code, p.into())))
        .collect();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {"started": started, "database": database, "ingest": ingest},
        "channel_problems": problems,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(body)
    }
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}
