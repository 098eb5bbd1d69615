//! Auditor replay: an applicant's view and timeline as of a moment, folded from its stream
//! with the same functions the live projections use, so a replay at `t` shows exactly what the
//! live read model showed at `t`.
use chrono::{DateTime, Utc};
use vetted_domain::ApplicantId;
use vetted_store::{EventStore, RecordedEvent};

use crate::{ApplicantView, ProjectionError, Timeline};

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

/// The view of applicant `id` as of `at` (`None`: now, straight from the log).
pub async fn view_as_of(
    store: &dyn EventStore,
    app: &str,
    id: &ApplicantId,
    at: Option<DateTime<Utc>>,
) -> Result<Option<ApplicantView>, ProjectionError> {
    ApplicantView::fold(&events_as_of(store, app, id, at).await?)
}

/// The timeline of applicant `id` as of `at` (`None`: now, straight from the log).
pub async fn timeline_as_of(
    store: &dyn EventStore,
    app: &str,
    id: &ApplicantId,
    at: Option<DateTime<Utc>>,
) -> Result<Timeline, ProjectionError> {
    Timeline::fold(&events_as_of(store, app, id, at).await?)
}
