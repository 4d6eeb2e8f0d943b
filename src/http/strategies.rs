//! `/v1/strategies`: an app's fallback strategies — `PUT` (every rule checked, each
//! refusal naming its field), `GET` one (with what each condition means on its channel
//! and whether the strategy is usable now), `DELETE`, and the list.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use umsd_actors::directory::AppChannels;
use umsd_actors::domain::send::{check_id, usable, FieldError};
use umsd_actors::domain::strategy::{meaning, reports, Delivery, StrategySpec};
use umsd_actors::store::strategies::StrategyRecord;

use super::auth::{self, AuthedApp};
use super::error::ApiError;
use super::messages::{parse_json, read_body};
use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/strategies", web::get().to(list))
        .route("/v1/strategies/{id}", web::put().to(put))
        .route("/v1/strategies/{id}", web::get().to(get))
        .route("/v1/strategies/{id}", web::delete().to(delete));
}

/// The strategy as `GET` shows it: each step's channel type, what each condition means
/// there, and whether every channel is usable now (a channel switched off or no longer
/// granted makes the strategy unusable until it is on again).
fn view(app: &AuthedApp, id: &str, spec: &StrategySpec, updated_at: Option<String>) -> Value {
    let entry = app.entry().ok();
    let problem = entry.and_then(|e| {
        let lookup = AppChannels {
            snapshot: &app.snapshot,
            app: e,
        };
        spec.steps
            .iter()
            .enumerate()
            .find_map(|(k, s)| usable(&lookup, &s.channel, &format!("steps[{k}].channel")).err())
    });
    let type_of = |code: &str| app.snapshot.channels.get(code).map(|ch| ch.channel_type);
    let steps: Vec<Value> = spec
        .steps
        .iter()
        .map(|s| {
            let ty = type_of(&s.channel);
            let mut v = json!({
                "channel": s.channel,
                "type": ty.map(|t| t.as_str()),
                "delivered_means": ty.map(|t| match reports(t).delivery {
                    Delivery::Confirmed => "confirmed",
                    Delivery::Accepted => "accepted_by_provider",
                }),
            });
            if let Some(w) = &s.when {
                let conditions: Vec<Value> = w
                    .conditions
                    .iter()
                    .map(|c| {
                        let on = spec
                            .steps
                            .get(c.step.wrapping_sub(1))
                            .and_then(|s| type_of(&s.channel));
                        json!({
                            "step": c.step, "event": c.event, "within_seconds": c.within_seconds,
                            "means": on.map(|t| meaning(c.event, t)),
                        })
                    })
                    .collect();
                v["when"] = json!({"op": w.op, "conditions": conditions});
            }
            v
        })
        .collect();
    json!({
        "id": id,
        "steps": steps,
        "usable": problem.is_none(),
        "problem": problem.map(|p| json!({"code": p.code, "field": p.field, "message": p.message})),
        "updated_at": updated_at,
    })
}

fn record_view(app: &AuthedApp, r: &StrategyRecord) -> Value {
    view(
        app,
        &r.id,
        &r.spec,
        Some(
            r.updated_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
    )
}

async fn put(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let id = path.into_inner();
    check_id(&id, "id")?;
    let body = read_body(&req, payload).await?;
    let spec: StrategySpec = parse_json(&body)?;
    let entry = app.entry()?;
    spec.check(&AppChannels {
        snapshot: &app.snapshot,
        app: entry,
    })?;
    let created = state.store.put_strategy(entry.id, &id, &spec).await?;
    let record = state
        .store
        .get_strategy(entry.id, &id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("strategy `{id}` vanished").into()))?;
    let body = record_view(&app, &record);
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let id = path.into_inner();
    let record = state
        .store
        .get_strategy(app.entry()?.id, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no strategy `{id}`")))?;
    Ok(HttpResponse::Ok().json(record_view(&app, &record)))
}

async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let id = path.into_inner();
    if state.store.delete_strategy(app.entry()?.id, &id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("no strategy `{id}`")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    cursor: Option<String>,
    limit: Option<i64>,
}

async fn list(
    req: HttpRequest,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let q = query.into_inner();
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(FieldError::new("invalid_value", "limit", "must be 1-1000").into());
    }
    let list = state
        .store
        .list_strategies(app.entry()?.id, q.cursor.as_deref(), limit)
        .await?;
    let next = (list.len() as i64 == limit)
        .then(|| list.last().map(|s| s.id.clone()))
        .flatten();
    let items: Vec<Value> = list.iter().map(|r| record_view(&app, r)).collect();
    Ok(HttpResponse::Ok().json(json!({ "strategies": items, "next_cursor": next })))
}
