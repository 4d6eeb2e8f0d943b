//! `/v1/users`: an app's end users and their bindings. `PUT` creates or replaces one user
//! (bindings replaced whole); `POST /v1/users/batch` takes up to 1000 rows and answers one
//! result per row — valid rows are stored together, invalid ones are reported with the
//! rule they broke (a bulk upload, not all-or-nothing).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use umsd_actors::domain::send::{serde_field_error, FieldError};
use umsd_actors::domain::user::{check_user_id, UserRequest, UserSpec, MAX_BATCH};
use umsd_actors::store::users::UserRecord;

use super::auth::{self, AuthedApp};
use super::error::ApiError;
use super::messages::{check_batch_len, parse_json, read_body};
use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/users/batch", web::post().to(put_batch))
        .route("/v1/users/{user_id}", web::put().to(put_user))
        .route("/v1/users/{user_id}", web::get().to(get_user))
        .route("/v1/users/{user_id}", web::delete().to(delete_user));
}

fn validate(app: &AuthedApp, request: UserRequest, user_id: &str) -> Result<UserSpec, FieldError> {
    let channels = &app.snapshot.channels;
    request.validate(user_id, &|code: &str| channels.contains_key(code))
}

fn user_json(
    user_id: &str,
    enabled: bool,
    locale: &Option<String>,
    tags: &[String],
    bindings: &[umsd_actors::domain::user::Binding],
) -> Value {
    json!({
        "user_id": user_id,
        "enabled": enabled,
        "locale": locale,
        "tags": tags,
        "bindings": bindings,
    })
}

fn record_json(r: &UserRecord) -> Value {
    user_json(&r.user_id, r.enabled, &r.locale, &r.tags, &r.bindings)
}

async fn put_user(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let user_id = path.into_inner();
    let body = read_body(&req, payload).await?;
    let request: UserRequest = parse_json(&body)?;
    let spec = validate(&app, request, &user_id)?;
    let created = state
        .store
        .put_users(app.entry()?.id, std::slice::from_ref(&spec))
        .await?;
    let body = user_json(
        &spec.user_id,
        spec.enabled,
        &spec.locale,
        &spec.tags,
        &spec.bindings,
    );
    Ok(if created.first().copied().unwrap_or(false) {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

async fn get_user(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let user_id = path.into_inner();
    let record = state
        .store
        .get_user(app.entry()?.id, &user_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user `{user_id}`")))?;
    Ok(HttpResponse::Ok().json(record_json(&record)))
}

async fn delete_user(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let user_id = path.into_inner();
    let deleted = state.store.delete_user(app.entry()?.id, &user_id).await?;
    if deleted {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("no user `{user_id}`")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    users: Vec<Value>,
}

/// One row of the batch: `user_id` plus the fields of `PUT /v1/users/{user_id}`.
fn parse_row(app: &AuthedApp, row: Value) -> Result<UserSpec, FieldError> {
    let Value::Object(mut fields) = row else {
        return Err(FieldError::new(
            "invalid_value",
            "",
            "a row is a JSON object",
        ));
    };
    let user_id = match fields.remove("user_id") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(FieldError::new("invalid_value", "user_id", "a string")),
        None => {
            return Err(FieldError::new(
                "missing_field",
                "user_id",
                "missing field `user_id`",
            ))
        }
    };
    check_user_id(&user_id, "user_id")?;
    let request: UserRequest =
        serde_path_to_error::deserialize(Value::Object(fields)).map_err(|e| {
            let path = e.path().to_string();
            serde_field_error("", &path, &e.into_inner().to_string())
        })?;
    validate(app, request, &user_id)
}

async fn put_batch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let app = auth::app(&req, &state)?;
    let body = read_body(&req, payload).await?;
    let batch: Batch = parse_json(&body)?;
    check_batch_len(batch.users.len(), MAX_BATCH, "users")?;
    let mut results: Vec<Value> = Vec::with_capacity(batch.users.len());
    let mut valid: Vec<(usize, UserSpec)> = Vec::new();
    for (i, row) in batch.users.into_iter().enumerate() {
        let given_id = row
            .get("user_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let parsed = parse_row(&app, row).and_then(|spec| {
            if valid.iter().any(|(_, v)| v.user_id == spec.user_id) {
                Err(FieldError::new(
                    "duplicate_value",
                    "user_id",
                    format!("user `{}` appears earlier in this batch", spec.user_id),
                ))
            } else {
                Ok(spec)
            }
        });
        match parsed {
            Ok(spec) => {
                results.push(Value::Null);
                valid.push((i, spec));
            }
            Err(e) => {
                let e = e.prefixed(&format!("users[{i}]"));
                results.push(json!({
                    "user_id": given_id,
                    "status": "error",
                    "error": {"code": e.code, "message": e.message, "field": e.field},
                }));
            }
        }
    }
    let specs: Vec<UserSpec> = valid.iter().map(|(_, s)| s.clone()).collect();
    let created = if specs.is_empty() {
        Vec::new()
    } else {
        state.store.put_users(app.entry()?.id, &specs).await?
    };
    for ((i, spec), created) in valid.iter().zip(created) {
        results[*i] = json!({
            "user_id": spec.user_id,
            "status": if created { "created" } else { "updated" },
        });
    }
    let failed = results.iter().filter(|r| r["status"] == "error").count();
    Ok(HttpResponse::Ok().json(json!({
        "stored": results.len() - failed,
        "failed": failed,
        "results": results,
    })))
}
