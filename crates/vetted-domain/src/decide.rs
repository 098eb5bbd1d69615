//! `decide`: the applicant's business rules. It reads the state, and returns the events a
//! command causes or the reason it is refused. Every status change is its own `StatusChanged`
//! event, emitted right after the event that caused it.

use crate::applicant::{evolve, Applicant, DecisionKind, StepState};
use crate::command::{Command, Context, StepOutcome};
use crate::error::DomainError;
use crate::event::ApplicantEvent;
use crate::flow::{Flow, StepType};
use crate::rules::{auto_approval_due, derived_status};
use crate::step_data::StepData;

/// Decides what `command` does to the applicant in `state`.
pub fn decide(
    state: &Applicant,
    command: Command,
    ctx: &Context,
) -> Result<Vec<ApplicantEvent>, DomainError> {
    match command {
        Command::CreateApplicant {
            id,
            app_key,
            external_user_id,
            email,
            phone,
            lang,
            flow,
        } => {
            if state.exists() {
                return Err(DomainError::ApplicantAlreadyExists);
            }
            if external_user_id.trim().is_empty() {
                return Err(DomainError::Validation(
                    "externalUserId is empty: send the client's own id for this user".into(),
                ));
            }
            flow.validate()?;
            Ok(vec![ApplicantEvent::ApplicantCreated {
                applicant_id: id,
                app_key,
                external_user_id,
                email,
                phone,
                lang,
                flow: Box::new(flow),
            }])
        }
        command => decide_existing(state, command, ctx),
    }
}

/// Every command but `CreateApplicant`: they all need the applicant to exist.
fn decide_existing(
    state: &Applicant,
    command: Command,
    ctx: &Context,
) -> Result<Vec<ApplicantEvent>, DomainError> {
    if !state.exists() {
        return Err(DomainError::ApplicantNotFound);
    }
    let described = command.describe();
    let refuse = |reason: String| DomainError::InvalidTransition {
        status: state.status,
        command: described.to_string(),
        reason,
    };
    if let Some(purge_after) = state.deletion_scheduled {
        if !matches!(
            command,
            Command::CancelDeletion | Command::ScheduleDeletion { .. }
        ) {
            return Err(refuse(format!(
                "its deletion is scheduled (data purged after {}); cancel the deletion first",
                purge_after.to_rfc3339()
            )));
        }
    }
    let decided = decided_reason(state);
    let mut out = Outcome::new(state);

    match command {
        Command::CreateApplicant { .. } => return Err(DomainError::ApplicantAlreadyExists),
        Command::StartVerification => {
            if let Some(reason) = decided {
                return Err(refuse(reason));
            }
            if state.verification_started {
                return Err(refuse("verification has already started".into()));
            }
            out.emit(ApplicantEvent::VerificationStarted {});
        }
        Command::SubmitStepResult {
            step,
            outcome,
            data,
            attempt,
            reason,
        } => {
            if let Some(why) = decided {
                return Err(refuse(why));
            }
            let current = active_step(state, step)?.clone();
            if current.is_final() {
                return Err(DomainError::StepAlreadyFinal {
                    step,
                    status: current.status,
                    attempts: current.attempts,
                });
            }
            let next = current.attempts + 1;
            if let Some(claimed) = attempt {
                if claimed != next {
                    return Err(refuse(format!(
                        "{step} has {} attempt(s) recorded, so this result is attempt {next}, not {claimed}: send attempt {next} or leave it out",
                        current.attempts
                    )));
                }
            }
            if !state.verification_started {
                // A result arriving before the start signal means the applicant did start.
                out.emit(ApplicantEvent::VerificationStarted {});
            }
            let country_refused = match outcome {
                StepOutcome::Passed => country_not_permitted(state, step, &data),
                StepOutcome::Failed => None,
            };
            out.emit(match outcome {
                StepOutcome::Passed => ApplicantEvent::StepPassed {
                    step,
                    attempt: next,
                    data,
                },
                StepOutcome::Failed => ApplicantEvent::StepFailed {
                    step,
                    attempt: next,
                    max_attempts: current.max_attempts,
                    is_final: current.max_attempts.is_some_and(|max| next >= max),
                    reason,
                    data,
                },
            });
            if let Some((country, why)) = country_refused {
                let warning_id = system_warning_id(&out.state);
                out.emit(ApplicantEvent::WarningRaised {
                    warning_id,
                    code: "COUNTRY_NOT_PERMITTED".into(),
                    message: format!("the document was issued by {country}, which {why}"),
                    step: Some(step),
                });
            }
            out.auto_approve_if_due(ctx);
        }
        Command::DeactivateStep { step, reason } => {
            if let Some(why) = decided {
                return Err(refuse(why));
            }
            step_in_flow(state, step)?;
            if state.step(step).is_none() {
                return Err(refuse(format!("step {step} is already deactivated")));
            }
            out.emit(ApplicantEvent::StepDeactivated { step, reason });
        }
        Command::ReactivateStep { step } => {
            if let Some(why) = decided {
                return Err(refuse(why));
            }
            step_in_flow(state, step)?;
            if state.step(step).is_some() {
                return Err(refuse(format!(
                    "step {step} is active: only a deactivated step can be reactivated"
                )));
            }
            out.emit(ApplicantEvent::StepReactivated { step });
        }
        Command::RaiseWarning {
            id,
            code,
            message,
            step,
        } => {
            if let Some(why) = decided {
                return Err(refuse(why));
            }
            if code.trim().is_empty() {
                return Err(DomainError::Validation(
                    "the warning code is empty: send a code such as DOCUMENT_EXPIRED".into(),
                ));
            }
            if let Some(step) = step {
                step_in_flow(state, step)?;
            }
            if state.warning(id).is_some() {
                return Err(refuse(format!(
                    "warning {id} was already raised: use a new warning id"
                )));
            }
            out.emit(ApplicantEvent::WarningRaised {
                warning_id: id,
                code,
                message,
                step,
            });
        }
        Command::ResolveWarning { id, comment } => {
            if let Some(why) = decided {
                return Err(refuse(why));
            }
            let warning = state
                .warning(id)
                .ok_or(DomainError::WarningNotFound { id })?;
            if warning.resolved {
                return Err(DomainError::WarningAlreadyResolved { id });
            }
            out.emit(ApplicantEvent::WarningResolved {
                warning_id: id,
                comment,
            });
            out.auto_approve_if_due(ctx);
        }
        Command::AssignReviewer { reviewer_id } => {
            if reviewer_id.trim().is_empty() {
                return Err(DomainError::Validation(
                    "reviewerId is empty: send the reviewer's id".into(),
                ));
            }
            if let Some(why) = decided {
                return Err(refuse(why));
            }
            match &state.reviewer {
                Some(current) if *current == reviewer_id => {
                    return Err(refuse(format!(
                        "{reviewer_id} is already the assigned reviewer"
                    )));
                }
                Some(current) => out.emit(ApplicantEvent::ReviewerUnassigned {
                    reviewer_id: current.clone(),
                }),
                None => {}
            }
            out.emit(ApplicantEvent::ReviewerAssigned { reviewer_id });
        }
        Command::UnassignReviewer => match &state.reviewer {
            Some(current) => out.emit(ApplicantEvent::ReviewerUnassigned {
                reviewer_id: current.clone(),
            }),
            None => return Err(refuse("no reviewer is assigned".into())),
        },
        Command::AddComment { id, text, author } => {
            if text.trim().is_empty() {
                return Err(DomainError::Validation(
                    "the comment is empty: send some text".into(),
                ));
            }
            if state.comments.iter().any(|c| c.id == id) {
                return Err(refuse(format!(
                    "comment {id} was already added: use a new comment id"
                )));
            }
            out.emit(ApplicantEvent::CommentAdded {
                comment_id: id,
                text,
                author,
            });
        }
        Command::Decide {
            decision,
            reviewer_id,
            reasons,
            comment,
        } => {
            if let (Some(taken), Some(applicant)) = (&state.decision, state.id) {
                return Err(DomainError::DecisionAlreadyTaken {
                    applicant,
                    status: state.status,
                    at: taken.at,
                    by: taken
                        .by
                        .clone()
                        .unwrap_or_else(|| "the system (auto-approval)".into()),
                });
            }
            let Some(assigned) = state.reviewer.clone() else {
                return Err(DomainError::ReviewerRequired {
                    reason: "a manual decision needs an assigned reviewer: assign one first (POST /v1/applicants/{id}/reviewer)".into(),
                });
            };
            if let Some(asking) = reviewer_id.filter(|r| *r != assigned) {
                return Err(DomainError::ReviewerRequired {
                    reason: format!("{asking} is not the assigned reviewer ({assigned}): assign {asking} first, or let {assigned} decide"),
                });
            }
            match decision {
                DecisionKind::Approve => {
                    let open: Vec<&str> = state
                        .unresolved_warnings()
                        .map(|w| w.code.as_str())
                        .collect();
                    if !open.is_empty() {
                        return Err(DomainError::UnresolvedWarnings {
                            count: open.len(),
                            codes: open.join(", "),
                        });
                    }
                    let outstanding: Vec<&str> = state
                        .outstanding_steps()
                        .map(|s| s.step_type.as_str())
                        .collect();
                    if !state.verification_started || !outstanding.is_empty() {
                        let steps = if outstanding.is_empty() {
                            "verification".to_string()
                        } else {
                            outstanding.join(", ")
                        };
                        return Err(refuse(format!(
                            "{steps} still outstanding: wait for the results, or deactivate the steps the applicant need not pass"
                        )));
                    }
                    out.emit(ApplicantEvent::ApplicantApproved {
                        reviewer_id: Some(assigned),
                        automatic: false,
                        reasons,
                        comment,
                        decided_at: ctx.now,
                    });
                }
                DecisionKind::Decline => out.emit(ApplicantEvent::ApplicantDeclined {
                    reviewer_id: assigned,
                    reasons,
                    comment,
                    decided_at: ctx.now,
                }),
            }
        }
        Command::RestartFlow => {
            if !state.verification_started {
                return Err(refuse(
                    "verification has not started, so there is nothing to restart".into(),
                ));
            }
            let kept_steps = passed_steps_kept_by(state, state.flow.as_ref());
            out.emit(ApplicantEvent::FlowRestarted { kept_steps });
        }
        Command::ChangeFlow { flow } => {
            flow.validate()?;
            if let Some(current) = &state.flow {
                if current.id == flow.id && current.version == flow.version {
                    return Err(refuse(format!(
                        "the applicant is already on flow {}: restart the flow instead",
                        current.label()
                    )));
                }
            }
            let kept_steps = passed_steps_kept_by(state, Some(&flow));
            out.emit(ApplicantEvent::FlowChanged {
                flow: Box::new(flow),
                kept_steps,
            });
        }
        Command::ScheduleDeletion { grace } => {
            if grace < chrono::Duration::zero() {
                return Err(DomainError::Validation(format!(
                    "the grace period is negative ({grace}): use zero or more"
                )));
            }
            if let Some(purge_after) = state.deletion_scheduled {
                return Err(refuse(format!(
                    "deletion is already scheduled (data purged after {})",
                    purge_after.to_rfc3339()
                )));
            }
            let purge_after = ctx.now.checked_add_signed(grace).ok_or_else(|| {
                DomainError::Validation(format!(
                    "the grace period {grace} is too long: use a shorter one"
                ))
            })?;
            out.emit(ApplicantEvent::DeletionScheduled { purge_after });
        }
        Command::CancelDeletion => {
            if state.deletion_scheduled.is_none() {
                return Err(refuse("no deletion is scheduled".into()));
            }
            out.emit(ApplicantEvent::DeletionCancelled {});
        }
    }
    Ok(out.events)
}

/// Events being decided, with the state they lead to.
struct Outcome {
    state: Applicant,
    events: Vec<ApplicantEvent>,
}

impl Outcome {
    fn new(state: &Applicant) -> Self {
        Outcome {
            state: state.clone(),
            events: Vec::new(),
        }
    }

    /// Records `event` and, if it moves the derived status, a `StatusChanged` right after it.
    fn emit(&mut self, event: ApplicantEvent) {
        let before = self.state.status;
        self.state = evolve(std::mem::take(&mut self.state), &event);
        let after = derived_status(&self.state);
        let reason = event.summary();
        self.events.push(event);
        if after != before {
            let changed = ApplicantEvent::StatusChanged {
                from: before,
                to: after,
                reason,
            };
            self.state = evolve(std::mem::take(&mut self.state), &changed);
            self.events.push(changed);
        }
    }

    /// Auto-approval fires only after a step result or a warning resolution completes the
    /// applicant, never after a restart or a reviewer's edit, so it cannot undo a reviewer.
    fn auto_approve_if_due(&mut self, ctx: &Context) {
        if auto_approval_due(&self.state) {
            self.emit(ApplicantEvent::ApplicantApproved {
                reviewer_id: None,
                automatic: true,
                reasons: vec!["auto-approval: every step passed and no warning is open".into()],
                comment: None,
                decided_at: ctx.now,
            });
        }
    }
}

/// Why nothing more may change once decided, or `None` if undecided.
fn decided_reason(state: &Applicant) -> Option<String> {
    state.decision.as_ref().map(|d| {
        let verb = match d.kind {
            DecisionKind::Approve => "approved",
            DecisionKind::Decline => "declined",
        };
        let by = d.by.as_deref().unwrap_or("the system");
        format!(
            "the applicant was {verb} by {by} at {}; restart the flow to verify again",
            d.at.to_rfc3339()
        )
    })
}

fn flow_of(state: &Applicant) -> Result<&Flow, DomainError> {
    // Every created applicant has a flow; an applicant without one is treated as missing.
    state.flow.as_ref().ok_or(DomainError::ApplicantNotFound)
}

fn step_in_flow(state: &Applicant, step: StepType) -> Result<(), DomainError> {
    let flow = flow_of(state)?;
    if flow.has_step(step) {
        Ok(())
    } else {
        Err(DomainError::StepNotInFlow {
            step,
            flow: flow.label(),
            available: flow
                .steps
                .iter()
                .map(|s| s.step_type.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

fn active_step(state: &Applicant, step: StepType) -> Result<&StepState, DomainError> {
    step_in_flow(state, step)?;
    state
        .step(step)
        .ok_or_else(|| DomainError::InvalidTransition {
            status: state.status,
            command: "submit a step result".into(),
            reason: format!("step {step} is deactivated: reactivate it first"),
        })
}

/// The document's country (`data.country`) and why the flow does not accept it, for a passed
/// document step of a flow with permitted or excluded countries.
fn country_not_permitted(
    state: &Applicant,
    step: StepType,
    data: &StepData,
) -> Option<(String, String)> {
    if !matches!(step, StepType::DocumentCheck | StepType::SelfieWithDocument) {
        return None;
    }
    let flow = state.flow.as_ref()?;
    let settings = &flow.settings;
    let country = data.str_field("country")?.trim().to_ascii_uppercase();
    let listed = |list: &[String]| list.iter().any(|c| c.trim().eq_ignore_ascii_case(&country));
    if listed(&settings.excluded_countries) {
        return Some((country, "the flow excludes".into()));
    }
    // A step's own country list, when it has one, replaces the flow's permitted countries.
    let step_countries = flow
        .steps
        .iter()
        .find(|s| s.step_type == step)
        .map(|s| &s.countries)
        .filter(|c| !c.is_empty());
    if let Some(accepted) = step_countries {
        if !listed(accepted) {
            return Some((
                country,
                format!("is not among the countries the {step} step accepts"),
            ));
        }
        return None;
    }
    if !settings.permitted_countries.is_empty() && !listed(&settings.permitted_countries) {
        return Some((
            country,
            "is not among the flow's permitted countries".into(),
        ));
    }
    None
}

/// An id for a warning the rules raise themselves: derived from the applicant and the version
/// the warning gets, so `decide` stays pure and a replay yields the same id.
fn system_warning_id(state: &Applicant) -> crate::ids::WarningId {
    let mut bytes = state.id.map(|id| *id.0.as_bytes()).unwrap_or_default();
    let version = state.next_version().to_be_bytes();
    for (b, v) in bytes[8..].iter_mut().zip(version) {
        *b ^= v;
    }
    crate::ids::WarningId(uuid::Uuid::new_v8(bytes))
}

/// Active passed steps that `flow` also has, in the state's order.
fn passed_steps_kept_by(state: &Applicant, flow: Option<&Flow>) -> Vec<StepType> {
    state
        .steps
        .iter()
        .filter(|s| s.status == crate::applicant::StepStatus::Passed)
        .map(|s| s.step_type)
        .filter(|t| flow.is_some_and(|f| f.has_step(*t)))
        .collect()
}
