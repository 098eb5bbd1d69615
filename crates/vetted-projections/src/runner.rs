//! The projection runner: one tokio task per projection follows the log from its checkpoint
//! (catch-up, then live, through `subscribe_all`), applies events in batches and commits each
//! batch's rows together with the new checkpoint.
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vetted_domain::ApplicantEvent;
use vetted_store::{EventStore, RecordedEvent, StoreError};

use crate::read_models::Slot;
use crate::{Projection, ProjectionError, ReadModels, Rows, Table};

/// Most events applied in one atomic commit by the live runner.
pub const BATCH: usize = 1000;

/// Longest pause between retries after a failed batch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Applies the events of `events` above the generation's checkpoint and commits them with the new
/// checkpoint in one atomic write. Returns the new checkpoint (`None`: nothing to apply).
///
/// If an event fails, the events before it are committed on their own, so the checkpoint
/// stops right before the event that failed, and the error is returned.
pub(crate) fn apply_events(
    projection: &dyn Projection,
    table: &Table,
    events: &[RecordedEvent],
    decoded: Option<&[Option<ApplicantEvent>]>,
    muted: bool,
) -> Result<Option<u64>, ProjectionError> {
    let checkpoint = table.checkpoint()?;
    let fresh: Vec<(&RecordedEvent, Option<&ApplicantEvent>)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.global_position > checkpoint)
        .map(|(i, e)| (e, decoded.and_then(|d| d.get(i)?.as_ref())))
        .collect();
    let rows = || {
        if muted {
            Rows::muted_over(table)
        } else {
            Rows::over(table)
        }
    };
    let mut batch = rows();
    for (i, (event, domain_event)) in fresh.iter().enumerate() {
        if let Err(error) = projection.apply_decoded(&mut batch, event, *domain_event) {
            // The failed event may have left half its changes in `batch`: redo the good prefix.
            drop(batch);
            if i > 0 {
                let mut good = rows();
                for (earlier, domain_event) in &fresh[..i] {
                    projection.apply_decoded(&mut good, earlier, *domain_event)?;
                }
                good.commit(fresh[i - 1].0.global_position)?;
            }
            return Err(error);
        }
    }
    match fresh.last().map(|(e, _)| e) {
        Some(last) => {
            batch.commit(last.global_position)?;
            Ok(Some(last.global_position))
        }
        None => Ok(None),
    }
}

/// The running projections: one task each, stopped by [`Runner::stop`] or on drop.
pub struct Runner {
    read_models: Arc<ReadModels>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Runner {
    /// Starts one task per projection registered in `read_models`, each following `store`
    /// from its checkpoint. Must be called inside a tokio runtime.
    pub fn start(read_models: Arc<ReadModels>, store: Arc<dyn EventStore>) -> Runner {
        let (stop, _) = watch::channel(false);
        let tasks = read_models
            .slots()
            .into_iter()
            .map(|slot| tokio::spawn(follow(slot, store.clone(), stop.subscribe())))
            .collect();
        Runner {
            read_models,
            stop,
            tasks,
        }
    }

    /// The read models this runner feeds.
    pub fn read_models(&self) -> &Arc<ReadModels> {
        &self.read_models
    }

    /// Waits until every projection has applied `position` (see [`ReadModels::wait_for`]).
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> Result<(), ProjectionError> {
        self.read_models.wait_for(position, timeout).await
    }

    /// Stops every task after its current batch and waits for them to finish.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        for task in std::mem::take(&mut self.tasks) {
            // A task that panicked has nothing left to commit; stopping goes on.
            let _ = task.await;
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One projection's task: follow the log, apply, commit; on failure retry from the checkpoint.
async fn follow(slot: Arc<Slot>, store: Arc<dyn EventStore>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if *stop.borrow() {
            return;
        }
        let from = match slot.live().table.checkpoint() {
            Ok(cp) => cp + 1,
            Err(e) => {
                if pause_after(&slot, &e.to_string(), &mut backoff, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        let mut feed = store.subscribe_all(from).ready_chunks(BATCH);
        loop {
            let chunk = tokio::select! {
                _ = stop.changed() => return,
                chunk = feed.next() => chunk,
            };
            // The feed ends only when the store closes.
            let Some(chunk) = chunk else { return };
            let mut events = Vec::with_capacity(chunk.len());
            let mut feed_error = None;
            for item in chunk {
                match item {
                    Ok(event) => events.push(event),
                    Err(e) => {
                        feed_error = Some(e);
                        break;
                    }
                }
            }
            if !events.is_empty() {
                if let Err(e) = apply_locked(&slot, events).await {
                    if pause_after(&slot, &e.to_string(), &mut backoff, &mut stop).await {
                        return;
                    }
                    break;
                }
                backoff = Duration::from_millis(50);
            }
            match feed_error {
                None => {}
                Some(StoreError::Closed) => return,
                Some(e) => {
                    if pause_after(&slot, &e.to_string(), &mut backoff, &mut stop).await {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// Applies `events` as the only writer of the projection's live generation.
async fn apply_locked(slot: &Arc<Slot>, events: Vec<RecordedEvent>) -> Result<(), ProjectionError> {
    let _writer = slot.writer.lock().await;
    let live = slot.live();
    let projection = slot.projection.clone();
    let table = live.table.clone();
    // sled calls block: keep them off the async worker threads.
    let outcome = tokio::task::spawn_blocking(move || {
        apply_events(projection.as_ref(), &table, &events, None, false)
    })
    .await
    .map_err(|e| ProjectionError::Other(format!("projection task failed: {e}")))?;
    // Even a failed batch may have committed the events before the bad one.
    slot.committed(live.table.checkpoint()?);
    outcome.map(|_| ())
}

/// Records `error`, then waits `backoff` (doubling it) unless asked to stop; `true` = stop.
async fn pause_after(
    slot: &Slot,
    error: &str,
    backoff: &mut Duration,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    tracing::warn!(
        projection = slot.name(),
        error,
        retry_in_ms = backoff.as_millis() as u64,
        "projection batch failed"
    );
    slot.set_error(Some(error.to_string()));
    let stopped = tokio::select! {
        _ = stop.changed() => true,
        _ = tokio::time::sleep(*backoff) => false,
    };
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    stopped
}
