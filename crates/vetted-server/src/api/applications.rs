//! `/v1/applications` (admin) and `/v1/application` (the caller's own, without secrets).
use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use vetted_domain::{AppKey, Application};

use super::extract::{Admin, ApiJson, AppState, RequestMeta, Tenant};
use crate::error::ApiError;
use crate::keys;
use crate::service::NewApplication;

/// An application as shown after creation: without the private key hash.
pub fn public_view(app: &Application) -> Value {
    json!({
        "appKey": app.app_key.to_string(),
        "name": app.name,
        "webhookUrl": app.webhook_url,
        "webhookHeaders": app.webhook_headers,
        "redirectUrl": app.redirect_url,
        "mode": app.mode,
    })
}

/// `POST /v1/applications` (admin) → 201 with the keys, shown once.
pub async fn create(
    State(engine): State<AppState>,
    _admin: Admin,
    RequestMeta(meta): RequestMeta,
    ApiJson(req): ApiJson<NewApplication>,
) -> Result<Response, ApiError> {
    let (app, secrets) = engine.create_application(req, &meta).await?;
    let mut body = public_view(&app);
    body["privateKey"] = json!(secrets.private_key);
    body["cryptoKey"] = json!(secrets.crypto_key);
    body["signingSecret"] = json!(secrets.signing_secret);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /v1/applications` (admin): every application, without secrets.
pub async fn list(State(engine): State<AppState>, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let items: Vec<Value> = engine
        .registry
        .applications()?
        .iter()
        .map(public_view)
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// `GET /v1/application`: the calling application, without secrets.
pub async fn current(Tenant(app): Tenant) -> Json<Value> {
    Json(public_view(&app))
}

/// `PATCH /v1/applications/{appKey}` body: what may change.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationChanges {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, with = "double_option")]
    webhook_url: Option<Option<String>>,
    #[serde(default)]
    webhook_headers: Option<BTreeMap<String, String>>,
    #[serde(default, with = "double_option")]
    redirect_url: Option<Option<String>>,
    /// Issue a new private key (the old one stops working at once).
    #[serde(default)]
    rotate_private_key: bool,
    /// Issue a new crypto key (webhooks are sealed with it from now on).
    #[serde(default)]
    rotate_crypto_key: bool,
    /// Issue a new signing secret; the old one keeps signing beside it until the rotation ends.
    #[serde(default)]
    rotate_signing_secret: bool,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

/// `PATCH /v1/applications/{appKey}` (admin): change webhook URL, headers, redirect, rotate keys.
/// New secrets are in the answer, shown once.
pub async fn update(
    State(engine): State<AppState>,
    _admin: Admin,
    Path(app_key): Path<String>,
    RequestMeta(meta): RequestMeta,
    ApiJson(changes): ApiJson<ApplicationChanges>,
) -> Result<Json<Value>, ApiError> {
    let app_key: AppKey = app_key
        .parse()
        .map_err(|_| ApiError::not_found(format!("no application {app_key:?}")))?;
    // Applied to the application's latest state; may run again if another change lands first.
    let change = |app: &mut Application| -> Result<serde_json::Map<String, Value>, ApiError> {
        let mut shown = serde_json::Map::new();
        if let Some(name) = &changes.name {
            app.name = name.trim().to_string();
        }
        if let Some(url) = &changes.webhook_url {
            app.webhook_url = url.clone();
        }
        if let Some(headers) = &changes.webhook_headers {
            app.webhook_headers = headers.clone();
        }
        if let Some(url) = &changes.redirect_url {
            app.redirect_url = url.clone();
        }
        let fresh = keys::generate()
            .map_err(|e| ApiError::internal(format!("random source failed: {e}")))?;
        if changes.rotate_private_key {
            app.private_key_hash = keys::hash_private_key(&fresh.private_key);
            shown.insert("privateKey".into(), json!(fresh.private_key));
        }
        if changes.rotate_crypto_key {
            app.crypto_key = fresh.crypto_key.clone();
            shown.insert("cryptoKey".into(), json!(fresh.crypto_key));
        }
        if changes.rotate_signing_secret {
            app.signing_secret = fresh.signing_secret.clone();
            shown.insert("signingSecret".into(), json!(fresh.signing_secret));
        }
        Ok(shown)
    };
    let (app, shown) = engine.update_application(&app_key, &meta, change).await?;
    engine.webhook_endpoint_changed(&app.app_key)?;
    let mut body = public_view(&app);
    for (k, v) in shown {
        body[k] = v;
    }
    Ok(Json(body))
}
