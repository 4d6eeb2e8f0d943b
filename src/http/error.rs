//! The error shape every endpoint answers with (`API.md`, fixed):
//! `{"error":{"code":"snake_case","message":"human sentence","field":"json.path"|null}}`.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;
use umsd_actors::domain::send::FieldError;
use umsd_actors::metrics as m;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    Field(FieldError),
    #[error("missing or wrong credentials")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("message_id `{key}` was already used with a different body")]
    Conflict { key: String, field: String },
    /// The resource is not in a state that allows the change (e.g. editing a message that
    /// is no longer scheduled): 409 with `code`.
    #[error("{message}")]
    State { code: &'static str, message: String },
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the ingest queue is full; retry later")]
    QueueFull,
    /// Planning (`planning_behind`) or a channel's dispatch (`dispatch_behind`) is past its
    /// bound: `message` says which, `retry_after` when to try again.
    #[error("{message}; retry later")]
    Behind {
        code: &'static str,
        message: String,
        retry_after: u64,
    },
    /// The cause goes to the log, not to the caller.
    #[error("the database is unavailable; retry later")]
    Unavailable(#[source] Cause),
    #[error("internal error")]
    Internal(#[source] Cause),
}

/// What made a request fail on umsd's side, kept with its chain of causes for the log.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A store failure seen by a request: the database is unreachable or failing — 503, so
/// the caller retries; the detail goes to the log, not to the caller.
impl From<umsd_actors::store::StoreError> for ApiError {
    fn from(e: umsd_actors::store::StoreError) -> Self {
        ApiError::Unavailable(Box::new(e))
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Field(e)
    }
}

impl ApiError {
    pub fn code(&self) -> &str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::Field(e) => e.code,
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict { .. } => "idempotency_conflict",
            ApiError::State { code, .. } => code,
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::QueueFull => "queue_full",
            ApiError::Behind { code, .. } => code,
            ApiError::Unavailable(_) => "database_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// Bounded label for `umsd_rejections_total`.
    fn reason(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::Field(_) => "validation",
            ApiError::Unauthorized | ApiError::Forbidden(_) => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict { .. } | ApiError::State { .. } => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::QueueFull => "queue_full",
            ApiError::Behind { code, .. } => code,
            ApiError::Unavailable(_) => "database_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::Field(e) if !e.field.is_empty() => Some(&e.field),
            ApiError::Conflict { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Field(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } | ApiError::State { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::QueueFull | ApiError::Behind { .. } | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        metrics::counter!(m::REJECTIONS_TOTAL, "reason" => self.reason()).increment(1);
        if let ApiError::Unavailable(_) | ApiError::Internal(_) = self {
            tracing::warn!(code = self.code(), error = %umsd_actors::error_chain(self), "request failed");
        }
        let mut res = HttpResponse::build(self.status_code());
        match self {
            ApiError::QueueFull => {
                res.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            ApiError::Behind { retry_after, .. } => {
                res.insert_header((header::RETRY_AFTER, HeaderValue::from(*retry_after)));
            }
            ApiError::Unavailable(_) => {
                res.insert_header((header::RETRY_AFTER, HeaderValue::from_static("5")));
            }
            ApiError::Unauthorized => {
                res.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"umsd\""),
                ));
            }
            _ => {}
        }
        let message = match self {
            ApiError::Field(e) => e.message.clone(),
            other => other.to_string(),
        };
        res.json(json!({
            "error": {"code": self.code(), "message": message, "field": self.field()}
        }))
    }
}
