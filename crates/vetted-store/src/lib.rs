//! Vetted's event store: the event envelope, the per-stream SHA-256 hash chain, the
//! [`EventStore`] contract every backend implements, and the embedded backends
//! (in-memory for tests, sled as the durable default).
//!
//! Positions: global positions start at 1 (0 means "nothing yet", which is what a fresh
//! projection checkpoint holds); stream versions start at 0.
#![forbid(unsafe_code)]

mod batch;
pub mod chain;
#[cfg(feature = "contract")]
pub mod contract;
mod envelope;
mod error;
mod feed;
pub mod memory;
mod sealing;
pub mod sled_store;
pub mod verify;

pub use batch::{EventBatch, Frames, JsonEvents};
pub use envelope::{Actor, ActorKind, NewEvent, RecordedEvent};
pub use error::StoreError;
pub use memory::MemoryStore;
pub use sled_store::{open_db, SledStore};
pub use verify::{verify, verify_stream, Mismatch, MismatchReason, VerifyReport};

use async_trait::async_trait;
use futures::stream::BoxStream;

/// What the writer expects the stream's current version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(u64),
}

/// What an acknowledged (durable) append produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Global position of the first appended event.
    pub first_position: u64,
    /// Global position of the last appended event.
    pub last_position: u64,
    /// Stream version of the last appended event (the stream's new current version).
    pub stream_version: u64,
}

/// A live, gap-free feed of recorded events in global order.
pub type EventFeed = BoxStream<'static, Result<RecordedEvent, StoreError>>;

/// The event store contract (see `ARCHITECTURE.md`, "Event store contract").
///
/// Every backend passes `vetted_store::contract` (feature `contract`).
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` if its current version matches `expected`.
    ///
    /// Returns only once the events are durable. A mismatch is
    /// [`StoreError::WrongExpectedVersion`] carrying the actual version; nothing is written.
    /// An empty `events` is [`StoreError::EmptyAppend`].
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError>;

    /// Reads up to `max` events of `stream` with version >= `from_version`, in version order.
    /// An unknown stream reads as empty.
    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads up to `max` events with global position >= `from_position`, in global order.
    /// Only durable (flushed) events are visible.
    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads like [`EventStore::read_all`] (durable events only, global order, at most `max`,
    /// from `from_position`), but gives events as the backend keeps them: their stored JSON
    /// when it has it ([`EventBatch::Json`]: a reader can then decode only what it needs, on
    /// several threads), else decoded ([`EventBatch::Decoded`], the default).
    async fn read_all_batch(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<EventBatch, StoreError> {
        Ok(EventBatch::Decoded(
            self.read_all(from_position, max).await?,
        ))
    }

    /// Reads like [`EventStore::read_stream`] (versions from `from_version`, at most `max`), but
    /// gives events as the backend keeps them, as [`EventStore::read_all_batch`] does: an
    /// auditor's replay then decodes only the fields it shows.
    async fn read_stream_batch(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<EventBatch, StoreError> {
        Ok(EventBatch::Decoded(
            self.read_stream(stream, from_version, max).await?,
        ))
    }

    /// The current version of `stream`, or `None` if it has no events.
    async fn stream_version(&self, stream: &str) -> Result<Option<u64>, StoreError>;

    /// The global position of the last durable event (0 when the log is empty).
    async fn head(&self) -> Result<u64, StoreError>;

    /// Every event with global position >= `from_position`: first the stored ones, then live
    /// ones as they become durable, with no gap and no duplicate.
    fn subscribe_all(&self, from_position: u64) -> EventFeed;
}
