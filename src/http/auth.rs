//! Credentials: HTTP Basic per app (`/v1/...`), a bearer token for operators (`/admin/...`).

use std::sync::Arc;

use actix_web::http::header;
use actix_web::HttpRequest;
use base64::Engine;
use umsd_actors::directory::{AppEntry, Snapshot};

use super::error::ApiError;
use super::AppState;

/// The authenticated app of a request, with the directory snapshot it was checked in.
pub struct AuthedApp {
    pub snapshot: Arc<Snapshot>,
    pub key: String,
}

impl AuthedApp {
    pub fn entry(&self) -> Result<&AppEntry, ApiError> {
        self.snapshot
            .apps
            .get(&self.key)
            .ok_or(ApiError::Unauthorized)
    }
}

pub fn app(req: &HttpRequest, state: &AppState) -> Result<AuthedApp, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized)?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or(ApiError::Unauthorized)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ApiError::Unauthorized)?;
    let text = std::str::from_utf8(&decoded).map_err(|_| ApiError::Unauthorized)?;
    let (key, secret) = text.split_once(':').ok_or(ApiError::Unauthorized)?;
    let snapshot = state.directory.snapshot();
    let entry = snapshot.apps.get(key).ok_or(ApiError::Unauthorized)?;
    if !entry.verify(secret) {
        return Err(ApiError::Unauthorized);
    }
    if !entry.enabled {
        return Err(ApiError::Forbidden(format!("app `{key}` is disabled")));
    }
    let key = key.to_owned();
    Ok(AuthedApp { snapshot, key })
}

pub fn admin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let expected = state.admin_token.as_bytes();
    if expected.is_empty() {
        return Err(ApiError::Forbidden(
            "the operator API is disabled (no admin_token configured)".into(),
        ));
    }
    let presented = token.trim().as_bytes();
    let same = presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}
