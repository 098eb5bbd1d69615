//! `/v1/webhooks/deliveries`: what was sent, what is pending, what is dead; redelivery.
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{AppState, Tenant};
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub struct StateQuery {
    state: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/webhooks/deliveries?state=pending|delivered|dead`
pub async fn list(
    State(engine): State<AppState>,
    Tenant(app): Tenant,
    Query(q): Query<StateQuery>,
) -> Result<Json<Value>, ApiError> {
    let items = engine.list_deliveries(
        &app.app_key,
        q.state.as_deref(),
        q.limit.unwrap_or(100).min(1000),
    )?;
    Ok(Json(json!({ "items": items })))
}

/// `POST /v1/webhooks/deliveries/{id}/redeliver`
pub async fn redeliver(
    State(engine): State<AppState>,
    Tenant(app): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(engine.redeliver(&app.app_key, &id)?))
}

/// `POST /v1/webhooks/deliveries/redeliver`: every dead delivery of the application.
pub async fn redeliver_dead(
    State(engine): State<AppState>,
    Tenant(app): Tenant,
) -> Result<Json<Value>, ApiError> {
    let count = engine.redeliver_dead(&app.app_key)?;
    Ok(Json(json!({ "redelivered": count })))
}
