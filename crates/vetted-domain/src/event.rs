//! Applicant events, and the payload codec shared by every event enum.
//!
//! On the wire (the store's `payload`) an event is a camelCase JSON object without a `type`
//! key: the type and schema version travel in the envelope. In Rust the enums are internally
//! tagged by `type`, so the codec removes the tag on the way out and puts it back on the way in.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::DomainError;
use crate::flow::{Flow, StepType};
use crate::ids::{AppKey, ApplicantId, WarningId};
use crate::status::ApplicantStatus;

/// Everything that can happen to an applicant (stream `applicant-<uuid>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
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
        flow: Flow,
    },
    /// The applicant started the flow.
    VerificationStarted {},
    /// A step passed on this attempt (1-based).
    StepPassed {
        step: StepType,
        attempt: u32,
        #[serde(default)]
        data: serde_json::Value,
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
        data: serde_json::Value,
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
        flow: Flow,
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
}

/// Schema version written today for every applicant event type.
const APPLICANT_SCHEMA_VERSION: u32 = 1;

impl ApplicantEvent {
    /// Every applicant event type name.
    pub const TYPES: &'static [&'static str] = <Self as EventCodec>::TYPES;

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

    /// The payload schema version written today.
    pub fn schema_version(&self) -> u32 {
        APPLICANT_SCHEMA_VERSION
    }

    /// The payload: a camelCase object without a `type` key.
    pub fn to_payload(&self) -> serde_json::Value {
        to_untagged_payload(self)
    }

    /// Reads a stored payload back, upcasting older schema versions to today's shape.
    pub fn from_payload(
        event_type: &str,
        schema_version: u32,
        payload: &serde_json::Value,
    ) -> Result<Self, DomainError> {
        from_tagged_payload::<Self>(
            event_type,
            schema_version,
            APPLICANT_SCHEMA_VERSION,
            payload,
        )
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
        match self {
            ApplicantEvent::ApplicantCreated {
                external_user_id,
                flow,
                ..
            } => {
                format!(
                    "applicant created for {external_user_id} with flow {}",
                    flow.label()
                )
            }
            ApplicantEvent::VerificationStarted {} => "verification started".to_string(),
            ApplicantEvent::StepPassed { step, attempt, .. } => {
                format!("{step} passed (attempt {attempt})")
            }
            ApplicantEvent::StepFailed {
                step,
                attempt,
                max_attempts,
                is_final,
                reason,
                ..
            } => {
                let of = max_attempts.map(|m| format!(" of {m}")).unwrap_or_default();
                let last = if *is_final { ", no attempt left" } else { "" };
                let why = reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                format!("{step} failed (attempt {attempt}{of}{last}){why}")
            }
            ApplicantEvent::StepDeactivated { step, reason } => match reason {
                Some(reason) => format!("{step} deactivated: {reason}"),
                None => format!("{step} deactivated"),
            },
            ApplicantEvent::StepReactivated { step } => format!("{step} reactivated"),
            ApplicantEvent::WarningRaised { code, message, .. } => {
                format!("warning {code} raised: {message}")
            }
            ApplicantEvent::WarningResolved {
                warning_id,
                comment,
            } => match comment {
                Some(comment) => format!("warning {warning_id} resolved: {comment}"),
                None => format!("warning {warning_id} resolved"),
            },
            ApplicantEvent::ReviewerAssigned { reviewer_id } => {
                format!("reviewer {reviewer_id} assigned")
            }
            ApplicantEvent::ReviewerUnassigned { reviewer_id } => {
                format!("reviewer {reviewer_id} unassigned")
            }
            ApplicantEvent::CommentAdded { text, author, .. } => match author {
                Some(author) => format!("comment by {author}: {text}"),
                None => format!("comment: {text}"),
            },
            ApplicantEvent::ApplicantApproved {
                reviewer_id,
                reasons,
                ..
            } => {
                let by = reviewer_id
                    .as_deref()
                    .map_or("automatically".to_string(), |r| format!("by {r}"));
                with_reasons(format!("approved {by}"), reasons)
            }
            ApplicantEvent::ApplicantDeclined {
                reviewer_id,
                reasons,
                ..
            } => with_reasons(format!("declined by {reviewer_id}"), reasons),
            ApplicantEvent::FlowRestarted { kept_steps } => {
                format!("flow restarted{}", kept(kept_steps))
            }
            ApplicantEvent::FlowChanged { flow, kept_steps } => {
                format!("flow changed to {}{}", flow.label(), kept(kept_steps))
            }
            ApplicantEvent::StatusChanged { from, to, reason } => {
                format!("status {from} → {to}: {reason}")
            }
            ApplicantEvent::DeletionScheduled { purge_after } => {
                format!(
                    "deletion scheduled: data purged after {}",
                    purge_after.to_rfc3339()
                )
            }
            ApplicantEvent::DeletionCancelled {} => "deletion cancelled".to_string(),
        }
    }
}

fn with_reasons(line: String, reasons: &[String]) -> String {
    if reasons.is_empty() {
        line
    } else {
        format!("{line}: {}", reasons.join(", "))
    }
}

fn kept(steps: &[StepType]) -> String {
    if steps.is_empty() {
        ", no step kept".to_string()
    } else {
        let names: Vec<&str> = steps.iter().map(StepType::as_str).collect();
        format!(", kept {}", names.join(", "))
    }
}

/// An event enum whose serde form is internally tagged by `type`.
pub(crate) trait EventCodec: Serialize + DeserializeOwned {
    /// Every variant name.
    const TYPES: &'static [&'static str];
}

/// Serializes a `type`-tagged event and drops the tag.
pub(crate) fn to_untagged_payload<T: EventCodec>(event: &T) -> serde_json::Value {
    // Serializing these enums cannot fail: every key is a string and no field has a custom
    // serializer that errs; fall back to an empty object rather than panic all the same.
    let mut value = serde_json::to_value(event).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(object) = value.as_object_mut() {
        object.remove("type");
    }
    value
}

/// Parses a stored payload of `event_type` at `schema_version`, upcasting it to `current`.
pub(crate) fn from_tagged_payload<T: EventCodec>(
    event_type: &str,
    schema_version: u32,
    current: u32,
    payload: &serde_json::Value,
) -> Result<T, DomainError> {
    if !T::TYPES.contains(&event_type) || schema_version == 0 || schema_version > current {
        return Err(DomainError::UnknownEvent {
            event_type: event_type.to_string(),
            schema_version,
            known_version: current,
        });
    }
    let Some(object) = payload.as_object() else {
        return Err(DomainError::BadPayload {
            event_type: event_type.to_string(),
            reason: format!("the payload is {payload}, not a JSON object"),
        });
    };
    if schema_version == current && !object.contains_key("type") {
        // Today's shape, nothing to upcast: read the payload in place, its type presented as
        // the tag, instead of deep-copying it to add one. A payload that does not read so
        // goes the copying way below, which gives the canonical error.
        let tagged = tagged::Payload {
            tag: event_type,
            map: object,
        };
        if let Ok(event) = T::deserialize(tagged) {
            return Ok(event);
        }
    }
    from_copied_payload(event_type, schema_version, object)
}

/// Reads a payload object by copying it, upcast, with its type added as the `type` tag.
fn from_copied_payload<T: EventCodec>(
    event_type: &str,
    schema_version: u32,
    object: &serde_json::Map<String, serde_json::Value>,
) -> Result<T, DomainError> {
    let mut object = upcast(event_type, schema_version, object.clone());
    object.insert(
        "type".to_string(),
        serde_json::Value::String(event_type.to_string()),
    );
    serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| DomainError::BadPayload {
        event_type: event_type.to_string(),
        reason: e.to_string(),
    })
}

/// A payload object read as if it held `"type": <event type>` first, borrowing every value.
mod tagged {
    use serde::de::value::BorrowedStrDeserializer;
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
    use serde_json::{Map, Value};

    pub(super) struct Payload<'a> {
        pub(super) tag: &'a str,
        pub(super) map: &'a Map<String, Value>,
    }

    impl<'de> Deserializer<'de> for Payload<'de> {
        type Error = serde_json::Error;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            visitor.visit_map(Entries {
                tag: Some(self.tag),
                entries: self.map.iter(),
                value: None,
            })
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
            enum identifier ignored_any
        }
    }

    struct Entries<'de> {
        /// The tag, until its key is read.
        tag: Option<&'de str>,
        entries: serde_json::map::Iter<'de>,
        /// The value of the key just read.
        value: Option<Next<'de>>,
    }

    enum Next<'de> {
        Tag(&'de str),
        Value(&'de Value),
    }

    impl<'de> MapAccess<'de> for Entries<'de> {
        type Error = serde_json::Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Self::Error> {
            let (key, next) = match self.tag.take() {
                Some(tag) => ("type", Next::Tag(tag)),
                None => match self.entries.next() {
                    Some((key, value)) => (key.as_str(), Next::Value(value)),
                    None => return Ok(None),
                },
            };
            self.value = Some(next);
            seed.deserialize(BorrowedStrDeserializer::new(key))
                .map(Some)
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, Self::Error> {
            match self.value.take() {
                Some(Next::Tag(tag)) => seed.deserialize(BorrowedStrDeserializer::new(tag)),
                Some(Next::Value(value)) => seed.deserialize(value),
                None => Err(serde::de::Error::custom("a value asked for before its key")),
            }
        }
    }
}

/// Brings an old payload to today's shape. Every event type is still at version 1, so there is
/// nothing to do yet; when a payload changes, bump its version and add the step from the old
/// version here, so stored bytes never need rewriting.
fn upcast(
    _event_type: &str,
    _schema_version: u32,
    payload: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_are_read_in_place_and_odd_ones_as_the_copying_way_reads_them() {
        use crate::testing::*;
        let events = [
            created(kyc_basic()),
            started(),
            passed(StepType::Liveness, 1, json!({"score": 0.9})),
            failed(StepType::DocumentCheck, 1, Some(3), false, "glare"),
            warning_raised(1, "DOCUMENT_EXPIRED"),
            assigned("rev-1"),
            approved(Some("rev-1")),
            declined("rev-1", "fraud"),
        ];
        for event in events {
            let payload = event.to_payload();
            let tagged = tagged::Payload {
                tag: event.event_type(),
                map: payload.as_object().expect("an object"),
            };
            // Read in place, not through the copying fallback.
            assert_eq!(
                ApplicantEvent::deserialize(tagged).ok(),
                Some(event.clone())
            );
            assert_eq!(
                ApplicantEvent::from_payload(event.event_type(), 1, &payload),
                Ok(event)
            );
        }
        // What the in-place read does not take gives the copying way's answer.
        let odd = [
            json!({"step": "aml", "attempt": 1, "type": "x"}),
            json!({"step": "nope", "attempt": 1}),
            json!({"attempt": 1}),
        ];
        for payload in odd {
            let copied = from_copied_payload::<ApplicantEvent>(
                "StepPassed",
                1,
                payload.as_object().expect("an object"),
            );
            assert_eq!(
                ApplicantEvent::from_payload("StepPassed", 1, &payload).map_err(|e| e.to_string()),
                copied.map_err(|e| e.to_string())
            );
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
            data: json!({"score": 0.2}),
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
