//! Vetted's read side: projections that fold the event log, in global order, into sled read
//! models, each storing its checkpoint in the same atomic write as its rows; the runner that
//! feeds them; as-of replay; and zero-downtime rebuild into a new generation.
//!
//! A projection owns exactly one sled tree per generation. Its rows and its checkpoint live in
//! that tree and every batch of changes is one `apply_batch`, so a crash can neither re-apply
//! nor skip an event.
#![forbid(unsafe_code)]

mod rows;

pub use rows::{checkpoint_of, Rows, CHECKPOINT_KEY};

use vetted_store::RecordedEvent;

/// Errors of the read side.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] vetted_store::StoreError),
    #[error("read model storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("row {key} could not be decoded: {reason}")]
    Decode { key: String, reason: String },
    #[error("unknown projection {0}")]
    UnknownProjection(String),
    #[error("{0}")]
    Other(String),
}

/// A named read model fed by the log.
///
/// `apply` must be deterministic: the same events give the same rows, which is what lets
/// `verify` compare a rebuilt generation with the live one.
pub trait Projection: Send + Sync + 'static {
    /// Stable name, e.g. `applicant_view`; used in tree names, checkpoints and the admin API.
    fn name(&self) -> &'static str;

    /// Folds one event into the read model. Reads see the changes made earlier in the batch.
    fn apply(&self, rows: &mut Rows<'_>, event: &RecordedEvent) -> Result<(), ProjectionError>;
}
