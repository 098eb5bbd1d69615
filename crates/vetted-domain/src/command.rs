//! Commands: what callers ask of an applicant. `decide` turns one into events or refuses it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::applicant::DecisionKind;
use crate::flow::{Flow, StepType};
use crate::ids::{AppKey, ApplicantId, WarningId};
use crate::step_data::StepData;

/// What the outside world provides to a decision: the time, since the domain has no clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The moment the command is decided.
    pub now: DateTime<Utc>,
}

impl Context {
    /// A context at `now`.
    pub fn at(now: DateTime<Utc>) -> Self {
        Context { now }
    }
}

/// Result of a step as reported by a provider or the front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepOutcome {
    Passed,
    Failed,
}

/// Something a caller asks of an applicant.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Create the applicant, pinned to `flow`.
    CreateApplicant {
        id: ApplicantId,
        app_key: AppKey,
        external_user_id: String,
        email: Option<String>,
        phone: Option<String>,
        lang: Option<String>,
        flow: Flow,
    },
    /// The applicant opened the flow: INIT → INCOMPLETE.
    StartVerification,
    /// Record a step result; `attempt`, if given, must be the next attempt number.
    SubmitStepResult {
        step: StepType,
        outcome: StepOutcome,
        data: StepData,
        attempt: Option<u32>,
        reason: Option<String>,
    },
    /// Stop requiring a step; its last result goes to the history.
    DeactivateStep {
        step: StepType,
        reason: Option<String>,
    },
    /// Require a deactivated step again, from scratch.
    ReactivateStep { step: StepType },
    /// Hold the applicant on something suspicious.
    RaiseWarning {
        id: WarningId,
        code: String,
        message: String,
        step: Option<StepType>,
    },
    /// Clear a warning.
    ResolveWarning {
        id: WarningId,
        comment: Option<String>,
    },
    /// Put a reviewer in charge (replacing any other).
    AssignReviewer { reviewer_id: String },
    /// Remove the reviewer in charge.
    UnassignReviewer,
    /// Add a note.
    AddComment {
        id: Uuid,
        text: String,
        author: Option<String>,
    },
    /// A reviewer's decision; `reviewer_id` `None` means the assigned reviewer.
    Decide {
        decision: DecisionKind,
        reviewer_id: Option<String>,
        reasons: Vec<String>,
        comment: Option<String>,
    },
    /// Start the flow over, keeping passed steps.
    RestartFlow,
    /// Move to another flow version, keeping passed steps it shares.
    ChangeFlow { flow: Flow },
    /// Purge the applicant's data after a grace period.
    ScheduleDeletion { grace: chrono::Duration },
    /// Call off a scheduled deletion.
    CancelDeletion,
}

impl Command {
    /// What the command does, as a verb phrase for messages ("submit a step result").
    pub fn describe(&self) -> &'static str {
        match self {
            Command::CreateApplicant { .. } => "create the applicant",
            Command::StartVerification => "start verification",
            Command::SubmitStepResult { .. } => "submit a step result",
            Command::DeactivateStep { .. } => "deactivate a step",
            Command::ReactivateStep { .. } => "reactivate a step",
            Command::RaiseWarning { .. } => "raise a warning",
            Command::ResolveWarning { .. } => "resolve a warning",
            Command::AssignReviewer { .. } => "assign a reviewer",
            Command::UnassignReviewer => "unassign the reviewer",
            Command::AddComment { .. } => "add a comment",
            Command::Decide {
                decision: DecisionKind::Approve,
                ..
            } => "approve",
            Command::Decide {
                decision: DecisionKind::Decline,
                ..
            } => "decline",
            Command::RestartFlow => "restart the flow",
            Command::ChangeFlow { .. } => "change the flow",
            Command::ScheduleDeletion { .. } => "schedule deletion",
            Command::CancelDeletion => "cancel deletion",
        }
    }
}
