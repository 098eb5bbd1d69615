//! Shared test fixtures: a projection that counts each applicant's events, and event builders.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use uuid::Uuid;
use vetted_projections::{Projection, ProjectionError, Rows};
use vetted_store::{Actor, EventStore, ExpectedVersion, NewEvent, RecordedEvent};

/// Counts events per applicant stream (`count/<stream>`) and remembers the last type
/// (`last/<stream>`); other streams are skipped. Fails on the event at `fail_at`, if set.
pub struct EventCount {
    pub fail_at: AtomicU64,
}

impl EventCount {
    pub fn new() -> Self {
        EventCount {
            fail_at: AtomicU64::new(0),
        }
    }

    pub fn failing_at(position: u64) -> Self {
        EventCount {
            fail_at: AtomicU64::new(position),
        }
    }

    pub fn heal(&self) {
        self.fail_at.store(0, Ordering::SeqCst);
    }
}

impl Projection for EventCount {
    fn name(&self) -> &'static str {
        "event_count"
    }

    fn apply(&self, rows: &mut Rows<'_>, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if !event.stream_id.starts_with("applicant-") {
            return Ok(());
        }
        // Half-apply first, so a failure shows that partial changes never reach the tree.
        rows.update_json::<u64, _>(format!("count/{}", event.stream_id).as_bytes(), |c| {
            *c = Some(c.unwrap_or(0) + 1)
        })?;
        if self.fail_at.load(Ordering::SeqCst) == event.global_position {
            return Err(ProjectionError::BadEvent {
                position: event.global_position,
                event_type: event.event_type.clone(),
                reason: "the test projection refuses this event".into(),
            });
        }
        rows.put(
            format!("last/{}", event.stream_id),
            event.event_type.clone(),
        );
        Ok(())
    }
}

/// A minimal event of type `event_type` for tests that do not need domain payloads.
pub fn raw_event(event_type: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: 1,
        tenant: "app-test".into(),
        actor: Actor::system(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        payload: serde_json::json!({"n": event_type}),
    }
}

/// Appends `per_stream` events to each of `streams` applicant streams, interleaved.
pub async fn append_round_robin(
    store: &dyn EventStore,
    streams: &[String],
    per_stream: usize,
) -> u64 {
    let mut last = 0;
    for i in 0..per_stream {
        for s in streams {
            let r = store
                .append(s, ExpectedVersion::Any, vec![raw_event(&format!("E{i}"))])
                .await
                .expect("append");
            last = r.last_position;
        }
    }
    last
}

/// Polls `check` every few milliseconds until it holds or `deadline` passes.
pub async fn eventually(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + deadline;
    while !check() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A log recorded over past days (from `vetted_projections::sample::record`), served
/// read-only: what a store holds after weeks of traffic, for offline rebuilds in tests.
pub struct HistoricalLog {
    pub events: Vec<RecordedEvent>,
}

#[async_trait::async_trait]
impl EventStore for HistoricalLog {
    async fn append(
        &self,
        _stream: &str,
        _expected: ExpectedVersion,
        _events: Vec<NewEvent>,
    ) -> Result<vetted_store::AppendResult, vetted_store::StoreError> {
        Err(vetted_store::StoreError::Backend(
            "the historical log is read-only".into(),
        ))
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, vetted_store::StoreError> {
        Ok(self
            .events
            .iter()
            .filter(|e| e.stream_id == stream && e.stream_version >= from_version)
            .take(max)
            .cloned()
            .collect())
    }

    async fn read_all(
        &self,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, vetted_store::StoreError> {
        let start = (from.max(1) - 1) as usize;
        Ok(self.events.iter().skip(start).take(max).cloned().collect())
    }

    async fn stream_version(&self, stream: &str) -> Result<Option<u64>, vetted_store::StoreError> {
        Ok(self
            .events
            .iter()
            .rev()
            .find(|e| e.stream_id == stream)
            .map(|e| e.stream_version))
    }

    async fn head(&self) -> Result<u64, vetted_store::StoreError> {
        Ok(self.events.len() as u64)
    }

    fn subscribe_all(&self, from: u64) -> vetted_store::EventFeed {
        let start = (from.max(1) - 1) as usize;
        let events: Vec<_> = self.events.iter().skip(start).cloned().map(Ok).collect();
        Box::pin(futures::stream::iter(events))
    }
}
