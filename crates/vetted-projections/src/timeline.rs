//! The timeline: every applicant event as a readable entry — when, who, what, from where.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use vetted_domain::{ApplicantEvent, ApplicantId};
use vetted_store::{ActorKind, RecordedEvent};

use crate::applicant_view::decode;
use crate::codec::{Reader, Writer};
use crate::rows::RowStore;
use crate::{ApplicantFact, ApplicantProjection, ProjectionError, ReadModels};

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

    /// The entry for one applicant event as the read models see it (the same entry as
    /// [`TimelineEntry::of_decoded`] on the event it was read from).
    pub fn of_fact(fact: &ApplicantFact<'_>) -> TimelineEntry {
        let actor = fact.actor;
        let owned = |s: Option<&str>| s.map(str::to_string);
        TimelineEntry {
            at: fact.recorded_at,
            actor: ActorRef {
                kind: actor.kind,
                id: owned(actor.id),
            },
            action: fact.event_type.to_string(),
            summary: fact.event.summary(),
            ip: owned(actor.ip),
            user_agent: owned(actor.user_agent),
            os: owned(actor.os),
            browser: owned(actor.browser),
            version: fact.stream_version,
            event_id: fact.event_id,
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
    let mut key = Vec::with_capacity(app.len() + id.len() + 5 + 8);
    key.extend_from_slice(b"tl/");
    key.extend_from_slice(app.as_bytes());
    key.push(b'/');
    key.extend_from_slice(id.as_bytes());
    key.push(b'/');
    key
}

/// Stream versions per timeline row. A row per event made a rebuild write as many sled rows
/// as there are events (sled's per-insert cost dominated the rebuild); a row per chunk of
/// versions keeps the layout independent of how events were batched, so a live generation
/// and a rebuilt one hold the same bytes.
pub const CHUNK: u64 = 32;

/// The timeline projection: row `tl/<app>/<id>/<BE u64 first version of the chunk>` holds the
/// entries of versions `first..first + CHUNK`, one after the other, each in the compact
/// binary layout of `crate::codec` (tag byte 3, or 2 when the actor is the previous entry's;
/// about a third of the entry's JSON, and sled's cost per row grows with its size). Rows of the older JSON-lines layout are refused
/// on read: rebuild the timeline.
#[derive(Clone, Copy)]
pub struct TimelineProjection;

impl ApplicantProjection for TimelineProjection {
    fn name(&self) -> &'static str {
        TIMELINE
    }

    // Nanoseconds per event, measured by `examples/rebuild_cost` (see docs/benchmarks.md).
    fn fold_cost(&self) -> u32 {
        300
    }

    /// 3: an entry that spells its actor out starts with it (2: compact binary rows, the
    /// actor after the time; 1: JSON rows).
    fn layout(&self) -> u32 {
        3
    }

    fn apply_applicant<S: RowStore>(
        &self,
        rows: &mut S,
        fact: &ApplicantFact<'_>,
    ) -> Result<(), ProjectionError> {
        let first = fact.stream_version - fact.stream_version % CHUNK;
        thread_local! {
            /// The row key, spelled in a kept buffer (an event's row is known, not new).
            static KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        KEY.with_borrow_mut(|key| {
            key.clear();
            key.extend_from_slice(b"tl/");
            key.extend_from_slice(fact.tenant.as_bytes());
            key.push(b'/');
            key.extend_from_slice(fact.applicant_id.as_bytes());
            key.push(b'/');
            key.extend_from_slice(&first.to_be_bytes());
            rows.append_with_memo(key, |row, memo| encode_entry(row, memo, fact))
        })
    }
}

/// Layout tag of an entry that spells its actor out, first: kind, id, ip, user agent, os,
/// browser, then time, action, summary, stream version, event id.
const ENTRY_TAG: u8 = 3;

/// Layout tag of an entry of layout 2, read only: time, actor kind and id, action, summary,
/// ip, user agent, os, browser, stream version, event id.
const ENTRY_TAG_2: u8 = 1;

fn actor_code(kind: ActorKind) -> u8 {
    match kind {
        ActorKind::System => 0,
        ActorKind::Applicant => 1,
        ActorKind::Reviewer => 2,
        ActorKind::Api => 3,
        ActorKind::Admin => 4,
    }
}

const ACTOR_KINDS: [ActorKind; 5] = [
    ActorKind::System,
    ActorKind::Applicant,
    ActorKind::Reviewer,
    ActorKind::Api,
    ActorKind::Admin,
];

/// Marks an action stored as text rather than as its index in `ApplicantEvent::TYPES`.
const ACTION_AS_TEXT: u8 = u8::MAX;

/// Appends the entry of `event` to `row` (a timeline row, empty if new): the same fields as
/// [`TimelineEntry`], built straight from the event (no intermediate entry, no JSON). When
/// the actor (kind, id, ip, user agent, os, browser) is the previous entry's, as for two
/// thirds of the events, the entry says so in its tag instead of repeating ~80 bytes.
///
/// `memo`, if set, is where in the row the last entry that spells its actor out starts (what
/// the row's store remembers between appends, so that finding that actor does not walk the
/// whole row each time); it is set to that entry's start afterwards. That entry starts with
/// its actor's bytes, so the actor is the same exactly when they are this event's actor's
/// bytes (the encoding delimits itself).
fn encode_entry(
    row: &mut Vec<u8>,
    memo: &mut Option<u32>,
    fact: &ApplicantFact<'_>,
) -> Result<(), ProjectionError> {
    let last = match *memo {
        Some(at) => Some(at as usize),
        None => last_actor(row)?,
    };
    thread_local! {
        /// The actor's bytes and the summary, written in kept buffers rather than anew per
        /// event.
        static SCRATCH: std::cell::RefCell<(Vec<u8>, String)> =
            const { std::cell::RefCell::new((Vec::new(), String::new())) };
    }
    SCRATCH.with_borrow_mut(|(actor, summary)| {
        actor.clear();
        write_actor(&mut Writer(actor), fact);
        let same_actor = last.is_some_and(|at| {
            row.get(at) == Some(&ENTRY_TAG)
                && row
                    .get(at + 1..)
                    .is_some_and(|rest| rest.starts_with(actor))
        });
        let start = row.len();
        *memo = match (same_actor, last) {
            (true, Some(at)) => u32::try_from(at).ok(),
            _ => u32::try_from(start).ok(),
        };
        summary.clear();
        // Writing into a `String` cannot fail.
        let _ = fact.event.write_summary(summary);
        let mut w = Writer(row);
        if same_actor {
            w.u8(ENTRY_SAME_ACTOR);
        } else {
            w.u8(ENTRY_TAG);
            w.0.extend_from_slice(actor);
        }
        w.time(&fact.recorded_at);
        action(&mut w, fact.event_type);
        w.str(summary)
            .varint(fact.stream_version)
            .uuid(&fact.event_id);
    });
    Ok(())
}

/// An entry's actor as it spells it out: kind, id, ip, user agent, os, browser.
fn write_actor(w: &mut Writer<'_>, fact: &ApplicantFact<'_>) {
    let actor = fact.actor;
    w.u8(actor_code(actor.kind))
        .opt_str(actor.id)
        .opt_str(actor.ip)
        .opt_str(actor.user_agent)
        .opt_str(actor.os)
        .opt_str(actor.browser);
}

/// Layout tag of an entry whose actor is the previous entry's (the actor fields are left
/// out); the first entry of a row never has it.
const ENTRY_SAME_ACTOR: u8 = 2;

fn action(w: &mut Writer<'_>, event_type: &str) {
    match ApplicantEvent::TYPES.iter().position(|t| *t == event_type) {
        Some(i) if i < usize::from(ACTION_AS_TEXT) => w.u8(i as u8),
        _ => w.u8(ACTION_AS_TEXT).str(event_type),
    };
}

fn read_action(r: &mut Reader<'_>) -> Result<String, ProjectionError> {
    Ok(match r.u8()? {
        ACTION_AS_TEXT => r.string()?,
        i => ApplicantEvent::TYPES
            .get(usize::from(i))
            .ok_or_else(|| r.error(format_args!("unknown action {i}")))?
            .to_string(),
    })
}

/// Walks a row's entries without building them: where the last entry that spells its actor
/// out starts, `None` if there is none.
fn last_actor(row: &[u8]) -> Result<Option<usize>, ProjectionError> {
    let mut r = Reader::new(b"timeline row", row);
    let mut last = None;
    while !r.is_done() {
        let at = r.position();
        if skip_entry(&mut r)? {
            last = Some(at);
        }
    }
    Ok(last)
}

/// Skips the next entry; whether it spells its actor out.
fn skip_entry(r: &mut Reader<'_>) -> Result<bool, ProjectionError> {
    let tag = r.u8()?;
    let spelled = match tag {
        ENTRY_TAG => {
            skip_actor(r)?;
            r.skip_time()?;
            skip_action(r)?;
            r.skip_str()?;
            true
        }
        ENTRY_TAG_2 => {
            r.skip_time()?;
            r.u8()?;
            r.opt_bytes()?;
            skip_action(r)?;
            r.skip_str()?;
            for _ in 0..4 {
                r.opt_bytes()?;
            }
            true
        }
        ENTRY_SAME_ACTOR => {
            r.skip_time()?;
            skip_action(r)?;
            r.skip_str()?;
            false
        }
        other => return Err(r.error(format_args!("unknown timeline entry {other}"))),
    };
    r.varint()?;
    r.skip(16)?;
    Ok(spelled)
}

fn skip_actor(r: &mut Reader<'_>) -> Result<(), ProjectionError> {
    r.u8()?;
    for _ in 0..5 {
        r.opt_bytes()?;
    }
    Ok(())
}

fn skip_action(r: &mut Reader<'_>) -> Result<(), ProjectionError> {
    if r.u8()? == ACTION_AS_TEXT {
        r.skip_str()?;
    }
    Ok(())
}

/// Reads the next entry of a timeline row; `previous` is the entry before it in the row.
fn decode_entry(
    r: &mut Reader<'_>,
    previous: Option<&TimelineEntry>,
) -> Result<TimelineEntry, ProjectionError> {
    // Who, then the rest, which is the same for both tags of today's layout.
    let who = match r.u8()? {
        ENTRY_TAG => Who {
            actor: read_actor_kind(r)?,
            ip: r.opt_string()?,
            user_agent: r.opt_string()?,
            os: r.opt_string()?,
            browser: r.opt_string()?,
        },
        ENTRY_SAME_ACTOR => {
            let previous = previous
                .ok_or_else(|| r.error("the first entry of a row refers to a previous one"))?;
            Who {
                actor: previous.actor.clone(),
                ip: previous.ip.clone(),
                user_agent: previous.user_agent.clone(),
                os: previous.os.clone(),
                browser: previous.browser.clone(),
            }
        }
        ENTRY_TAG_2 => return decode_entry_2(r),
        b'{' => {
            return Err(r.error(
                "row in the older JSON layout; rebuild this projection (`vetted projections rebuild timeline`)",
            ))
        }
        tag => return Err(r.error(format_args!("unknown timeline entry {tag}"))),
    };
    Ok(TimelineEntry {
        at: r.time()?,
        action: read_action(r)?,
        summary: r.string()?,
        version: r.varint()?,
        event_id: r.uuid()?,
        actor: who.actor,
        ip: who.ip,
        user_agent: who.user_agent,
        os: who.os,
        browser: who.browser,
    })
}

/// Who did it and from where: the actor part of an entry.
struct Who {
    actor: ActorRef,
    ip: Option<String>,
    user_agent: Option<String>,
    os: Option<String>,
    browser: Option<String>,
}

/// An actor's kind and id.
fn read_actor_kind(r: &mut Reader<'_>) -> Result<ActorRef, ProjectionError> {
    let code = r.u8()?;
    let kind = *ACTOR_KINDS
        .get(usize::from(code))
        .ok_or_else(|| r.error(format_args!("unknown actor kind {code}")))?;
    Ok(ActorRef {
        kind,
        id: r.opt_string()?,
    })
}

/// The rest of an entry of layout 2 (after its tag).
fn decode_entry_2(r: &mut Reader<'_>) -> Result<TimelineEntry, ProjectionError> {
    let at = r.time()?;
    let actor = read_actor_kind(r)?;
    let action = read_action(r)?;
    Ok(TimelineEntry {
        at,
        actor,
        action,
        summary: r.string()?,
        ip: r.opt_string()?,
        user_agent: r.opt_string()?,
        os: r.opt_string()?,
        browser: r.opt_string()?,
        version: r.varint()?,
        event_id: r.uuid()?,
    })
}

/// The entries of one timeline row, in stream order.
fn decode_row(
    key: &[u8],
    value: &[u8],
    items: &mut Vec<TimelineEntry>,
) -> Result<(), ProjectionError> {
    let mut r = Reader::new(key, value);
    let first = items.len();
    while !r.is_done() {
        let entry = decode_entry(&mut r, items[first..].last())?;
        items.push(entry);
    }
    Ok(())
}

impl ReadModels {
    /// The live timeline of applicant `id` of application `app` (empty if unknown to that app).
    pub fn timeline(&self, app: &str, id: &ApplicantId) -> Result<Timeline, ProjectionError> {
        let tree = self.live_table(TIMELINE)?;
        let mut items = Vec::new();
        for row in tree.scan_prefix(prefix(app, &id.to_string())) {
            let (key, value) = row?;
            decode_row(&key, &value, &mut items)?;
        }
        Ok(Timeline { items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    #[test]
    fn every_entry_reads_back_from_its_row_exactly_as_built_from_the_event() {
        let events = sample::recorded_lives(11, vetted_domain::AppKey(Uuid::from_u128(7)), 20, 0);
        let mut row = Vec::new();
        let mut memo = None;
        let mut expected = Vec::new();
        for event in &events {
            let domain_event = decode(event).unwrap();
            let fact = ApplicantFact::of(event, &domain_event).unwrap();
            // Half the appends remember where the last actor is, half walk the row.
            if event.global_position % 2 == 0 {
                memo = None;
            }
            encode_entry(&mut row, &mut memo, &fact).unwrap();
            expected.push(TimelineEntry::of(event).unwrap());
        }
        let mut items = Vec::new();
        decode_row(b"tl/x", &row, &mut items).unwrap();
        assert_eq!(items, expected);
        // Each entry on its own (every actor written out) reads back the same, and is longer.
        let mut full = Vec::new();
        for event in &events {
            let mut one = Vec::new();
            let domain_event = decode(event).unwrap();
            let fact = ApplicantFact::of(event, &domain_event).unwrap();
            encode_entry(&mut one, &mut None, &fact).unwrap();
            assert_eq!(one[0], ENTRY_TAG);
            full.extend(one);
        }
        let mut again = Vec::new();
        decode_row(b"tl/x", &full, &mut again).unwrap();
        assert_eq!(again, expected);
        assert!(
            row.len() * 4 < full.len() * 3,
            "{} vs {}",
            row.len(),
            full.len()
        );
        let mut r = Reader::new(b"tl/x", &[ENTRY_SAME_ACTOR]);
        assert!(decode_entry(&mut r, None).is_err());
        assert_eq!(
            serde_json::to_vec(&items).unwrap(),
            serde_json::to_vec(&expected).unwrap()
        );
        // A cut row is an error, not a panic or a shorter timeline.
        let err = decode_row(b"tl/x", &row[..row.len() - 1], &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("ends early"), "{err}");
    }

    /// A row written by layout 2 (the actor after the time) still reads, and an entry
    /// appended to it spells its actor out in today's layout.
    #[test]
    fn layout_2_entries_read_and_are_followed_by_todays() {
        let events = sample::recorded_lives(5, vetted_domain::AppKey(Uuid::from_u128(7)), 1, 0);
        let (first, second) = (&events[0], &events[1]);
        let expected = [
            TimelineEntry::of(first).unwrap(),
            TimelineEntry::of(second).unwrap(),
        ];
        let old = &expected[0];
        let mut row = Vec::new();
        let mut w = Writer(&mut row);
        w.u8(ENTRY_TAG_2)
            .time(&old.at)
            .u8(actor_code(old.actor.kind))
            .opt_str(old.actor.id.as_deref());
        action(&mut w, &old.action);
        w.str(&old.summary)
            .opt_str(old.ip.as_deref())
            .opt_str(old.user_agent.as_deref())
            .opt_str(old.os.as_deref())
            .opt_str(old.browser.as_deref())
            .varint(old.version)
            .uuid(&old.event_id);
        assert_eq!(last_actor(&row).unwrap(), Some(0));
        let domain_event = decode(second).unwrap();
        let fact = ApplicantFact::of(second, &domain_event).unwrap();
        let mut memo = None;
        let start = row.len();
        encode_entry(&mut row, &mut memo, &fact).unwrap();
        assert_eq!(row[start], ENTRY_TAG);
        assert_eq!(memo, Some(start as u32));
        let mut items = Vec::new();
        decode_row(b"tl/x", &row, &mut items).unwrap();
        assert_eq!(items, expected);
    }
}
