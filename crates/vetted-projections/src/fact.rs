//! What the applicant read models read of an event: the envelope facts they show (when, who,
//! from where, which version) and the payload decoded once into the domain event.
//!
//! The live runner builds an [`ApplicantFact`] from a [`RecordedEvent`]; a rebuild builds it
//! from a [`DecodedEvent`], parsed from the stored JSON with only the fields projections read
//! (the hashes and correlation ids are skipped, the payload goes straight into the domain
//! event), because parsing the whole envelope was most of a rebuild's cost per event.
use std::borrow::Cow;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use vetted_domain::ApplicantEvent;
use vetted_store::{Actor, ActorKind, RecordedEvent};

use crate::ProjectionError;

/// Prefix of every applicant stream id: `applicant-<uuid>`.
const APPLICANT_STREAM: &str = "applicant-";

/// One event of an applicant stream as the applicant read models see it.
#[derive(Debug, Clone, Copy)]
pub struct ApplicantFact<'a> {
    /// Order in the whole log.
    pub global_position: u64,
    /// The applicant id, as its stream id spells it (`applicant-<id>`).
    pub applicant_id: &'a str,
    /// Order in the applicant's stream, from 0.
    pub stream_version: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// The event type, e.g. `StepPassed`.
    pub event_type: &'a str,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// The application (app key) the event belongs to.
    pub tenant: &'a str,
    /// Who did it, from where.
    pub actor: &'a Actor,
    /// The payload, decoded.
    pub event: &'a ApplicantEvent,
}

impl<'a> ApplicantFact<'a> {
    /// The fact of a recorded event whose payload is `event`; `None` for other streams.
    pub fn of(recorded: &'a RecordedEvent, event: &'a ApplicantEvent) -> Option<Self> {
        Some(ApplicantFact {
            global_position: recorded.global_position,
            applicant_id: recorded.stream_id.strip_prefix(APPLICANT_STREAM)?,
            stream_version: recorded.stream_version,
            event_id: recorded.event_id,
            event_type: &recorded.event_type,
            recorded_at: recorded.recorded_at,
            tenant: &recorded.tenant,
            actor: &recorded.actor,
            event,
        })
    }
}

/// An applicant event decoded for a rebuild: what an [`ApplicantFact`] borrows.
#[derive(Debug, Clone)]
pub struct DecodedEvent {
    global_position: u64,
    stream_id: String,
    stream_version: u64,
    event_id: Uuid,
    event_type: String,
    recorded_at: DateTime<Utc>,
    tenant: String,
    actor: Actor,
    event: ApplicantEvent,
}

impl DecodedEvent {
    /// The fact projections read.
    pub fn fact(&self) -> ApplicantFact<'_> {
        ApplicantFact {
            global_position: self.global_position,
            applicant_id: &self.stream_id[APPLICANT_STREAM.len()..],
            stream_version: self.stream_version,
            event_id: self.event_id,
            event_type: &self.event_type,
            recorded_at: self.recorded_at,
            tenant: &self.tenant,
            actor: &self.actor,
            event: &self.event,
        }
    }

    /// Global position of the event.
    pub fn global_position(&self) -> u64 {
        self.global_position
    }

    /// Decodes a recorded event; `Ok(None)` for events of other streams.
    pub fn from_recorded(recorded: RecordedEvent) -> Result<Option<Self>, ProjectionError> {
        if !recorded.stream_id.starts_with(APPLICANT_STREAM) {
            return Ok(None);
        }
        let event = crate::applicant_view::decode(&recorded)?;
        Ok(Some(DecodedEvent {
            global_position: recorded.global_position,
            stream_id: recorded.stream_id,
            stream_version: recorded.stream_version,
            event_id: recorded.event_id,
            event_type: recorded.event_type,
            recorded_at: recorded.recorded_at,
            tenant: recorded.tenant,
            actor: recorded.actor,
            event,
        }))
    }

    /// Decodes the stored JSON of the event at `position` (a `RecordedEvent`, as the store
    /// keeps it); `Ok(None)` for events of other streams, whose payload is not read.
    pub fn from_json(position: u64, json: &[u8]) -> Result<Option<Self>, ProjectionError> {
        let bad = |reason: String| ProjectionError::BadEvent {
            position,
            event_type: String::new(),
            reason,
        };
        // Validating UTF-8 once and parsing text is cheaper than parsing bytes, where every
        // string is checked on its own.
        let text = std::str::from_utf8(json).map_err(|e| bad(e.to_string()))?;
        let lean: LeanEnvelope<'_> =
            serde_json::from_str(text).map_err(|e| bad(format!("stored envelope: {e}")))?;
        if !lean.stream_id.starts_with(APPLICANT_STREAM) {
            return Ok(None);
        }
        let event = ApplicantEvent::from_payload_json(
            &lean.event_type,
            lean.schema_version,
            lean.payload.get(),
        )
        .map_err(|e| ProjectionError::BadEvent {
            position,
            event_type: lean.event_type.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Some(DecodedEvent {
            global_position: lean.global_position,
            stream_id: lean.stream_id.into_owned(),
            stream_version: lean.stream_version,
            event_id: lean.event_id,
            event_type: lean.event_type.into_owned(),
            recorded_at: lean.recorded_at.0,
            tenant: lean.tenant.into_owned(),
            actor: lean.actor.into_actor(),
            event,
        }))
    }
}

/// The fields of a stored envelope projections read, borrowed from the JSON where possible.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanEnvelope<'a> {
    global_position: u64,
    #[serde(borrow)]
    stream_id: Cow<'a, str>,
    stream_version: u64,
    event_id: Uuid,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    schema_version: u32,
    recorded_at: RecordedAt,
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    #[serde(borrow)]
    actor: LeanActor<'a>,
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
    // The correlation ids and hashes are read past (serde skips unknown keys): projections
    // do not show them.
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanActor<'a> {
    kind: ActorKind,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    ip: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    user_agent: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    os: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    browser: Option<Cow<'a, str>>,
}

impl LeanActor<'_> {
    fn into_actor(self) -> Actor {
        let owned = |s: Option<Cow<'_, str>>| s.map(Cow::into_owned);
        Actor {
            kind: self.kind,
            id: owned(self.id),
            ip: owned(self.ip),
            user_agent: owned(self.user_agent),
            os: owned(self.os),
            browser: owned(self.browser),
        }
    }
}

/// A recorded-at time. Stores write RFC 3339, which `parse_from_rfc3339` reads in a sixth of
/// the time chrono's general `FromStr` (what `DateTime`'s serde form uses) takes; anything
/// else falls back to that general parser, so both read exactly the same texts.
struct RecordedAt(DateTime<Utc>);

impl<'de> serde::Deserialize<'de> for RecordedAt {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <Cow<'de, str>>::deserialize(deserializer)?;
        match DateTime::parse_from_rfc3339(&text) {
            Ok(t) => Ok(RecordedAt(t.with_timezone(&Utc))),
            Err(_) => text
                .parse::<DateTime<Utc>>()
                .map(RecordedAt)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    #[test]
    fn a_stored_envelope_decodes_to_the_same_fact_as_the_recorded_event() {
        let mut rng = sample::Rng::new(21);
        let app = vetted_domain::AppKey(Uuid::from_u128(3));
        let flow = sample::kyc_basic();
        let mut appends = Vec::new();
        for _ in 0..30 {
            appends.extend(sample::lifecycle(&mut rng, app, &flow, Utc::now(), 2));
        }
        let events = sample::record(&appends);
        assert!(events.len() > 200);
        for recorded in &events {
            let json = serde_json::to_vec(recorded).unwrap();
            let parsed = DecodedEvent::from_json(recorded.global_position, &json)
                .unwrap()
                .unwrap();
            let from_recorded = DecodedEvent::from_recorded(recorded.clone())
                .unwrap()
                .unwrap();
            let domain = crate::applicant_view::decode(recorded).unwrap();
            let expected = ApplicantFact::of(recorded, &domain).unwrap();
            for fact in [parsed.fact(), from_recorded.fact()] {
                assert_eq!(format!("{fact:?}"), format!("{expected:?}"));
            }
        }
    }

    #[test]
    fn events_of_other_streams_are_skipped_and_damage_is_reported_with_its_position() {
        let mut rng = sample::Rng::new(4);
        let app = vetted_domain::AppKey(Uuid::from_u128(3));
        let life = sample::lifecycle(&mut rng, app, &sample::kyc_basic(), Utc::now(), 0);
        let mut recorded = sample::record(&life).remove(0);
        recorded.stream_id = format!("flow-{}", Uuid::from_u128(9));
        recorded.payload = serde_json::json!("not an applicant payload");
        let json = serde_json::to_vec(&recorded).unwrap();
        assert!(DecodedEvent::from_json(7, &json).unwrap().is_none());
        assert!(DecodedEvent::from_recorded(recorded).unwrap().is_none());
        for damaged in [&b"{\"globalPosition\":1"[..], b"\xff\xfe", b"[]"] {
            let err = DecodedEvent::from_json(7, damaged).unwrap_err().to_string();
            assert!(err.contains("position 7"), "{err}");
        }
    }

    #[test]
    fn recorded_at_reads_every_text_chrono_reads() {
        for text in [
            "2026-12-06T05:33:35.068984Z",
            "2026-12-06T05:33:35Z",
            "2026-12-06T06:33:35.1+01:00",
            "2026-12-06 05:33:35.068984Z",
        ] {
            let json = serde_json::to_string(text).unwrap();
            let fast: RecordedAt = serde_json::from_str(&json).unwrap();
            let general: DateTime<Utc> = serde_json::from_str(&json).unwrap();
            assert_eq!(fast.0, general, "{text}");
        }
        assert!(serde_json::from_str::<RecordedAt>("\"yesterday\"").is_err());
    }
}
