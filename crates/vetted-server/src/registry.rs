//! The registry of applications (tenants) and flows: a projection of the `application-*` and
//! `flow-*` streams, so every node sharing a log sees the same tenants and flow versions.
use std::sync::Arc;
use vetted_domain::{AppKey, Application, ApplicationEvent, Flow, FlowEvent};

use vetted_projections::{Projection, ProjectionError, ReadModels, Rows};
use vetted_store::RecordedEvent;

/// Stream holding an application's events.
pub fn application_stream(app_key: &AppKey) -> String {
    format!("application-{app_key}")
}

/// Stream holding the versions of one flow of an application.
pub fn flow_stream(app_key: &AppKey, name: &str) -> String {
    format!("flow-{app_key}-{name}")
}

/// Projection name.
pub const REGISTRY: &str = "registry";

/// How long a rotated-out signing secret keeps signing beside the new one.
pub const SIGNING_ROTATION_HOURS: i64 = 24;

/// A signing secret being rotated out: both signatures are sent until `until`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRotation {
    pub previous_secret: String,
    pub until: chrono::DateTime<chrono::Utc>,
}

fn rotation_row(app_key: &AppKey) -> Vec<u8> {
    format!("rotation/{app_key}").into_bytes()
}

/// Folds application and flow events into lookup rows.
pub struct RegistryProjection;

fn app_row(app_key: &AppKey) -> Vec<u8> {
    format!("app/{app_key}").into_bytes()
}
fn key_row(private_key_hash: &str) -> Vec<u8> {
    format!("key/{private_key_hash}").into_bytes()
}
fn flow_latest_row(app_key: &AppKey, name: &str) -> Vec<u8> {
    format!("flow/{app_key}/{name}").into_bytes()
}
fn flow_version_row(app_key: &AppKey, name: &str, version: u32) -> Vec<u8> {
    let mut k = format!("flowv/{app_key}/{name}/").into_bytes();
    k.extend_from_slice(&version.to_be_bytes());
    k
}

fn decode_err(event: &RecordedEvent, e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Decode {
        key: format!("{}@{}", event.stream_id, event.stream_version),
        reason: e.to_string(),
    }
}

impl Projection for RegistryProjection {
    fn name(&self) -> &'static str {
        REGISTRY
    }

    fn apply(&self, rows: &mut Rows<'_>, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if event.stream_id.starts_with("application-") {
            let decoded = ApplicationEvent::from_payload(
                &event.event_type,
                event.schema_version,
                &event.payload,
            )
            .map_err(|e| decode_err(event, e))?;
            let app = match decoded {
                ApplicationEvent::ApplicationCreated(app)
                | ApplicationEvent::ApplicationUpdated(app) => app,
            };
            if let Some(old) = rows.get_json::<Application>(&app_row(&app.app_key))? {
                if old.private_key_hash != app.private_key_hash {
                    rows.remove(key_row(&old.private_key_hash));
                }
                if old.signing_secret != app.signing_secret {
                    // The old secret keeps signing beside the new one until `until`; derived
                    // from the log, so every node (and a restarted one) agrees.
                    let rotation = SecretRotation {
                        previous_secret: old.signing_secret.clone(),
                        until: event.recorded_at + chrono::Duration::hours(SIGNING_ROTATION_HOURS),
                    };
                    rows.put_json(rotation_row(&app.app_key), &rotation)?;
                }
            }
            rows.put(key_row(&app.private_key_hash), app.app_key.to_string());
            rows.put_json(app_row(&app.app_key), &app)?;
        } else if event.stream_id.starts_with("flow-") {
            let decoded =
                FlowEvent::from_payload(&event.event_type, event.schema_version, &event.payload)
                    .map_err(|e| decode_err(event, e))?;
            let FlowEvent::FlowVersionCreated { app_key, flow } = decoded;
            rows.put_json(flow_version_row(&app_key, &flow.name, flow.version), &flow)?;
            rows.put_json(flow_latest_row(&app_key, &flow.name), &flow)?;
        }
        Ok(())
    }
}

/// Read access to the registry rows (always the live generation).
#[derive(Clone)]
pub struct Registry {
    read_models: Arc<ReadModels>,
}

impl Registry {
    /// Reads the registry projection of `read_models`.
    pub fn new(read_models: Arc<ReadModels>) -> Self {
        Registry { read_models }
    }

    fn tree(&self) -> Result<sled::Tree, ProjectionError> {
        self.read_models.live_tree(REGISTRY)
    }

    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, ProjectionError> {
        match self.tree()?.get(key)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| ProjectionError::Decode {
                        key: String::from_utf8_lossy(key).into_owned(),
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// The application with this app key.
    pub fn application(&self, app_key: &AppKey) -> Result<Option<Application>, ProjectionError> {
        self.get_json(&app_row(app_key))
    }

    /// The application whose private key hashes to `private_key_hash`.
    pub fn application_by_key_hash(
        &self,
        private_key_hash: &str,
    ) -> Result<Option<Application>, ProjectionError> {
        let Some(app_key) = self.tree()?.get(key_row(private_key_hash))? else {
            return Ok(None);
        };
        let app_key: AppKey =
            String::from_utf8_lossy(&app_key)
                .parse()
                .map_err(|_| ProjectionError::Decode {
                    key: "key/…".into(),
                    reason: "bad app key".into(),
                })?;
        self.application(&app_key)
    }

    /// The signing secret being rotated out of an application, if a rotation happened.
    pub fn secret_rotation(
        &self,
        app_key: &AppKey,
    ) -> Result<Option<SecretRotation>, ProjectionError> {
        self.get_json(&rotation_row(app_key))
    }

    /// Every application.
    pub fn applications(&self) -> Result<Vec<Application>, ProjectionError> {
        let mut out = Vec::new();
        for row in self.tree()?.scan_prefix(b"app/") {
            let (k, v) = row?;
            out.push(
                serde_json::from_slice(&v).map_err(|e| ProjectionError::Decode {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }

    /// The latest version of a flow.
    pub fn flow(&self, app_key: &AppKey, name: &str) -> Result<Option<Flow>, ProjectionError> {
        self.get_json(&flow_latest_row(app_key, name))
    }

    /// One version of a flow.
    pub fn flow_version(
        &self,
        app_key: &AppKey,
        name: &str,
        version: u32,
    ) -> Result<Option<Flow>, ProjectionError> {
        self.get_json(&flow_version_row(app_key, name, version))
    }

    /// The latest version of every flow of an application, by name.
    pub fn flows(&self, app_key: &AppKey) -> Result<Vec<Flow>, ProjectionError> {
        let mut out = Vec::new();
        for row in self
            .tree()?
            .scan_prefix(format!("flow/{app_key}/").as_bytes())
        {
            let (k, v) = row?;
            out.push(
                serde_json::from_slice(&v).map_err(|e| ProjectionError::Decode {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }
}

/// Webhook endpoints of the applications, read from the registry at delivery time.
pub struct RegistryEndpoints {
    registry: Registry,
}

impl RegistryEndpoints {
    /// Endpoints of the applications in `registry`.
    pub fn new(registry: Registry) -> Self {
        RegistryEndpoints { registry }
    }
}

impl vetted_webhooks::EndpointDirectory for RegistryEndpoints {
    fn endpoint(&self, app_key: &str) -> Option<Arc<vetted_webhooks::Endpoint>> {
        let app_key: AppKey = app_key.parse().ok()?;
        let app = self.registry.application(&app_key).ok()??;
        let mut endpoint = match vetted_webhooks::Endpoint::from_application(&app) {
            Ok(endpoint) => endpoint?,
            Err(e) => {
                tracing::warn!(app = %app_key, error = %e, "application has an unusable webhook endpoint");
                return None;
            }
        };
        if let Ok(Some(rotation)) = self.registry.secret_rotation(&app_key) {
            if let Ok(old) = vetted_webhooks::SigningSecret::parse(&rotation.previous_secret) {
                endpoint.previous_secret = Some((old, rotation.until));
            }
        }
        Some(Arc::new(endpoint))
    }
}
