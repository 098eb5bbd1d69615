//! The timeline: every applicant event as a readable entry — when, who, what, from where.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use vetted_domain::{ApplicantEvent, ApplicantId};
use vetted_store::{ActorKind, RecordedEvent};

use crate::applicant_view::decode;
use crate::{ApplicantProjection, ProjectionError, ReadModels, Rows};

/// Name of the timeline projection.
pub const TIMELINE: &str = "timeline";

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActorRef {
    /// system, applicant, reviewer, api or admin.
    pub kind: ActorKind,
    /// Reviewer id, API key id...; `None` for the system.
    pub id: Option<String>,
}

/// One line of an applicant's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// Who did it.
    pub actor: ActorRef,
    /// The event type, e.g. `StepPassed`.
    pub action: String,
    /// One readable line, e.g. `document_check passed (attempt 1)`.
    pub summary: String,
    /// IP address of the actor.
    pub ip: Option<String>,
    /// User agent of the actor.
    pub user_agent: Option<String>,
    /// Operating system of the actor.
    pub os: Option<String>,
    /// Browser of the actor.
    pub browser: Option<String>,
    /// Stream version of the event.
    pub version: u64,
    /// The event's id, to find it in `GET /v1/applicants/{id}/events`.
    pub event_id: Uuid,
}

impl TimelineEntry {
    /// The entry for one recorded applicant event.
    pub fn of(event: &RecordedEvent) -> Result<TimelineEntry, ProjectionError> {
        Ok(Self::of_decoded(event, &decode(event)?))
    }

    /// The entry for one recorded applicant event whose payload is already decoded.
    pub fn of_decoded(event: &RecordedEvent, domain_event: &ApplicantEvent) -> TimelineEntry {
        let actor = &event.actor;
        TimelineEntry {
            at: event.recorded_at,
            actor: ActorRef {
                kind: actor.kind,
                id: actor.id.clone(),
            },
            action: event.event_type.clone(),
            summary: domain_event.summary(),
            ip: actor.ip.clone(),
            user_agent: actor.user_agent.clone(),
            os: actor.os.clone(),
            browser: actor.browser.clone(),
            version: event.stream_version,
            event_id: event.event_id,
        }
    }
}

/// An applicant's timeline, oldest first; on the wire `{"items":[...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The entries, in stream order.
    pub items: Vec<TimelineEntry>,
}

impl Timeline {
    /// The timeline of an applicant's recorded events (stream order).
    pub fn fold(events: &[RecordedEvent]) -> Result<Timeline, ProjectionError> {
        Ok(Timeline {
            items: events
                .iter()
                .map(TimelineEntry::of)
                .collect::<Result<_, _>>()?,
        })
    }
}

fn prefix(app: &str, id: &str) -> Vec<u8> {
    format!("tl/{app}/{id}/").into_bytes()
}

/// Stream versions per timeline row. A row per event made a rebuild write as many sled rows
/// as there are events (sled's per-insert cost dominated the rebuild); a row per chunk of
/// versions keeps the layout independent of how events were batched, so a live generation
/// and a rebuilt one hold the same bytes.
pub const CHUNK: u64 = 32;

/// The timeline projection: row `tl/<app>/<id>/<BE u64 first version of the chunk>` holds the
/// entries of versions `first..first + CHUNK`, each one JSON object followed by a newline.
pub struct TimelineProjection;

impl ApplicantProjection for TimelineProjection {
    fn name(&self) -> &'static str {
        TIMELINE
    }

    fn apply_applicant(
        &self,
        rows: &mut Rows<'_>,
        event: &RecordedEvent,
        id: &str,
        domain_event: &ApplicantEvent,
    ) -> Result<(), ProjectionError> {
        let mut key = prefix(&event.tenant, id);
        let first = event.stream_version - event.stream_version % CHUNK;
        key.extend_from_slice(&first.to_be_bytes());
        let entry = TimelineEntry::of_decoded(event, domain_event);
        let mut line = serde_json::to_vec(&entry)
            .map_err(|e| ProjectionError::Other(format!("timeline entry not encodable: {e}")))?;
        // serde_json escapes newlines inside strings, so a newline always ends an entry.
        line.push(b'\n');
        rows.append(&key, &line)
    }
}

impl ReadModels {
    /// The live timeline of applicant `id` of application `app` (empty if unknown to that app).
    pub fn timeline(&self, app: &str, id: &ApplicantId) -> Result<Timeline, ProjectionError> {
        let tree = self.live_tree(TIMELINE)?;
        let mut items = Vec::new();
        for row in tree.scan_prefix(prefix(app, &id.to_string())) {
            let (key, value) = row?;
            for entry in serde_json::Deserializer::from_slice(&value).into_iter() {
                items.push(entry.map_err(|e| ProjectionError::Decode {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: e.to_string(),
                })?);
            }
        }
        Ok(Timeline { items })
    }
}
