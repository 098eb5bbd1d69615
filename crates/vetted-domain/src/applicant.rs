//! The applicant aggregate's state and the one fold (`evolve`) that builds it from events.
//! The live aggregate, as-of replay and projection tests all use this fold, so they cannot
//! disagree.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::ApplicantEvent;
use crate::flow::{Flow, StepSpec, StepType};
use crate::ids::{AppKey, ApplicantId, WarningId};
use crate::status::ApplicantStatus;
use crate::step_data::StepData;

/// Everything known about one applicant, folded from its events.
#[derive(Default, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applicant {
    /// `None` until `ApplicantCreated` is folded.
    pub id: Option<ApplicantId>,
    /// The application (tenant) the applicant belongs to.
    pub app_key: Option<AppKey>,
    /// The client's own id for this user.
    pub external_user_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub lang: Option<String>,
    /// The status as last announced by a `StatusChanged` event.
    pub status: ApplicantStatus,
    /// True once the applicant started the flow (INIT is left for good).
    pub verification_started: bool,
    /// The pinned flow version.
    pub flow: Option<Flow>,
    /// The active steps, in flow order.
    pub steps: Vec<StepState>,
    /// Deactivated steps with their last result, oldest first.
    pub history: Vec<StepState>,
    pub warnings: Vec<Warning>,
    /// The reviewer in charge, if any.
    pub reviewer: Option<String>,
    /// The decision, cleared by a restart or change of flow.
    pub decision: Option<Decision>,
    pub comments: Vec<Comment>,
    /// When a scheduled deletion purges the data.
    pub deletion_scheduled: Option<DateTime<Utc>>,
    /// Stream version of the last folded event (events folded − 1); `None` if none.
    pub version: Option<u64>,
}

impl Applicant {
    /// True once the applicant was created.
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    /// Warnings not resolved yet.
    pub fn unresolved_warnings(&self) -> impl Iterator<Item = &Warning> {
        self.warnings.iter().filter(|w| !w.resolved)
    }

    /// The active step of that type, if any.
    pub fn step(&self, step: StepType) -> Option<&StepState> {
        self.steps.iter().find(|s| s.step_type == step)
    }

    /// The warning with that id, if any.
    pub fn warning(&self, id: WarningId) -> Option<&Warning> {
        self.warnings.iter().find(|w| w.id == id)
    }

    /// Active steps still waiting for a usable result (not passed, not failed for good).
    pub fn outstanding_steps(&self) -> impl Iterator<Item = &StepState> {
        self.steps.iter().filter(|s| s.is_outstanding())
    }

    /// The expected stream version for the next append (`None` = the stream must not exist).
    pub fn next_version(&self) -> u64 {
        self.version.map_or(0, |v| v + 1)
    }
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// No result yet, or failed with attempts left.
    #[default]
    Pending,
    /// Passed.
    Passed,
    /// The last attempt failed.
    Failed,
}

impl StepStatus {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Passed => "passed",
            StepStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of an applicant's flow and its last result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepState {
    #[serde(rename = "type")]
    pub step_type: StepType,
    pub status: StepStatus,
    /// Attempts recorded so far.
    pub attempts: u32,
    pub max_attempts: Option<u32>,
    /// Data of the last result (provider output, e.g. `{"score": 92.5}`).
    pub data: StepData,
    /// Failed with no attempt left: only a reviewer can move the applicant on.
    pub failed_for_good: bool,
}

impl StepState {
    /// A step with no result yet.
    pub fn fresh(spec: &StepSpec) -> Self {
        StepState {
            step_type: spec.step_type,
            status: StepStatus::Pending,
            attempts: 0,
            max_attempts: spec.max_attempts,
            data: StepData::null(),
            failed_for_good: false,
        }
    }

    /// Still waiting for a usable result.
    pub fn is_outstanding(&self) -> bool {
        self.status != StepStatus::Passed && !self.failed_for_good
    }

    /// Passed, or failed for good: no more results are accepted.
    pub fn is_final(&self) -> bool {
        !self.is_outstanding()
    }
}

/// A warning on an applicant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    pub id: WarningId,
    /// Machine code, e.g. `DOCUMENT_EXPIRED`.
    pub code: String,
    pub message: String,
    pub step: Option<StepType>,
    pub resolved: bool,
    /// The reviewer's comment when resolving.
    pub resolution: Option<String>,
}

/// Approve or decline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionKind {
    Approve,
    Decline,
}

/// A decision taken on an applicant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub kind: DecisionKind,
    /// The reviewer; `None` = the system (auto-approval).
    pub by: Option<String>,
    pub reasons: Vec<String>,
    pub comment: Option<String>,
    pub at: DateTime<Utc>,
}

/// A note on an applicant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Comment {
    pub id: Uuid,
    pub text: String,
    pub author: Option<String>,
}

/// Applies one event to the state; total (never panics) and sets `version`.
pub fn evolve(mut state: Applicant, event: &ApplicantEvent) -> Applicant {
    match event {
        ApplicantEvent::ApplicantCreated {
            applicant_id,
            app_key,
            external_user_id,
            email,
            phone,
            lang,
            flow,
        } => {
            state.id = Some(*applicant_id);
            state.app_key = Some(*app_key);
            state.external_user_id = external_user_id.clone();
            state.email = email.clone();
            state.phone = phone.clone();
            state.lang = lang.clone();
            state.steps = flow.steps.iter().map(StepState::fresh).collect();
            state.flow = Some(Flow::clone(flow));
        }
        ApplicantEvent::VerificationStarted {} => state.verification_started = true,
        ApplicantEvent::StepPassed {
            step,
            attempt,
            data,
        } => {
            if let Some(s) = state.steps.iter_mut().find(|s| s.step_type == *step) {
                s.status = StepStatus::Passed;
                s.attempts = *attempt;
                s.data = data.clone();
                s.failed_for_good = false;
            }
        }
        ApplicantEvent::StepFailed {
            step,
            attempt,
            max_attempts,
            is_final,
            data,
            ..
        } => {
            if let Some(s) = state.steps.iter_mut().find(|s| s.step_type == *step) {
                s.status = StepStatus::Failed;
                s.attempts = *attempt;
                s.max_attempts = max_attempts.or(s.max_attempts);
                s.data = data.clone();
                s.failed_for_good = *is_final;
            }
        }
        ApplicantEvent::StepDeactivated { step, .. } => {
            if let Some(index) = state.steps.iter().position(|s| s.step_type == *step) {
                let removed = state.steps.remove(index);
                state.history.push(removed);
            }
        }
        ApplicantEvent::StepReactivated { step } => {
            let spec = state.flow.as_ref().and_then(|f| f.step(*step)).cloned();
            if let (Some(spec), None) = (spec, state.step(*step)) {
                state.steps.push(StepState::fresh(&spec));
                sort_in_flow_order(&mut state);
            }
        }
        ApplicantEvent::WarningRaised {
            warning_id,
            code,
            message,
            step,
        } => state.warnings.push(Warning {
            id: *warning_id,
            code: code.clone(),
            message: message.clone(),
            step: *step,
            resolved: false,
            resolution: None,
        }),
        ApplicantEvent::WarningResolved {
            warning_id,
            comment,
        } => {
            if let Some(w) = state.warnings.iter_mut().find(|w| w.id == *warning_id) {
                w.resolved = true;
                w.resolution = comment.clone();
            }
        }
        ApplicantEvent::ReviewerAssigned { reviewer_id } => {
            state.reviewer = Some(reviewer_id.clone())
        }
        ApplicantEvent::ReviewerUnassigned { .. } => state.reviewer = None,
        ApplicantEvent::CommentAdded {
            comment_id,
            text,
            author,
        } => state.comments.push(Comment {
            id: *comment_id,
            text: text.clone(),
            author: author.clone(),
        }),
        ApplicantEvent::ApplicantApproved {
            reviewer_id,
            reasons,
            comment,
            decided_at,
            ..
        } => {
            state.decision = Some(Decision {
                kind: DecisionKind::Approve,
                by: reviewer_id.clone(),
                reasons: reasons.clone(),
                comment: comment.clone(),
                at: *decided_at,
            })
        }
        ApplicantEvent::ApplicantDeclined {
            reviewer_id,
            reasons,
            comment,
            decided_at,
        } => {
            state.decision = Some(Decision {
                kind: DecisionKind::Decline,
                by: Some(reviewer_id.clone()),
                reasons: reasons.clone(),
                comment: comment.clone(),
                at: *decided_at,
            })
        }
        ApplicantEvent::FlowRestarted { kept_steps } => {
            if let Some(flow) = state.flow.clone() {
                rebuild_steps(&mut state, &flow, kept_steps);
            }
            state.decision = None;
        }
        ApplicantEvent::FlowChanged { flow, kept_steps } => {
            rebuild_steps(&mut state, flow, kept_steps);
            state.flow = Some(Flow::clone(flow));
            state.decision = None;
        }
        ApplicantEvent::StatusChanged { to, .. } => state.status = *to,
        ApplicantEvent::DeletionScheduled { purge_after } => {
            state.deletion_scheduled = Some(*purge_after)
        }
        ApplicantEvent::DeletionCancelled {} => state.deletion_scheduled = None,
    }
    state.version = Some(state.next_version());
    state
}

/// Folds events from the empty state.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a ApplicantEvent>) -> Applicant {
    events.into_iter().fold(Applicant::default(), evolve)
}

/// Every step of `flow` becomes active: kept steps keep their passed result, the others start
/// fresh (a restart exists to give failed steps new attempts).
fn rebuild_steps(state: &mut Applicant, flow: &Flow, kept_steps: &[StepType]) {
    let old = std::mem::take(&mut state.steps);
    state.steps = flow
        .steps
        .iter()
        .map(|spec| {
            let kept = old
                .iter()
                .find(|s| s.step_type == spec.step_type && kept_steps.contains(&s.step_type));
            match kept {
                Some(s) => StepState {
                    max_attempts: spec.max_attempts,
                    ..s.clone()
                },
                None => StepState::fresh(spec),
            }
        })
        .collect();
}

fn sort_in_flow_order(state: &mut Applicant) {
    if let Some(flow) = &state.flow {
        let position = |t: StepType| {
            flow.steps
                .iter()
                .position(|s| s.step_type == t)
                .unwrap_or(usize::MAX)
        };
        state.steps.sort_by_key(|s| position(s.step_type));
    }
}
