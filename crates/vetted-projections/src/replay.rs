//! Auditor replay: an applicant's view and timeline as of a moment, folded from its stream
//! with the same functions the live projections use, so a replay at `t` shows exactly what the
//! live read model showed at `t`.
use chrono::{DateTime, Utc};
use vetted_domain::ApplicantId;
use vetted_store::{EventBatch, EventStore, RecordedEvent};

use crate::fact::BatchText;
use crate::{
    ApplicantFact, ApplicantFold, ApplicantView, DecodedEvent, ProjectionError, Timeline,
    TimelineEntry,
};

/// Events read from the store per call while replaying.
const PAGE: usize = 1000;

/// The events of applicant `id` in application `app` recorded at or before `at` (every event
/// when `at` is `None`), in stream order. Empty if the applicant belongs to another app.
pub async fn events_as_of(
    store: &dyn EventStore,
    app: &str,
    id: &ApplicantId,
    at: Option<DateTime<Utc>>,
) -> Result<Vec<RecordedEvent>, ProjectionError> {
    let stream = id.stream();
    let mut events = Vec::new();
    let mut from = 0;
    loop {
        let page = store.read_stream(&stream, from, PAGE).await?;
        let Some(last) = page.last() else { break };
        from = last.stream_version + 1;
        let full = page.len() == PAGE;
        events.extend(
            page.into_iter()
                .filter(|e| at.is_none_or(|t| e.recorded_at <= t)),
        );
        if !full {
            break;
        }
    }
    if events.first().is_some_and(|e| e.tenant != app) {
        return Ok(Vec::new());
    }
    Ok(events)
}

/// An applicant's events as of a moment, decoded as a rebuild decodes them: read as the
/// store keeps them ([`EventStore::read_stream_batch`]: the embedded log's stored JSON), only
/// the fields the read models show decoded, strings left in the page's text. Folding these
/// gives what folding [`events_as_of`] gives (the facts are the same; tested), at about half
/// the cost per event.
struct Replayed {
    pages: Vec<Page>,
}

/// A page of an applicant's stream.
struct Page {
    /// The stored text the events' strings lie in (empty when the store gave decoded events).
    text: String,
    events: Vec<DecodedEvent>,
}

impl Page {
    /// The events of `batch`, decoded, and the version of its last event (`None`: the batch is
    /// empty). An event recorded after `at` does not count, even if this engine cannot read it
    /// (a newer payload version): it is skipped, as [`events_as_of`] skips it.
    fn of(
        batch: EventBatch,
        at: Option<DateTime<Utc>>,
    ) -> Result<Option<(Page, u64)>, ProjectionError> {
        let after = |event: &RecordedEvent| at.is_some_and(|t| event.recorded_at > t);
        // The version of the last event when it was skipped rather than decoded.
        let mut skipped_last = None;
        let page = match batch {
            EventBatch::Json(frames) => {
                let text = BatchText::of(frames)?;
                let mut events = Vec::with_capacity(text.frames.len());
                for (position, range) in &text.frames {
                    let frame = text.text.get(range.clone()).unwrap_or_default();
                    skipped_last = None;
                    match DecodedEvent::from_json(*position, frame, &text.text) {
                        Ok(event) => events.extend(event),
                        Err(e) => match serde_json::from_str::<RecordedEvent>(frame) {
                            Ok(event) if after(&event) => skipped_last = Some(event.stream_version),
                            _ => return Err(e),
                        },
                    }
                }
                Page {
                    text: text.text,
                    events,
                }
            }
            EventBatch::Decoded(recorded) => {
                let mut events = Vec::with_capacity(recorded.len());
                for event in recorded {
                    skipped_last = after(&event).then_some(event.stream_version);
                    if skipped_last.is_none() {
                        events.extend(DecodedEvent::from_recorded(event)?);
                    }
                }
                Page {
                    text: String::new(),
                    events,
                }
            }
        };
        let last_read = page
            .events
            .last()
            .map(|e| e.fact(&page.text).stream_version);
        Ok(skipped_last.or(last_read).map(|last| (page, last)))
    }
}

impl Replayed {
    async fn read(
        store: &dyn EventStore,
        app: &str,
        id: &ApplicantId,
        at: Option<DateTime<Utc>>,
    ) -> Result<Replayed, ProjectionError> {
        let stream = id.stream();
        let mut pages = Vec::new();
        let mut from = 0;
        loop {
            let batch = store.read_stream_batch(&stream, from, PAGE).await?;
            let full = batch.len() == PAGE;
            let Some((mut page, last)) = Page::of(batch, at)? else {
                break;
            };
            from = last + 1;
            page.events
                .retain(|e| at.is_none_or(|t| e.fact(&page.text).recorded_at <= t));
            pages.push(page);
            if !full {
                break;
            }
        }
        let mut replayed = Replayed { pages };
        if replayed.facts().next().is_some_and(|f| f.tenant != app) {
            replayed.pages.clear();
        }
        Ok(replayed)
    }

    /// The facts, in stream order.
    fn facts(&self) -> impl Iterator<Item = ApplicantFact<'_>> {
        self.pages
            .iter()
            .flat_map(|page| page.events.iter().map(|e| e.fact(&page.text)))
    }
}

/// The view of applicant `id` as of `at` (`None`: now, straight from the log).
pub async fn view_as_of(
    store: &dyn EventStore,
    app: &str,
    id: &ApplicantId,
    at: Option<DateTime<Utc>>,
) -> Result<Option<ApplicantView>, ProjectionError> {
    let replayed = Replayed::read(store, app, id, at).await?;
    let mut fold = ApplicantFold::default();
    for fact in replayed.facts() {
        fold.apply_fact(&fact);
    }
    Ok(fold.view())
}

/// The timeline of applicant `id` as of `at` (`None`: now, straight from the log).
pub async fn timeline_as_of(
    store: &dyn EventStore,
    app: &str,
    id: &ApplicantId,
    at: Option<DateTime<Utc>>,
) -> Result<Timeline, ProjectionError> {
    let replayed = Replayed::read(store, app, id, at).await?;
    Ok(Timeline {
        items: replayed
            .facts()
            .map(|fact| TimelineEntry::of_fact(&fact))
            .collect(),
    })
}
