use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who caused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ActorKind {
    /// Vetted itself (auto-approval, scheduled jobs).
    System,
    /// The applicant, through the client's front end.
    Applicant,
    /// A compliance reviewer.
    Reviewer,
    /// A client backend calling the API with its private key.
    Api,
    /// An operator with the admin token.
    Admin,
}

/// Who did it and from where: the timeline shows this to auditors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    pub kind: ActorKind,
    /// Reviewer id, API key id, applicant id...; `None` for the system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<String>,
}

impl Actor {
    /// The system actor (no id, no environment).
    pub fn system() -> Self {
        Actor {
            kind: ActorKind::System,
            id: None,
            ip: None,
            user_agent: None,
            os: None,
            browser: None,
        }
    }
}

/// An event to append: everything but the position, version, time and hashes the store assigns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewEvent {
    /// UUID v7; also the dedup id on NATS.
    pub event_id: Uuid,
    /// e.g. `StepPassed`.
    pub event_type: String,
    pub schema_version: u32,
    /// The application (app key) the event belongs to.
    pub tenant: String,
    pub actor: Actor,
    pub correlation_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    pub payload: serde_json::Value,
}

/// A stored event: the envelope of `ARCHITECTURE.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedEvent {
    /// Order in the whole log, from 1.
    pub global_position: u64,
    pub stream_id: String,
    /// Order in the stream, from 0.
    pub stream_version: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub recorded_at: DateTime<Utc>,
    pub tenant: String,
    pub actor: Actor,
    pub correlation_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    pub payload: serde_json::Value,
    /// Hash of the previous event in the stream (all zeros for version 0), lowercase hex.
    pub prev_hash: String,
    /// `SHA-256(prev_hash || canonical bytes of this event)`, lowercase hex.
    pub hash: String,
}
