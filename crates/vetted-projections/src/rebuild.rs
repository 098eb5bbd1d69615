//! Operator rebuild and verify, online (the runner keeps serving and applying) or offline.
//!
//! Rebuild fills a fresh generation from position 1 while the live generation keeps serving,
//! then takes the projection's writer lock (pausing its live runner for one short tail),
//! applies the last events, switches `projection_meta` atomically and drops the old tree.
//! Verify builds a scratch generation the same way and compares digests with the live one.
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::oneshot;
use vetted_domain::ApplicantEvent;
use vetted_store::EventStore;

use crate::pass::first_pass;
use crate::read_models::{LiveTree, Slot};
use crate::runner::apply_events;
use crate::{
    digest_table, Digest, Generations, Projection, ProjectionError, ReadModels, Rows, Table,
};

/// Events read and applied per batch while rebuilding.
/// Large, so a row touched by many events of a batch is decoded and written once.
pub(crate) const REBUILD_BATCH: usize = 50_000;

/// How far a rebuild has come, reported after every batch (for a progress bar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildProgress {
    /// Global position applied so far.
    pub done: u64,
    /// The log's head as last seen (it grows while the server keeps appending).
    pub total: u64,
}

/// The outcome of rebuilding one projection.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RebuildReport {
    /// The projection rebuilt.
    pub projection: String,
    /// The generation that was live before.
    pub old_generation: u64,
    /// The generation now live.
    pub generation: u64,
    /// The checkpoint of the new generation at the switch.
    pub checkpoint: u64,
    /// Digest of the new generation's rows at the switch.
    pub digest: Digest,
    /// Wall time of the whole rebuild, in milliseconds.
    pub elapsed_ms: u64,
}

/// The outcome of verifying one projection against a fresh rebuild.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// The projection verified.
    pub projection: String,
    /// The live generation compared.
    pub generation: u64,
    /// The checkpoint both sides were compared at.
    pub checkpoint: u64,
    /// Digest of the live rows.
    pub live: Digest,
    /// Digest of the rows rebuilt from the log.
    pub rebuilt: Digest,
    /// Whether the live read model equals a rebuild from the log.
    pub matches: bool,
}

/// Rebuilds the projections `names` (one pass over the log feeds them all) and switches each
/// to its new generation. Calls `progress` after every batch.
pub async fn rebuild(
    read_models: &ReadModels,
    store: &dyn EventStore,
    names: &[&str],
    progress: &mut (dyn FnMut(RebuildProgress) + Send),
) -> Result<Vec<RebuildReport>, ProjectionError> {
    let started = Instant::now();
    let slots = names
        .iter()
        .map(|n| read_models.slot(n))
        .collect::<Result<Vec<_>, _>>()?;
    let mut guards = Vec::new();
    for slot in &slots {
        guards.push(
            slot.rebuild
                .try_lock()
                .map_err(|_| ProjectionError::RebuildInProgress(slot.name().into()))?,
        );
    }
    let generations = read_models.generations();
    let mut targets = Vec::new();
    for slot in &slots {
        let (generation, tree) = generations.fresh(slot.name())?;
        generations.set_layout(slot.name(), generation, slot.projection.layout())?;
        targets.push(Target::new(
            slot.projection.clone(),
            Table::plain(tree),
            generation,
        ));
    }
    let outcome = build_and_switch(read_models, store, &slots, &targets, progress, started).await;
    if outcome.is_err() {
        for (slot, target) in slots.iter().zip(&targets) {
            if slot.live().generation != target.generation {
                // Best effort: the next rebuild drops leftovers anyway.
                let _ = generations.drop_generation(slot.name(), target.generation);
            }
        }
    }
    drop(guards);
    outcome
}

async fn build_and_switch(
    read_models: &ReadModels,
    store: &dyn EventStore,
    slots: &[Arc<Slot>],
    targets: &[Target],
    progress: &mut (dyn FnMut(RebuildProgress) + Send),
    started: Instant,
) -> Result<Vec<RebuildReport>, ProjectionError> {
    // Catch up without blocking the live runners until one batch is short of a full one.
    let (targets, spent) = first_pass(read_models.generations(), store, targets, progress).await?;
    let targets = &targets;

    // Pause the live runners (after their current batch) for the tail and the switch.
    let mut writers = Vec::new();
    for slot in slots {
        writers.push(slot.writer.lock().await);
    }
    catch_up(store, targets, None, false, progress).await?;
    tracing::debug!("rebuild tail applied");
    let generations = read_models.generations();
    let mut lives = Vec::new();
    for (slot, target) in slots.iter().zip(targets) {
        let live = slot.live();
        target
            .projection
            .on_switch(live.table.tree(), target.table.tree())?;
        lives.push(live);
    }
    // Hash every new generation at once (one thread each): nothing writes to them now.
    let digests = futures::future::join_all(targets.iter().map(|target| {
        let target = target.clone();
        tokio::task::spawn_blocking(move || target.digest())
    }))
    .await;
    let mut reports = Vec::new();
    let mut old = Vec::new();
    for ((slot, target), (live, digest)) in slots
        .iter()
        .zip(targets)
        .zip(lives.into_iter().zip(digests))
    {
        let digest =
            digest.map_err(|e| ProjectionError::Other(format!("digest task failed: {e}")))??;
        generations.switch(slot.name(), target.generation)?;
        let checkpoint = target.table.checkpoint()?;
        slot.set_live(
            LiveTree {
                generation: target.generation,
                table: target.table.clone(),
            },
            checkpoint,
        );
        reports.push(RebuildReport {
            projection: slot.name().to_string(),
            old_generation: live.generation,
            generation: target.generation,
            checkpoint,
            digest,
            elapsed_ms: started.elapsed().as_millis() as u64,
        });
        old.push((slot.name(), live.generation));
    }
    drop(writers);
    // The rebuilt generations are live: what the builders held is freed in the background.
    generations.reclaimer().free(spent);
    for (name, generation) in old {
        generations.drop_generation(name, generation)?;
    }
    Ok(reports)
}

/// Rebuilds projection `name` into a scratch generation, brings it and the live generation to
/// the same checkpoint, and compares their digests. The scratch generation is dropped after.
pub async fn verify(
    read_models: &ReadModels,
    store: &dyn EventStore,
    name: &str,
) -> Result<VerifyReport, ProjectionError> {
    let slot = read_models.slot(name)?;
    let _guard = slot
        .rebuild
        .try_lock()
        .map_err(|_| ProjectionError::RebuildInProgress(name.into()))?;
    let generations = read_models.generations();
    let (generation, tree) = generations.fresh(name)?;
    let scratch = [Target::new(
        slot.projection.clone(),
        Table::plain(tree),
        generation,
    )];
    let outcome = compare(&slot, generations, store, &scratch).await;
    generations.drop_generation(name, generation)?;
    outcome
}

async fn compare(
    slot: &Arc<Slot>,
    generations: &Generations,
    store: &dyn EventStore,
    scratch: &[Target; 1],
) -> Result<VerifyReport, ProjectionError> {
    let mut no_progress = |_: RebuildProgress| {};
    let (scratch, spent) = first_pass(generations, store, scratch, &mut no_progress).await?;
    generations.reclaimer().free(spent);
    let scratch = &scratch;
    let _writer = slot.writer.lock().await;
    let live = slot.live();
    let live_cp = live.table.checkpoint()?;
    let scratch_cp = scratch[0].table.checkpoint()?;
    let checkpoint = live_cp.max(scratch_cp);
    if scratch_cp < checkpoint {
        catch_up(store, scratch, Some(checkpoint), false, &mut no_progress).await?;
    }
    if live_cp < checkpoint {
        // The runner is paused on the lock: do its next step for it, unmuted, as it would.
        let live_target = [Target::new(
            slot.projection.clone(),
            live.table.clone(),
            live.generation,
        )];
        advance(store, &live_target, Some(checkpoint), false).await?;
        slot.committed(live.table.checkpoint()?);
    }
    let projection = &slot.projection;
    let live_digest = digest_table(&live.table, |k| projection.in_digest(k))?;
    let rebuilt = scratch[0].digest()?;
    Ok(VerifyReport {
        projection: slot.name().to_string(),
        generation: live.generation,
        checkpoint,
        matches: live_digest == rebuilt,
        live: live_digest,
        rebuilt,
    })
}

/// A generation being filled.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) projection: Arc<dyn Projection>,
    pub(crate) table: Table,
    pub(crate) generation: u64,
    /// The digest of the rows a builder wrote into it, while nothing else was written: the
    /// generation's digest as long as its tree holds nothing but the checkpoint.
    pub(crate) written: Option<Digest>,
}

impl Target {
    pub(crate) fn new(projection: Arc<dyn Projection>, table: Table, generation: u64) -> Self {
        Target {
            projection,
            table,
            generation,
            written: None,
        }
    }

    /// The digest of the generation's rows, computed again only if something was written
    /// since the builder's rows.
    fn digest(&self) -> Result<Digest, ProjectionError> {
        if let Some(written) = &self.written {
            if self.table.tree().iter().take(2).count() <= 1 {
                return Ok(written.clone());
            }
        }
        digest_table(&self.table, |k| self.projection.in_digest(k))
    }
}

/// Applies the log to every target (muted) from their common checkpoint, up to `until` or the
/// head. With `stop_when_short`, returns after the first batch shorter than a full one (the
/// targets are then close to the head); otherwise runs until nothing is left.
///
/// Each target keeps its changed rows in memory across batches (one worker thread each) and
/// commits them, with its checkpoint, when it holds [`FLUSH_ROWS`] rows and at the end: a row
/// touched by events of many batches is decoded once and written once, and on a fresh
/// generation no read goes to sled. Reading and decoding the next batch overlaps with
/// applying the current one.
pub(crate) async fn catch_up(
    store: &dyn EventStore,
    targets: &[Target],
    until: Option<u64>,
    stop_when_short: bool,
    progress: &mut (dyn FnMut(RebuildProgress) + Send),
) -> Result<(), ProjectionError> {
    let Some(first) = targets.first() else {
        return Ok(());
    };
    let from = first.table.checkpoint()? + 1;
    let workers = Workers::start(targets);
    let fed = feed(store, &workers, from, until, stop_when_short, progress).await;
    // Every worker commits what it holds before any error returns, so no commit races with
    // the caller dropping the generation.
    let finished = workers.finish().await;
    fed.and(finished)
}

/// Reads batches from `from` and hands each to every worker, reading the next batch while
/// the workers apply the current one.
async fn feed(
    store: &dyn EventStore,
    workers: &Workers,
    mut from: u64,
    until: Option<u64>,
    stop_when_short: bool,
    progress: &mut (dyn FnMut(RebuildProgress) + Send),
) -> Result<(), ProjectionError> {
    let mut total = store.head().await?;
    // The batch being applied: one acknowledgement per worker, its size, its last position.
    let mut running: Option<(Vec<Ack>, usize, u64)> = None;
    loop {
        let next = if until.is_some_and(|u| from > u) {
            Ok(None)
        } else {
            read_batch(store, from, until).await
        };
        if let Some((acks, count, last)) = running.take() {
            for ack in acks {
                ack.await.map_err(|_| {
                    ProjectionError::Other(
                        "a rebuild worker stopped before applying its batch".into(),
                    )
                })??;
            }
            if last > total {
                total = store.head().await?;
            }
            progress(RebuildProgress {
                done: last,
                total: total.max(last),
            });
            if stop_when_short && count < REBUILD_BATCH {
                return next.map(|_| ());
            }
        }
        let Some(batch) = next? else {
            return Ok(());
        };
        from = batch.last + 1;
        running = Some((workers.send(&batch)?, batch.events.len(), batch.last));
    }
}

/// A worker's word that it applied a batch (or why not).
type Ack = oneshot::Receiver<Result<(), ProjectionError>>;

/// Rows one rebuild worker keeps in memory before committing them (checked after each batch
/// of [`REBUILD_BATCH`] events, so a worker commits about once per batch). Small commits are
/// cheaper overall than large ones on sled (and hold less memory): at 1M events 5,000 beat
/// 50,000 by a quarter and a single commit at the end by more. Rows of the applicants whose
/// events straddle a commit are written twice; with lifecycles interleaved those are few.
const FLUSH_ROWS: usize = 5_000;

/// A batch for a worker and where to say it is applied.
type Job = (
    Arc<Vec<vetted_store::RecordedEvent>>,
    Arc<Vec<Option<ApplicantEvent>>>,
    oneshot::Sender<Result<(), ProjectionError>>,
);

/// One worker thread per target, each folding batches into rows it keeps across batches.
pub(crate) struct Workers {
    senders: Vec<std::sync::mpsc::Sender<Job>>,
    handles: Vec<tokio::task::JoinHandle<Result<(), ProjectionError>>>,
}

impl Workers {
    pub(crate) fn start(targets: &[Target]) -> Workers {
        let (mut senders, mut handles) = (Vec::new(), Vec::new());
        for target in targets {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let (projection, table) = (target.projection.clone(), target.table.clone());
            senders.push(tx);
            handles.push(tokio::task::spawn_blocking(move || {
                fold_batches(projection.as_ref(), &table, rx)
            }));
        }
        Workers { senders, handles }
    }

    /// Hands `batch` to every worker; returns one acknowledgement per worker.
    pub(crate) fn send(&self, batch: &Batch) -> Result<Vec<Ack>, ProjectionError> {
        let mut acks = Vec::new();
        for sender in &self.senders {
            let (done, ack) = oneshot::channel();
            sender
                .send((batch.events.clone(), batch.decoded.clone(), done))
                .map_err(|_| ProjectionError::Other("a rebuild worker stopped early".into()))?;
            acks.push(ack);
        }
        Ok(acks)
    }

    /// Closes the workers' queues and waits for their final commits; the first error wins.
    pub(crate) async fn finish(self) -> Result<(), ProjectionError> {
        drop(self.senders);
        join_all_first_error(self.handles, "rebuild worker").await
    }
}

/// A worker's loop: apply every batch above the generation's checkpoint, commit every
/// [`FLUSH_ROWS`] rows and once more when the queue closes. After a failed event it commits
/// nothing more: the rebuild fails and its generation is dropped.
fn fold_batches(
    projection: &dyn Projection,
    table: &Table,
    jobs: std::sync::mpsc::Receiver<Job>,
) -> Result<(), ProjectionError> {
    let committed = table.checkpoint()?;
    let mut checkpoint = committed;
    let mut rows = Rows::muted_over_empty(table)?;
    let mut dirty = false;
    for (events, decoded, done) in jobs {
        let mut applied = || -> Result<(), ProjectionError> {
            for (i, event) in events.iter().enumerate() {
                if event.global_position <= checkpoint {
                    continue;
                }
                let domain_event = decoded.get(i).and_then(|d| d.as_ref());
                projection.apply_decoded(&mut rows, event, domain_event)?;
                checkpoint = event.global_position;
                dirty = true;
            }
            if rows.len() >= FLUSH_ROWS {
                rows.flush(checkpoint)?;
                dirty = false;
            }
            Ok(())
        };
        let outcome = applied();
        let failed = outcome.is_err();
        // The feeder may have given up already; the outcome then goes nowhere.
        let _ = done.send(outcome);
        if failed {
            return Ok(());
        }
    }
    if dirty {
        rows.commit(checkpoint)?;
    }
    Ok(())
}

/// A batch read from the log, each applicant event decoded once for every target.
pub(crate) struct Batch {
    events: Arc<Vec<vetted_store::RecordedEvent>>,
    decoded: Arc<Vec<Option<ApplicantEvent>>>,
    last: u64,
}

impl Batch {
    /// Decodes the applicant events of `events` (not empty) on a blocking thread.
    pub(crate) async fn decode(
        events: Vec<vetted_store::RecordedEvent>,
    ) -> Result<Batch, ProjectionError> {
        tokio::task::spawn_blocking(move || {
            let decoded = decode_all(&events);
            Batch::with_decoded(events, decoded)
        })
        .await
        .map_err(|e| ProjectionError::Other(format!("rebuild decoding failed: {e}")))
    }

    /// A batch whose applicant events are decoded already: `decoded[i]` is `events[i]`'s.
    pub(crate) fn with_decoded(
        events: Vec<vetted_store::RecordedEvent>,
        decoded: Vec<Option<ApplicantEvent>>,
    ) -> Batch {
        Batch {
            last: events.last().map_or(0, |e| e.global_position),
            events: Arc::new(events),
            decoded: Arc::new(decoded),
        }
    }
}

/// Reads up to [`REBUILD_BATCH`] events from `from` (none above `until`) and decodes them on a
/// blocking thread. `None`: nothing left.
async fn read_batch(
    store: &dyn EventStore,
    from: u64,
    until: Option<u64>,
) -> Result<Option<Batch>, ProjectionError> {
    let mut events = store.read_all(from, REBUILD_BATCH).await?;
    if let Some(u) = until {
        events.retain(|e| e.global_position <= u);
    }
    if events.is_empty() {
        return Ok(None);
    }
    Batch::decode(events).await.map(Some)
}

/// Decodes each applicant event; undecodable ones are left to the projections, which report
/// them with their position.
fn decode_all(events: &[vetted_store::RecordedEvent]) -> Vec<Option<ApplicantEvent>> {
    events
        .iter()
        .map(|e| {
            e.stream_id
                .starts_with("applicant-")
                .then(|| {
                    ApplicantEvent::from_payload(&e.event_type, e.schema_version, &e.payload).ok()
                })
                .flatten()
        })
        .collect()
}

/// One batch being applied to every target, one blocking task per target.
struct Applying {
    tasks: Vec<tokio::task::JoinHandle<Result<Option<u64>, ProjectionError>>>,
    count: usize,
    last: u64,
}

impl Applying {
    fn start(targets: &[Target], batch: Batch, muted: bool) -> Applying {
        let tasks = targets
            .iter()
            .map(|target| {
                let (projection, table) = (target.projection.clone(), target.table.clone());
                let (events, decoded) = (batch.events.clone(), batch.decoded.clone());
                tokio::task::spawn_blocking(move || {
                    apply_events(projection.as_ref(), &table, &events, Some(&decoded), muted)
                })
            })
            .collect();
        Applying {
            tasks,
            count: batch.events.len(),
            last: batch.last,
        }
    }

    /// Waits for every target; the first error wins (after all have finished).
    async fn finish(self) -> Result<(), ProjectionError> {
        join_all_first_error(self.tasks, "rebuild task").await
    }
}

/// Like [`catch_up`] for live targets (unmuted, no progress), up to `until`.
async fn advance(
    store: &dyn EventStore,
    targets: &[Target],
    until: Option<u64>,
    muted: bool,
) -> Result<(), ProjectionError> {
    while step(store, targets, until, muted).await?.0 > 0 {}
    Ok(())
}

/// Reads one batch after the targets' checkpoint and applies it to every target, in parallel.
/// Returns the number of events read and the new checkpoint.
async fn step(
    store: &dyn EventStore,
    targets: &[Target],
    until: Option<u64>,
    muted: bool,
) -> Result<(usize, u64), ProjectionError> {
    let Some(first) = targets.first() else {
        return Ok((0, 0));
    };
    let checkpoint = first.table.checkpoint()?;
    if until.is_some_and(|u| checkpoint >= u) {
        return Ok((0, checkpoint));
    }
    let Some(batch) = read_batch(store, checkpoint + 1, until).await? else {
        return Ok((0, checkpoint));
    };
    let applying = Applying::start(targets, batch, muted);
    let (count, last) = (applying.count, applying.last);
    applying.finish().await?;
    Ok((count, last))
}

/// Waits for every task (so none is left running); the first error wins.
pub(crate) async fn join_all_first_error<T>(
    tasks: Vec<tokio::task::JoinHandle<Result<T, ProjectionError>>>,
    what: &str,
) -> Result<(), ProjectionError> {
    let mut outcome = Ok(());
    for task in tasks {
        let result = task
            .await
            .map_err(|e| ProjectionError::Other(format!("{what} failed: {e}")))
            .and_then(|r| r);
        if let (Ok(()), Err(e)) = (&outcome, result) {
            outcome = Err(e);
        }
    }
    outcome
}
