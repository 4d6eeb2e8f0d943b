//! `/admin/...`: the operator API (bearer token). This stage: apps.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use umsd_actors::domain::send::FieldError;
use umsd_actors::store::directory::GrantTarget;

use super::auth;
use super::error::ApiError;
use super::messages::{parse_json, read_body};
use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/apps", web::post().to(create_app))
        .route("/admin/apps", web::get().to(list_apps))
        .route("/admin/apps/{key}/grants/{code}", web::put().to(put_grant));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApp {
    name: String,
}

/// Creates an app; the master secret is in this answer only (just its hash is stored).
async fn create_app(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::admin(&req, &state)?;
    let body = read_body(&req, payload).await?;
    let new: NewApp = parse_json(&body)?;
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 128 {
        return Err(FieldError::new("invalid_value", "name", "must be 1-128 characters").into());
    }
    let (key, secret) = state.store.create_app(name).await?;
    state.directory.reload(&state.store).await?;
    Ok(HttpResponse::Created().json(json!({
        "app_key": key, "master_secret": secret, "name": name,
    })))
}

async fn list_apps(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    auth::admin(&req, &state)?;
    let snapshot = state.directory.snapshot();
    let mut apps: Vec<_> = snapshot.apps.values().collect();
    apps.sort_by(|a, b| a.key.cmp(&b.key));
    let list: Vec<_> = apps
        .iter()
        .map(|a| {
            let mut grants: Vec<_> = a
                .grants
                .iter()
                .map(|(code, enabled)| json!({"channel": code, "enabled": enabled}))
                .collect();
            grants.sort_by(|x, y| x["channel"].as_str().cmp(&y["channel"].as_str()));
            json!({"app_key": a.key, "name": a.name, "enabled": a.enabled, "grants": grants})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "apps": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    enabled: bool,
}

/// `PUT /admin/apps/{key}/grants/{code}` `{"enabled": bool}`: grants a channel to an app,
/// or switches it off for that app. Takes effect on this node at once.
async fn put_grant(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::admin(&req, &state)?;
    let (key, code) = path.into_inner();
    let body = read_body(&req, payload).await?;
    let grant: GrantBody = parse_json(&body)?;
    let outcome = state.store.put_grant(&key, &code, grant.enabled).await?;
    match outcome {
        GrantTarget::NoApp => return Err(ApiError::NotFound(format!("no app `{key}`"))),
        GrantTarget::NoChannel => {
            return Err(
                FieldError::new("unknown_channel", "code", format!("no channel `{code}`")).into(),
            )
        }
        GrantTarget::Stored => {}
    }
    state.directory.reload(&state.store).await?;
    Ok(HttpResponse::Ok().json(json!({
        "app_key": key, "channel": code, "enabled": grant.enabled,
    })))
}
