//! Operator rebuild and verify, online (the runner keeps serving and applying) or offline.
//!
//! Rebuild fills a fresh generation from position 1 while the live generation keeps serving,
//! then takes the projection's writer lock (pausing its live runner for one short tail),
//! applies the last events, switches `projection_meta` atomically and drops the old tree.
//! Verify builds a scratch generation the same way and compares digests with the live one.
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use vetted_domain::ApplicantEvent;
use vetted_store::EventStore;

use crate::read_models::{LiveTree, Slot};
use crate::runner::apply_events;
use crate::{checkpoint_of, digest_tree, Digest, Projection, ProjectionError, ReadModels};

/// Events read and applied per batch while rebuilding.
/// Large, so a row touched by many events of a batch is decoded and written once.
const REBUILD_BATCH: usize = 50_000;

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
        targets.push(Target {
            projection: slot.projection.clone(),
            tree,
            generation,
        });
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
    catch_up(store, targets, None, true, progress).await?;

    // Pause the live runners (after their current batch) for the tail and the switch.
    let mut writers = Vec::new();
    for slot in slots {
        writers.push(slot.writer.lock().await);
    }
    catch_up(store, targets, None, false, progress).await?;
    let generations = read_models.generations();
    let mut reports = Vec::new();
    let mut old = Vec::new();
    for (slot, target) in slots.iter().zip(targets) {
        let live = slot.live();
        target.projection.on_switch(&live.tree, &target.tree)?;
        generations.switch(slot.name(), target.generation)?;
        let checkpoint = checkpoint_of(&target.tree)?;
        let digest = digest_tree(&target.tree, |k| target.projection.in_digest(k))?;
        slot.set_live(
            LiveTree {
                generation: target.generation,
                tree: target.tree.clone(),
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
    let scratch = [Target {
        projection: slot.projection.clone(),
        tree,
        generation,
    }];
    let outcome = compare(&slot, store, &scratch).await;
    generations.drop_generation(name, generation)?;
    outcome
}

async fn compare(
    slot: &Arc<Slot>,
    store: &dyn EventStore,
    scratch: &[Target; 1],
) -> Result<VerifyReport, ProjectionError> {
    let mut no_progress = |_: RebuildProgress| {};
    catch_up(store, scratch, None, true, &mut no_progress).await?;
    let _writer = slot.writer.lock().await;
    let live = slot.live();
    let live_cp = checkpoint_of(&live.tree)?;
    let scratch_cp = checkpoint_of(&scratch[0].tree)?;
    let checkpoint = live_cp.max(scratch_cp);
    if scratch_cp < checkpoint {
        catch_up(store, scratch, Some(checkpoint), false, &mut no_progress).await?;
    }
    if live_cp < checkpoint {
        // The runner is paused on the lock: do its next step for it, unmuted, as it would.
        let live_target = [Target {
            projection: slot.projection.clone(),
            tree: live.tree.clone(),
            generation: live.generation,
        }];
        advance(store, &live_target, Some(checkpoint), false).await?;
        slot.committed(checkpoint_of(&live.tree)?);
    }
    let projection = &slot.projection;
    let live_digest = digest_tree(&live.tree, |k| projection.in_digest(k))?;
    let rebuilt = digest_tree(&scratch[0].tree, |k| projection.in_digest(k))?;
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
struct Target {
    projection: Arc<dyn Projection>,
    tree: sled::Tree,
    generation: u64,
}

/// Applies the log to every target (muted) from their common checkpoint, up to `until` or the
/// head. With `stop_when_short`, returns after the first batch shorter than a full one (the
/// targets are then close to the head); otherwise runs until nothing is left.
async fn catch_up(
    store: &dyn EventStore,
    targets: &[Target],
    until: Option<u64>,
    stop_when_short: bool,
    progress: &mut (dyn FnMut(RebuildProgress) + Send),
) -> Result<(), ProjectionError> {
    let mut total = store.head().await?;
    loop {
        let (applied, checkpoint) = step(store, targets, until, true).await?;
        if checkpoint > total {
            total = store.head().await?;
        }
        progress(RebuildProgress {
            done: checkpoint,
            total: total.max(checkpoint),
        });
        if applied == 0 || (stop_when_short && applied < REBUILD_BATCH) {
            return Ok(());
        }
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
    let checkpoint = checkpoint_of(&first.tree)?;
    if until.is_some_and(|u| checkpoint >= u) {
        return Ok((0, checkpoint));
    }
    let mut events = store.read_all(checkpoint + 1, REBUILD_BATCH).await?;
    if let Some(u) = until {
        events.retain(|e| e.global_position <= u);
    }
    let Some(last) = events.last().map(|e| e.global_position) else {
        return Ok((0, checkpoint));
    };
    let count = events.len();
    // Decode each applicant event once for every target; undecodable ones are left to the
    // projections, which report them with their position.
    let decoded: Arc<Vec<Option<ApplicantEvent>>> = Arc::new(
        events
            .iter()
            .map(|e| {
                e.stream_id
                    .starts_with("applicant-")
                    .then(|| {
                        ApplicantEvent::from_payload(&e.event_type, e.schema_version, &e.payload)
                            .ok()
                    })
                    .flatten()
            })
            .collect(),
    );
    let events = Arc::new(events);
    let mut tasks = Vec::new();
    for target in targets {
        let (projection, tree, events) = (
            target.projection.clone(),
            target.tree.clone(),
            events.clone(),
        );
        let decoded = decoded.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            apply_events(projection.as_ref(), &tree, &events, Some(&decoded), muted)
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| ProjectionError::Other(format!("rebuild task failed: {e}")))??;
    }
    Ok((count, last))
}
