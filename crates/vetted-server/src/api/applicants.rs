//! `/v1/applicants`: create, read (live or as of a moment), list, and every command on one.
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use vetted_domain::{
    ApplicantId, Command, DecisionKind, StepData, StepOutcome, StepType, WarningId,
};

use super::extract::{ApiJson, AppState, ApplicantCommand, MaybeJson, RequestMeta, Tenant};
use crate::error::ApiError;
use crate::service::{CommandOutcome, NewApplicant};

/// Parses an applicant id from the path; anything else is simply not found.
pub(crate) fn applicant_id(raw: &str) -> Result<ApplicantId, ApiError> {
    raw.parse::<Uuid>()
        .map(ApplicantId)
        .map_err(|_| ApiError::not_found(format!("no applicant {raw:?}: applicant ids are UUIDs")))
}

fn parse_as_of(raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|t| {
        DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "asOf must be an RFC 3339 time such as 2026-11-22T12:00:00Z: {e}"
                ))
            })
    })
    .transpose()
}

/// A JSON response with `ETag: "<stream version>"`.
pub(crate) fn with_etag(status: StatusCode, version: u64, body: impl serde::Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

pub(crate) fn outcome_response(status: StatusCode, outcome: CommandOutcome) -> Response {
    let version = outcome.view.version;
    with_etag(status, version, outcome.view)
}

/// `POST /v1/applicants`
pub async fn create(
    State(engine): State<AppState>,
    Tenant(app): Tenant,
    RequestMeta(meta): RequestMeta,
    ApiJson(req): ApiJson<NewApplicant>,
) -> Result<Response, ApiError> {
    let outcome = engine.create_applicant(&app.app_key, req, &meta).await?;
    Ok(outcome_response(StatusCode::CREATED, outcome))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AsOf {
    as_of: Option<String>,
}

/// `GET /v1/applicants/{id}[?asOf=]`
pub async fn get(
    State(engine): State<AppState>,
    Tenant(app): Tenant,
    Path(id): Path<String>,
    Query(q): Query<AsOf>,
) -> Result<Response, ApiError> {
    let id = applicant_id(&id)?;
    let view = match parse_as_of(q.as_of.as_deref())? {
        Some(t) => engine.applicant_view_as_of(&app.app_key, &id, t).await?,
        None => engine.applicant_view(&app.app_key, &id).await?,
    };
    Ok(with_etag(StatusCode::OK, view.version, view))
}

/// `GET /v1/applicants/{id}/timeline[?asOf=]`
pub async fn timeline(
    State(engine): State<AppState>,
    Tenant(app): Tenant,
    Path(id): Path<String>,
    Query(q): Query<AsOf>,
) -> Result<Json<Value>, ApiError> {
    let id = applicant_id(&id)?;
    let items = match parse_as_of(q.as_of.as_deref())? {
        Some(t) => engine.timeline_as_of(&app.app_key, &id, t).await?,
        None => engine.timeline(&app.app_key, &id).await?,
    };
    Ok(Json(json!({ "items": items })))
}

/// `GET /v1/applicants/{id}/events`: the raw log with hashes, for auditors.
pub async fn events(
    State(engine): State<AppState>,
    Tenant(app): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = applicant_id(&id)?;
    let stored = engine
        .store
        .read_stream(&id.stream(), 0, usize::MAX)
        .await?;
    // Every event of a stream carries its application as the tenant.
    if stored
        .first()
        .is_none_or(|e| e.tenant != app.app_key.to_string())
    {
        return Err(ApiError::not_found(format!(
            "no applicant {id} in this application"
        )));
    }
    let items: Vec<Value> = stored
        .iter()
        .map(|e| {
            json!({
                "globalPosition": e.global_position,
                "streamId": e.stream_id,
                "streamVersion": e.stream_version,
                "eventId": e.event_id,
                "type": e.event_type,
                "schemaVersion": e.schema_version,
                "recordedAt": e.recorded_at,
                "actor": e.actor,
                "correlationId": e.correlation_id,
                "causationId": e.causation_id,
                "payload": e.payload,
                "prevHash": e.prev_hash,
                "hash": e.hash,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    pub status: Option<String>,
    pub external_user_id: Option<String>,
    pub created_from: Option<String>,
    pub created_to: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// `GET /v1/applicants?status=&externalUserId=&createdFrom=&createdTo=&limit=&cursor=`
pub async fn list(
    State(engine): State<AppState>,
    Tenant(app): Tenant,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(engine.list_applicants(&app.app_key, q).await?))
}

/// `POST /v1/applicants/{id}/start`: the applicant began the flow.
pub async fn start(cmd: ApplicantCommand, Path(id): Path<String>) -> Result<Response, ApiError> {
    cmd.run(&id, Command::StartVerification).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepResult {
    outcome: StepOutcome,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    attempt: Option<u32>,
    #[serde(default)]
    reason: Option<String>,
}

fn step_type(raw: &str) -> Result<StepType, ApiError> {
    raw.parse::<StepType>().map_err(|_| {
        ApiError::not_found(format!(
            "no step type {raw:?}; known steps: intro, document_check, liveness, selfie_with_document, face_match, aml, questionnaire, phone_verification, email_verification, ip_check, thank_you"
        ))
    })
}

/// `POST /v1/applicants/{id}/steps/{step}`: a provider's result for a step.
pub async fn step_result(
    cmd: ApplicantCommand,
    Path((id, step)): Path<(String, String)>,
    ApiJson(body): ApiJson<StepResult>,
) -> Result<Response, ApiError> {
    let step = step_type(&step)?;
    // A result sent without data records `{}`.
    let data = if body.data.is_null() {
        json!({})
    } else {
        body.data
    };
    let command = Command::SubmitStepResult {
        step,
        outcome: body.outcome,
        data: StepData::from_value(&data)
            .map_err(|e| ApiError::validation(format!("data: {e}")))?,
        attempt: body.attempt,
        reason: body.reason,
    };
    cmd.run(&id, command).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reason {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/applicants/{id}/steps/{step}/deactivate`: move the step's data to history.
pub async fn deactivate_step(
    cmd: ApplicantCommand,
    Path((id, step)): Path<(String, String)>,
    MaybeJson(body): MaybeJson<Reason>,
) -> Result<Response, ApiError> {
    let step = step_type(&step)?;
    let reason = body.and_then(|b| b.reason);
    cmd.run(&id, Command::DeactivateStep { step, reason }).await
}

/// `POST /v1/applicants/{id}/steps/{step}/reactivate`
pub async fn reactivate_step(
    cmd: ApplicantCommand,
    Path((id, step)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let step = step_type(&step)?;
    cmd.run(&id, Command::ReactivateStep { step }).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewWarning {
    code: String,
    message: String,
    #[serde(default)]
    step: Option<StepType>,
}

/// `POST /v1/applicants/{id}/warnings` → 201 with the warning id and the view.
pub async fn raise_warning(
    cmd: ApplicantCommand,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewWarning>,
) -> Result<Response, ApiError> {
    if body.code.trim().is_empty() || body.code.len() > 100 {
        return Err(ApiError::validation(
            "code must be 1 to 100 characters, e.g. DOCUMENT_EXPIRED",
        ));
    }
    let warning_id = WarningId(Uuid::now_v7());
    let command = Command::RaiseWarning {
        id: warning_id,
        code: body.code.clone(),
        message: body.message.clone(),
        step: body.step,
    };
    let outcome = cmd.execute(&id, command).await?;
    let version = outcome.view.version;
    let body = json!({
        "id": warning_id.to_string(),
        "code": body.code,
        "message": body.message,
        "step": body.step,
        "resolved": false,
        "applicant": outcome.view,
    });
    Ok(with_etag(StatusCode::CREATED, version, body))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resolution {
    #[serde(default)]
    comment: Option<String>,
}

/// `POST /v1/applicants/{id}/warnings/{wid}/resolve`
pub async fn resolve_warning(
    cmd: ApplicantCommand,
    Path((id, wid)): Path<(String, String)>,
    MaybeJson(body): MaybeJson<Resolution>,
) -> Result<Response, ApiError> {
    let warning = wid
        .parse::<Uuid>()
        .map(WarningId)
        .map_err(|_| ApiError::not_found(format!("no warning {wid:?}: warning ids are UUIDs")))?;
    let comment = body.and_then(|b| b.comment);
    cmd.run(
        &id,
        Command::ResolveWarning {
            id: warning,
            comment,
        },
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReviewerBody {
    reviewer_id: String,
}

/// `POST /v1/applicants/{id}/reviewer`
pub async fn assign_reviewer(
    cmd: ApplicantCommand,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReviewerBody>,
) -> Result<Response, ApiError> {
    crate::service::identifier("reviewerId", &body.reviewer_id, 128)?;
    cmd.run(
        &id,
        Command::AssignReviewer {
            reviewer_id: body.reviewer_id,
        },
    )
    .await
}

/// `DELETE /v1/applicants/{id}/reviewer`
pub async fn unassign_reviewer(
    cmd: ApplicantCommand,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    cmd.run(&id, Command::UnassignReviewer).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecisionBody {
    decision: String,
    #[serde(default)]
    reasons: Vec<String>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    reviewer_id: Option<String>,
}

/// `POST /v1/applicants/{id}/decision`: approve or decline (by the assigned reviewer).
pub async fn decision(
    mut cmd: ApplicantCommand,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> Result<Response, ApiError> {
    let decision = match body.decision.as_str() {
        "approve" => DecisionKind::Approve,
        "decline" => DecisionKind::Decline,
        other => {
            return Err(ApiError::validation(format!(
                "decision must be \"approve\" or \"decline\", got {other:?}"
            )))
        }
    };
    let reviewer_id = body.reviewer_id.or_else(|| {
        (cmd.meta.actor.kind == vetted_store::ActorKind::Reviewer)
            .then(|| cmd.meta.actor.id.clone())
            .flatten()
    });
    if let Some(r) = &reviewer_id {
        crate::service::identifier("reviewerId", r, 128)?;
        cmd.meta.actor.kind = vetted_store::ActorKind::Reviewer;
        cmd.meta.actor.id = Some(r.clone());
    }
    let command = Command::Decide {
        decision,
        reviewer_id,
        reasons: body.reasons,
        comment: body.comment,
    };
    cmd.run(&id, command).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommentBody {
    text: String,
    #[serde(default)]
    author: Option<String>,
}

/// `POST /v1/applicants/{id}/comments`
pub async fn comment(
    cmd: ApplicantCommand,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CommentBody>,
) -> Result<Response, ApiError> {
    if body.text.trim().is_empty() || body.text.chars().count() > 10_000 {
        return Err(ApiError::validation("text must be 1 to 10,000 characters"));
    }
    let command = Command::AddComment {
        id: Uuid::now_v7(),
        text: body.text,
        author: body.author,
    };
    let outcome = cmd.execute(&id, command).await?;
    Ok(outcome_response(StatusCode::CREATED, outcome))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowBody {
    /// The flow to change to (its latest version unless `flowVersion` says which); absent:
    /// the current flow restarts.
    #[serde(default)]
    flow: Option<String>,
    /// A version of `flow`; needs `flow`.
    #[serde(default)]
    flow_version: Option<u32>,
}

/// `POST /v1/applicants/{id}/flow`: restart, or change to another flow (or flow version).
pub async fn change_flow(
    cmd: ApplicantCommand,
    Path(id): Path<String>,
    MaybeJson(body): MaybeJson<FlowBody>,
) -> Result<Response, ApiError> {
    let body = body.unwrap_or_default();
    let command = match body.flow {
        None if body.flow_version.is_some() => {
            return Err(ApiError::validation(
                "flowVersion needs flow: name the flow whose version to change to",
            ))
        }
        None => Command::RestartFlow,
        Some(name) => {
            let flow = match body.flow_version {
                Some(v) => cmd
                    .engine
                    .registry
                    .flow_version(&cmd.app.app_key, &name, v)?,
                None => cmd.engine.registry.flow(&cmd.app.app_key, &name)?,
            }
            .ok_or_else(|| {
                ApiError::validation(format!("no flow named {name:?} in this application"))
            })?;
            Command::ChangeFlow { flow }
        }
    };
    cmd.run(&id, command).await
}

/// `DELETE /v1/applicants/{id}`: schedule deletion after a 30-day grace period.
pub async fn schedule_deletion(
    cmd: ApplicantCommand,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let command = Command::ScheduleDeletion {
        grace: chrono::Duration::days(30),
    };
    let outcome = cmd.execute(&id, command).await?;
    Ok(outcome_response(StatusCode::ACCEPTED, outcome))
}

/// `POST /v1/applicants/{id}/restore`: cancel a scheduled deletion.
pub async fn restore(cmd: ApplicantCommand, Path(id): Path<String>) -> Result<Response, ApiError> {
    cmd.run(&id, Command::CancelDeletion).await
}
