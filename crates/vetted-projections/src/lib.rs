//! Vetted's read side: projections that fold the event log, in global order, into sled read
//! models, each storing its checkpoint in the same atomic write as its rows; the runner that
//! feeds them; as-of replay; and zero-downtime rebuild into a new generation.
//!
//! A projection owns exactly one sled tree per generation. Its rows and its checkpoint live in
//! that tree and every batch of changes is one `apply_batch`, so a crash can neither re-apply
//! nor skip an event.
#![forbid(unsafe_code)]

pub mod applicant_list;
pub mod applicant_view;
mod bulk;
mod codec;
pub mod dashboard;
mod digest;
mod fact;
mod generation;
mod pass;
mod read_models;
mod rebuild;
pub mod replay;
pub mod reviewer_queue;
mod rows;
/// Public for the `run_rows` example and the coming rebuild into run files; not a stable API.
#[doc(hidden)]
pub mod run;
mod runner;
#[doc(hidden)]
pub mod sample;
mod stored;
mod table;
pub mod timeline;
mod view_codec;

pub use applicant_list::{ApplicantListEntry, ApplicantPage, ListFilter, Page};
pub use applicant_view::{ApplicantFold, ApplicantView, Device, FlowRef};
pub use bulk::{Builder, RowSink};
pub use dashboard::{Dashboard, DashboardPeriod};
pub use reviewer_queue::{QueueEntry, ReviewerQueue};
pub use timeline::{Timeline, TimelineEntry};

pub use digest::{digest_table, digest_tree, Digest};
pub use fact::{ActorFact, ApplicantFact, DecodedEvent};
pub use generation::{Generations, DEFAULT_REBUILD_MEMORY, META_TREE};
pub use read_models::{ProjectionStatus, ReadModels};
pub use rebuild::{rebuild, verify, RebuildProgress, RebuildReport, VerifyReport};
pub use rows::{checkpoint_of, Rows, CHECKPOINT_KEY};
pub use runner::{Runner, BATCH};
pub use table::{Table, TableIter};

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
    /// A stored event could not be folded (unknown type or bad payload): the log needs an
    /// upcaster, or the projection a fix; the projection stays at the event before it.
    #[error("event at global position {position} ({event_type}) cannot be projected: {reason}")]
    BadEvent {
        position: u64,
        event_type: String,
        reason: String,
    },
    /// `wait_for` gave up: the projection is behind the position the caller needs.
    #[error("projection {projection} is at checkpoint {checkpoint}, still short of position {wanted} after {waited_ms} ms; check `GET /v1/projections` for lag or errors")]
    Lagging {
        projection: String,
        checkpoint: u64,
        wanted: u64,
        waited_ms: u64,
    },
    /// A run file (the sorted, immutable base of a rebuilt generation) could not be written or
    /// read, or is damaged; the reason says which, and what to do.
    #[error("read model file {path}: {reason}")]
    RunFile { path: String, reason: String },
    /// Another rebuild or verify of the same projection is running; wait for it to finish.
    #[error("projection {0} is already being rebuilt or verified; wait for that run to finish")]
    RebuildInProgress(String),
}

/// A named read model fed by the log.
///
/// `apply` must be deterministic: the same events give the same rows, which is what lets
/// `verify` compare a rebuilt generation with the live one.
pub trait Projection: Send + Sync + 'static {
    /// Stable name, e.g. `applicant_view`; used in tree names, checkpoints and the admin API.
    fn name(&self) -> &'static str;

    /// Version of the projection's row layout. Raise it when rows change shape: a live
    /// generation written with another layout is rebuilt when the engine starts
    /// ([`ReadModels::stale_layouts`]).
    fn layout(&self) -> u32 {
        1
    }

    /// Folds one event into the read model. Reads see the changes made earlier in the batch.
    fn apply(&self, rows: &mut Rows<'_>, event: &RecordedEvent) -> Result<(), ProjectionError>;

    /// Like [`Projection::apply`], given the applicant event already decoded from the payload
    /// (`None`: not decoded; decode it yourself). A rebuild decodes each event once for all
    /// projections; projections that read applicant events override this to skip decoding.
    fn apply_decoded(
        &self,
        rows: &mut Rows<'_>,
        event: &RecordedEvent,
        decoded: Option<&vetted_domain::ApplicantEvent>,
    ) -> Result<(), ProjectionError> {
        let _ = decoded;
        self.apply(rows, event)
    }

    /// Whether row `key` takes part in `verify`'s digest. Rows written only for side effects
    /// (an outbox, which a muted rebuild does not write) return `false`.
    fn in_digest(&self, _key: &[u8]) -> bool {
        true
    }

    /// A rebuild's in-memory fold of this read model, if it has one: a rebuild then folds the
    /// log with it and writes every row once, in key order, instead of applying batches
    /// through [`Rows`]. Its rows must be exactly those [`Projection::apply`] leaves (the
    /// built-in read models run the same fold both ways; `verify` compares them).
    fn builder(&self) -> Option<Box<dyn Builder>> {
        None
    }

    /// Called when a rebuilt generation replaces the live one, while the live runner is
    /// paused, before the old tree is dropped: a side-effecting projection copies the rows it
    /// must not lose (undelivered outbox entries) from `old` to `new`.
    fn on_switch(&self, _old: &sled::Tree, _new: &sled::Tree) -> Result<(), ProjectionError> {
        Ok(())
    }
}

/// A read model of applicant streams: events of other streams only move its checkpoint, and
/// its fold is written once against [`rows::RowStore`], so the live runner runs it over
/// [`Rows`] and a rebuild over an in-memory [`bulk::BulkRows`].
pub(crate) trait ApplicantProjection: Clone + Send + Sync + 'static {
    /// Stable name (see [`Projection::name`]).
    fn name(&self) -> &'static str;

    /// Version of the row layout (see [`Projection::layout`]).
    fn layout(&self) -> u32 {
        1
    }

    /// What its rebuild fold costs per event, relative to the others (see
    /// [`Builder::fold_cost`]).
    fn fold_cost(&self) -> u32 {
        bulk::DEFAULT_FOLD_COST
    }

    /// Folds one event of an applicant into the read model.
    fn apply_applicant<S: rows::RowStore>(
        &self,
        rows: &mut S,
        fact: &ApplicantFact<'_>,
    ) -> Result<(), ProjectionError>;
}

impl<T: ApplicantProjection> Projection for T {
    fn name(&self) -> &'static str {
        ApplicantProjection::name(self)
    }

    fn layout(&self) -> u32 {
        ApplicantProjection::layout(self)
    }

    fn apply(&self, rows: &mut Rows<'_>, event: &RecordedEvent) -> Result<(), ProjectionError> {
        self.apply_decoded(rows, event, None)
    }

    fn apply_decoded(
        &self,
        rows: &mut Rows<'_>,
        event: &RecordedEvent,
        decoded: Option<&vetted_domain::ApplicantEvent>,
    ) -> Result<(), ProjectionError> {
        if applicant_view::applicant_of(event).is_none() {
            return Ok(());
        }
        let domain_event = applicant_view::decoded_or_decode(event, decoded)?;
        match ApplicantFact::of(event, &domain_event) {
            Some(fact) => self.apply_applicant(rows, &fact),
            None => Ok(()),
        }
    }

    fn builder(&self) -> Option<Box<dyn Builder>> {
        Some(Box::new(bulk::BulkBuilder::new(self.clone())))
    }
}
