//! The applicant's business rules, one rule per test, in `given / when / then` form.

use chrono::Duration;
use serde_json::json;
use uuid::Uuid;
use vetted_domain::testing::*;
use vetted_domain::{
    ApplicantEvent as E, ApplicantStatus, Command, DecisionKind, DomainError, StepStatus,
    StepType::*,
};

fn comment(text: &str) -> Command {
    Command::AddComment {
        id: Uuid::from_u128(7),
        text: text.into(),
        author: Some("rev-1".into()),
    }
}

fn started_manual() -> Vec<E> {
    after([create(kyc_manual()), Command::StartVerification])
}

fn declined_manual() -> Vec<E> {
    after([
        create(kyc_manual()),
        Command::StartVerification,
        assign("rev-1"),
        decline("document forged"),
    ])
}

fn approved_manual() -> Vec<E> {
    let mut history = all_passed_manual();
    history.extend(after_on(&history, [assign("rev-1"), approve()]));
    history
}

/// Events that `commands` add on top of `history`.
fn after_on(history: &[E], commands: impl IntoIterator<Item = Command>) -> Vec<E> {
    let mut all = history.to_vec();
    let mut added = Vec::new();
    for command in commands {
        let events = given(all.clone())
            .when(command)
            .events()
            .expect("a command building the history was refused");
        all.extend(events.clone());
        added.extend(events);
    }
    added
}

// ---- creation ----

#[test]
fn creating_an_applicant_pins_its_flow_version_and_starts_in_init() {
    let state = given([])
        .when(create(kyc_basic()))
        .then([created(kyc_basic())]);
    assert_eq!(state.status, INIT);
    assert_eq!(state.flow.as_ref().map(|f| f.version), Some(1));
    assert_eq!(state.steps.len(), 4);
    assert!(state
        .steps
        .iter()
        .all(|s| s.status == StepStatus::Pending && s.attempts == 0));
    assert_eq!(state.version, Some(0));
}

#[test]
fn an_applicant_cannot_be_created_twice() {
    given([created(kyc_basic())])
        .when(create(kyc_basic()))
        .then_err(|e| matches!(e, DomainError::ApplicantAlreadyExists));
}

#[test]
fn an_applicant_needs_the_clients_user_id() {
    let mut command = create(kyc_basic());
    if let Command::CreateApplicant {
        external_user_id, ..
    } = &mut command
    {
        *external_user_id = " ".into();
    }
    given([])
        .when(command)
        .then_err(|e| matches!(e, DomainError::Validation(m) if m.contains("externalUserId")));
}

#[test]
fn an_applicant_cannot_be_pinned_to_a_broken_flow() {
    let mut flow = kyc_basic();
    flow.steps.clear();
    given([])
        .when(create(flow))
        .then_err(|e| matches!(e, DomainError::InvalidFlow(_)));
}

#[test]
fn every_command_on_a_missing_applicant_is_not_found() {
    for command in [
        Command::StartVerification,
        pass(Aml, json!({})),
        assign("rev-1"),
        Command::RestartFlow,
    ] {
        given([])
            .when(command)
            .then_err(|e| matches!(e, DomainError::ApplicantNotFound));
    }
}

// ---- starting ----

#[test]
fn starting_verification_moves_init_to_incomplete() {
    given([created(kyc_basic())])
        .when(Command::StartVerification)
        .then([started(), status(&started(), INIT, INCOMPLETE)]);
}

#[test]
fn verification_starts_only_once() {
    given(started_manual())
        .when(Command::StartVerification)
        .then_err(|e| matches!(e, DomainError::InvalidTransition { reason, .. } if reason.contains("already started")));
}

#[test]
fn a_step_result_on_init_implies_verification_started() {
    let doc = passed(DocumentCheck, 1, json!({"country": "UTO"}));
    given([created(kyc_basic())])
        .when(pass(DocumentCheck, json!({"country": "UTO"})))
        .then([started(), status(&started(), INIT, INCOMPLETE), doc]);
}

// ---- steps ----

#[test]
fn a_passed_user_step_with_others_outstanding_stays_incomplete() {
    given(started_manual())
        .when(pass(DocumentCheck, json!({})))
        .then([passed(DocumentCheck, 1, json!({}))]);
}

#[test]
fn the_last_user_step_moves_to_in_progress_while_background_checks_run() {
    let history = after([create(kyc_basic()), pass(DocumentCheck, json!({}))]);
    let live = passed(Liveness, 1, json!({}));
    given(history)
        .when(pass(Liveness, json!({})))
        .then([live.clone(), status(&live, INCOMPLETE, IN_PROGRESS)]);
}

#[test]
fn the_last_background_check_completes_the_applicant_for_a_reviewer() {
    let history = after([
        create(kyc_manual()),
        pass(DocumentCheck, json!({})),
        pass(Liveness, json!({})),
        pass(FaceMatch, json!({"score": 92.5})),
    ]);
    let aml = passed(Aml, 1, json!({"hits": 0}));
    given(history)
        .when(pass(Aml, json!({"hits": 0})))
        .then([aml.clone(), status(&aml, IN_PROGRESS, COMPLETED)]);
}

#[test]
fn auto_approval_approves_when_every_step_passed_and_face_match_reaches_85() {
    let history = after([
        create(kyc_basic()),
        pass(DocumentCheck, json!({})),
        pass(Liveness, json!({})),
        pass(FaceMatch, json!({"score": 92.5})),
    ]);
    let aml = passed(Aml, 1, json!({"hits": 0}));
    let state = given(history).when(pass(Aml, json!({"hits": 0}))).then([
        aml.clone(),
        status(&aml, IN_PROGRESS, COMPLETED),
        approved(None),
        status(&approved(None), COMPLETED, APPROVED),
    ]);
    let decision = state.decision.expect("an automatic decision");
    assert_eq!(
        (decision.kind, decision.by, decision.at),
        (DecisionKind::Approve, None, now())
    );
}

#[test]
fn face_match_below_85_waits_for_a_reviewer() {
    let history = after([
        create(kyc_basic()),
        pass(DocumentCheck, json!({})),
        pass(Liveness, json!({})),
        pass(Aml, json!({})),
    ]);
    let face = passed(FaceMatch, 1, json!({"score": 84.9}));
    given(history)
        .when(pass(FaceMatch, json!({"score": 84.9})))
        .then([face.clone(), status(&face, IN_PROGRESS, COMPLETED)]);
}

#[test]
fn face_match_without_a_score_waits_for_a_reviewer() {
    let history = after([
        create(kyc_basic()),
        pass(DocumentCheck, json!({})),
        pass(Liveness, json!({})),
        pass(Aml, json!({})),
    ]);
    given(history)
        .when(pass(FaceMatch, json!({"match": true})))
        .then_status(COMPLETED);
}

#[test]
fn the_step_threshold_overrides_the_flow_face_match_threshold() {
    let mut strict = kyc_basic();
    strict.steps[2].threshold = Some(95.0);
    let history = after([
        create(strict),
        pass(DocumentCheck, json!({})),
        pass(Liveness, json!({})),
        pass(Aml, json!({})),
    ]);
    given(history)
        .when(pass(FaceMatch, json!({"score": 92.5})))
        .then_status(COMPLETED);
}

#[test]
fn without_a_step_threshold_the_flow_face_match_threshold_applies() {
    let mut lenient = kyc_basic();
    lenient.steps[2].threshold = None;
    lenient.settings.face_match_threshold = 70.0;
    let history = after([
        create(lenient),
        pass(DocumentCheck, json!({})),
        pass(Liveness, json!({})),
        pass(Aml, json!({})),
    ]);
    given(history)
        .when(pass(FaceMatch, json!({"score": 75})))
        .then_status(APPROVED);
}

#[test]
fn a_failed_attempt_with_attempts_left_keeps_the_step_open() {
    let state = given(started_manual())
        .when(fail(DocumentCheck, "glare"))
        .then([failed(DocumentCheck, 1, Some(3), false, "glare")]);
    let doc = state.step(DocumentCheck).expect("document step");
    assert_eq!(
        (doc.status, doc.attempts, doc.failed_for_good),
        (StepStatus::Failed, 1, false)
    );
}

#[test]
fn a_failed_background_check_with_attempts_left_stays_in_progress() {
    let history = after([
        create(kyc_basic()),
        pass(DocumentCheck, json!({})),
        pass(Liveness, json!({})),
    ]);
    given(history)
        .when(fail(Aml, "provider timeout"))
        .then([failed(Aml, 1, None, false, "provider timeout")]);
}

#[test]
fn the_last_failed_attempt_fails_the_step_for_good() {
    let history = after([
        create(kyc_manual()),
        fail(DocumentCheck, "glare"),
        fail(DocumentCheck, "glare"),
    ]);
    let state = given(history)
        .when(fail(DocumentCheck, "expired"))
        .then([failed(DocumentCheck, 3, Some(3), true, "expired")]);
    assert!(state.step(DocumentCheck).is_some_and(|s| s.failed_for_good));
}

#[test]
fn a_step_failed_for_good_leaves_the_applicant_completed_for_a_reviewer_never_auto_approved() {
    let history = after([
        create(kyc_basic()),
        pass(Liveness, json!({})),
        pass(FaceMatch, json!({"score": 99})),
        pass(Aml, json!({})),
        fail(DocumentCheck, "glare"),
        fail(DocumentCheck, "glare"),
    ]);
    let last = failed(DocumentCheck, 3, Some(3), true, "expired");
    given(history)
        .when(fail(DocumentCheck, "expired"))
        .then([last.clone(), status(&last, INCOMPLETE, COMPLETED)]);
}

#[test]
fn a_step_failed_for_good_accepts_no_more_results() {
    let history = after([
        create(kyc_manual()),
        fail(DocumentCheck, "a"),
        fail(DocumentCheck, "b"),
        fail(DocumentCheck, "c"),
    ]);
    given(history)
        .when(pass(DocumentCheck, json!({})))
        .then_err(|e| {
            matches!(
                e,
                DomainError::StepAlreadyFinal {
                    step: DocumentCheck,
                    status: StepStatus::Failed,
                    attempts: 3
                }
            )
        });
}

#[test]
fn a_passed_step_cannot_be_passed_again() {
    let history = after([create(kyc_manual()), pass(DocumentCheck, json!({}))]);
    given(history)
        .when(pass(DocumentCheck, json!({})))
        .then_err(|e| {
            matches!(
                e,
                DomainError::StepAlreadyFinal {
                    status: StepStatus::Passed,
                    ..
                }
            )
        });
}

#[test]
fn a_step_outside_the_flow_is_refused() {
    let e = given(started_manual())
        .when(pass(Questionnaire, json!({})))
        .then_err(|e| {
            matches!(
                e,
                DomainError::StepNotInFlow {
                    step: Questionnaire,
                    ..
                }
            )
        });
    assert!(e.to_string().contains("kyc-basic v1"), "{e}");
}

#[test]
fn an_attempt_number_must_follow_the_recorded_attempts() {
    let history = after([create(kyc_manual()), fail(DocumentCheck, "glare")]);
    let stale = Command::SubmitStepResult {
        step: DocumentCheck,
        outcome: vetted_domain::StepOutcome::Passed,
        data: step_data(json!({})),
        attempt: Some(1),
        reason: None,
    };
    given(history.clone()).when(stale).then_err(|e| matches!(e, DomainError::InvalidTransition { reason, .. } if reason.contains("attempt 2")));
    let next = Command::SubmitStepResult {
        step: DocumentCheck,
        outcome: vetted_domain::StepOutcome::Passed,
        data: step_data(json!({})),
        attempt: Some(2),
        reason: None,
    };
    given(history)
        .when(next)
        .then([passed(DocumentCheck, 2, json!({}))]);
}

#[test]
fn step_results_on_a_decided_applicant_are_refused() {
    for history in [approved_manual(), declined_manual()] {
        given(history)
            .when(fail(Aml, "late hit"))
            .then_err(|e| matches!(e, DomainError::InvalidTransition { reason, .. } if reason.contains("by rev-1")));
    }
}

// ---- deactivating and reactivating steps ----

#[test]
fn deactivating_the_last_outstanding_step_completes_without_auto_approval() {
    let history = after([
        create(kyc_basic()),
        pass(DocumentCheck, json!({})),
        pass(Liveness, json!({})),
        pass(FaceMatch, json!({"score": 99})),
    ]);
    let off = E::StepDeactivated {
        step: Aml,
        reason: Some("provider down".into()),
    };
    let state = given(history)
        .when(Command::DeactivateStep {
            step: Aml,
            reason: Some("provider down".into()),
        })
        .then([off.clone(), status(&off, IN_PROGRESS, COMPLETED)]);
    assert_eq!(state.history.len(), 1);
    assert!(state.step(Aml).is_none());
}

#[test]
fn a_deactivated_step_cannot_be_deactivated_again_or_receive_results() {
    let history = after([
        create(kyc_manual()),
        Command::DeactivateStep {
            step: Aml,
            reason: None,
        },
    ]);
    given(history.clone())
        .when(Command::DeactivateStep {
            step: Aml,
            reason: None,
        })
        .then_err(|e| matches!(e, DomainError::InvalidTransition { .. }));
    given(history).when(pass(Aml, json!({}))).then_err(|e| matches!(e, DomainError::InvalidTransition { reason, .. } if reason.contains("reactivate")));
}

#[test]
fn deactivating_a_step_outside_the_flow_is_refused() {
    given(started_manual())
        .when(Command::DeactivateStep {
            step: IpCheck,
            reason: None,
        })
        .then_err(|e| matches!(e, DomainError::StepNotInFlow { .. }));
}

#[test]
fn reactivating_a_step_requires_it_again_from_scratch() {
    let history = after([
        create(kyc_manual()),
        pass(DocumentCheck, json!({})),
        pass(Liveness, json!({})),
        pass(FaceMatch, json!({"score": 90})),
        fail(Aml, "hit"),
        Command::DeactivateStep {
            step: Aml,
            reason: None,
        },
    ]);
    let on = E::StepReactivated { step: Aml };
    let state = given(history)
        .when(Command::ReactivateStep { step: Aml })
        .then([on.clone(), status(&on, COMPLETED, IN_PROGRESS)]);
    let aml = state.step(Aml).expect("aml is active again");
    assert_eq!((aml.status, aml.attempts), (StepStatus::Pending, 0));
    assert_eq!(
        state.steps.last().map(|s| s.step_type),
        Some(Aml),
        "steps stay in flow order"
    );
}

#[test]
fn an_active_step_cannot_be_reactivated() {
    given(started_manual())
        .when(Command::ReactivateStep { step: Aml })
        .then_err(|e| matches!(e, DomainError::InvalidTransition { .. }));
    given(started_manual())
        .when(Command::ReactivateStep { step: IpCheck })
        .then_err(|e| matches!(e, DomainError::StepNotInFlow { .. }));
}

#[test]
fn steps_of_a_decided_applicant_cannot_be_deactivated_or_reactivated() {
    given(declined_manual())
        .when(Command::DeactivateStep {
            step: Aml,
            reason: None,
        })
        .then_err(|e| matches!(e, DomainError::InvalidTransition { .. }));
    given(declined_manual())
        .when(Command::ReactivateStep { step: Aml })
        .then_err(|e| matches!(e, DomainError::InvalidTransition { .. }));
}

// ---- warnings ----

#[test]
fn an_expired_document_holds_the_applicant() {
    let w = warning_raised(1, "DOCUMENT_EXPIRED");
    given(started_manual())
        .when(raise(1, "DOCUMENT_EXPIRED"))
        .then([w.clone(), status(&w, INCOMPLETE, ON_HOLD)]);
}

#[test]
fn a_warning_before_the_start_keeps_init_and_holds_from_the_start() {
    let history = after([create(kyc_manual()), raise(1, "DUPLICATE")]);
    assert_eq!(given(history.clone()).state().status, INIT);
    given(history)
        .when(Command::StartVerification)
        .then([started(), status(&started(), INIT, ON_HOLD)]);
}

#[test]
fn step_results_while_on_hold_keep_the_applicant_on_hold() {
    let history = after([create(kyc_manual()), raise(1, "DUPLICATE")]);
    given(history)
        .when(pass(DocumentCheck, json!({})))
        .then_status(ON_HOLD);
}

#[test]
fn resolving_the_last_warning_releases_the_applicant_and_auto_approval_follows() {
    let history = after([
        create(kyc_basic()),
        pass(DocumentCheck, json!({})),
        pass(Liveness, json!({})),
        pass(FaceMatch, json!({"score": 92.5})),
        raise(1, "DOCUMENT_EXPIRED"),
        pass(Aml, json!({})),
    ]);
    assert_eq!(given(history.clone()).state().status, ON_HOLD);
    let resolved = E::WarningResolved {
        warning_id: warning(1),
        comment: Some("renewed".into()),
    };
    given(history)
        .when(Command::ResolveWarning {
            id: warning(1),
            comment: Some("renewed".into()),
        })
        .then([
            resolved.clone(),
            status(&resolved, ON_HOLD, COMPLETED),
            approved(None),
            status(&approved(None), COMPLETED, APPROVED),
        ]);
}

#[test]
fn resolving_one_of_two_warnings_keeps_the_hold() {
    let history = after([
        create(kyc_manual()),
        Command::StartVerification,
        raise(1, "A"),
        raise(2, "B"),
    ]);
    given(history)
        .when(Command::ResolveWarning {
            id: warning(1),
            comment: None,
        })
        .then([E::WarningResolved {
            warning_id: warning(1),
            comment: None,
        }]);
}

#[test]
fn resolving_a_warning_back_to_incomplete() {
    let history = after([
        create(kyc_manual()),
        Command::StartVerification,
        raise(1, "A"),
    ]);
    let resolved = E::WarningResolved {
        warning_id: warning(1),
        comment: None,
    };
    given(history)
        .when(Command::ResolveWarning {
            id: warning(1),
            comment: None,
        })
        .then([resolved.clone(), status(&resolved, ON_HOLD, INCOMPLETE)]);
}

#[test]
fn an_unknown_or_already_resolved_warning_cannot_be_resolved() {
    let history = after([
        create(kyc_manual()),
        raise(1, "A"),
        Command::ResolveWarning {
            id: warning(1),
            comment: None,
        },
    ]);
    given(history.clone())
        .when(Command::ResolveWarning {
            id: warning(9),
            comment: None,
        })
        .then_err(|e| matches!(e, DomainError::WarningNotFound { .. }));
    given(history)
        .when(Command::ResolveWarning {
            id: warning(1),
            comment: None,
        })
        .then_err(|e| matches!(e, DomainError::WarningAlreadyResolved { .. }));
}

#[test]
fn a_warning_needs_a_code_a_fresh_id_and_a_step_of_the_flow() {
    given(started_manual())
        .when(raise(1, ""))
        .then_err(|e| matches!(e, DomainError::Validation(_)));
    let history = after([create(kyc_manual()), raise(1, "A")]);
    given(history)
        .when(raise(1, "B"))
        .then_err(|e| matches!(e, DomainError::InvalidTransition { .. }));
    let off_flow = Command::RaiseWarning {
        id: warning(2),
        code: "IP_PROXY".into(),
        message: "proxy".into(),
        step: Some(IpCheck),
    };
    given(started_manual())
        .when(off_flow)
        .then_err(|e| matches!(e, DomainError::StepNotInFlow { .. }));
}

#[test]
fn warnings_on_a_decided_applicant_are_refused() {
    given(approved_manual())
        .when(raise(5, "LATE"))
        .then_err(|e| {
            matches!(
                e,
                DomainError::InvalidTransition {
                    status: ApplicantStatus::Approved,
                    ..
                }
            )
        });
    let history = after([
        create(kyc_manual()),
        raise(1, "A"),
        assign("rev-1"),
        decline("fraud"),
    ]);
    given(history)
        .when(Command::ResolveWarning {
            id: warning(1),
            comment: None,
        })
        .then_err(|e| {
            matches!(
                e,
                DomainError::InvalidTransition {
                    status: ApplicantStatus::Declined,
                    ..
                }
            )
        });
}

// ---- reviewers ----

#[test]
fn assigning_a_reviewer_puts_the_applicant_in_review_without_changing_its_status() {
    let state = given(all_passed_manual())
        .when(assign("rev-1"))
        .then([assigned("rev-1")]);
    assert_eq!(
        (state.reviewer.as_deref(), state.status),
        (Some("rev-1"), COMPLETED)
    );
}

#[test]
fn assigning_another_reviewer_replaces_the_first() {
    let history = after([create(kyc_manual()), assign("rev-1")]);
    given(history).when(assign("rev-2")).then([
        E::ReviewerUnassigned {
            reviewer_id: "rev-1".into(),
        },
        assigned("rev-2"),
    ]);
}

#[test]
fn the_same_reviewer_or_a_blank_one_cannot_be_assigned() {
    let history = after([create(kyc_manual()), assign("rev-1")]);
    given(history)
        .when(assign("rev-1"))
        .then_err(|e| matches!(e, DomainError::InvalidTransition { .. }));
    given(started_manual())
        .when(assign(" "))
        .then_err(|e| matches!(e, DomainError::Validation(_)));
}

#[test]
fn a_decided_applicant_gets_no_new_reviewer() {
    given(declined_manual())
        .when(assign("rev-2"))
        .then_err(|e| matches!(e, DomainError::InvalidTransition { .. }));
}

#[test]
fn unassigning_removes_the_reviewer_and_needs_one() {
    let history = after([create(kyc_manual()), assign("rev-1")]);
    let state = given(history)
        .when(Command::UnassignReviewer)
        .then([E::ReviewerUnassigned {
            reviewer_id: "rev-1".into(),
        }]);
    assert_eq!(state.reviewer, None);
    given(started_manual())
        .when(Command::UnassignReviewer)
        .then_err(|e| matches!(e, DomainError::InvalidTransition { .. }));
}

// ---- decisions ----

#[test]
fn a_manual_decision_needs_an_assigned_reviewer() {
    given(all_passed_manual())
        .when(approve())
        .then_err(|e| matches!(e, DomainError::ReviewerRequired { .. }));
    given(started_manual())
        .when(decline("fraud"))
        .then_err(|e| matches!(e, DomainError::ReviewerRequired { .. }));
}

#[test]
fn only_the_assigned_reviewer_decides() {
    let mut history = all_passed_manual();
    history.extend(after_on(&history, [assign("rev-1")]));
    let other = Command::Decide {
        decision: DecisionKind::Approve,
        reviewer_id: Some("rev-2".into()),
        reasons: vec![],
        comment: None,
    };
    given(history).when(other).then_err(|e| matches!(e, DomainError::ReviewerRequired { reason } if reason.contains("rev-2 is not the assigned reviewer")));
}

#[test]
fn the_assigned_reviewer_approves_a_completed_applicant() {
    let mut history = all_passed_manual();
    history.push(assigned("rev-1"));
    let approval = approved(Some("rev-1"));
    given(history)
        .when(approve())
        .then([approval.clone(), status(&approval, COMPLETED, APPROVED)]);
}

#[test]
fn the_reviewer_may_approve_despite_a_step_failed_for_good() {
    let history = after([
        create(kyc_basic()),
        pass(Liveness, json!({})),
        pass(FaceMatch, json!({"score": 99})),
        pass(Aml, json!({})),
        fail(DocumentCheck, "a"),
        fail(DocumentCheck, "b"),
        fail(DocumentCheck, "c"),
        assign("rev-1"),
    ]);
    given(history).when(approve()).then_status(APPROVED);
}

#[test]
fn approval_is_refused_while_warnings_are_unresolved() {
    let mut history = all_passed_manual();
    history.extend(after_on(&history, [raise(1, "PEP_MATCH"), assign("rev-1")]));
    let e = given(history)
        .when(approve())
        .then_err(|e| matches!(e, DomainError::UnresolvedWarnings { count: 1, .. }));
    assert!(e.to_string().contains("PEP_MATCH"), "{e}");
}

#[test]
fn approval_is_refused_while_steps_are_outstanding() {
    let history = after([
        create(kyc_manual()),
        Command::StartVerification,
        assign("rev-1"),
    ]);
    given(history)
        .when(approve())
        .then_err(|e| matches!(e, DomainError::InvalidTransition { reason, .. } if reason.contains("document_check")));
    let not_started = after([create(kyc_manual()), assign("rev-1")]);
    given(not_started).when(approve()).then_err(|e| {
        matches!(
            e,
            DomainError::InvalidTransition {
                status: ApplicantStatus::Init,
                ..
            }
        )
    });
}

#[test]
fn a_reviewer_may_decline_an_incomplete_applicant() {
    let history = after([
        create(kyc_manual()),
        Command::StartVerification,
        assign("rev-1"),
    ]);
    let decline_event = declined("rev-1", "document forged");
    given(history).when(decline("document forged")).then([
        decline_event.clone(),
        status(&decline_event, INCOMPLETE, DECLINED),
    ]);
}

#[test]
fn a_second_decision_is_refused_naming_when_and_by_whom_the_first_was_taken() {
    let e = given(declined_manual()).when(approve()).then_err(|e| {
        matches!(
            e,
            DomainError::DecisionAlreadyTaken {
                status: ApplicantStatus::Declined,
                ..
            }
        )
    });
    let message = e.to_string();
    assert!(
        message.contains("is DECLINED")
            && message.contains("by rev-1")
            && message.contains("2026-01-15"),
        "{message}"
    );
}

#[test]
fn an_automatic_approval_is_final_too() {
    let history = after([
        create(kyc_basic()),
        pass(DocumentCheck, json!({})),
        pass(Liveness, json!({})),
        pass(FaceMatch, json!({"score": 99})),
        pass(Aml, json!({})),
    ]);
    let e = given(history)
        .when(decline("changed my mind"))
        .then_err(|e| matches!(e, DomainError::DecisionAlreadyTaken { .. }));
    assert!(e.to_string().contains("auto-approval"), "{e}");
}

// ---- restart and change of flow ----

#[test]
fn restarting_after_a_decline_returns_to_incomplete_keeping_passed_steps() {
    let history = after([
        create(kyc_manual()),
        pass(DocumentCheck, json!({})),
        fail(Liveness, "mask"),
        assign("rev-1"),
        decline("spoofing"),
    ]);
    let restarted = E::FlowRestarted {
        kept_steps: vec![DocumentCheck],
    };
    let state = given(history)
        .when(Command::RestartFlow)
        .then([restarted.clone(), status(&restarted, DECLINED, INCOMPLETE)]);
    assert_eq!(state.decision, None);
    assert_eq!(
        state.step(DocumentCheck).map(|s| s.status),
        Some(StepStatus::Passed)
    );
    assert_eq!(
        state.step(Liveness).map(|s| (s.status, s.attempts)),
        Some((StepStatus::Pending, 0))
    );
    assert_eq!(
        state.reviewer.as_deref(),
        Some("rev-1"),
        "the reviewer stays in charge"
    );
}

#[test]
fn after_a_restart_a_new_decision_can_be_taken() {
    let history = after([
        create(kyc_manual()),
        Command::StartVerification,
        assign("rev-1"),
        decline("blurry"),
        Command::RestartFlow,
    ]);
    given(history)
        .when(decline("still blurry"))
        .then_status(DECLINED);
}

#[test]
fn nothing_to_restart_before_verification_started() {
    given([created(kyc_basic())])
        .when(Command::RestartFlow)
        .then_err(|e| {
            matches!(
                e,
                DomainError::InvalidTransition {
                    status: ApplicantStatus::Init,
                    ..
                }
            )
        });
}

#[test]
fn changing_the_flow_pins_the_new_version_and_keeps_shared_passed_steps() {
    let history = after([
        create(kyc_manual()),
        pass(DocumentCheck, json!({})),
        pass(Liveness, json!({})),
        pass(FaceMatch, json!({"score": 90})),
        pass(Aml, json!({})),
    ]);
    let changed = E::FlowChanged {
        flow: Box::new(kyc_basic_v2()),
        kept_steps: vec![DocumentCheck, FaceMatch, Aml],
    };
    let state = given(history)
        .when(Command::ChangeFlow {
            flow: kyc_basic_v2(),
        })
        .then([changed.clone(), status(&changed, COMPLETED, INCOMPLETE)]);
    assert_eq!(state.flow.as_ref().map(|f| f.version), Some(2));
    assert_eq!(
        state.step(PhoneVerification).map(|s| s.status),
        Some(StepStatus::Pending)
    );
    assert!(state.step(Liveness).is_none());
}

#[test]
fn changing_to_the_same_flow_version_is_a_restart_not_a_change() {
    given(started_manual()).when(Command::ChangeFlow { flow: kyc_manual() }).then_err(|e| matches!(e, DomainError::InvalidTransition { reason, .. } if reason.contains("restart")));
}

#[test]
fn changing_to_a_broken_flow_is_refused() {
    let mut broken = kyc_basic_v2();
    broken.name.clear();
    given(started_manual())
        .when(Command::ChangeFlow { flow: broken })
        .then_err(|e| matches!(e, DomainError::InvalidFlow(_)));
}

#[test]
fn changing_the_flow_before_the_start_stays_init() {
    given([created(kyc_basic())])
        .when(Command::ChangeFlow {
            flow: kyc_basic_v2(),
        })
        .then([E::FlowChanged {
            flow: Box::new(kyc_basic_v2()),
            kept_steps: vec![],
        }]);
}

// ---- comments ----

#[test]
fn comments_are_welcome_in_any_status_even_after_a_decision() {
    let event = E::CommentAdded {
        comment_id: Uuid::from_u128(7),
        text: "checked by phone".into(),
        author: Some("rev-1".into()),
    };
    given(declined_manual())
        .when(comment("checked by phone"))
        .then([event]);
}

#[test]
fn a_comment_needs_text_and_a_fresh_id() {
    given(started_manual())
        .when(comment("  "))
        .then_err(|e| matches!(e, DomainError::Validation(_)));
    let history = after([create(kyc_manual()), comment("first")]);
    given(history)
        .when(comment("again"))
        .then_err(|e| matches!(e, DomainError::InvalidTransition { .. }));
}

// ---- deletion ----

#[test]
fn scheduling_deletion_purges_after_the_grace_period() {
    let state = given(started_manual())
        .when(Command::ScheduleDeletion {
            grace: Duration::days(30),
        })
        .then([E::DeletionScheduled {
            purge_after: now() + Duration::days(30),
        }]);
    assert_eq!(
        state.status, INCOMPLETE,
        "deletion does not change the status"
    );
}

#[test]
fn a_scheduled_deletion_freezes_the_applicant_until_cancelled() {
    let history = after([
        create(kyc_manual()),
        Command::ScheduleDeletion {
            grace: Duration::days(30),
        },
    ]);
    given(history.clone()).when(pass(DocumentCheck, json!({}))).then_err(|e| matches!(e, DomainError::InvalidTransition { reason, .. } if reason.contains("cancel the deletion")));
    given(history.clone()).when(Command::ScheduleDeletion { grace: Duration::days(1) }).then_err(|e| matches!(e, DomainError::InvalidTransition { reason, .. } if reason.contains("already scheduled")));
    let state = given(history)
        .when(Command::CancelDeletion)
        .then([E::DeletionCancelled {}]);
    assert_eq!(state.deletion_scheduled, None);
}

#[test]
fn cancelling_needs_a_scheduled_deletion_and_grace_cannot_be_negative() {
    given(started_manual())
        .when(Command::CancelDeletion)
        .then_err(|e| matches!(e, DomainError::InvalidTransition { .. }));
    given(started_manual())
        .when(Command::ScheduleDeletion {
            grace: Duration::days(-1),
        })
        .then_err(|e| matches!(e, DomainError::Validation(_)));
}

// ---- errors ----

#[test]
fn errors_map_to_http_statuses_a_caller_can_act_on() {
    assert_eq!(
        (
            DomainError::ApplicantNotFound.code(),
            DomainError::ApplicantNotFound.http_status()
        ),
        ("not_found", 404)
    );
    let invalid = DomainError::InvalidTransition {
        status: APPROVED,
        command: "raise a warning".into(),
        reason: "x".into(),
    };
    assert_eq!(
        (invalid.code(), invalid.http_status()),
        ("invalid_transition", 409)
    );
    assert_eq!(DomainError::Validation("x".into()).http_status(), 422);
    assert_eq!(DomainError::ApplicantAlreadyExists.http_status(), 409);
    assert_eq!(
        invalid.to_string(),
        "cannot raise a warning while the applicant is APPROVED: x"
    );
}

// ---- state bookkeeping ----

#[test]
fn the_version_counts_folded_events_from_zero() {
    let history = all_passed_manual();
    assert_eq!(
        given(history.clone()).state().version,
        Some(history.len() as u64 - 1)
    );
    assert_eq!(given([]).state().version, None);
}

// ---- countries ----

fn kyc_excluding(excluded: &[&str], permitted: &[&str]) -> vetted_domain::Flow {
    let mut flow = kyc_basic();
    flow.settings.excluded_countries = excluded.iter().map(|c| c.to_string()).collect();
    flow.settings.permitted_countries = permitted.iter().map(|c| c.to_string()).collect();
    flow
}

fn country_warnings(events: &[E]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            E::WarningRaised { code, message, .. } if code == "COUNTRY_NOT_PERMITTED" => {
                Some(message.clone())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_document_from_an_excluded_country_holds_the_applicant() {
    let history = after([
        create(kyc_excluding(&["PRK"], &[])),
        Command::StartVerification,
    ]);
    let events = given(history)
        .when(pass(DocumentCheck, json!({"country": "prk"})))
        .then_status(ON_HOLD);
    assert_eq!(
        country_warnings(&events),
        vec!["the document was issued by PRK, which the flow excludes".to_string()]
    );
}

#[test]
fn a_document_from_outside_the_permitted_countries_holds_the_applicant() {
    let history = after([
        create(kyc_excluding(&[], &["FRA", "DEU"])),
        Command::StartVerification,
    ]);
    let events = given(history)
        .when(pass(DocumentCheck, json!({"country": "UTO"})))
        .events()
        .unwrap();
    assert_eq!(country_warnings(&events).len(), 1);
}

#[test]
fn a_document_from_a_permitted_country_raises_nothing() {
    let history = after([
        create(kyc_excluding(&["PRK"], &["FRA", "UTO"])),
        Command::StartVerification,
    ]);
    let events = given(history)
        .when(pass(DocumentCheck, json!({"country": "UTO"})))
        .events()
        .unwrap();
    assert!(country_warnings(&events).is_empty());
}

#[test]
fn a_step_country_list_replaces_the_flow_permitted_countries_for_that_step() {
    let mut flow = kyc_excluding(&["PRK"], &["FRA"]);
    let document = flow
        .steps
        .iter_mut()
        .find(|s| s.step_type == DocumentCheck)
        .unwrap();
    document.countries = vec!["DEU".into(), "AUT".into()];
    let history = after([create(flow.clone()), Command::StartVerification]);
    let events = given(history.clone())
        .when(pass(DocumentCheck, json!({"country": "aut"})))
        .events()
        .unwrap();
    assert!(country_warnings(&events).is_empty(), "AUT is the step's");
    let events = given(history.clone())
        .when(pass(DocumentCheck, json!({"country": "FRA"})))
        .events()
        .unwrap();
    assert_eq!(
        country_warnings(&events),
        vec!["the document was issued by FRA, which is not among the countries the document_check step accepts".to_string()]
    );
    // The flow's exclusions still apply.
    flow.steps[0].countries.push("PRK".into());
    let events = given(after([create(flow), Command::StartVerification]))
        .when(pass(DocumentCheck, json!({"country": "PRK"})))
        .events()
        .unwrap();
    assert_eq!(country_warnings(&events).len(), 1);
}

#[test]
fn the_country_warning_id_is_the_same_on_every_replay() {
    let history = after([
        create(kyc_excluding(&["PRK"], &[])),
        Command::StartVerification,
    ]);
    let once = given(history.clone())
        .when(pass(DocumentCheck, json!({"country": "PRK"})))
        .events()
        .unwrap();
    let again = given(history)
        .when(pass(DocumentCheck, json!({"country": "PRK"})))
        .events()
        .unwrap();
    assert_eq!(
        once, again,
        "decide is pure: the system-raised warning id is derived, not random"
    );
}
