//! What the applicant read models read of an event: the envelope facts they show (when, who,
//! from where, which version) and the payload decoded once into the domain event.
//!
//! The live runner builds an [`ApplicantFact`] from a [`RecordedEvent`]; a rebuild builds it
//! from a [`DecodedEvent`], read from the stored JSON with only the fields projections read
//! (`crate::stored`), its strings left in the batch's text rather than copied out, because
//! reading envelopes was most of a rebuild's cost per event.
use std::borrow::Cow;
use std::ops::Range;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use vetted_domain::ApplicantEvent;
use vetted_store::{Actor, ActorKind, RecordedEvent};

use crate::stored::{self, Lean};
use crate::ProjectionError;

/// Prefix of every applicant stream id: `applicant-<uuid>`.
const APPLICANT_STREAM: &str = "applicant-";

/// Who caused an event and from where, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActorFact<'a> {
    /// system, applicant, reviewer, api or admin.
    pub kind: ActorKind,
    /// Reviewer id, API key id, applicant id...
    pub id: Option<&'a str>,
    /// IP address.
    pub ip: Option<&'a str>,
    /// Raw user agent.
    pub user_agent: Option<&'a str>,
    /// Operating system.
    pub os: Option<&'a str>,
    /// Browser.
    pub browser: Option<&'a str>,
}

impl<'a> From<&'a Actor> for ActorFact<'a> {
    fn from(actor: &'a Actor) -> Self {
        ActorFact {
            kind: actor.kind,
            id: actor.id.as_deref(),
            ip: actor.ip.as_deref(),
            user_agent: actor.user_agent.as_deref(),
            os: actor.os.as_deref(),
            browser: actor.browser.as_deref(),
        }
    }
}

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
    pub actor: ActorFact<'a>,
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
            actor: ActorFact::from(&recorded.actor),
            event,
        })
    }
}

/// A string of a decoded event: where it sits in its batch's text, or (`start` is
/// [`Text::OWN`]) which of the event's own strings it is (a string the JSON spelled with
/// escapes, or an event decoded from a `RecordedEvent`). Eight bytes: a batch holds
/// thousands of events, each moved a few times.
#[derive(Debug, Clone, Copy)]
struct Text {
    start: u32,
    len: u32,
}

impl Text {
    /// Marks a string kept by the event itself.
    const OWN: u32 = u32::MAX;

    /// `s`, as a span of `batch` when it lies in it, else kept in `own`.
    fn of(s: Cow<'_, str>, batch: &str, own: &mut Vec<Box<str>>) -> Text {
        if let Cow::Borrowed(b) = &s {
            // Addresses only: a string borrowed from the batch's text lies within it.
            let start = (b.as_ptr() as usize).wrapping_sub(batch.as_ptr() as usize);
            if start <= batch.len() && b.len() <= batch.len() - start {
                if let (Ok(start), Ok(len)) = (u32::try_from(start), u32::try_from(b.len())) {
                    if start != Text::OWN {
                        return Text { start, len };
                    }
                }
            }
        }
        Text::owned(s.into_owned(), own)
    }

    fn owned(s: String, own: &mut Vec<Box<str>>) -> Text {
        own.push(s.into_boxed_str());
        Text {
            start: Text::OWN,
            len: (own.len() - 1) as u32,
        }
    }

    /// The string, given the batch's text and the event's own strings.
    fn get<'a>(self, batch: &'a str, own: &'a [Box<str>]) -> &'a str {
        if self.start == Text::OWN {
            return own.get(self.len as usize).map_or("", |s| s);
        }
        let (start, len) = (self.start as usize, self.len as usize);
        batch.get(start..start + len).unwrap_or_default()
    }
}

/// An applicant event decoded for a rebuild: what an [`ApplicantFact`] borrows, with its
/// strings in the text of the batch it was read from.
#[derive(Debug, Clone)]
pub struct DecodedEvent {
    global_position: u64,
    stream_version: u64,
    event_id: Uuid,
    recorded_at: DateTime<Utc>,
    /// The stream id without `applicant-`.
    applicant_id: Text,
    tenant: Text,
    actor_kind: ActorKind,
    /// id, ip, user agent, os, browser.
    actor: [Option<Text>; 5],
    /// Strings not in the batch's text (usually none).
    own: Vec<Box<str>>,
    event: ApplicantEvent,
}

impl DecodedEvent {
    /// The fact projections read; `batch` is the text the event was read from (any text for
    /// an event decoded from a `RecordedEvent`).
    pub fn fact<'a>(&'a self, batch: &'a str) -> ApplicantFact<'a> {
        let own = &self.own;
        let actor = |i: usize| self.actor[i].map(|t| t.get(batch, own));
        ApplicantFact {
            global_position: self.global_position,
            applicant_id: self.applicant_id.get(batch, own),
            stream_version: self.stream_version,
            event_id: self.event_id,
            event_type: self.event.event_type(),
            recorded_at: self.recorded_at,
            tenant: self.tenant.get(batch, own),
            actor: ActorFact {
                kind: self.actor_kind,
                id: actor(0),
                ip: actor(1),
                user_agent: actor(2),
                os: actor(3),
                browser: actor(4),
            },
            event: &self.event,
        }
    }

    /// Global position of the event.
    pub fn global_position(&self) -> u64 {
        self.global_position
    }

    /// The applicant event, decoded.
    pub fn event(&self) -> &ApplicantEvent {
        &self.event
    }

    /// Decodes a recorded event; `Ok(None)` for events of other streams.
    pub fn from_recorded(recorded: RecordedEvent) -> Result<Option<Self>, ProjectionError> {
        let Some(id) = recorded.stream_id.strip_prefix(APPLICANT_STREAM) else {
            return Ok(None);
        };
        let mut own = Vec::new();
        let applicant_id = Text::owned(id.to_string(), &mut own);
        let event = crate::applicant_view::decode(&recorded)?;
        let Actor {
            kind,
            id,
            ip,
            user_agent,
            os,
            browser,
        } = recorded.actor;
        Ok(Some(DecodedEvent {
            global_position: recorded.global_position,
            stream_version: recorded.stream_version,
            event_id: recorded.event_id,
            recorded_at: recorded.recorded_at,
            applicant_id,
            tenant: Text::owned(recorded.tenant, &mut own),
            actor_kind: kind,
            actor: [id, ip, user_agent, os, browser].map(|s| s.map(|s| Text::owned(s, &mut own))),
            own,
            event,
        }))
    }

    /// Decodes the stored JSON `frame` of the event at `position` (a `RecordedEvent`, as the
    /// store keeps it), a slice of `batch`; `Ok(None)` for events of other streams, whose
    /// payload is not read.
    pub fn from_json(
        position: u64,
        frame: &str,
        batch: &str,
    ) -> Result<Option<Self>, ProjectionError> {
        let bad = |event_type: &str, reason: String| ProjectionError::BadEvent {
            position,
            event_type: event_type.to_string(),
            reason,
        };
        let decode = |lean: &Lean<'_>| {
            ApplicantEvent::from_payload_json(&lean.event_type, lean.schema_version, lean.payload)
        };
        let (lean, decoded) = stored::read(frame, |lean| {
            if !lean.stream_id.starts_with(APPLICANT_STREAM) {
                return Some(None);
            }
            decode(lean).ok().map(Some)
        })
        .map_err(|e| bad("", format!("stored envelope: {e}")))?;
        if !lean.stream_id.starts_with(APPLICANT_STREAM) {
            return Ok(None);
        }
        let event = match decoded.flatten() {
            Some(event) => event,
            None => decode(&lean).map_err(|e| bad(&lean.event_type, e.to_string()))?,
        };
        let Lean {
            global_position,
            stream_id,
            stream_version,
            event_id,
            recorded_at,
            tenant,
            actor,
            ..
        } = lean;
        let Some(applicant_id) = strip_applicant(stream_id) else {
            return Ok(None);
        };
        let mut own = Vec::new();
        let applicant_id = Text::of(applicant_id, batch, &mut own);
        let tenant = Text::of(tenant, batch, &mut own);
        let actor_strings = [
            actor.id,
            actor.ip,
            actor.user_agent,
            actor.os,
            actor.browser,
        ]
        .map(|s| s.map(|s| Text::of(s, batch, &mut own)));
        Ok(Some(DecodedEvent {
            global_position,
            stream_version,
            event_id,
            recorded_at,
            applicant_id,
            tenant,
            actor_kind: actor.kind,
            actor: actor_strings,
            own,
            event,
        }))
    }
}

/// The applicant id of an applicant stream id, keeping it borrowed where it was.
fn strip_applicant(stream_id: Cow<'_, str>) -> Option<Cow<'_, str>> {
    match stream_id {
        Cow::Borrowed(s) => s.strip_prefix(APPLICANT_STREAM).map(Cow::Borrowed),
        Cow::Owned(s) => s
            .strip_prefix(APPLICANT_STREAM)
            .map(|id| Cow::Owned(id.to_string())),
    }
}

/// The frames of a batch as one text: each frame's position and range in it.
pub(crate) struct BatchText {
    pub(crate) text: String,
    pub(crate) frames: Vec<(u64, Range<usize>)>,
}

impl BatchText {
    /// Takes the frames' bytes as text, checked as UTF-8 once; a frame that is not UTF-8 is
    /// damage, reported with its position.
    pub(crate) fn of(frames: vetted_store::JsonEvents) -> Result<BatchText, ProjectionError> {
        let (frames, bytes) = frames.into_parts();
        match String::from_utf8(bytes) {
            Ok(text) => Ok(BatchText { text, frames }),
            Err(e) => {
                let bytes = e.into_bytes();
                let (position, reason) = frames
                    .iter()
                    .find_map(|(position, range)| {
                        let frame = bytes.get(range.clone())?;
                        std::str::from_utf8(frame)
                            .err()
                            .map(|e| (*position, e.to_string()))
                    })
                    .unwrap_or((0, "not UTF-8".into()));
                Err(ProjectionError::BadEvent {
                    position,
                    event_type: String::new(),
                    reason: format!("stored envelope: {reason}"),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    fn sample_events() -> Vec<RecordedEvent> {
        sample::recorded_lives(21, vetted_domain::AppKey(Uuid::from_u128(3)), 30, 2)
    }

    fn stored(events: &[RecordedEvent]) -> BatchText {
        let mut frames = vetted_store::JsonEvents::new();
        for event in events {
            frames.push(event.global_position, &serde_json::to_vec(event).unwrap());
        }
        BatchText::of(frames).unwrap()
    }

    #[test]
    fn a_stored_envelope_decodes_to_the_same_fact_as_the_recorded_event() {
        let mut events = sample_events();
        assert!(events.len() > 200);
        // One envelope with escapes in its strings, read by serde rather than the scan.
        events[7].actor.user_agent = Some("Mozilla \"quoted\" \\ é".into());
        events[7].tenant = "tenant\twith a tab".into();
        let batch = stored(&events);
        for (recorded, (position, range)) in events.iter().zip(&batch.frames) {
            let frame = &batch.text[range.clone()];
            let parsed = DecodedEvent::from_json(*position, frame, &batch.text)
                .unwrap()
                .unwrap();
            let from_recorded = DecodedEvent::from_recorded(recorded.clone())
                .unwrap()
                .unwrap();
            let domain = crate::applicant_view::decode(recorded).unwrap();
            let expected = ApplicantFact::of(recorded, &domain).unwrap();
            for fact in [parsed.fact(&batch.text), from_recorded.fact("")] {
                assert_eq!(format!("{fact:?}"), format!("{expected:?}"));
            }
        }
    }

    #[test]
    fn events_of_other_streams_are_skipped_and_damage_is_reported_with_its_position() {
        let mut recorded = sample_events().remove(0);
        recorded.stream_id = format!("flow-{}", Uuid::from_u128(9));
        recorded.payload = serde_json::json!("not an applicant payload");
        let json = serde_json::to_string(&recorded).unwrap();
        assert!(DecodedEvent::from_json(7, &json, &json).unwrap().is_none());
        assert!(DecodedEvent::from_recorded(recorded).unwrap().is_none());
        for damaged in ["{\"globalPosition\":1", "[]", "{}"] {
            let err = DecodedEvent::from_json(7, damaged, damaged)
                .unwrap_err()
                .to_string();
            assert!(err.contains("position 7"), "{err}");
        }
        // A payload the scan cut where serde would not: read again by serde, which errs.
        let mut bad = sample_events().remove(2);
        bad.payload = serde_json::json!({"attempt": "one"});
        let json = serde_json::to_string(&bad).unwrap();
        let err = DecodedEvent::from_json(3, &json, &json)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("position 3") && err.contains(&bad.event_type),
            "{err}"
        );
        let mut frames = vetted_store::JsonEvents::new();
        frames.push(4, b"{\"ok\":1}");
        frames.push(5, b"\xff\xfe");
        let err = BatchText::of(frames).err().unwrap().to_string();
        assert!(err.contains("position 5"), "{err}");
    }

    #[test]
    fn recorded_at_reads_every_text_chrono_reads() {
        let event = sample_events().remove(1);
        let text = serde_json::to_string(&event).unwrap();
        let written = serde_json::to_string(&event.recorded_at).unwrap();
        for moment in [
            "2026-12-06T05:33:35.068984Z",
            "2026-12-06T05:33:35Z",
            "2026-12-06T06:33:35.1+01:00",
            "2026-12-06 05:33:35.068984Z",
        ] {
            let general: DateTime<Utc> = moment.parse().unwrap();
            let json = text.replacen(&written, &format!("\"{moment}\""), 1);
            let decoded = DecodedEvent::from_json(1, &json, &json).unwrap().unwrap();
            assert_eq!(decoded.recorded_at, general, "{moment}");
        }
        let json = text.replacen(&written, "\"yesterday\"", 1);
        assert!(DecodedEvent::from_json(1, &json, &json).is_err());
    }
}
