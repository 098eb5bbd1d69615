//! Request extractors: tenancy by bearer key, the admin token, JSON bodies with API errors,
//! `If-Match`, and the request's actor.
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use uuid::Uuid;
use vetted_domain::Application;
use vetted_store::ActorKind;

use crate::error::ApiError;
use crate::keys;
use crate::service::Meta;
use crate::Engine;

/// Shared state of every handler.
pub type AppState = Arc<Engine>;

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The application whose private key is the request's bearer token (`None`: no token, or
/// not an application's key). Looked up once per request: the answer is kept in the request's
/// extensions for the next extractor that asks ([`Tenant`], then [`RequestMeta`]).
fn application(parts: &mut Parts, state: &AppState) -> Result<Option<Application>, ApiError> {
    #[derive(Clone)]
    struct Authorised(Option<Application>);

    if let Some(Authorised(app)) = parts.extensions.get::<Authorised>() {
        return Ok(app.clone());
    }
    let app = match bearer(parts) {
        Some(token) => state
            .registry
            .application_by_key_hash(&keys::hash_private_key(token))?,
        None => None,
    };
    parts.extensions.insert(Authorised(app.clone()));
    Ok(app)
}

/// The application whose private key authorised the request.
#[derive(Clone)]
pub struct Tenant(pub Application);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        application(parts, state)?
            .map(Tenant)
            .ok_or_else(ApiError::unauthorized)
    }
}

/// An operator holding the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = state
            .config
            .admin_token
            .as_deref()
            .filter(|t| !t.is_empty())
        else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "admin endpoints are disabled: start the server with VETTED_ADMIN_TOKEN set",
            ));
        };
        match bearer(parts) {
            Some(token) if keys::constant_time_eq(token.as_bytes(), expected.as_bytes()) => {
                Ok(Admin)
            }
            _ => Err(ApiError::forbidden()),
        }
    }
}

/// `If-Match: <stream version>` (quoted or not).
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let text = value.to_str().unwrap_or_default().trim();
        let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
        text.parse::<u64>().map(|v| IfMatch(Some(v))).map_err(|_| {
            ApiError::bad_request(format!(
                "If-Match must be a stream version such as \"3\", got {text:?}"
            ))
        })
    }
}

/// Who made the request and from where, for the events it appends.
pub struct RequestMeta(pub Meta);

impl FromRequestParts<AppState> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let (kind, id) = match (bearer(parts).is_some(), application(parts, state)?) {
            (_, Some(app)) => (ActorKind::Api, Some(app.app_key.to_string())),
            (true, None) => (ActorKind::Admin, Some("admin".to_string())),
            (false, None) => (ActorKind::Api, None),
        };
        let actor = crate::actor::from_request(kind, id, &parts.headers, peer);
        let correlation_id = parts
            .headers
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Uuid>().ok())
            .unwrap_or_else(Uuid::now_v7);
        Ok(RequestMeta(Meta {
            actor,
            correlation_id,
        }))
    }
}

/// A JSON body whose rejections are API errors (400 malformed, 413 too large, 415, 422 invalid).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {}", e.body_text()),
        ),
        JsonRejection::JsonDataError(e) => ApiError::validation(format!(
            "the body does not match the expected shape: {}",
            e.body_text()
        )),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is larger than the 1 MiB limit",
            )
        }
        other => ApiError::bad_request(other.body_text()),
    }
}

/// An optional JSON body: no body (or an empty one) is `None`; otherwise as [`ApiJson`].
pub struct MaybeJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for MaybeJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the body is larger than the 1 MiB limit",
                    )
                } else {
                    ApiError::bad_request(e.body_text())
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(MaybeJson(None));
        }
        match serde_json::from_slice(&bytes) {
            Ok(v) => Ok(MaybeJson(Some(v))),
            Err(e) if e.is_data() => Err(ApiError::validation(format!(
                "the body does not match the expected shape: {e}"
            ))),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {e}"),
            )),
        }
    }
}

/// Everything a command on one applicant needs from its request: the engine, the caller's
/// application, `If-Match` and the actor.
pub struct ApplicantCommand {
    pub engine: AppState,
    pub app: Application,
    pub if_match: Option<u64>,
    pub meta: Meta,
}

impl FromRequestParts<AppState> for ApplicantCommand {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Tenant(app) = Tenant::from_request_parts(parts, state).await?;
        let IfMatch(if_match) = IfMatch::from_request_parts(parts, state).await?;
        let RequestMeta(meta) = RequestMeta::from_request_parts(parts, state).await?;
        Ok(ApplicantCommand {
            engine: state.clone(),
            app,
            if_match,
            meta,
        })
    }
}

impl ApplicantCommand {
    /// Runs `command` on applicant `id` (the raw path segment).
    pub async fn execute(
        &self,
        id: &str,
        command: vetted_domain::Command,
    ) -> Result<crate::service::CommandOutcome, ApiError> {
        let id = super::applicants::applicant_id(id)?;
        self.engine
            .execute(&self.app.app_key, &id, self.if_match, &self.meta, command)
            .await
    }

    /// Runs `command` and answers 200 with the view and its `ETag`.
    pub async fn run(
        &self,
        id: &str,
        command: vetted_domain::Command,
    ) -> Result<axum::response::Response, ApiError> {
        let outcome = self.execute(id, command).await?;
        Ok(super::applicants::outcome_response(StatusCode::OK, outcome))
    }
}
