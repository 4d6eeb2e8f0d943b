//! `/v1/callbacks`: an app's callback endpoints (at most 5, one of them the default), each
//! with the events it wants and its signing secret; `POST /v1/callbacks/test` posts a
//! signed test event to each endpoint and reports what it answered.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use umsd_actors::app_callbacks::{is_callback_url, post_test};
use umsd_actors::domain::send::FieldError;
use umsd_actors::store::app_callbacks::Endpoint;

use super::auth;
use super::error::ApiError;
use super::messages::{parse_json, read_body};
use super::AppState;

/// Most endpoints per app.
const MAX_ENDPOINTS: usize = 5;
/// Events an endpoint may ask for: a delivery's `sent`, `delivered`, `failed`, `clicked`,
/// and `mo` (replies from handsets on SMS channels).
const EVENTS: &[&str] = &["sent", "delivered", "failed", "clicked", "mo"];

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/callbacks", web::put().to(put))
        .route("/v1/callbacks", web::get().to(get))
        .route("/v1/callbacks/test", web::post().to(test));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    endpoints: Vec<EndpointBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointBody {
    url: String,
    #[serde(default)]
    default: bool,
    events: Vec<String>,
}

fn check(body: PutBody) -> Result<Vec<(String, bool, Vec<String>)>, FieldError> {
    if body.endpoints.len() > MAX_ENDPOINTS {
        return Err(FieldError::new(
            "invalid_value",
            "endpoints",
            "at most 5 callback endpoints",
        ));
    }
    let defaults = body.endpoints.iter().filter(|e| e.default).count();
    if !body.endpoints.is_empty() && defaults != 1 {
        return Err(FieldError::new(
            "invalid_value",
            "endpoints",
            "exactly one endpoint is the default",
        ));
    }
    let mut out: Vec<(String, bool, Vec<String>)> = Vec::new();
    for (i, e) in body.endpoints.into_iter().enumerate() {
        if !is_callback_url(&e.url) {
            return Err(FieldError::new(
                "invalid_value",
                format!("endpoints[{i}].url"),
                "an http or https URL",
            ));
        }
        if out.iter().any(|o| o.0 == e.url) {
            return Err(FieldError::new(
                "invalid_value",
                format!("endpoints[{i}].url"),
                "listed twice",
            ));
        }
        let mut events = e.events;
        events.sort();
        events.dedup();
        if events.is_empty() || events.iter().any(|ev| !EVENTS.contains(&ev.as_str())) {
            return Err(FieldError::new(
                "invalid_value",
                format!("endpoints[{i}].events"),
                "one or more of sent, delivered, failed, clicked, mo",
            ));
        }
        out.push((e.url, e.default, events));
    }
    Ok(out)
}

fn shown(endpoints: &[Endpoint], with_secret: bool) -> serde_json::Value {
    let list: Vec<_> = endpoints
        .iter()
        .map(|e| {
            let mut v = json!({"url": e.url, "default": e.is_default, "events": e.events});
            if with_secret {
                v["secret"] = json!(e.secret);
            }
            v
        })
        .collect();
    json!({ "endpoints": list })
}

async fn put(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let app_id = app.entry()?.id;
    let body = read_body(&req, payload).await?;
    let endpoints = check(parse_json::<PutBody>(&body)?)?;
    let saved = state.store.put_callbacks(app_id, &endpoints).await?;
    Ok(HttpResponse::Ok().json(shown(&saved, true)))
}

async fn get(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let app_id = app.entry()?.id;
    let saved = state.store.list_callbacks(app_id).await?;
    Ok(HttpResponse::Ok().json(shown(&saved, false)))
}

async fn test(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let app_id = app.entry()?.id;
    let saved = state.store.list_callbacks(app_id).await?;
    let mut results = Vec::new();
    for e in &saved {
        results.push(match post_test(&e.url, &e.secret).await {
            Ok(status) => json!({"url": e.url, "ok": (200..300).contains(&status),
                                 "status": status}),
            Err(err) => json!({"url": e.url, "ok": false, "error": err.to_string()}),
        });
    }
    Ok(HttpResponse::Ok().json(json!({ "results": results })))
}
