//! The API's error type and its documented mapping to HTTP status codes:
//!
//! | cause | status | code |
//! |---|---|---|
//! | malformed JSON | 400 | `malformed_json` |
//! | missing/unknown bearer key | 401 | `unauthorized` |
//! | admin endpoint without the admin token | 403 | `forbidden` |
//! | unknown applicant, flow, delivery (or another application's) | 404 | `not_found` |
//! | `If-Match` mismatch, concurrent write | 409 | `version_conflict` (with `currentVersion`) |
//! | invalid transition (domain rule) | 409 | the domain's code, e.g. `invalid_transition` |
//! | body over 1 MiB | 413 | `payload_too_large` |
//! | well-formed JSON that breaks a rule | 422 | `validation` |
//! | store unavailable | 503 | `unavailable` |
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use vetted_domain::DomainError;
use vetted_store::StoreError;

/// An error answered as `{"error":{"code":"...","message":"..."}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The stream's current version, on conflicts.
    pub current_version: Option<u64>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            current_version: None,
        }
    }
    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    /// 401: no or unknown bearer key.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <private key>` with a key issued by POST /v1/applications",
        )
    }
    /// 403: operator endpoint without the admin token.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this operator endpoint needs `Authorization: Bearer <VETTED_ADMIN_TOKEN>`",
        )
    }
    /// 404 for `what`.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }
    /// 422 `validation`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", message)
    }
    /// 409 with the current version of the applicant.
    pub fn version_conflict(current: Option<u64>, expected: impl std::fmt::Display) -> Self {
        let shown = current
            .map(|v| v.to_string())
            .unwrap_or_else(|| "none".into());
        ApiError {
            status: StatusCode::CONFLICT,
            code: "version_conflict",
            message: format!(
                "the applicant is at version {shown}, the request expected {expected}; re-read it and retry"
            ),
            current_version: current,
        }
    }
    /// 500 with a message safe to show (no secrets).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::WrongExpectedVersion {
                actual, expected, ..
            } => ApiError::version_conflict(actual, format!("{expected:?}")),
            StoreError::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                e.to_string(),
            ),
            StoreError::Unavailable(_) | StoreError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<vetted_projections::ProjectionError> for ApiError {
    fn from(e: vetted_projections::ProjectionError) -> Self {
        match e {
            vetted_projections::ProjectionError::UnknownProjection(name) => {
                ApiError::not_found(format!("no projection named {name}"))
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(v) = self.current_version {
            error["currentVersion"] = json!(v);
        }
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(v) = self.current_version {
            if let Ok(value) = HeaderValue::from_str(&format!("\"{v}\"")) {
                response.headers_mut().insert(header::ETAG, value);
            }
        }
        response
    }
}
