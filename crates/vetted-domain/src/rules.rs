//! The status rules: one function derives the status from the state, and one says when the
//! system approves on its own.

use crate::applicant::{Applicant, DecisionKind, StepStatus};
use crate::flow::StepType;
use crate::status::ApplicantStatus;

/// The status an applicant should have, computed from its state alone.
///
/// - a decision wins: APPROVED or DECLINED;
/// - verification not started: INIT;
/// - any unresolved warning: ON_HOLD;
/// - a user-side step outstanding (no result, or failed with attempts left): INCOMPLETE;
/// - only background steps (face match, AML, IP check) outstanding: IN_PROGRESS;
/// - otherwise COMPLETED. A step failed for good is not outstanding: the applicant waits in
///   COMPLETED for a reviewer once nothing else is pending, and is never auto-approved.
pub fn derived_status(state: &Applicant) -> ApplicantStatus {
    if let Some(decision) = &state.decision {
        return match decision.kind {
            DecisionKind::Approve => ApplicantStatus::Approved,
            DecisionKind::Decline => ApplicantStatus::Declined,
        };
    }
    if !state.exists() || !state.verification_started {
        return ApplicantStatus::Init;
    }
    if state.unresolved_warnings().next().is_some() {
        return ApplicantStatus::OnHold;
    }
    let mut outstanding = state.outstanding_steps().peekable();
    if outstanding.peek().is_none() {
        ApplicantStatus::Completed
    } else if outstanding.any(|s| !s.step_type.is_background()) {
        ApplicantStatus::Incomplete
    } else {
        ApplicantStatus::InProgress
    }
}

/// True when the system approves by itself: the flow has auto-approval, nothing is decided,
/// the applicant is COMPLETED with every active step passed (none failed for good), no warning
/// is open, and the face-match score (`data.score`) reaches the threshold (the step's, else
/// the flow's `faceMatchThreshold`, 85 by default). A missing or lower score waits for a reviewer.
pub fn auto_approval_due(state: &Applicant) -> bool {
    let Some(flow) = &state.flow else {
        return false;
    };
    flow.settings.auto_approval
        && state.decision.is_none()
        && derived_status(state) == ApplicantStatus::Completed
        && state.steps.iter().all(|s| s.status == StepStatus::Passed)
        && face_match_reaches_threshold(state)
}

/// The face-match score of the active face-match step, if it has a numeric `data.score`.
pub fn face_match_score(state: &Applicant) -> Option<f64> {
    state
        .step(StepType::FaceMatch)
        .and_then(|s| s.data.f64_field("score"))
}

/// No active face-match step, or its score reaches the threshold.
fn face_match_reaches_threshold(state: &Applicant) -> bool {
    if state.step(StepType::FaceMatch).is_none() {
        return true;
    }
    let threshold = state
        .flow
        .as_ref()
        .map_or(crate::flow::DEFAULT_FACE_MATCH_THRESHOLD, |f| {
            f.face_match_threshold()
        });
    face_match_score(state).is_some_and(|score| score >= threshold)
}
