//! The registry of projections over one sled database: each projection's live generation,
//! its checkpoint (watchable, for read-your-writes) and its status. Query functions for the
//! HTTP API live beside each read model (`applicant_view.rs`, `timeline.rs`, ...).
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{watch, Mutex};
use vetted_store::EventStore;

use crate::{Generations, Projection, ProjectionError, Table};

/// One projection's place in the registry.
pub(crate) struct Slot {
    pub(crate) projection: Arc<dyn Projection>,
    live: RwLock<LiveTree>,
    /// Held by the runner while it applies and commits a batch, and by a rebuild while it
    /// finishes the tail and switches generations: whoever holds it is the only writer.
    pub(crate) writer: Mutex<()>,
    /// Held for the whole of a rebuild or verify, so two never race on generations.
    pub(crate) rebuild: Mutex<()>,
    checkpoint: watch::Sender<u64>,
    last_error: std::sync::Mutex<Option<String>>,
    /// Why the live generation cannot be read (its base file is missing or damaged): it must
    /// be rebuilt before it is run or served.
    unreadable: std::sync::Mutex<Option<String>>,
}

#[derive(Clone)]
pub(crate) struct LiveTree {
    pub(crate) generation: u64,
    pub(crate) table: Table,
}

impl Slot {
    pub(crate) fn name(&self) -> &'static str {
        self.projection.name()
    }

    /// The live generation and its tree.
    pub(crate) fn live(&self) -> LiveTree {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `live` the rows queries and the runner use (after the generation table switched).
    pub(crate) fn set_live(&self, live: LiveTree, checkpoint: u64) {
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = live;
        *self.unreadable.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.checkpoint.send_replace(checkpoint);
    }

    /// Why the live generation cannot be read, if it cannot.
    pub(crate) fn unreadable(&self) -> Option<String> {
        self.unreadable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Publishes a newly committed checkpoint to `wait_for` callers.
    pub(crate) fn committed(&self, checkpoint: u64) {
        // Clear the error first, so whoever wakes on the new checkpoint sees a healthy status.
        self.set_error(None);
        self.checkpoint.send_if_modified(|cp| {
            let moved = checkpoint > *cp;
            if moved {
                *cp = checkpoint;
            }
            moved
        });
    }

    pub(crate) fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    fn error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Where a projection stands, for `GET /v1/projections` and `vetted projections status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// Global position of the last event applied (0: none yet).
    pub checkpoint: u64,
    /// Global position of the last durable event in the log.
    pub head: u64,
    /// Events not applied yet (`head - checkpoint`).
    pub lag: u64,
    /// The live generation.
    pub generation: u64,
    /// Whether a rebuild or verify is running.
    pub rebuilding: bool,
    /// The last error the runner hit, cleared by the next successful batch.
    pub error: Option<String>,
}

/// The read side's projections over one sled database.
pub struct ReadModels {
    generations: Generations,
    slots: RwLock<Vec<Arc<Slot>>>,
}

impl ReadModels {
    /// Opens the built-in read models (applicant view, timeline, applicant list, dashboard,
    /// reviewer queue) over `db`; register side-effecting projectors with [`Self::register`].
    /// Rebuilt rows go into `db`'s trees; [`ReadModels::open_in`] keeps them in base files.
    pub fn open(db: sled::Db) -> Result<Self, ProjectionError> {
        Self::with_projections(db, crate::applicant_view::read_models())
    }

    /// Like [`ReadModels::open`], a rebuild writing the rows its builders fold into base run
    /// files in `runs` (one sequential file per generation, under its tree: see
    /// `crate::table`), which is what makes a rebuild fast.
    pub fn open_in(db: sled::Db, runs: &std::path::Path) -> Result<Self, ProjectionError> {
        Self::with_projections_in(db, runs, crate::applicant_view::read_models())
    }

    /// Opens `projections` over `db`, each on its live generation.
    pub fn with_projections(
        db: sled::Db,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Result<Self, ProjectionError> {
        Self::with_generations(Generations::open(&db)?, projections)
    }

    /// Like [`ReadModels::with_projections`], with base run files in `runs`.
    pub fn with_projections_in(
        db: sled::Db,
        runs: &std::path::Path,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Result<Self, ProjectionError> {
        Self::with_generations(Generations::open_in(&db, runs)?, projections)
    }

    fn with_generations(
        generations: Generations,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Result<Self, ProjectionError> {
        let read_models = ReadModels {
            generations,
            slots: RwLock::new(Vec::new()),
        };
        for projection in projections {
            read_models.register(projection)?;
        }
        Ok(read_models)
    }

    /// Adds a projection (e.g. the webhook projector) on its live generation.
    ///
    /// Register before starting a [`crate::Runner`]: the runner feeds the projections
    /// registered when it starts.
    pub fn register(&self, projection: Arc<dyn Projection>) -> Result<(), ProjectionError> {
        let name = projection.name();
        if self.slot(name).is_ok() {
            return Err(ProjectionError::Other(format!(
                "projection {name} is registered twice; give it a unique name"
            )));
        }
        let generation = self.generations.live(name)?;
        // A generation whose base file cannot be read is held with its tree alone, marked
        // unreadable: the engine rebuilds it before running or serving it.
        let (table, unreadable) = match self.generations.table(name, generation) {
            Ok(table) => (table, None),
            Err(e) => (
                Table::plain(self.generations.tree(name, generation)?),
                Some(e.to_string()),
            ),
        };
        let checkpoint = table.checkpoint()?;
        if unreadable.is_none() && table.is_empty()? && checkpoint == 0 {
            // Nothing written yet: it will be written with this layout.
            self.generations
                .set_layout(name, generation, projection.layout())?;
        }
        let slot = Slot {
            projection,
            live: RwLock::new(LiveTree { generation, table }),
            writer: Mutex::new(()),
            rebuild: Mutex::new(()),
            checkpoint: watch::Sender::new(checkpoint),
            last_error: std::sync::Mutex::new(None),
            unreadable: std::sync::Mutex::new(unreadable),
        };
        self.slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(slot));
        Ok(())
    }

    /// Projections whose live rows were written with another row layout than the code's
    /// (an upgrade changed it), or whose base file cannot be read: rebuild them
    /// (`crate::rebuild`) before running them.
    pub fn stale_layouts(&self) -> Result<Vec<&'static str>, ProjectionError> {
        let mut stale = Vec::new();
        for slot in self.slots.read().unwrap_or_else(|e| e.into_inner()).iter() {
            if let Some(reason) = slot.unreadable() {
                tracing::warn!(
                    projection = slot.name(),
                    reason,
                    "read model cannot be read"
                );
                stale.push(slot.name());
                continue;
            }
            let live = slot.live();
            let written = self
                .generations
                .layout(slot.name(), live.generation)?
                .unwrap_or(1);
            if written != slot.projection.layout() {
                stale.push(slot.name());
            }
        }
        Ok(stale)
    }

    /// Sets the memory a rebuild's builders may hold (bytes; default
    /// [`crate::generation::DEFAULT_REBUILD_MEMORY`]). A rebuild of a log whose read models
    /// would not fit (about a KiB per event) applies it a batch at a time through the trees
    /// instead: slower, in bounded memory.
    pub fn with_rebuild_memory(mut self, bytes: u64) -> Self {
        self.generations.set_rebuild_memory(bytes);
        self
    }

    /// The sled database holding the read models.
    pub fn db(&self) -> &sled::Db {
        self.generations.db()
    }

    /// The generation table.
    pub fn generations(&self) -> &Generations {
        &self.generations
    }

    /// Names of the registered projections, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.slots().iter().map(|s| s.name()).collect()
    }

    /// The live rows of projection `name` (its base, if any, and its tree).
    pub fn live_table(&self, name: &str) -> Result<Table, ProjectionError> {
        let slot = self.slot(name)?;
        if let Some(reason) = slot.unreadable() {
            return Err(ProjectionError::Other(format!(
                "projection {name} cannot be read ({reason}); rebuild it: `vetted projections rebuild {name}`"
            )));
        }
        Ok(slot.live().table)
    }

    /// The live tree of projection `name`, for projections that keep every row in it (those
    /// without a builder, such as the registry and the webhook outbox). A generation a
    /// builder rebuilt has most rows in its base file: read it with
    /// [`ReadModels::live_table`], which this refuses to bypass.
    pub fn live_tree(&self, name: &str) -> Result<sled::Tree, ProjectionError> {
        let table = self.live_table(name)?;
        if table.has_base() {
            return Err(ProjectionError::Other(format!(
                "projection {name} keeps its rows in a base file under its tree; read it with live_table"
            )));
        }
        Ok(table.tree().clone())
    }

    /// The checkpoint of projection `name`.
    pub fn checkpoint(&self, name: &str) -> Result<u64, ProjectionError> {
        self.slot(name)?.live().table.checkpoint()
    }

    /// Status of every projection against the log's head.
    pub async fn status(
        &self,
        store: &dyn EventStore,
    ) -> Result<Vec<ProjectionStatus>, ProjectionError> {
        let head = store.head().await?;
        let mut out = Vec::new();
        for slot in self.slots() {
            let live = slot.live();
            let checkpoint = live.table.checkpoint()?;
            out.push(ProjectionStatus {
                name: slot.name().to_string(),
                checkpoint,
                head,
                lag: head.saturating_sub(checkpoint),
                generation: live.generation,
                rebuilding: slot.rebuild.try_lock().is_err(),
                error: slot.error(),
            });
        }
        Ok(out)
    }

    /// Waits until every projection has applied the event at `position` (read-your-writes:
    /// pass the `last_position` of an append). Fails with [`ProjectionError::Lagging`] after
    /// `timeout`.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> Result<(), ProjectionError> {
        let deadline = tokio::time::Instant::now() + timeout;
        for slot in self.slots() {
            wait_slot(&slot, position, deadline, timeout).await?;
        }
        Ok(())
    }

    /// Waits until projection `name` has applied the event at `position`.
    pub async fn wait_for_projection(
        &self,
        name: &str,
        position: u64,
        timeout: Duration,
    ) -> Result<(), ProjectionError> {
        let slot = self.slot(name)?;
        wait_slot(
            &slot,
            position,
            tokio::time::Instant::now() + timeout,
            timeout,
        )
        .await
    }

    pub(crate) fn slots(&self) -> Vec<Arc<Slot>> {
        self.slots.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn slot(&self, name: &str) -> Result<Arc<Slot>, ProjectionError> {
        self.slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|s| s.name() == name)
            .cloned()
            .ok_or_else(|| ProjectionError::UnknownProjection(name.to_string()))
    }
}

async fn wait_slot(
    slot: &Slot,
    position: u64,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<(), ProjectionError> {
    let mut rx = slot.checkpoint.subscribe();
    let reached = tokio::time::timeout_at(deadline, async {
        rx.wait_for(|cp| *cp >= position).await.map(|_| ())
    })
    .await;
    match reached {
        Ok(Ok(())) => Ok(()),
        // The sender lives as long as the slot, which the caller holds: treat as lagging.
        Ok(Err(_)) | Err(_) => Err(ProjectionError::Lagging {
            projection: slot.name().to_string(),
            checkpoint: *slot.checkpoint.borrow(),
            wanted: position,
            waited_ms: timeout.as_millis() as u64,
        }),
    }
}
