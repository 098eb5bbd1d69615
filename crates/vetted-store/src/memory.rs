//! In-memory backend for tests: the same semantics as sled (expected versions, hash chain,
//! gap-free `subscribe_all`), nothing on disk. Events are kept decoded, so `read_all_batch`
//! hands them out decoded (the trait's default).
use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::watch;

use crate::sealing::{self, StreamHead};
use crate::{
    chain, feed, AppendResult, EventFeed, EventStore, ExpectedVersion, NewEvent, RecordedEvent,
    StoreError,
};

#[derive(Default)]
struct Log {
    /// `events[p - 1]` holds global position `p`.
    events: Vec<RecordedEvent>,
    /// Global positions of each stream's events, by version.
    streams: HashMap<String, Vec<u64>>,
}

impl Log {
    fn head_of(&self, stream: &str) -> Option<StreamHead> {
        let positions = self.streams.get(stream)?;
        let last = *positions.last()?;
        let event = self.events.get(usize::try_from(last - 1).ok()?)?;
        Some(StreamHead {
            version: event.stream_version,
            hash: event.hash.clone(),
        })
    }

    fn range(&self, from: u64, max: usize, upto: u64) -> Vec<RecordedEvent> {
        let start = usize::try_from(from.max(1) - 1).unwrap_or(usize::MAX);
        let end = usize::try_from(upto)
            .unwrap_or(usize::MAX)
            .min(self.events.len());
        if start >= end {
            return Vec::new();
        }
        self.events[start..end].iter().take(max).cloned().collect()
    }
}

/// An event store held in memory; cheap to clone (clones share the log).
#[derive(Clone)]
pub struct MemoryStore {
    log: Arc<RwLock<Log>>,
    /// Dropped with the last clone, which ends every subscription cleanly.
    durable: Arc<watch::Sender<u64>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let (tx, _rx) = watch::channel(0);
        MemoryStore {
            log: Arc::new(RwLock::new(Log::default())),
            durable: Arc::new(tx),
        }
    }

    // No code path panics while holding the lock, so a poisoned lock still guards a whole log.
    fn read(&self) -> RwLockReadGuard<'_, Log> {
        self.log.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Log> {
        self.log.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        if events.is_empty() {
            return Err(StoreError::EmptyAppend);
        }
        let mut log = self.write();
        let head = log.head_of(stream);
        sealing::check_expected(stream, expected, head.as_ref().map(|h| h.version))?;
        let first_position = log.events.len() as u64 + 1;
        let (recorded, new_head) = sealing::seal_append(
            stream,
            head.as_ref(),
            events,
            first_position,
            chain::truncate_to_micros(Utc::now()),
        );
        let last_position = first_position + recorded.len() as u64 - 1;
        log.streams
            .entry(stream.to_string())
            .or_default()
            .extend(first_position..=last_position);
        log.events.extend(recorded);
        // Published under the lock so heads are announced in order.
        self.durable.send_replace(last_position);
        Ok(AppendResult {
            first_position,
            last_position,
            stream_version: new_head.version,
        })
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let log = self.read();
        let Some(positions) = log.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let start = usize::try_from(from_version).unwrap_or(usize::MAX);
        Ok(positions
            .iter()
            .skip(start)
            .take(max)
            .filter_map(|p| log.events.get(usize::try_from(*p - 1).ok()?).cloned())
            .collect())
    }

    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(self.read().range(from_position, max, u64::MAX))
    }

    async fn stream_version(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.read().head_of(stream).map(|h| h.version))
    }

    async fn head(&self) -> Result<u64, StoreError> {
        Ok(self.read().events.len() as u64)
    }

    fn subscribe_all(&self, from_position: u64) -> EventFeed {
        let log = Arc::clone(&self.log);
        let reader = move |from: u64, max: usize, upto: u64| {
            let log = log.read().unwrap_or_else(|e| e.into_inner());
            Ok(log.range(from, max, upto))
        };
        feed::follow(Box::new(reader), self.durable.subscribe(), from_position)
    }
}
