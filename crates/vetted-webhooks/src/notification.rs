//! Which events become which webhook, and the JSON payload a client receives (before sealing).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The webhook types a client can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WebhookType {
    /// The applicant was created.
    ApplicantCreated,
    /// Status became INCOMPLETE (user started, steps outstanding).
    ApplicantIncomplete,
    /// Status became IN_PROGRESS (background checks running).
    ApplicantInProgress,
    /// Status became COMPLETED (awaiting a decision).
    ApplicantCompleted,
    /// Status became ON_HOLD (unresolved warnings).
    ApplicantOnHold,
    /// A reviewer was assigned.
    ApplicantInReview,
    /// Status became APPROVED.
    ApplicantApproved,
    /// Status became DECLINED.
    ApplicantRejected,
    /// A step passed.
    ApplicantStepPassed,
}

impl WebhookType {
    /// Every type, in the order of the issue.
    pub const ALL: [WebhookType; 9] = [
        WebhookType::ApplicantCreated,
        WebhookType::ApplicantIncomplete,
        WebhookType::ApplicantInProgress,
        WebhookType::ApplicantCompleted,
        WebhookType::ApplicantOnHold,
        WebhookType::ApplicantInReview,
        WebhookType::ApplicantApproved,
        WebhookType::ApplicantRejected,
        WebhookType::ApplicantStepPassed,
    ];

    /// The wire name, e.g. `applicantCreated` (also the schema file name).
    pub fn as_str(&self) -> &'static str {
        match self {
            WebhookType::ApplicantCreated => "applicantCreated",
            WebhookType::ApplicantIncomplete => "applicantIncomplete",
            WebhookType::ApplicantInProgress => "applicantInProgress",
            WebhookType::ApplicantCompleted => "applicantCompleted",
            WebhookType::ApplicantOnHold => "applicantOnHold",
            WebhookType::ApplicantInReview => "applicantInReview",
            WebhookType::ApplicantApproved => "applicantApproved",
            WebhookType::ApplicantRejected => "applicantRejected",
            WebhookType::ApplicantStepPassed => "applicantStepPassed",
        }
    }

    /// The webhook a status change to `status` (wire form, e.g. `ON_HOLD`) triggers, if any.
    /// `INIT` triggers none: creation already has `applicantCreated`.
    pub fn for_status(status: &str) -> Option<WebhookType> {
        Some(match status {
            "INCOMPLETE" => WebhookType::ApplicantIncomplete,
            "IN_PROGRESS" => WebhookType::ApplicantInProgress,
            "COMPLETED" => WebhookType::ApplicantCompleted,
            "ON_HOLD" => WebhookType::ApplicantOnHold,
            "APPROVED" => WebhookType::ApplicantApproved,
            "DECLINED" => WebhookType::ApplicantRejected,
            _ => return None,
        })
    }
}

impl std::fmt::Display for WebhookType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The payload of one webhook, as the client decrypts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// The applicant id.
    pub id: String,
    /// The client's own id for the applicant.
    pub external_user_id: String,
    /// The application (tenant) the applicant belongs to.
    pub app_key: String,
    /// Which webhook this is.
    #[serde(rename = "type")]
    pub webhook_type: WebhookType,
    /// The applicant's status after the event (wire form, e.g. `ON_HOLD`).
    pub status: String,
    /// Codes of the applicant's unresolved warnings.
    pub warnings: Vec<String>,
    /// The step, for `applicantStepPassed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_name: Option<String>,
    /// The event that caused this webhook.
    pub event_id: Uuid,
    /// The applicant's stream version of that event, so receivers can order what they get.
    pub sequence: u64,
    /// When the event was recorded.
    pub occurred_at: DateTime<Utc>,
}

impl Notification {
    /// The `webhook-id` header: stable for this notification across every retry and redelivery.
    pub fn webhook_id(&self) -> String {
        format!("msg_{}", self.event_id.simple())
    }
}

/// What the webhook projector remembers about one applicant to fill payloads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicantRow {
    /// The client's own id for the applicant.
    pub external_user_id: String,
    /// The applicant's application.
    pub app_key: String,
    /// Current status, wire form.
    pub status: String,
    /// Unresolved warnings: warning id → code.
    pub warnings: BTreeMap<String, String>,
}

impl ApplicantRow {
    /// The unresolved warning codes, in warning id order (stable across rebuilds).
    pub fn warning_codes(&self) -> Vec<String> {
        self.warnings.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_changes_map_to_their_webhooks_and_init_to_none() {
        assert_eq!(
            WebhookType::for_status("DECLINED"),
            Some(WebhookType::ApplicantRejected)
        );
        assert_eq!(
            WebhookType::for_status("ON_HOLD"),
            Some(WebhookType::ApplicantOnHold)
        );
        assert_eq!(WebhookType::for_status("INIT"), None);
    }

    #[test]
    fn wire_names_match_serde_names() {
        for t in WebhookType::ALL {
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::Value::String(t.as_str().into())
            );
        }
    }
}
