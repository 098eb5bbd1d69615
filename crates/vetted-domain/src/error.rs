//! Why a command was refused or a stored event could not be read.
//!
//! HTTP mapping (`DomainError::http_status`), for the API layer:
//!
//! | variant | code | status |
//! |---|---|---|
//! | `ApplicantNotFound`, `WarningNotFound` | `not_found` | 404 |
//! | `ApplicantAlreadyExists` | `already_exists` | 409 |
//! | `InvalidTransition` | `invalid_transition` | 409 |
//! | `StepAlreadyFinal` | `step_already_final` | 409 |
//! | `WarningAlreadyResolved` | `warning_already_resolved` | 409 |
//! | `ReviewerRequired` | `reviewer_required` | 409 |
//! | `DecisionAlreadyTaken` | `decision_already_taken` | 409 |
//! | `UnresolvedWarnings` | `unresolved_warnings` | 409 |
//! | `StepNotInFlow` | `step_not_in_flow` | 422 |
//! | `InvalidFlow` | `invalid_flow` | 422 |
//! | `Validation` | `validation` | 422 |
//! | `UnknownEvent`, `BadPayload` | `unknown_event`, `bad_payload` | 500 (stored data, not the caller's fault) |
//!
//! 409 means "the request is well formed but the applicant's current state refuses it": the
//! caller can act (assign a reviewer, resolve warnings, re-read the applicant). 422 means the
//! request itself is wrong and retrying it as is will never work.

use chrono::{DateTime, Utc};

use crate::applicant::StepStatus;
use crate::flow::StepType;
use crate::ids::{ApplicantId, WarningId};
use crate::status::ApplicantStatus;

/// A refused command, or an unreadable stored event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// The applicant has no events.
    #[error("applicant not found: check the id, or create the applicant first")]
    ApplicantNotFound,
    /// `CreateApplicant` on a stream that already has events.
    #[error("applicant already exists: use a new id, or act on the existing applicant")]
    ApplicantAlreadyExists,
    /// The command is not allowed in the applicant's current state.
    #[error("cannot {command} while the applicant is {status}: {reason}")]
    InvalidTransition {
        status: ApplicantStatus,
        command: String,
        reason: String,
    },
    /// The step is not part of the applicant's pinned flow.
    #[error("step {step} is not in flow {flow}: send only the flow's steps ({available}), or change the applicant's flow")]
    StepNotInFlow {
        step: StepType,
        flow: String,
        available: String,
    },
    /// The step already has a final result (passed, or failed with no attempt left).
    #[error("step {step} is already {status} after {attempts} attempt(s): deactivate and reactivate it to redo it")]
    StepAlreadyFinal {
        step: StepType,
        status: StepStatus,
        attempts: u32,
    },
    /// No warning with that id on this applicant.
    #[error(
        "warning {id} not found on this applicant: list the applicant's warnings for valid ids"
    )]
    WarningNotFound { id: WarningId },
    /// The warning was resolved before.
    #[error("warning {id} is already resolved: nothing to do")]
    WarningAlreadyResolved { id: WarningId },
    /// A manual decision needs the assigned reviewer.
    #[error("{reason}")]
    ReviewerRequired { reason: String },
    /// A decision was already taken.
    #[error("applicant {applicant} is {status}: a decision was already taken at {at} by {by}; restart the flow to decide again")]
    DecisionAlreadyTaken {
        applicant: ApplicantId,
        status: ApplicantStatus,
        at: DateTime<Utc>,
        by: String,
    },
    /// Approval refused while warnings are open.
    #[error("cannot approve: {count} unresolved warning(s) ({codes}); resolve them first")]
    UnresolvedWarnings { count: usize, codes: String },
    /// The flow definition is not acceptable.
    #[error("invalid flow: {0}")]
    InvalidFlow(String),
    /// A command field is not acceptable.
    #[error("{0}")]
    Validation(String),
    /// A stored event type or schema version this build does not know.
    #[error("unknown event {event_type} v{schema_version}: this build reads up to v{known_version} of known types; upgrade Vetted or add an upcaster")]
    UnknownEvent {
        event_type: String,
        schema_version: u32,
        known_version: u32,
    },
    /// A stored payload does not match its event type.
    #[error("payload of {event_type} cannot be read: {reason}")]
    BadPayload { event_type: String, reason: String },
}

impl DomainError {
    /// Stable snake_case code for API error bodies (see the module docs for the table).
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::ApplicantNotFound | DomainError::WarningNotFound { .. } => "not_found",
            DomainError::ApplicantAlreadyExists => "already_exists",
            DomainError::InvalidTransition { .. } => "invalid_transition",
            DomainError::StepNotInFlow { .. } => "step_not_in_flow",
            DomainError::StepAlreadyFinal { .. } => "step_already_final",
            DomainError::WarningAlreadyResolved { .. } => "warning_already_resolved",
            DomainError::ReviewerRequired { .. } => "reviewer_required",
            DomainError::DecisionAlreadyTaken { .. } => "decision_already_taken",
            DomainError::UnresolvedWarnings { .. } => "unresolved_warnings",
            DomainError::InvalidFlow(_) => "invalid_flow",
            DomainError::Validation(_) => "validation",
            DomainError::UnknownEvent { .. } => "unknown_event",
            DomainError::BadPayload { .. } => "bad_payload",
        }
    }

    /// The HTTP status the API answers with (see the module docs for the table).
    pub fn http_status(&self) -> u16 {
        match self {
            DomainError::ApplicantNotFound | DomainError::WarningNotFound { .. } => 404,
            DomainError::ApplicantAlreadyExists
            | DomainError::InvalidTransition { .. }
            | DomainError::StepAlreadyFinal { .. }
            | DomainError::WarningAlreadyResolved { .. }
            | DomainError::ReviewerRequired { .. }
            | DomainError::DecisionAlreadyTaken { .. }
            | DomainError::UnresolvedWarnings { .. } => 409,
            DomainError::StepNotInFlow { .. }
            | DomainError::InvalidFlow(_)
            | DomainError::Validation(_) => 422,
            DomainError::UnknownEvent { .. } | DomainError::BadPayload { .. } => 500,
        }
    }
}
