//! A `given / when / then` harness for the applicant rules, plus fixtures, so each business
//! rule reads as one line:
//!
//! ```
//! use vetted_domain::testing::*;
//! use vetted_domain::{ApplicantEvent, Command};
//! given([created(kyc_basic())])
//!     .when(Command::StartVerification)
//!     .then([ApplicantEvent::VerificationStarted {}, status(&ApplicantEvent::VerificationStarted {}, INIT, INCOMPLETE)]);
//! ```
//!
//! The harness checks more than the listed events: after every `then`, folding history plus
//! the new events must give a status equal to the derived status.

use chrono::{DateTime, Duration, TimeZone, Utc};
use uuid::Uuid;

use crate::applicant::{fold, Applicant, DecisionKind};
use crate::application::{Application, Mode};
use crate::command::{Command, Context, StepOutcome};
use crate::error::DomainError;
use crate::event::ApplicantEvent;
use crate::flow::{Flow, FlowSettings, StepSpec, StepType};
use crate::ids::{AppKey, ApplicantId, WarningId};
use crate::rules::derived_status;
use crate::status::ApplicantStatus;
use crate::step_data::StepData;

/// Short status names for one-line rules.
pub const INIT: ApplicantStatus = ApplicantStatus::Init;
/// Short status name.
pub const INCOMPLETE: ApplicantStatus = ApplicantStatus::Incomplete;
/// Short status name.
pub const IN_PROGRESS: ApplicantStatus = ApplicantStatus::InProgress;
/// Short status name.
pub const ON_HOLD: ApplicantStatus = ApplicantStatus::OnHold;
/// Short status name.
pub const COMPLETED: ApplicantStatus = ApplicantStatus::Completed;
/// Short status name.
pub const APPROVED: ApplicantStatus = ApplicantStatus::Approved;
/// Short status name.
pub const DECLINED: ApplicantStatus = ApplicantStatus::Declined;

/// The fixed moment every harness decision happens at: 2026-01-15 12:00:00 UTC.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The applicant every fixture is about.
pub fn applicant_id() -> ApplicantId {
    ApplicantId(Uuid::from_u128(0x7f3e_0000_0000_4000_8000_0000_0000_0001))
}

/// The application every fixture belongs to.
pub fn app_key() -> AppKey {
    AppKey(Uuid::from_u128(0x0a99_0000_0000_4000_8000_0000_0000_0001))
}

/// A warning id derived from a small number, for readable tests.
pub fn warning(n: u128) -> WarningId {
    WarningId(Uuid::from_u128(
        0xaaaa_0000_0000_4000_8000_0000_0000_0000 + n,
    ))
}

/// The architecture's example flow: document check (3 attempts), liveness (5), face match
/// (threshold 85), AML; auto-approval on.
pub fn kyc_basic() -> Flow {
    Flow {
        id: Uuid::from_u128(0xf10e_0000_0000_4000_8000_0000_0000_0001),
        name: "kyc-basic".into(),
        version: 1,
        steps: vec![
            StepSpec::new(StepType::DocumentCheck).with_max_attempts(3),
            StepSpec::new(StepType::Liveness).with_max_attempts(5),
            StepSpec::new(StepType::FaceMatch).with_threshold(85.0),
            StepSpec::new(StepType::Aml),
        ],
        settings: FlowSettings {
            auto_approval: true,
            ..FlowSettings::default()
        },
    }
}

/// `kyc_basic` without auto-approval: every applicant waits for a reviewer.
pub fn kyc_manual() -> Flow {
    let mut flow = kyc_basic();
    flow.settings.auto_approval = false;
    flow
}

/// Version 2 of `kyc-basic`: drops liveness, adds phone verification.
pub fn kyc_basic_v2() -> Flow {
    Flow {
        id: Uuid::from_u128(0xf10e_0000_0000_4000_8000_0000_0000_0002),
        version: 2,
        steps: vec![
            StepSpec::new(StepType::DocumentCheck).with_max_attempts(3),
            StepSpec::new(StepType::PhoneVerification),
            StepSpec::new(StepType::FaceMatch).with_threshold(85.0),
            StepSpec::new(StepType::Aml),
        ],
        ..kyc_basic()
    }
}

/// The `CreateApplicant` command for the fixture applicant.
pub fn create(flow: Flow) -> Command {
    Command::CreateApplicant {
        id: applicant_id(),
        app_key: app_key(),
        external_user_id: "user-42".into(),
        email: Some("a@example.com".into()),
        phone: Some("+15550100".into()),
        lang: Some("en".into()),
        flow,
    }
}

/// The `ApplicantCreated` event for the fixture applicant.
pub fn created(flow: Flow) -> ApplicantEvent {
    ApplicantEvent::ApplicantCreated {
        applicant_id: applicant_id(),
        app_key: app_key(),
        external_user_id: "user-42".into(),
        email: Some("a@example.com".into()),
        phone: Some("+15550100".into()),
        lang: Some("en".into()),
        flow: Box::new(flow),
    }
}

/// `VerificationStarted`.
pub fn started() -> ApplicantEvent {
    ApplicantEvent::VerificationStarted {}
}

/// The `StatusChanged` that `cause` triggers.
pub fn status(
    cause: &ApplicantEvent,
    from: ApplicantStatus,
    to: ApplicantStatus,
) -> ApplicantEvent {
    ApplicantEvent::StatusChanged {
        from,
        to,
        reason: cause.summary(),
    }
}

/// Step data of a fixture's value (panics when it cannot be step data: nested deeper than
/// [`crate::MAX_STEP_DATA_DEPTH`]).
pub fn step_data(value: serde_json::Value) -> StepData {
    match StepData::from_value(&value) {
        Ok(data) => data,
        Err(e) => panic!("fixture step data {value}: {e}"),
    }
}

/// A submitted passing result.
pub fn pass(step: StepType, data: serde_json::Value) -> Command {
    Command::SubmitStepResult {
        step,
        outcome: StepOutcome::Passed,
        data: step_data(data),
        attempt: None,
        reason: None,
    }
}

/// A submitted failing result.
pub fn fail(step: StepType, reason: &str) -> Command {
    Command::SubmitStepResult {
        step,
        outcome: StepOutcome::Failed,
        data: StepData::null(),
        attempt: None,
        reason: Some(reason.into()),
    }
}

/// `StepPassed` event.
pub fn passed(step: StepType, attempt: u32, data: serde_json::Value) -> ApplicantEvent {
    ApplicantEvent::StepPassed {
        step,
        attempt,
        data: step_data(data),
    }
}

/// `StepFailed` event with a null data and the given reason.
pub fn failed(
    step: StepType,
    attempt: u32,
    max_attempts: Option<u32>,
    is_final: bool,
    reason: &str,
) -> ApplicantEvent {
    ApplicantEvent::StepFailed {
        step,
        attempt,
        max_attempts,
        is_final,
        reason: Some(reason.into()),
        data: StepData::null(),
    }
}

/// `WarningRaised` for warning `n` with `code`.
pub fn warning_raised(n: u128, code: &str) -> ApplicantEvent {
    ApplicantEvent::WarningRaised {
        warning_id: warning(n),
        code: code.into(),
        message: format!("{code} found"),
        step: None,
    }
}

/// `RaiseWarning` for warning `n` with `code`.
pub fn raise(n: u128, code: &str) -> Command {
    Command::RaiseWarning {
        id: warning(n),
        code: code.into(),
        message: format!("{code} found"),
        step: None,
    }
}

/// `ReviewerAssigned`.
pub fn assigned(reviewer: &str) -> ApplicantEvent {
    ApplicantEvent::ReviewerAssigned {
        reviewer_id: reviewer.into(),
    }
}

/// `ApplicantApproved` by `reviewer` (`None` = automatic) at `now()`.
pub fn approved(reviewer: Option<&str>) -> ApplicantEvent {
    ApplicantEvent::ApplicantApproved {
        reviewer_id: reviewer.map(Into::into),
        automatic: reviewer.is_none(),
        reasons: if reviewer.is_none() {
            vec!["auto-approval: every step passed and no warning is open".into()]
        } else {
            vec![]
        },
        comment: None,
        decided_at: now(),
    }
}

/// `ApplicantDeclined` by `reviewer` at `now()` for `reason`.
pub fn declined(reviewer: &str, reason: &str) -> ApplicantEvent {
    ApplicantEvent::ApplicantDeclined {
        reviewer_id: reviewer.into(),
        reasons: vec![reason.into()],
        comment: None,
        decided_at: now(),
    }
}

/// The user side of `kyc_basic` done: created, started, document and liveness passed.
pub fn user_side_done(flow: Flow) -> Vec<ApplicantEvent> {
    let doc = passed(
        StepType::DocumentCheck,
        1,
        serde_json::json!({"documentNumber": "L898902C3"}),
    );
    let live = passed(StepType::Liveness, 1, serde_json::json!({"live": true}));
    vec![
        created(flow),
        started(),
        status(&started(), INIT, INCOMPLETE),
        doc,
        live.clone(),
        status(&live, INCOMPLETE, IN_PROGRESS),
    ]
}

/// Every step of `kyc_manual` passed with a face-match score of 92.5: COMPLETED.
pub fn all_passed_manual() -> Vec<ApplicantEvent> {
    let mut events = user_side_done(kyc_manual());
    let aml = passed(StepType::Aml, 1, serde_json::json!({"hits": 0}));
    events.push(passed(
        StepType::FaceMatch,
        1,
        serde_json::json!({"score": 92.5}),
    ));
    events.push(aml.clone());
    events.push(status(&aml, IN_PROGRESS, COMPLETED));
    events
}

/// `AssignReviewer`.
pub fn assign(reviewer: &str) -> Command {
    Command::AssignReviewer {
        reviewer_id: reviewer.into(),
    }
}

/// `Decide` approve by the assigned reviewer.
pub fn approve() -> Command {
    Command::Decide {
        decision: DecisionKind::Approve,
        reviewer_id: None,
        reasons: vec![],
        comment: None,
    }
}

/// `Decide` decline by the assigned reviewer for `reason`.
pub fn decline(reason: &str) -> Command {
    Command::Decide {
        decision: DecisionKind::Decline,
        reviewer_id: None,
        reasons: vec![reason.into()],
        comment: None,
    }
}

/// The history that running `commands` in order produces (each decided at `now()`).
///
/// Panics if one is refused: a history built from commands is always one `decide` accepts.
#[track_caller]
pub fn after(commands: impl IntoIterator<Item = Command>) -> Vec<ApplicantEvent> {
    let ctx = Context { now: now() };
    let mut history = Vec::new();
    let mut state = Applicant::default();
    for command in commands {
        let described = command.describe();
        match crate::decide::decide(&state, command, &ctx) {
            Ok(events) => {
                for event in events {
                    state = crate::applicant::evolve(state, &event);
                    history.push(event);
                }
            }
            Err(e) => panic!("building the history, `{described}` was refused: {e}"),
        }
    }
    history
}

/// Start of a rule: the applicant's history.
pub fn given(history: impl IntoIterator<Item = ApplicantEvent>) -> Given {
    Given {
        history: history.into_iter().collect(),
        ctx: Context { now: now() },
    }
}

/// An applicant's history, ready for a command.
#[derive(Debug, Clone)]
pub struct Given {
    history: Vec<ApplicantEvent>,
    ctx: Context,
}

impl Given {
    /// Decide at another moment than `now()`.
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.ctx = Context { now };
        self
    }

    /// The state the history folds to.
    pub fn state(&self) -> Applicant {
        fold(&self.history)
    }

    /// Runs `decide` on the folded history.
    pub fn when(self, command: Command) -> When {
        let state = fold(&self.history);
        let result = crate::decide::decide(&state, command, &self.ctx);
        When {
            history: self.history,
            result,
        }
    }
}

/// The outcome of a command, to be checked.
#[derive(Debug)]
pub struct When {
    history: Vec<ApplicantEvent>,
    result: Result<Vec<ApplicantEvent>, DomainError>,
}

impl When {
    /// Asserts the command produced exactly `expected`, and that the folded result keeps the
    /// status equal to the derived status. Returns the state after the new events.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = ApplicantEvent>) -> Applicant {
        let expected: Vec<ApplicantEvent> = expected.into_iter().collect();
        let events = match self.result {
            Ok(events) => events,
            Err(e) => panic!("expected events {expected:#?}\nbut the command was refused: {e}"),
        };
        assert_eq!(
            events, expected,
            "the command produced other events than expected"
        );
        let state = fold(self.history.iter().chain(events.iter()));
        assert_eq!(
            state.status,
            derived_status(&state),
            "the folded status is not the derived status"
        );
        state
    }

    /// Asserts the command was refused with an error matching `expected`; returns the error.
    #[track_caller]
    pub fn then_err(self, expected: impl FnOnce(&DomainError) -> bool) -> DomainError {
        match self.result {
            Ok(events) => panic!("expected a refusal, but the command produced {events:#?}"),
            Err(e) => {
                assert!(
                    expected(&e),
                    "the command was refused with an unexpected error: {e:?}"
                );
                e
            }
        }
    }

    /// The events, or the refusal, as they came.
    pub fn events(self) -> Result<Vec<ApplicantEvent>, DomainError> {
        self.result
    }

    /// Asserts the command was accepted and the applicant ends in `status`; returns the events.
    #[track_caller]
    pub fn then_status(self, status: ApplicantStatus) -> Vec<ApplicantEvent> {
        let events = match self.result {
            Ok(events) => events,
            Err(e) => panic!("expected status {status}, but the command was refused: {e}"),
        };
        let state = fold(self.history.iter().chain(events.iter()));
        assert_eq!(state.status, status, "events: {events:#?}");
        assert_eq!(
            state.status,
            derived_status(&state),
            "the folded status is not the derived status"
        );
        events
    }
}

/// One applicant's life, decided by the domain's own rules, that writes every applicant event
/// type at least once (restarts, a flow change, warnings, reviewers, a deletion scheduled and
/// called off) and ends auto-approved on flow v2. Step data with nested values and text with
/// non-ASCII characters, for codec and schema tests.
pub fn every_event_life() -> Vec<ApplicantEvent> {
    use StepType::*;
    after([
        create(kyc_manual()),
        Command::StartVerification,
        fail(DocumentCheck, "glare"),
        pass(
            DocumentCheck,
            serde_json::json!({"documentNumber": "L898902C3", "country": "UTO"}),
        ),
        raise(1, "DOCUMENT_EXPIRED"),
        Command::ResolveWarning {
            id: warning(1),
            comment: Some("renewed passport seen".into()),
        },
        Command::DeactivateStep {
            step: Aml,
            reason: Some("provider outage".into()),
        },
        Command::ReactivateStep { step: Aml },
        assign("rev-1"),
        assign("rev-2"),
        Command::AddComment {
            id: Uuid::from_u128(1),
            text: "called the applicant — «ok» ✓".into(),
            author: Some("rev-2".into()),
        },
        decline("selfie does not match"),
        Command::RestartFlow,
        Command::ChangeFlow {
            flow: kyc_basic_v2(),
        },
        pass(PhoneVerification, serde_json::json!({"phone": "+15550100"})),
        pass(
            FaceMatch,
            serde_json::json!({"score": 92.5, "raw": [1, -2, 3e-7, null, true]}),
        ),
        pass(Aml, serde_json::json!({"hits": 0})),
        Command::ScheduleDeletion {
            grace: Duration::days(30),
        },
        Command::CancelDeletion,
    ])
}

/// `text` with one byte changed (`edit` 1), dropped (0) or added (2, or whenever `at` is its
/// end), at `at` (an index into `text.len() + 1`); `None` if that is no longer UTF-8. For
/// proptests that check a fast reading against serde on text that is almost as written.
pub fn edited(text: &str, at: usize, edit: u8, byte: u8) -> Option<String> {
    let mut bytes = text.as_bytes().to_vec();
    let at = at.min(bytes.len());
    match edit {
        0 if at < bytes.len() => {
            bytes.remove(at);
        }
        1 if at < bytes.len() => bytes[at] = byte,
        _ => bytes.insert(at, byte),
    }
    String::from_utf8(bytes).ok()
}

/// An application with every field set (test mode), for codec and schema tests.
pub fn sample_application() -> Application {
    Application {
        app_key: AppKey(Uuid::from_u128(42)),
        name: "Demo".into(),
        private_key_hash: "a".repeat(64),
        crypto_key: "0f".repeat(32),
        signing_secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        webhook_url: Some("http://127.0.0.1:9000/hook".into()),
        webhook_headers: std::collections::BTreeMap::from([("x-a".to_string(), "1".to_string())]),
        redirect_url: None,
        mode: Mode::Test,
    }
}
