//! Applications (tenants) and flow versions, with their events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec::EventCodec;
use crate::flow::Flow;
use crate::ids::AppKey;

/// Whether an application runs against test providers or for real.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Sandbox.
    #[default]
    Test,
    /// Production.
    Live,
}

/// A client application (tenant) and its keys. Its `Debug` leaves the keys, the webhook
/// URL (it may carry credentials) and header values out.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    /// Public id, also the tenant of every event the application causes.
    pub app_key: AppKey,
    /// Display name.
    pub name: String,
    /// Lowercase hex SHA-256 of the private API key; the key itself is never stored.
    pub private_key_hash: String,
    /// AES-256 key for webhook bodies, 64 lowercase hex characters.
    pub crypto_key: String,
    /// Standard Webhooks signing secret, `whsec_...`.
    pub signing_secret: String,
    /// Where webhooks are delivered; `None` = no webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Extra headers sent with every webhook.
    #[serde(default)]
    pub webhook_headers: BTreeMap<String, String>,
    /// Where the applicant's browser goes when the flow is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    /// Test or live.
    #[serde(default)]
    pub mode: Mode,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("app_key", &self.app_key)
            .field("name", &self.name)
            .field("private_key_hash", &"…")
            .field("crypto_key", &"…")
            .field("signing_secret", &"…")
            .field("webhook_url", &self.webhook_url.as_ref().map(|_| "set"))
            .field(
                "webhook_headers",
                &self.webhook_headers.keys().collect::<Vec<_>>(),
            )
            .field("redirect_url", &self.redirect_url)
            .field("mode", &self.mode)
            .finish()
    }
}

impl Application {
    /// The stream holding this application's events: `application-<appKey>`.
    pub fn stream(&self) -> String {
        application_stream(&self.app_key)
    }
}

/// The stream of an application's events: `application-<appKey>`.
pub fn application_stream(app_key: &AppKey) -> String {
    format!("application-{app_key}")
}

/// The stream of a flow's versions: `flow-<appKey>-<name>`.
pub fn flow_stream(app_key: &AppKey, flow_name: &str) -> String {
    format!("flow-{app_key}-{flow_name}")
}

/// Events of an application stream (`application-<appKey>`). Externally tagged in serde;
/// stored as the payload alone (see [`crate::ApplicantEvent`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApplicationEvent {
    /// A new application with its keys (payload: the application object).
    ApplicationCreated(Application),
    /// The application's settings changed (payload: the whole new application object).
    ApplicationUpdated(Application),
}

impl EventCodec for ApplicationEvent {
    const TYPES: &'static [&'static str] = &["ApplicationCreated", "ApplicationUpdated"];
    const SCHEMA_VERSION: u32 = 1;
}

impl ApplicationEvent {
    crate::codec::payload_methods!();

    /// The event type (the variant name).
    pub fn event_type(&self) -> &'static str {
        match self {
            ApplicationEvent::ApplicationCreated(_) => "ApplicationCreated",
            ApplicationEvent::ApplicationUpdated(_) => "ApplicationUpdated",
        }
    }

    /// The application the event describes.
    pub fn application(&self) -> &Application {
        match self {
            ApplicationEvent::ApplicationCreated(app)
            | ApplicationEvent::ApplicationUpdated(app) => app,
        }
    }

    /// One readable line for a timeline.
    pub fn summary(&self) -> String {
        match self {
            ApplicationEvent::ApplicationCreated(app) => {
                format!("application {} created ({:?} mode)", app.name, app.mode)
            }
            ApplicationEvent::ApplicationUpdated(app) => {
                format!("application {} updated", app.name)
            }
        }
    }
}

/// Events of a flow stream (`flow-<appKey>-<name>`). Externally tagged in serde; stored as
/// the payload alone (see [`crate::ApplicantEvent`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all_fields = "camelCase")]
pub enum FlowEvent {
    /// A new version of a flow was saved (the first one creates the flow).
    FlowVersionCreated {
        /// The application owning the flow.
        app_key: AppKey,
        /// The full flow version.
        flow: Flow,
    },
}

impl EventCodec for FlowEvent {
    const TYPES: &'static [&'static str] = &["FlowVersionCreated"];
    const SCHEMA_VERSION: u32 = 1;
}

impl FlowEvent {
    crate::codec::payload_methods!();

    /// The event type (the variant name).
    pub fn event_type(&self) -> &'static str {
        match self {
            FlowEvent::FlowVersionCreated { .. } => "FlowVersionCreated",
        }
    }

    /// One readable line for a timeline.
    pub fn summary(&self) -> String {
        match self {
            FlowEvent::FlowVersionCreated { flow, .. } => {
                format!(
                    "flow {} saved with {} steps",
                    flow.label(),
                    flow.steps.len()
                )
            }
        }
    }
}
