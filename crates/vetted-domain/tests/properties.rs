//! Properties of the fold over random command sequences: whatever callers send, replaying the
//! accepted events never panics, counts versions right, keeps the status equal to the derived
//! status, and every payload survives the store's round trip.

use chrono::Duration;
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;
use vetted_domain::testing::{create, kyc_basic, kyc_basic_v2, kyc_manual, now, warning};
use vetted_domain::{
    decide, derived_status, evolve, fold, Applicant, ApplicantEvent, ApplicantStatus, Command,
    Context, DecisionKind, StepOutcome, StepType,
};

/// Mostly steps of the two flows in play, sometimes any step (refused as not in the flow).
fn step() -> impl Strategy<Value = StepType> {
    let in_play = vec![
        StepType::DocumentCheck,
        StepType::Liveness,
        StepType::FaceMatch,
        StepType::Aml,
        StepType::PhoneVerification,
    ];
    prop_oneof![
        4 => proptest::sample::select(in_play),
        1 => proptest::sample::select(StepType::ALL.to_vec()),
    ]
}

fn reviewer() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(proptest::sample::select(vec![
        "rev-1".to_string(),
        "rev-2".to_string(),
    ]))
}

/// Commands weighted towards step results so that histories reach every status.
fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        1 => Just(Command::StartVerification),
        8 => (step(), proptest::bool::weighted(0.8), 60.0f64..100.0, proptest::option::of(1u32..5)).prop_map(
            |(step, ok, score, attempt)| Command::SubmitStepResult {
                step,
                outcome: if ok { StepOutcome::Passed } else { StepOutcome::Failed },
                data: vetted_domain::testing::step_data(json!({ "score": score })),
                attempt,
                reason: None,
            }
        ),
        1 => (step(), any::<bool>()).prop_map(|(step, off)| if off {
            Command::DeactivateStep { step, reason: None }
        } else {
            Command::ReactivateStep { step }
        }),
        1 => (0u128..4, proptest::option::of(step())).prop_map(|(n, step)| Command::RaiseWarning {
            id: warning(n),
            code: format!("CODE_{n}"),
            message: "found".into(),
            step,
        }),
        2 => (0u128..4).prop_map(|n| Command::ResolveWarning { id: warning(n), comment: None }),
        2 => reviewer().prop_map(|r| match r {
            Some(reviewer_id) => Command::AssignReviewer { reviewer_id },
            None => Command::UnassignReviewer,
        }),
        1 => (0u128..3).prop_map(|n| Command::AddComment { id: Uuid::from_u128(n), text: "note".into(), author: None }),
        2 => (any::<bool>(), reviewer()).prop_map(|(ok, reviewer_id)| Command::Decide {
            decision: if ok { DecisionKind::Approve } else { DecisionKind::Decline },
            reviewer_id,
            reasons: vec!["checked".into()],
            comment: None,
        }),
        1 => Just(Command::RestartFlow),
        1 => Just(Command::ChangeFlow { flow: kyc_basic_v2() }),
        1 => (0i64..60).prop_map(|days| Command::ScheduleDeletion { grace: Duration::days(days) }),
        1 => Just(Command::CancelDeletion),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_fold_of_any_accepted_history_is_consistent(auto in any::<bool>(), commands in proptest::collection::vec(command(), 0..60)) {
        let ctx = Context { now: now() };
        let mut state = Applicant::default();
        let mut history: Vec<ApplicantEvent> = Vec::new();
        let first = create(if auto { kyc_basic() } else { kyc_manual() });
        for command in std::iter::once(first).chain(commands) {
            let before = state.status;
            let Ok(events) = decide(&state, command, &ctx) else { continue };
            prop_assert!(!events.is_empty(), "an accepted command always records something");
            let mut status = before;
            for event in &events {
                if let ApplicantEvent::StatusChanged { from, to, .. } = event {
                    prop_assert_eq!(*from, status, "StatusChanged starts where the last one ended");
                    prop_assert_ne!(from, to, "StatusChanged always changes the status");
                    status = *to;
                }
                let payload = event.to_payload();
                let back = ApplicantEvent::from_payload(event.event_type(), event.schema_version(), &payload);
                prop_assert_eq!(back.as_ref().ok(), Some(event), "payload round trip of {}", event.event_type());
                state = evolve(state, event);
            }
            prop_assert_eq!(state.status, derived_status(&state));
            history.extend(events);
        }
        let replayed = fold(&history);
        prop_assert_eq!(&replayed, &state, "replaying the log gives the live state");
        prop_assert_eq!(replayed.version, Some(history.len() as u64 - 1));
        prop_assert_eq!(replayed.status, derived_status(&replayed));
        if replayed.status == ApplicantStatus::Approved {
            prop_assert!(replayed.unresolved_warnings().next().is_none(), "no applicant is approved with an open warning");
        }
    }
}
