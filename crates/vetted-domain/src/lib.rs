//! Vetted's domain: applicants, flows, steps, warnings, reviewers and decisions as two pure
//! functions, `decide(&state, command, &ctx)` and `evolve(state, &event)`. No I/O, no async,
//! no clock: time comes in through [`Context`].
//!
//! Every event type has a JSON Schema in `schemas/events/` and an entry in `docs/events.md`.
#![forbid(unsafe_code)]

mod applicant;
mod application;
mod codec;
mod command;
mod decide;
mod error;
mod event;
mod flow;
mod ids;
pub mod rules;
mod status;
mod step_data;
pub mod testing;
pub mod written;

pub use applicant::{
    evolve, fold, Applicant, Comment, Decision, DecisionKind, StepState, StepStatus, Warning,
};
pub use application::{
    application_stream, flow_stream, Application, ApplicationEvent, FlowEvent, Mode,
};
pub use command::{Command, Context, StepOutcome};
pub use decide::decide;
pub use error::DomainError;
pub use event::ApplicantEvent;
pub use flow::{
    Flow, FlowKind, FlowSettings, StepSpec, StepType, UnknownStepType, DEFAULT_FACE_MATCH_THRESHOLD,
};
pub use ids::{AppKey, ApplicantId, WarningId};
pub use rules::{auto_approval_due, derived_status};
pub use status::{ApplicantStatus, UnknownStatus};
pub use step_data::{StepData, StepDataError, MAX_STEP_DATA_DEPTH};
