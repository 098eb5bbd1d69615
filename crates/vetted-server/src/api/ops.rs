//! Operations: health, Prometheus metrics, projections (admin), dashboard and reviewer queues.
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{Admin, AppState, Tenant};
use crate::error::ApiError;

/// `GET /healthz`
pub async fn healthz(State(engine): State<AppState>) -> Result<Json<Value>, ApiError> {
    let head = engine.store.head().await?;
    Ok(Json(json!({ "status": "ok", "head": head })))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(engine): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = engine.metrics_text().await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

/// `GET /v1/projections` (admin): name, checkpoint, head, lag, generation.
pub async fn projections(
    State(engine): State<AppState>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "items": engine.projection_status().await? })))
}

/// `POST /v1/projections/{name}/rebuild` (admin): rebuild into a new generation and switch.
pub async fn rebuild(
    State(engine): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(engine.rebuild_projection(&name).await?))
}

/// `POST /v1/projections/{name}/verify` (admin): compare a fresh rebuild with the live generation.
pub async fn verify(
    State(engine): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(engine.verify_projection(&name).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DashboardQuery {
    /// `today`, `7d`, `28d` (default) — or give `from`/`to`.
    range: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

fn parse_day_or_time(raw: &str, end_of_day: bool) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
        ApiError::bad_request(format!(
            "{raw:?} is neither a date (2026-11-22) nor an RFC 3339 time"
        ))
    })?;
    let time = if end_of_day {
        day.and_hms_opt(23, 59, 59)
    } else {
        day.and_hms_opt(0, 0, 0)
    };
    Ok(time.map(|t| t.and_utc()).unwrap_or_default())
}

/// The `[from, to]` window of a dashboard query.
pub fn dashboard_window(
    range: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let today = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now);
    if from.is_some() || to.is_some() {
        let from = from
            .map(|f| parse_day_or_time(f, false))
            .transpose()?
            .unwrap_or(today - chrono::Duration::days(27));
        let to = to
            .map(|t| parse_day_or_time(t, true))
            .transpose()?
            .unwrap_or(now);
        if from > to {
            return Err(ApiError::bad_request("from must not be after to"));
        }
        if to - from > chrono::Duration::days(366) {
            return Err(ApiError::bad_request(
                "a dashboard range may span at most 366 days",
            ));
        }
        return Ok((from, to));
    }
    let days = match range.unwrap_or("28d") {
        "today" => 0,
        "7d" => 6,
        "28d" => 27,
        other => {
            return Err(ApiError::bad_request(format!(
                "range must be today, 7d or 28d, got {other:?}"
            )))
        }
    };
    Ok((today - chrono::Duration::days(days), now))
}

/// `GET /v1/dashboard?range=today|7d|28d` or `?from=&to=`
pub async fn dashboard(
    State(engine): State<AppState>,
    Tenant(app): Tenant,
    Query(q): Query<DashboardQuery>,
) -> Result<Json<Value>, ApiError> {
    let (from, to) = dashboard_window(
        q.range.as_deref(),
        q.from.as_deref(),
        q.to.as_deref(),
        Utc::now(),
    )?;
    Ok(Json(engine.dashboard(&app.app_key, from, to).await?))
}

/// `GET /v1/reviewers/{reviewerId}/queue`: applicants awaiting this reviewer's decision, oldest first.
pub async fn reviewer_queue(
    State(engine): State<AppState>,
    Tenant(app): Tenant,
    Path(reviewer): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "items": engine.reviewer_queue(&app.app_key, &reviewer).await? }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_defaults_to_the_last_28_days() {
        let now = DateTime::parse_from_rfc3339("2026-11-22T15:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (from, to) = dashboard_window(None, None, None, now).unwrap();
        assert_eq!(from.to_rfc3339(), "2026-10-26T00:00:00+00:00");
        assert_eq!(to, now);
        let (from, _) = dashboard_window(Some("today"), None, None, now).unwrap();
        assert_eq!(from.to_rfc3339(), "2026-11-22T00:00:00+00:00");
        assert!(dashboard_window(Some("3y"), None, None, now).is_err());
        assert!(dashboard_window(None, Some("2026-11-10"), Some("2026-11-01"), now).is_err());
        let (from, to) =
            dashboard_window(None, Some("2026-11-01"), Some("2026-11-10"), now).unwrap();
        assert_eq!(from.to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-11-10T23:59:59+00:00");
    }
}
