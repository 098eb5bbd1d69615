//! Applicant events.
//!
//! On the wire (the store's `payload`) an event is a camelCase JSON object without a `type`
//! key: the type and schema version travel in the envelope (see [`crate::codec`] for how the
//! payload is read and written).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::EventCodec;
use crate::flow::{Flow, StepType};
use crate::ids::{AppKey, ApplicantId, WarningId};
use crate::status::ApplicantStatus;
use crate::step_data::StepData;
use crate::written;

/// Everything that can happen to an applicant (stream `applicant-<uuid>`).
///
/// Its serde form is externally tagged (`{"StepPassed": {...}}`); the stored form is the
/// payload alone, through [`ApplicantEvent::to_payload`] and [`ApplicantEvent::from_payload`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all_fields = "camelCase")]
pub enum ApplicantEvent {
    /// A client created the applicant, pinned to a flow version. Status INIT.
    ApplicantCreated {
        applicant_id: ApplicantId,
        app_key: AppKey,
        external_user_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phone: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lang: Option<String>,
        /// Boxed: a flow is several times the size of any other event's fields.
        #[serde(deserialize_with = "crate::codec::pinned_flow")]
        flow: Box<Flow>,
    },
    /// The applicant started the flow.
    VerificationStarted {},
    /// A step passed on this attempt (1-based).
    StepPassed {
        step: StepType,
        attempt: u32,
        #[serde(default)]
        data: StepData,
    },
    /// A step failed on this attempt; `final` when no attempt is left.
    StepFailed {
        step: StepType,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_attempts: Option<u32>,
        /// No attempt left: the step is failed for good and a reviewer must look.
        #[serde(rename = "final")]
        is_final: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default)]
        data: StepData,
    },
    /// A step no longer counts; its last result moves to the history.
    StepDeactivated {
        step: StepType,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A deactivated step counts again, from a fresh start.
    StepReactivated { step: StepType },
    /// Something suspicious was found; the applicant is held until it is resolved.
    WarningRaised {
        warning_id: WarningId,
        code: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<StepType>,
    },
    /// A reviewer resolved a warning.
    WarningResolved {
        warning_id: WarningId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    /// A reviewer took the applicant in review.
    ReviewerAssigned { reviewer_id: String },
    /// The reviewer let go of the applicant.
    ReviewerUnassigned { reviewer_id: String },
    /// A note on the applicant.
    CommentAdded {
        comment_id: Uuid,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        author: Option<String>,
    },
    /// Approved by a reviewer, or automatically (no `reviewerId`, `automatic: true`).
    ApplicantApproved {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reviewer_id: Option<String>,
        automatic: bool,
        #[serde(default)]
        reasons: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        decided_at: DateTime<Utc>,
    },
    /// Declined by a reviewer.
    ApplicantDeclined {
        reviewer_id: String,
        #[serde(default)]
        reasons: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        decided_at: DateTime<Utc>,
    },
    /// The flow starts over; passed steps listed in `keptSteps` stay passed.
    FlowRestarted { kept_steps: Vec<StepType> },
    /// The applicant moves to another flow version; passed steps it shares stay passed.
    FlowChanged {
        /// Boxed, as in `ApplicantCreated`.
        #[serde(deserialize_with = "crate::codec::pinned_flow")]
        flow: Box<Flow>,
        kept_steps: Vec<StepType>,
    },
    /// The status changed; always right after the event that caused it.
    StatusChanged {
        from: ApplicantStatus,
        to: ApplicantStatus,
        reason: String,
    },
    /// The applicant's data will be purged after `purgeAfter` unless cancelled.
    DeletionScheduled { purge_after: DateTime<Utc> },
    /// A scheduled deletion was called off.
    DeletionCancelled {},
}

impl EventCodec for ApplicantEvent {
    const TYPES: &'static [&'static str] = &[
        "ApplicantCreated",
        "VerificationStarted",
        "StepPassed",
        "StepFailed",
        "StepDeactivated",
        "StepReactivated",
        "WarningRaised",
        "WarningResolved",
        "ReviewerAssigned",
        "ReviewerUnassigned",
        "CommentAdded",
        "ApplicantApproved",
        "ApplicantDeclined",
        "FlowRestarted",
        "FlowChanged",
        "StatusChanged",
        "DeletionScheduled",
        "DeletionCancelled",
    ];
    const SCHEMA_VERSION: u32 = 1;

    // Three events in ten are status changes: read the shape they are written in directly.
    fn read_as_written(event_type: &str, payload: &str) -> Option<Self> {
        match event_type {
            "StatusChanged" => status_changed_as_written(payload),
            "StepPassed" => step_passed_as_written(payload),
            "ApplicantCreated" => applicant_created_as_written(payload),
            "StepFailed" => step_failed_as_written(payload),
            "VerificationStarted" => {
                (payload == "{}").then_some(ApplicantEvent::VerificationStarted {})
            }
            "ReviewerAssigned" => reviewer_as_written(payload)
                .map(|reviewer_id| ApplicantEvent::ReviewerAssigned { reviewer_id }),
            "ReviewerUnassigned" => reviewer_as_written(payload)
                .map(|reviewer_id| ApplicantEvent::ReviewerUnassigned { reviewer_id }),
            "CommentAdded" => comment_added_as_written(payload),
            "ApplicantApproved" => applicant_approved_as_written(payload),
            _ => None,
        }
    }
}

impl ApplicantEvent {
    crate::codec::payload_methods!();

    /// The event type (the variant name), e.g. `StepPassed`.
    pub fn event_type(&self) -> &'static str {
        match self {
            ApplicantEvent::ApplicantCreated { .. } => "ApplicantCreated",
            ApplicantEvent::VerificationStarted {} => "VerificationStarted",
            ApplicantEvent::StepPassed { .. } => "StepPassed",
            ApplicantEvent::StepFailed { .. } => "StepFailed",
            ApplicantEvent::StepDeactivated { .. } => "StepDeactivated",
            ApplicantEvent::StepReactivated { .. } => "StepReactivated",
            ApplicantEvent::WarningRaised { .. } => "WarningRaised",
            ApplicantEvent::WarningResolved { .. } => "WarningResolved",
            ApplicantEvent::ReviewerAssigned { .. } => "ReviewerAssigned",
            ApplicantEvent::ReviewerUnassigned { .. } => "ReviewerUnassigned",
            ApplicantEvent::CommentAdded { .. } => "CommentAdded",
            ApplicantEvent::ApplicantApproved { .. } => "ApplicantApproved",
            ApplicantEvent::ApplicantDeclined { .. } => "ApplicantDeclined",
            ApplicantEvent::FlowRestarted { .. } => "FlowRestarted",
            ApplicantEvent::FlowChanged { .. } => "FlowChanged",
            ApplicantEvent::StatusChanged { .. } => "StatusChanged",
            ApplicantEvent::DeletionScheduled { .. } => "DeletionScheduled",
            ApplicantEvent::DeletionCancelled {} => "DeletionCancelled",
        }
    }

    /// The step the event is about, if any.
    pub fn step(&self) -> Option<StepType> {
        match self {
            ApplicantEvent::StepPassed { step, .. }
            | ApplicantEvent::StepFailed { step, .. }
            | ApplicantEvent::StepDeactivated { step, .. }
            | ApplicantEvent::StepReactivated { step } => Some(*step),
            ApplicantEvent::WarningRaised { step, .. } => *step,
            _ => None,
        }
    }

    /// One readable line for the timeline, e.g. `document_check passed (attempt 1)`.
    pub fn summary(&self) -> String {
        let mut line = String::new();
        // Writing into a `String` cannot fail.
        let _ = self.write_summary(&mut line);
        line
    }

    /// Writes [`ApplicantEvent::summary`] to `out` (a rebuild writes millions of them into
    /// one buffer instead of a string each).
    pub fn write_summary(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        match self {
            ApplicantEvent::ApplicantCreated {
                external_user_id,
                flow,
                ..
            } => write!(
                out,
                "applicant created for {external_user_id} with flow {} v{}",
                flow.name, flow.version
            ),
            ApplicantEvent::VerificationStarted {} => out.write_str("verification started"),
            // The two commonest events (six in ten) are spelled piece by piece: `write!` costs
            // more than the text (a rebuild writes a summary for every event).
            ApplicantEvent::StepPassed { step, attempt, .. } => {
                out.write_str(step.as_str())?;
                out.write_str(" passed (attempt ")?;
                write_count(out, *attempt)?;
                out.write_str(")")
            }
            ApplicantEvent::StepFailed {
                step,
                attempt,
                max_attempts,
                is_final,
                reason,
                ..
            } => {
                write!(out, "{step} failed (attempt {attempt}")?;
                if let Some(m) = max_attempts {
                    write!(out, " of {m}")?;
                }
                if *is_final {
                    out.write_str(", no attempt left")?;
                }
                out.write_str(")")?;
                match reason {
                    Some(r) => write!(out, ": {r}"),
                    None => Ok(()),
                }
            }
            ApplicantEvent::StepDeactivated { step, reason } => match reason {
                Some(reason) => write!(out, "{step} deactivated: {reason}"),
                None => write!(out, "{step} deactivated"),
            },
            ApplicantEvent::StepReactivated { step } => write!(out, "{step} reactivated"),
            ApplicantEvent::WarningRaised { code, message, .. } => {
                write!(out, "warning {code} raised: {message}")
            }
            ApplicantEvent::WarningResolved {
                warning_id,
                comment,
            } => match comment {
                Some(comment) => write!(out, "warning {warning_id} resolved: {comment}"),
                None => write!(out, "warning {warning_id} resolved"),
            },
            ApplicantEvent::ReviewerAssigned { reviewer_id } => {
                write!(out, "reviewer {reviewer_id} assigned")
            }
            ApplicantEvent::ReviewerUnassigned { reviewer_id } => {
                write!(out, "reviewer {reviewer_id} unassigned")
            }
            ApplicantEvent::CommentAdded { text, author, .. } => match author {
                Some(author) => write!(out, "comment by {author}: {text}"),
                None => write!(out, "comment: {text}"),
            },
            ApplicantEvent::ApplicantApproved {
                reviewer_id,
                reasons,
                ..
            } => {
                match reviewer_id {
                    Some(r) => write!(out, "approved by {r}")?,
                    None => out.write_str("approved automatically")?,
                }
                write_reasons(out, reasons)
            }
            ApplicantEvent::ApplicantDeclined {
                reviewer_id,
                reasons,
                ..
            } => {
                write!(out, "declined by {reviewer_id}")?;
                write_reasons(out, reasons)
            }
            ApplicantEvent::FlowRestarted { kept_steps } => {
                out.write_str("flow restarted")?;
                write_kept(out, kept_steps)
            }
            ApplicantEvent::FlowChanged { flow, kept_steps } => {
                write!(out, "flow changed to {} v{}", flow.name, flow.version)?;
                write_kept(out, kept_steps)
            }
            ApplicantEvent::StatusChanged { from, to, reason } => {
                out.write_str("status ")?;
                out.write_str(from.as_str())?;
                out.write_str(" → ")?;
                out.write_str(to.as_str())?;
                out.write_str(": ")?;
                out.write_str(reason)
            }
            ApplicantEvent::DeletionScheduled { purge_after } => write!(
                out,
                "deletion scheduled: data purged after {}",
                purge_after.to_rfc3339()
            ),
            ApplicantEvent::DeletionCancelled {} => out.write_str("deletion cancelled"),
        }
    }
}

/// The string after `key` (which ends with the string's opening quote) at the start of
/// `rest`, when it needs no unescaping; `rest` moves past its closing quote.
fn field<'a>(rest: &mut &'a str, key: &str) -> Option<&'a str> {
    let mut after = rest.strip_prefix(key)?;
    let value = written::plain_string(&mut after)?;
    *rest = after;
    Some(value)
}

/// An optional string field: `Some(None)` when `rest` does not start with `key`, `None` when
/// it does but its string needs unescaping (not read here), `Some(Some(..))` otherwise.
fn optional_field<'a>(rest: &mut &'a str, key: &str) -> Option<Option<&'a str>> {
    if !rest.starts_with(key) {
        return Some(None);
    }
    field(rest, key).map(Some)
}

/// An `ApplicantCreated` payload in the exact shape this engine writes it (keys in order,
/// optional ones absent or plain strings, no whitespace), whose flow is one this thread read
/// before (see `codec::pinned_flow`), read without serde; `None` for anything else.
fn applicant_created_as_written(payload: &str) -> Option<ApplicantEvent> {
    let mut rest = payload;
    let app_key = field(&mut rest, r#"{"appKey":""#)?;
    let applicant_id = field(&mut rest, r#","applicantId":""#)?;
    let email = optional_field(&mut rest, r#","email":""#)?;
    let external_user_id = field(&mut rest, r#","externalUserId":""#)?;
    let (flow, flow_len) = crate::codec::pinned_flow_at(rest.strip_prefix(r#","flow":"#)?)?;
    rest = rest.get(r#","flow":"#.len() + flow_len..)?;
    let lang = optional_field(&mut rest, r#","lang":""#)?;
    let phone = optional_field(&mut rest, r#","phone":""#)?;
    (rest == "}").then_some(())?;
    Some(ApplicantEvent::ApplicantCreated {
        applicant_id: ApplicantId(applicant_id.parse().ok()?),
        app_key: AppKey(app_key.parse().ok()?),
        external_user_id: external_user_id.to_string(),
        email: email.map(str::to_string),
        phone: phone.map(str::to_string),
        lang: lang.map(str::to_string),
        flow: Box::new(flow),
    })
}

/// The unsigned integer at the start of `rest`, spelled as JSON spells it (no leading zero);
/// `rest` moves past it.
fn integer<T: TryFrom<u64>>(rest: &mut &str) -> Option<T> {
    let mut after = *rest;
    let value = T::try_from(written::uint(&mut after)?).ok()?;
    *rest = after;
    Some(value)
}

/// `true` or `false` after `key` at the start of `rest`; `rest` moves past it.
fn boolean(rest: &mut &str, key: &str) -> Option<bool> {
    let after = rest.strip_prefix(key)?;
    let (value, after) = match after.strip_prefix("true") {
        Some(after) => (true, after),
        None => (false, after.strip_prefix("false")?),
    };
    *rest = after;
    Some(value)
}

/// The step named by the `"step":"<step>"}` that ends `rest`.
fn last_step(rest: &str) -> Option<StepType> {
    let name = rest.strip_prefix(r#","step":""#)?.strip_suffix(r#""}"#)?;
    StepType::ALL.into_iter().find(|s| s.as_str() == name)
}

/// A `StepFailed` payload in the exact shape this engine writes it
/// (`{"attempt":..,"data":..,"final":..[,"maxAttempts":..][,"reason":".."],"step":".."}`), read
/// without serde; `None` for anything else.
fn step_failed_as_written(payload: &str) -> Option<ApplicantEvent> {
    let mut rest = payload.strip_prefix(r#"{"attempt":"#)?;
    let attempt = integer(&mut rest)?;
    let (data, len) = StepData::canonical_prefix(rest.strip_prefix(r#","data":"#)?)?;
    rest = rest.get(r#","data":"#.len() + len..)?;
    let is_final = boolean(&mut rest, r#","final":"#)?;
    let max_attempts = match rest.strip_prefix(r#","maxAttempts":"#) {
        Some(after) => {
            rest = after;
            Some(integer(&mut rest)?)
        }
        None => None,
    };
    let reason = optional_field(&mut rest, r#","reason":""#)?;
    Some(ApplicantEvent::StepFailed {
        step: last_step(rest)?,
        attempt,
        max_attempts,
        is_final,
        reason: reason.map(str::to_string),
        data,
    })
}

/// The reviewer of a `ReviewerAssigned` / `ReviewerUnassigned` payload as written
/// (`{"reviewerId":".."}`).
fn reviewer_as_written(payload: &str) -> Option<String> {
    let mut rest = payload;
    let reviewer = field(&mut rest, r#"{"reviewerId":""#)?;
    (rest == "}").then(|| reviewer.to_string())
}

/// A `CommentAdded` payload as written (`{["author":"..",]"commentId":"..","text":".."}`).
fn comment_added_as_written(payload: &str) -> Option<ApplicantEvent> {
    let mut rest = payload.strip_prefix('{')?;
    let author = optional_field(&mut rest, r#""author":""#)?;
    let comment_id = if author.is_some() {
        field(&mut rest, r#","commentId":""#)?
    } else {
        field(&mut rest, r#""commentId":""#)?
    };
    let text = field(&mut rest, r#","text":""#)?;
    (rest == "}").then_some(())?;
    Some(ApplicantEvent::CommentAdded {
        comment_id: comment_id.parse().ok()?,
        text: text.to_string(),
        author: author.map(str::to_string),
    })
}

/// An `ApplicantApproved` payload as written
/// (`{"automatic":..[,"comment":".."],"decidedAt":"..","reasons":[..][,"reviewerId":".."]}`).
fn applicant_approved_as_written(payload: &str) -> Option<ApplicantEvent> {
    let mut rest = payload;
    let automatic = boolean(&mut rest, r#"{"automatic":"#)?;
    let comment = optional_field(&mut rest, r#","comment":""#)?;
    let decided_at = field(&mut rest, r#","decidedAt":""#)?;
    rest = rest.strip_prefix(r#","reasons":["#)?;
    let mut reasons = Vec::new();
    if let Some(after) = rest.strip_prefix(']') {
        rest = after;
    } else {
        loop {
            reasons.push(field(&mut rest, "\"")?.to_string());
            match rest.as_bytes().first() {
                Some(b',') => rest = &rest[1..],
                Some(b']') => {
                    rest = &rest[1..];
                    break;
                }
                _ => return None,
            }
        }
    }
    let reviewer_id = optional_field(&mut rest, r#","reviewerId":""#)?;
    (rest == "}").then_some(())?;
    Some(ApplicantEvent::ApplicantApproved {
        reviewer_id: reviewer_id.map(str::to_string),
        automatic,
        reasons,
        comment: comment.map(str::to_string),
        // As chrono's serde reads a `DateTime<Utc>`: any offset, brought to UTC.
        decided_at: decided_at
            .parse::<DateTime<chrono::FixedOffset>>()
            .ok()?
            .with_timezone(&Utc),
    })
}

/// A `StatusChanged` payload in the exact shape it is written (`{"from":..,"reason":..,"to":..}`,
/// keys in either order serde_json may write them, no whitespace, strings without escapes), read
/// without serde; `None` for anything else, which serde then reads (or refuses) as before.
fn status_changed_as_written(payload: &str) -> Option<ApplicantEvent> {
    fn status(s: &str) -> Option<ApplicantStatus> {
        ApplicantStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
    // Every field is a string: the text between `"key":"` and the next `"`.
    let mut rest = payload;
    let from = field(&mut rest, r#"{"from":""#)?;
    let (reason, to) = if rest.starts_with(r#","reason":""#) {
        let reason = field(&mut rest, r#","reason":""#)?;
        (reason, field(&mut rest, r#","to":""#)?)
    } else {
        let to = field(&mut rest, r#","to":""#)?;
        (field(&mut rest, r#","reason":""#)?, to)
    };
    (rest == "}").then_some(())?;
    Some(ApplicantEvent::StatusChanged {
        from: status(from)?,
        to: status(to)?,
        reason: reason.to_string(),
    })
}

/// A `StepPassed` payload in the exact shape this engine writes it,
/// `{"attempt":<n>,"data":<canonical JSON>,"step":"<step>"}`, read without serde: the step
/// data is validated as canonical in one pass (see [`StepData::canonical_prefix`]) and kept
/// as it is. Anything else is `None`, for serde to read.
fn step_passed_as_written(payload: &str) -> Option<ApplicantEvent> {
    let mut rest = payload.strip_prefix(r#"{"attempt":"#)?;
    let attempt = integer(&mut rest)?;
    let (data, len) = StepData::canonical_prefix(rest.strip_prefix(r#","data":"#)?)?;
    rest = rest.get(r#","data":"#.len() + len..)?;
    Some(ApplicantEvent::StepPassed {
        step: last_step(rest)?,
        attempt,
        data,
    })
}

/// Writes `n` in decimal, as `{n}` does.
fn write_count(out: &mut impl std::fmt::Write, mut n: u32) -> std::fmt::Result {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.write_str(std::str::from_utf8(&digits[at..]).unwrap_or_default())
}

fn write_reasons(out: &mut impl std::fmt::Write, reasons: &[String]) -> std::fmt::Result {
    for (i, reason) in reasons.iter().enumerate() {
        out.write_str(if i == 0 { ": " } else { ", " })?;
        out.write_str(reason)?;
    }
    Ok(())
}

fn write_kept(out: &mut impl std::fmt::Write, steps: &[StepType]) -> std::fmt::Result {
    if steps.is_empty() {
        return out.write_str(", no step kept");
    }
    for (i, step) in steps.iter().enumerate() {
        out.write_str(if i == 0 { ", kept " } else { ", " })?;
        out.write_str(step.as_str())?;
    }
    Ok(())
}

#[cfg(test)]
mod summary_tests {
    use super::*;
    use proptest::prelude::*;

    /// What serde makes of a payload's text (the `Value` way, which defines the answer).
    fn by_serde(payload: &str) -> Option<ApplicantEvent> {
        let value: serde_json::Value = serde_json::from_str(payload).ok()?;
        ApplicantEvent::from_payload("StatusChanged", 1, &value).ok()
    }

    /// What serde makes of a `StepPassed` payload's text (the `Value` way).
    fn step_passed_by_serde(payload: &str) -> Option<ApplicantEvent> {
        let value: serde_json::Value = serde_json::from_str(payload).ok()?;
        ApplicantEvent::from_payload("StepPassed", 1, &value).ok()
    }

    fn step_data() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            (-1000i32..1000).prop_map(|n| serde_json::Value::from(f64::from(n) / 8.0)),
            "[a-z\"\\\\,:{}é]{0,6}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("step".to_string()),
                        Just("data".to_string()),
                        "[a-z\"]{0,3}".prop_map(String::from)
                    ],
                    inner,
                    0..4,
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// What serde makes of an `ApplicantCreated` payload's text (the `Value` way).
    fn created_by_serde(payload: &str) -> Option<ApplicantEvent> {
        let value: serde_json::Value = serde_json::from_str(payload).ok()?;
        ApplicantEvent::from_payload("ApplicantCreated", 1, &value).ok()
    }

    /// An applicant created on a variant of the sample flow.
    fn created(
        strings: [Option<String>; 3],
        external_user_id: String,
        flow_name: String,
        threshold: f64,
    ) -> ApplicantEvent {
        let mut flow = crate::testing::kyc_basic();
        flow.name = flow_name;
        flow.settings.face_match_threshold = threshold;
        let [email, phone, lang] = strings;
        ApplicantEvent::ApplicantCreated {
            applicant_id: ApplicantId(uuid::Uuid::from_u128(7)),
            app_key: AppKey(uuid::Uuid::from_u128(9)),
            external_user_id,
            email,
            phone,
            lang,
            flow: Box::new(flow),
        }
    }

    /// Events of every type, with and without their optional fields.
    fn every_shape() -> Vec<ApplicantEvent> {
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678+00:00").unwrap();
        let mut events = crate::testing::every_event_life();
        events.extend([
            ApplicantEvent::ApplicantApproved {
                reviewer_id: Some("rev-1".into()),
                automatic: false,
                reasons: vec!["ok".into(), "seen «it»".into()],
                comment: Some("fine".into()),
                decided_at: at.with_timezone(&Utc),
            },
            ApplicantEvent::ApplicantApproved {
                reviewer_id: None,
                automatic: true,
                reasons: vec![],
                comment: None,
                decided_at: at.with_timezone(&Utc),
            },
            ApplicantEvent::StepFailed {
                step: StepType::Liveness,
                attempt: 12,
                max_attempts: Some(12),
                is_final: true,
                reason: Some("mask".into()),
                data: crate::testing::step_data(serde_json::json!({"final": false, "step": "aml"})),
            },
            ApplicantEvent::StepFailed {
                step: StepType::Aml,
                attempt: 1,
                max_attempts: None,
                is_final: false,
                reason: None,
                data: StepData::null(),
            },
            ApplicantEvent::CommentAdded {
                comment_id: uuid::Uuid::from_u128(3),
                text: String::new(),
                author: None,
            },
            ApplicantEvent::ReviewerUnassigned {
                reviewer_id: "rev-2".into(),
            },
        ]);
        events
    }

    /// The `Value` way's reading of a payload's text.
    fn by_value(event_type: &str, payload: &str) -> Option<ApplicantEvent> {
        let value: serde_json::Value = serde_json::from_str(payload).ok()?;
        ApplicantEvent::from_payload(event_type, 1, &value).ok()
    }

    /// Every written payload of the types read directly is read directly, to what serde
    /// reads.
    #[test]
    fn written_payloads_read_directly_as_serde_reads_them() {
        let mut direct = std::collections::BTreeSet::new();
        for event in every_shape() {
            let event_type = event.event_type();
            let payload = serde_json::to_string(&event.to_payload()).unwrap();
            assert_eq!(
                by_value(event_type, &payload).as_ref(),
                Some(&event),
                "{payload}"
            );
            // Through serde first: this thread then knows the flows.
            assert_eq!(
                ApplicantEvent::from_payload_json(event_type, 1, &payload).as_ref(),
                Ok(&event)
            );
            if let Some(read) = ApplicantEvent::read_as_written(event_type, &payload) {
                assert_eq!(read, event, "{payload}");
                direct.insert(event_type);
            }
        }
        let expected = [
            "ApplicantApproved",
            "ApplicantCreated",
            "CommentAdded",
            "ReviewerAssigned",
            "ReviewerUnassigned",
            "StatusChanged",
            "StepFailed",
            "StepPassed",
            "VerificationStarted",
        ];
        assert_eq!(direct.into_iter().collect::<Vec<_>>(), expected);
    }

    proptest! {
        /// A written payload of any type with one byte changed, dropped or added: whatever
        /// the direct reading takes, serde takes the same way.
        #[test]
        fn edited_payloads_never_read_directly_otherwise_than_serde_reads_them(
            which in any::<proptest::sample::Index>(),
            at in any::<proptest::sample::Index>(),
            edit in 0u8..3,
            byte in proptest::sample::select(b"{}[]\",:0129.eE+-TZtfnul\\ a".to_vec()),
        ) {
            let events = every_shape();
            let event = which.get(&events);
            let event_type = event.event_type();
            let written = serde_json::to_string(&event.to_payload()).unwrap();
            ApplicantEvent::from_payload_json(event_type, 1, &written).unwrap();
            let Some(payload) = crate::testing::edited(&written, at.index(written.len() + 1), edit, byte) else {
                return Ok(());
            };
            if let Some(direct) = ApplicantEvent::read_as_written(event_type, &payload) {
                prop_assert_eq!(Some(direct), by_value(event_type, &payload), "{}", payload);
            }
        }

        /// An applicant created on a flow read before is read directly as serde reads it.
        #[test]
        fn a_written_applicant_created_reads_as_serde_reads_it(
            strings in proptest::array::uniform3(proptest::option::of("[a-z@+\"\\\\é]{0,6}")),
            external_user_id in "[a-z\"\\\\é-]{0,8}",
            flow_name in "[a-z\"]{1,6}",
            threshold in 0.0f64..100.0,
        ) {
            let event = created(strings, external_user_id, flow_name, threshold);
            let payload = serde_json::to_string(&event.to_payload()).unwrap();
            // The first reading goes through serde, and this thread remembers the flow.
            let read = ApplicantEvent::from_payload_json("ApplicantCreated", 1, &payload).unwrap();
            prop_assert_eq!(&read, &event);
            prop_assert_eq!(created_by_serde(&payload), Some(event.clone()));
            let ApplicantEvent::ApplicantCreated { email, phone, lang, external_user_id, .. } = &event else {
                unreachable!()
            };
            let plain = [email.as_deref(), phone.as_deref(), lang.as_deref(), Some(external_user_id.as_str())]
                .into_iter()
                .flatten()
                .all(|s| !s.contains(['"', '\\']));
            match applicant_created_as_written(&payload) {
                Some(direct) => prop_assert_eq!(direct, event),
                None => prop_assert!(!plain, "{}", payload),
            }
        }

        /// The written shape with one byte changed, dropped or added, its flow remembered:
        /// whatever the direct reading takes, serde takes the same way.
        #[test]
        fn the_applicant_created_reading_never_disagrees_with_serde(
            strings in proptest::array::uniform3(proptest::option::of("[a-z]{0,4}")),
            flow_name in "[a-z]{1,4}",
            at in any::<proptest::sample::Index>(),
            edit in 0u8..3,
            byte in proptest::sample::select(b"{}[]\",:019.e-tn\\ a".to_vec()),
        ) {
            let event = created(strings, "user-1".into(), flow_name, 85.0);
            let written = serde_json::to_string(&event.to_payload()).unwrap();
            ApplicantEvent::from_payload_json("ApplicantCreated", 1, &written).unwrap();
            let Some(payload) = crate::testing::edited(&written, at.index(written.len() + 1), edit, byte) else {
                return Ok(());
            };
            if let Some(direct) = applicant_created_as_written(&payload) {
                prop_assert_eq!(Some(direct), created_by_serde(&payload), "{}", payload);
            }
            let read = ApplicantEvent::from_payload_json("ApplicantCreated", 1, &payload).ok();
            prop_assert_eq!(read, created_by_serde(&payload), "{}", payload);
        }

        /// A passed step is read directly as serde reads it, whatever its data holds (keys
        /// named `step`, strings holding `,"step":"`).
        #[test]
        fn a_written_step_passed_reads_as_serde_reads_it(
            step in 0usize..StepType::ALL.len(), attempt in any::<u32>(), data in step_data(),
        ) {
            let data = StepData::from_value(&data).unwrap();
            let event = ApplicantEvent::StepPassed { step: StepType::ALL[step], attempt, data };
            let payload = serde_json::to_string(&event.to_payload()).unwrap();
            prop_assert_eq!(step_passed_as_written(&payload), Some(event.clone()));
            prop_assert_eq!(step_passed_by_serde(&payload), Some(event));
        }

        /// The written shape with one byte changed, dropped or added: whatever the direct
        /// reading takes, serde takes the same way.
        #[test]
        fn the_step_passed_reading_never_disagrees_with_serde(
            step in 0usize..StepType::ALL.len(), attempt in 0u32..20, data in step_data(),
            at in any::<proptest::sample::Index>(),
            edit in 0u8..3,
            byte in proptest::sample::select(b"{}[]\",:019.e-tn\\ ".to_vec()),
        ) {
            let data = StepData::from_value(&data).unwrap();
            let event = ApplicantEvent::StepPassed { step: StepType::ALL[step], attempt, data };
            let written = serde_json::to_string(&event.to_payload()).unwrap();
            let Some(payload) = crate::testing::edited(&written, at.index(written.len() + 1), edit, byte) else {
                return Ok(());
            };
            if let Some(direct) = step_passed_as_written(&payload) {
                prop_assert_eq!(Some(direct), step_passed_by_serde(&payload), "{}", payload);
            }
            let read = ApplicantEvent::from_payload_json("StepPassed", 1, &payload).ok();
            prop_assert_eq!(read, step_passed_by_serde(&payload), "{}", payload);
        }

        /// A status change is read directly as serde reads it, whatever its reason holds.
        #[test]
        fn a_written_status_change_reads_as_serde_reads_it(
            from in 0usize..7, to in 0usize..7, reason in "\\PC{0,30}|[a-z \"\\\\\u{1}→]{0,12}",
        ) {
            let (from, to) = (ApplicantStatus::ALL[from], ApplicantStatus::ALL[to]);
            let event = ApplicantEvent::StatusChanged { from, to, reason };
            let payload = serde_json::to_string(&event.to_payload()).unwrap();
            let read = ApplicantEvent::from_payload_json("StatusChanged", 1, &payload).unwrap();
            prop_assert_eq!(&read, &event);
            let plain = !event.summary().contains(['"', '\\']) && !event.summary().contains(|c: char| c < ' ');
            match status_changed_as_written(&payload) {
                Some(direct) => prop_assert_eq!(direct, event),
                // The written shape is the one read directly, unless the reason needs escapes.
                None => prop_assert!(!plain, "{}", payload),
            }
        }

        /// Anything else the direct reading takes, serde takes the same way: keys in any order,
        /// repeated, unknown or missing, values that are or are not status names, quotes,
        /// backslashes, a second object after the first.
        #[test]
        fn the_direct_reading_never_disagrees_with_serde(
            fields in proptest::collection::vec(
                (
                    prop_oneof![Just("from"), Just("to"), Just("reason"), Just("x")],
                    prop_oneof![
                        Just("INIT".to_string()),
                        Just("ON_HOLD".to_string()),
                        Just("APPROVED".to_string()),
                        "[A-Z_a-z →\\\\\"]{0,8}",
                    ],
                ),
                0..5,
            ),
            tail in prop_oneof![Just(""), Just(" "), Just("{}")],
        ) {
            let body: Vec<String> =
                fields.iter().map(|(k, v)| format!("\"{k}\":\"{v}\"")).collect();
            let payload = format!("{{{}}}{tail}", body.join(","));
            let direct = status_changed_as_written(&payload);
            if direct.is_some() {
                prop_assert_eq!(direct, by_serde(&payload), "{}", payload);
            }
        }

        /// The hand-spelled summaries read as the formatted ones did.
        #[test]
        fn hot_summaries_read_as_formatted(attempt in any::<u32>(), step in 0usize..11, reason in ".{0,40}") {
            let step = crate::StepType::ALL[step];
            let mut out = String::new();
            write_count(&mut out, attempt).unwrap();
            prop_assert_eq!(&out, &attempt.to_string());
            let passed = ApplicantEvent::StepPassed { step, attempt, data: StepData::null() };
            prop_assert_eq!(passed.summary(), format!("{step} passed (attempt {attempt})"));
            let (from, to) = (crate::ApplicantStatus::Incomplete, crate::ApplicantStatus::OnHold);
            let changed = ApplicantEvent::StatusChanged { from, to, reason: reason.clone() };
            prop_assert_eq!(changed.summary(), format!("status {from} → {to}: {reason}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DomainError;
    use serde_json::json;

    #[test]
    fn every_summary_reads_as_the_timeline_shows_it() {
        let at = chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap();
        let flow = Flow {
            id: Uuid::nil(),
            name: "kyc-basic".into(),
            version: 2,
            steps: vec![],
            settings: crate::flow::FlowSettings::default(),
        };
        let w = WarningId(Uuid::from_u128(1));
        let cases = [
            (
                ApplicantEvent::ApplicantCreated {
                    applicant_id: ApplicantId(Uuid::nil()),
                    app_key: AppKey(Uuid::nil()),
                    external_user_id: "user-1".into(),
                    email: None,
                    phone: None,
                    lang: None,
                    flow: Box::new(flow.clone()),
                },
                "applicant created for user-1 with flow kyc-basic v2",
            ),
            (
                ApplicantEvent::StepFailed {
                    step: StepType::Liveness,
                    attempt: 3,
                    max_attempts: Some(3),
                    is_final: true,
                    reason: Some("blurry".into()),
                    data: StepData::null(),
                },
                "liveness failed (attempt 3 of 3, no attempt left): blurry",
            ),
            (
                ApplicantEvent::StepFailed {
                    step: StepType::Liveness,
                    attempt: 1,
                    max_attempts: None,
                    is_final: false,
                    reason: None,
                    data: StepData::null(),
                },
                "liveness failed (attempt 1)",
            ),
            (
                ApplicantEvent::ApplicantApproved {
                    reviewer_id: None,
                    automatic: true,
                    reasons: vec![],
                    comment: None,
                    decided_at: at,
                },
                "approved automatically",
            ),
            (
                ApplicantEvent::ApplicantApproved {
                    reviewer_id: Some("rev-1".into()),
                    automatic: false,
                    reasons: vec!["a".into(), "b".into()],
                    comment: None,
                    decided_at: at,
                },
                "approved by rev-1: a, b",
            ),
            (
                ApplicantEvent::ApplicantDeclined {
                    reviewer_id: "rev-2".into(),
                    reasons: vec!["fraud".into()],
                    comment: None,
                    decided_at: at,
                },
                "declined by rev-2: fraud",
            ),
            (
                ApplicantEvent::FlowRestarted { kept_steps: vec![] },
                "flow restarted, no step kept",
            ),
            (
                ApplicantEvent::FlowChanged {
                    flow: Box::new(flow),
                    kept_steps: vec![StepType::DocumentCheck, StepType::Liveness],
                },
                "flow changed to kyc-basic v2, kept document_check, liveness",
            ),
            (
                ApplicantEvent::WarningResolved {
                    warning_id: w,
                    comment: Some("ok".into()),
                },
                "warning 00000000-0000-0000-0000-000000000001 resolved: ok",
            ),
            (
                ApplicantEvent::DeletionScheduled { purge_after: at },
                "deletion scheduled: data purged after 2025-11-24T16:00:00+00:00",
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(event.summary(), expected);
        }
    }

    #[test]
    fn payloads_have_no_type_key_and_round_trip() {
        let event = ApplicantEvent::StepFailed {
            step: StepType::Liveness,
            attempt: 2,
            max_attempts: Some(2),
            is_final: true,
            reason: Some("blurry".into()),
            data: crate::testing::step_data(json!({"score": 0.2})),
        };
        let payload = event.to_payload();
        assert_eq!(payload["final"], json!(true));
        assert_eq!(payload["maxAttempts"], json!(2));
        assert!(payload.get("type").is_none());
        assert_eq!(
            ApplicantEvent::from_payload("StepFailed", 1, &payload).unwrap(),
            event
        );
        assert_eq!(
            event.summary(),
            "liveness failed (attempt 2 of 2, no attempt left): blurry"
        );
    }

    #[test]
    fn unknown_types_and_future_versions_are_refused() {
        assert!(matches!(
            ApplicantEvent::from_payload("StepSkipped", 1, &json!({})),
            Err(DomainError::UnknownEvent { .. })
        ));
        assert!(matches!(
            ApplicantEvent::from_payload("StepPassed", 2, &json!({"step": "aml", "attempt": 1})),
            Err(DomainError::UnknownEvent {
                schema_version: 2,
                ..
            })
        ));
        assert!(matches!(
            ApplicantEvent::from_payload("StepPassed", 1, &json!({"step": "nope", "attempt": 1})),
            Err(DomainError::BadPayload { .. })
        ));
        assert!(matches!(
            ApplicantEvent::from_payload("StepPassed", 1, &json!([1])),
            Err(DomainError::BadPayload { .. })
        ));
    }
}
