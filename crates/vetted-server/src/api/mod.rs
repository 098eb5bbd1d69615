//! The HTTP API (see `schemas/openapi.yaml`): routes, body limit, error fallbacks.
mod applicants;
pub use applicants::ListQuery;
mod applications;
pub mod extract;
mod flows;
mod ops;
mod webhooks;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::Router;

pub use extract::AppState;
pub use ops::dashboard_window;

use crate::error::ApiError;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Every route the server mounts, as (method, OpenAPI path). A test checks each is documented in
/// `schemas/openapi.yaml` and answered by the router.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/applications"),
    ("get", "/v1/applications"),
    ("patch", "/v1/applications/{appKey}"),
    ("get", "/v1/application"),
    ("get", "/v1/flows"),
    ("post", "/v1/flows"),
    ("get", "/v1/flows/{name}"),
    ("post", "/v1/applicants"),
    ("get", "/v1/applicants"),
    ("get", "/v1/applicants/{id}"),
    ("delete", "/v1/applicants/{id}"),
    ("post", "/v1/applicants/{id}/restore"),
    ("get", "/v1/applicants/{id}/timeline"),
    ("get", "/v1/applicants/{id}/events"),
    ("post", "/v1/applicants/{id}/start"),
    ("post", "/v1/applicants/{id}/steps/{step}"),
    ("post", "/v1/applicants/{id}/steps/{step}/deactivate"),
    ("post", "/v1/applicants/{id}/steps/{step}/reactivate"),
    ("post", "/v1/applicants/{id}/warnings"),
    ("post", "/v1/applicants/{id}/warnings/{warningId}/resolve"),
    ("post", "/v1/applicants/{id}/reviewer"),
    ("delete", "/v1/applicants/{id}/reviewer"),
    ("post", "/v1/applicants/{id}/decision"),
    ("post", "/v1/applicants/{id}/comments"),
    ("post", "/v1/applicants/{id}/flow"),
    ("get", "/v1/dashboard"),
    ("get", "/v1/reviewers/{reviewerId}/queue"),
    ("get", "/v1/webhooks/deliveries"),
    ("post", "/v1/webhooks/deliveries/{deliveryId}/redeliver"),
    ("post", "/v1/webhooks/deliveries/redeliver"),
    ("get", "/v1/projections"),
    ("post", "/v1/projections/{name}/rebuild"),
    ("post", "/v1/projections/{name}/verify"),
    ("get", "/healthz"),
    ("get", "/metrics"),
];

/// The API router over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/applications",
            post(applications::create).get(applications::list),
        )
        .route("/v1/applications/{app_key}", patch(applications::update))
        .route("/v1/application", get(applications::current))
        .route("/v1/flows", get(flows::list).post(flows::create))
        .route("/v1/flows/{name}", get(flows::get))
        .route(
            "/v1/applicants",
            post(applicants::create).get(applicants::list),
        )
        .route(
            "/v1/applicants/{id}",
            get(applicants::get).delete(applicants::schedule_deletion),
        )
        .route("/v1/applicants/{id}/restore", post(applicants::restore))
        .route("/v1/applicants/{id}/timeline", get(applicants::timeline))
        .route("/v1/applicants/{id}/events", get(applicants::events))
        .route("/v1/applicants/{id}/start", post(applicants::start))
        .route(
            "/v1/applicants/{id}/steps/{step}",
            post(applicants::step_result),
        )
        .route(
            "/v1/applicants/{id}/steps/{step}/deactivate",
            post(applicants::deactivate_step),
        )
        .route(
            "/v1/applicants/{id}/steps/{step}/reactivate",
            post(applicants::reactivate_step),
        )
        .route(
            "/v1/applicants/{id}/warnings",
            post(applicants::raise_warning),
        )
        .route(
            "/v1/applicants/{id}/warnings/{wid}/resolve",
            post(applicants::resolve_warning),
        )
        .route(
            "/v1/applicants/{id}/reviewer",
            post(applicants::assign_reviewer).delete(applicants::unassign_reviewer),
        )
        .route("/v1/applicants/{id}/decision", post(applicants::decision))
        .route("/v1/applicants/{id}/comments", post(applicants::comment))
        .route("/v1/applicants/{id}/flow", post(applicants::change_flow))
        .route("/v1/dashboard", get(ops::dashboard))
        .route("/v1/reviewers/{reviewer}/queue", get(ops::reviewer_queue))
        .route("/v1/webhooks/deliveries", get(webhooks::list))
        .route(
            "/v1/webhooks/deliveries/redeliver",
            post(webhooks::redeliver_dead),
        )
        .route(
            "/v1/webhooks/deliveries/{id}/redeliver",
            post(webhooks::redeliver),
        )
        .route("/v1/projections", get(ops::projections))
        .route("/v1/projections/{name}/rebuild", post(ops::rebuild))
        .route("/v1/projections/{name}/verify", post(ops::verify))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(json_client_errors))
        .with_state(state)
}

/// Gives every client error the API's JSON error body. Handlers answer with [`ApiError`]
/// already; this catches the plain-text rejections of axum's own extractors (a query string
/// or a path segment that does not parse), so a client never has to parse two error shapes.
async fn json_client_errors(response: axum::response::Response) -> axum::response::Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !status.is_client_error() || is_json {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 16 * 1024).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("bad request")
            .to_string(),
    };
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "validation",
        _ => "bad_request",
    };
    axum::response::IntoResponse::into_response(ApiError::new(status, code, text))
}

async fn route_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no such endpoint; see schemas/openapi.yaml",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see schemas/openapi.yaml",
    )
}
