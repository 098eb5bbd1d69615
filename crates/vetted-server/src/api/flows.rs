//! `/v1/flows`: list and create (a new version when the name exists).
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::extract::{ApiJson, AppState, RequestMeta, Tenant};
use crate::error::ApiError;
use crate::service::NewFlow;

/// `GET /v1/flows`: the latest version of every flow.
pub async fn list(
    State(engine): State<AppState>,
    Tenant(app): Tenant,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "items": engine.registry.flows(&app.app_key)? }),
    ))
}

/// `POST /v1/flows` → 201 with the new flow version.
pub async fn create(
    State(engine): State<AppState>,
    Tenant(app): Tenant,
    RequestMeta(meta): RequestMeta,
    ApiJson(req): ApiJson<NewFlow>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let flow = engine.create_flow(&app.app_key, req, &meta).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(flow).unwrap_or_default()),
    ))
}

/// `GET /v1/flows/{name}`: the latest version of one flow.
pub async fn get(
    State(engine): State<AppState>,
    Tenant(app): Tenant,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let flow = engine.registry.flow(&app.app_key, &name)?.ok_or_else(|| {
        ApiError::not_found(format!("no flow named {name:?} in this application"))
    })?;
    Ok(Json(serde_json::to_value(flow).unwrap_or_default()))
}
