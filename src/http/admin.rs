//! `/admin/...`: the operator API (bearer token): apps, grants and channels.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use umsd_actors::channel::config::{ChannelConfig, ChannelRow};
use umsd_actors::channel::sender::SenderState;
use umsd_actors::directory::ChannelEntry;
use umsd_actors::domain::send::FieldError;
use umsd_actors::domain::{ChannelCode, ChannelType};
use umsd_actors::providers;
use umsd_actors::store::directory::{ChannelSpec, GrantTarget};
use umsd_actors::supervisor::{GetChannelStates, Reload};

use super::auth;
use super::error::ApiError;
use super::messages::{parse_json, read_body};
use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/apps", web::post().to(create_app))
        .route("/admin/apps", web::get().to(list_apps))
        .route("/admin/apps/{key}/grants/{code}", web::put().to(put_grant))
        .route("/admin/channels", web::get().to(list_channels))
        .route("/admin/channels/{code}", web::get().to(get_channel))
        .route("/admin/channels/{code}", web::put().to(put_channel));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelBody {
    #[serde(rename = "type")]
    channel_type: String,
    #[serde(default = "yes")]
    enabled: bool,
    rate_per_second: Option<f64>,
    burst: Option<i32>,
    pool_size: Option<i32>,
    #[serde(default)]
    settings: serde_json::Value,
}

fn yes() -> bool {
    true
}

/// `PUT /admin/channels/{code}`: creates or replaces a channel. Its sender is started, or
/// restarted with the new settings (in-flight calls finish first), without a restart of
/// umsd. Settings are checked as the sender would use them; a bad one is a 422 naming it.
async fn put_channel(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::admin(&req, &state)?;
    let code = path.into_inner();
    let Ok(code) = ChannelCode::parse(&code) else {
        return Err(FieldError::new(
            "invalid_value",
            "code",
            "must be 1-32 characters of [A-Za-z0-9_-]",
        )
        .into());
    };
    let body = read_body(&req, payload).await?;
    let b: ChannelBody = parse_json(&body)?;
    let Some(channel_type) = ChannelType::parse(&b.channel_type) else {
        return Err(FieldError::new(
            "invalid_value",
            "type",
            format!("unknown channel type `{}`", b.channel_type),
        )
        .into());
    };
    if b.settings.is_null() || !b.settings.is_object() {
        return Err(FieldError::new("invalid_value", "settings", "must be an object").into());
    }
    // Checked as the sender will parse them; nothing is written when they do not hold.
    if let Err(e) = ChannelConfig::parse(ChannelRow {
        code: &code,
        channel_type,
        rate_per_second: b.rate_per_second,
        burst: b.burst,
        pool_size: b.pool_size,
        settings: &b.settings,
    }) {
        return Err(FieldError::new("invalid_value", e.field, e.message).into());
    }
    let spec = ChannelSpec {
        code: code.to_string(),
        channel_type,
        enabled: b.enabled,
        rate_per_second: b.rate_per_second,
        burst: b.burst,
        pool_size: b.pool_size,
        settings: b.settings,
    };
    if !state.store.put_channel(&spec).await? {
        return Err(FieldError::new(
            "type_change",
            "type",
            format!("channel `{code}` exists with another type; a channel's type cannot change"),
        )
        .into());
    }
    // Reload the directory and reconcile the senders before answering.
    let _ = state.supervisor.send(Reload).await;
    let snapshot = state.directory.snapshot();
    let states = channel_states(&state).await;
    let body = snapshot
        .channels
        .get(&code)
        .map(|c| channel_json(c, states.get(code.as_str())))
        .unwrap_or_default();
    Ok(HttpResponse::Ok().json(body))
}

async fn channel_states(state: &AppState) -> HashMap<String, SenderState> {
    state
        .supervisor
        .send(GetChannelStates)
        .await
        .unwrap_or_default()
}

fn channel_json(c: &ChannelEntry, live: Option<&SenderState>) -> serde_json::Value {
    json!({
        "code": c.code,
        "type": c.channel_type.as_str(),
        "enabled": c.enabled,
        "rate_per_second": c.rate_per_second,
        "burst": c.burst,
        "pool_size": c.pool_size,
        "settings": providers::settings::redacted(&c.settings),
        "state": match live {
            Some(s) => json!({"running": s.error.is_none(), "sender": s}),
            None => json!({"running": false}),
        },
    })
}

async fn list_channels(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::admin(&req, &state)?;
    let snapshot = state.directory.snapshot();
    let states = channel_states(&state).await;
    let mut list: Vec<_> = snapshot.channels.values().collect();
    list.sort_by(|a, b| a.code.cmp(&b.code));
    let list: Vec<_> = list
        .into_iter()
        .map(|c| channel_json(c, states.get(c.code.as_str())))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "channels": list })))
}

async fn get_channel(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::admin(&req, &state)?;
    let code = path.into_inner();
    let snapshot = state.directory.snapshot();
    let Some(c) = snapshot.channels.get(code.as_str()) else {
        return Err(ApiError::NotFound(format!("no channel `{code}`")));
    };
    let states = channel_states(&state).await;
    Ok(HttpResponse::Ok().json(channel_json(c, states.get(&code))))
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
