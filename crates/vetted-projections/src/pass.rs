//! A rebuild's first pass: from position 1 until the log's head is within one batch, the
//! read models that have a [`Builder`] fold every event in memory and write each of their
//! rows once, in key order, when the pass ends; the others apply the same batches through
//! [`crate::Rows`] as before. Afterwards every target holds the same checkpoint and the
//! rebuild goes on with the short tail and the switch (`crate::rebuild`).
//!
//! The log is read ahead: while the builders fold earlier batches on their threads, the next
//! one is decoded, its decoding split over several threads, and the one after it is read.
//! The builders are grouped onto threads by what their fold costs ([`Builder::fold_cost`]).
use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;
use vetted_store::{EventBatch, EventStore, RecordedEvent};

use crate::fact::BatchText;
use crate::rebuild::{Batch, Target, Workers};
use crate::run::{Run, RunWriter};
use crate::{
    Builder, DecodedEvent, Digest, Generations, ProjectionError, RebuildProgress, RowSink, Table,
    CHECKPOINT_KEY,
};

/// Events per batch of the first pass: small enough that the builders, each walking the same
/// batch at about the same time, find it in the processor's cache.
const PASS_BATCH: usize = 8192;

/// Batches handed to the threads and not yet applied by all of them.
const IN_FLIGHT: usize = 4;

/// Threads a batch's decoding is split over (the machine's cores, at most this many).
const DECODE_THREADS: usize = 4;

/// Rows per `apply_batch` when a builder's rows go into the generation's tree (without a
/// directory for base files).
const ROWS_PER_WRITE: usize = 10_000;

/// Runs the first pass over `targets` (see the module docs). Returns when every target has
/// applied the log up to a batch shorter than a full one, with the targets as they are then
/// (a builder's generation has its base run file when `generations` keeps base files), and
/// the spent builders: the caller frees them once the rebuilt generations are live
/// ([`Reclaimer::free`]), since freeing a rebuild's memory takes a while.
pub(crate) async fn first_pass(
    generations: &Generations,
    store: &dyn EventStore,
    targets: &[Target],
    progress: &mut (dyn FnMut(RebuildProgress) + Send),
) -> Result<(Vec<Target>, Spent), ProjectionError> {
    // At most one rebuild's memory at a time: the last one's is freed first (joined off the
    // async runtime's threads).
    let reclaimer = generations.reclaimer().clone();
    tokio::task::spawn_blocking(move || reclaimer.wait())
        .await
        .map_err(|e| ProjectionError::Other(format!("freeing the last rebuild failed: {e}")))?;
    let mut folding = Vec::new();
    let mut applying = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        match target.projection.builder() {
            Some(builder) => folding.push((i, builder)),
            None => applying.push(target.clone()),
        }
    }
    let head = store.head().await?;
    if !folding.is_empty() && !generations.fits_in_memory(head) {
        tracing::info!(
            events = head,
            memory = generations.rebuild_memory(),
            "the log is too large to rebuild in memory; rebuilding a batch at a time"
        );
        folding.clear();
    }
    if folding.is_empty() {
        crate::rebuild::catch_up(store, targets, None, true, progress).await?;
        return Ok((targets.to_vec(), Spent::default()));
    }
    let indexes: Vec<usize> = folding.iter().map(|(i, _)| *i).collect();
    let builders = BuilderThreads::start(
        folding
            .into_iter()
            .map(|(i, builder)| (targets[i].clone(), builder))
            .collect(),
        generations,
    );
    let workers = Workers::start(&applying);
    let outcome = feed(store, &builders, &workers, !applying.is_empty(), progress).await;
    let last = outcome.as_ref().ok().copied().flatten();
    // Every thread finishes (and the builders write their rows) before an error returns, so
    // nothing writes to a generation the caller is about to drop.
    tracing::debug!(position = ?last, "first pass folded");
    let built = builders.finish(last).await;
    let applied = workers.finish().await;
    tracing::debug!("first pass written");
    outcome?;
    let (built, spent) = built?;
    applied?;
    let mut targets = targets.to_vec();
    for (i, (table, digest)) in indexes.into_iter().zip(built) {
        targets[i].table = table;
        targets[i].written = digest;
    }
    Ok((targets, spent))
}

/// Builders that wrote their rows and only wait to be freed.
#[derive(Default)]
pub(crate) struct Spent(Vec<Box<dyn Builder>>);

/// Frees the memory of finished rebuilds on a thread of its own. A rebuild's builders hold
/// millions of small allocations (about 1 KiB per event of the log); freeing them took a
/// third of the time between the last event folded and the new generations going live, so a
/// rebuild hands them here once they are live. A new rebuild waits until the last one's are
/// freed, so no two are held at once; so does dropping the read models.
#[derive(Default)]
pub(crate) struct Reclaimer {
    freeing: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Reclaimer {
    /// Frees `spent` in the background.
    pub(crate) fn free(&self, spent: Spent) {
        if spent.0.is_empty() {
            return;
        }
        let mut freeing = self.freeing.lock().unwrap_or_else(|e| e.into_inner());
        freeing.retain(|thread| !thread.is_finished());
        // If no thread can be started, the closure — and `spent` with it — is dropped here.
        if let Ok(thread) = std::thread::Builder::new()
            .name("vetted-reclaim".into())
            .spawn(move || drop(spent))
        {
            freeing.push(thread);
        }
    }

    /// Waits until everything handed to [`Reclaimer::free`] is freed.
    pub(crate) fn wait(&self) {
        let threads = std::mem::take(&mut *self.freeing.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            // A panic while freeing leaves nothing to do.
            let _ = thread.join();
        }
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        self.wait();
    }
}

/// Reads and hands out batches until one is short of a full batch; returns the last position
/// handed out (`None`: the log was empty). Up to [`IN_FLIGHT`] batches are handed out ahead
/// of the slowest thread, so no thread waits for another's batch to end.
async fn feed(
    store: &dyn EventStore,
    builders: &BuilderThreads,
    workers: &Workers,
    need_recorded: bool,
    progress: &mut (dyn FnMut(RebuildProgress) + Send),
) -> Result<Option<u64>, ProjectionError> {
    let mut total = store.head().await?;
    let mut from = 1;
    let mut last = None;
    let mut in_flight: VecDeque<(Vec<Ack>, u64)> = VecDeque::new();
    let mut next = store.read_all_batch(from, PASS_BATCH).await?;
    while let Some(batch_last) = next.last_position() {
        from = batch_last + 1;
        let short = next.len() < PASS_BATCH;
        // The next batch is read while this one is decoded (on other threads).
        let reading_next = async {
            match short {
                true => Ok(None),
                false => store.read_all_batch(from, PASS_BATCH).await.map(Some),
            }
        };
        let (batch, following) =
            futures::join!(decode(next, batch_last, need_recorded), reading_next);
        let batch = batch?;
        let following = following?;
        let mut acks = builders.send(&batch.decoded)?;
        if let Some(recorded) = &batch.recorded {
            acks.extend(workers.send(recorded)?);
        }
        in_flight.push_back((acks, batch.last));
        while in_flight.len() > IN_FLIGHT {
            if let Some((acks, position)) = in_flight.pop_front() {
                last = Some(applied(acks, position, &mut total, store, progress).await?);
            }
        }
        // Nothing was read after a short batch.
        match following {
            Some(following) => next = following,
            None => break,
        }
    }
    while let Some((acks, position)) = in_flight.pop_front() {
        last = Some(applied(acks, position, &mut total, store, progress).await?);
    }
    Ok(last)
}

/// Waits until every thread applied the batch ending at `position`, then reports progress.
async fn applied(
    acks: Vec<Ack>,
    position: u64,
    total: &mut u64,
    store: &dyn EventStore,
    progress: &mut (dyn FnMut(RebuildProgress) + Send),
) -> Result<u64, ProjectionError> {
    for ack in acks {
        ack.await.map_err(|_| {
            ProjectionError::Other("a rebuild thread stopped before its batch".into())
        })??;
    }
    if position > *total {
        *total = store.head().await?;
    }
    progress(RebuildProgress {
        done: position,
        total: (*total).max(position),
    });
    Ok(position)
}

/// A batch of the first pass.
struct PassBatch {
    /// Its applicant events, decoded for the builders.
    decoded: Arc<Decoded>,
    /// Every event as recorded, for the targets without a builder (`None`: there are none).
    recorded: Option<Batch>,
    /// Global position of its last event.
    last: u64,
}

/// The applicant events of a batch, decoded, and the text their strings are in.
struct Decoded {
    text: Option<Arc<BatchText>>,
    events: Vec<DecodedEvent>,
}

impl Decoded {
    fn text(&self) -> &str {
        self.text.as_ref().map_or("", |t| t.text.as_str())
    }
}

/// Decodes a batch read from the log, whose last event is at `last`.
async fn decode(
    batch: EventBatch,
    last: u64,
    need_recorded: bool,
) -> Result<PassBatch, ProjectionError> {
    let (mut decoded, recorded) = match batch {
        EventBatch::Json(frames) => {
            let text = Arc::new(BatchText::of(frames)?);
            let events = decode_json(text.clone()).await?;
            let recorded = match need_recorded {
                true => Some(decode_recorded_json(text.clone()).await?),
                false => None,
            };
            let decoded = Decoded {
                text: Some(text),
                events,
            };
            (decoded, recorded)
        }
        EventBatch::Decoded(events) => {
            let recorded = need_recorded.then(|| events.clone());
            let decoded = Decoded {
                text: None,
                events: decode_recorded(events).await?,
            };
            (decoded, recorded)
        }
    };
    // The targets without a builder get the events as recorded, with the payloads the
    // builders' events hold (copied, not decoded a second time).
    let recorded = match recorded {
        Some(events) => {
            let (batch, back) = tokio::task::spawn_blocking(move || {
                let mut read = decoded.events.iter().peekable();
                let payloads = events
                    .iter()
                    .map(|e| {
                        read.next_if(|d| d.global_position() == e.global_position)
                            .map(|d| d.event().clone())
                    })
                    .collect();
                (Batch::with_decoded(events, payloads), decoded)
            })
            .await
            .map_err(|e| ProjectionError::Other(format!("decoding a batch failed: {e}")))?;
            decoded = back;
            Some(batch)
        }
        None => None,
    };
    Ok(PassBatch {
        decoded: Arc::new(decoded),
        recorded,
        last,
    })
}

/// Reads the applicant events of a batch's stored JSON on several threads, keeping their
/// order.
async fn decode_json(batch: Arc<BatchText>) -> Result<Vec<DecodedEvent>, ProjectionError> {
    let frames = batch.frames.len();
    let per_part = frames.div_ceil(decode_threads()).max(1);
    let tasks = (0..frames).step_by(per_part).map(|start| {
        let batch = batch.clone();
        tokio::task::spawn_blocking(move || {
            let end = (start + per_part).min(batch.frames.len());
            let mut out = Vec::with_capacity(end - start);
            for (position, range) in &batch.frames[start..end] {
                let frame = batch.text.get(range.clone()).unwrap_or_default();
                if let Some(decoded) = DecodedEvent::from_json(*position, frame, &batch.text)? {
                    out.push(decoded);
                }
            }
            Ok::<_, ProjectionError>(out)
        })
    });
    concat_parts(tasks.collect()).await
}

/// Every frame as a `RecordedEvent`, for the targets without a builder.
async fn decode_recorded_json(
    batch: Arc<BatchText>,
) -> Result<Vec<RecordedEvent>, ProjectionError> {
    tokio::task::spawn_blocking(move || {
        batch
            .frames
            .iter()
            .map(|(position, range)| {
                let frame = batch.text.get(range.clone()).unwrap_or_default();
                serde_json::from_str(frame).map_err(|e| ProjectionError::BadEvent {
                    position: *position,
                    event_type: String::new(),
                    reason: format!("stored envelope: {e}"),
                })
            })
            .collect()
    })
    .await
    .map_err(|e| ProjectionError::Other(format!("decoding a batch failed: {e}")))?
}

/// Decodes the applicant events of `events` on several threads, keeping their order.
async fn decode_recorded(events: Vec<RecordedEvent>) -> Result<Vec<DecodedEvent>, ProjectionError> {
    let tasks = split(events, decode_threads()).into_iter().map(|part| {
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(part.len());
            for event in part {
                if let Some(decoded) = DecodedEvent::from_recorded(event)? {
                    out.push(decoded);
                }
            }
            Ok::<_, ProjectionError>(out)
        })
    });
    concat_parts(tasks.collect()).await
}

/// The decoded parts of a batch, in order.
async fn concat_parts(
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<DecodedEvent>, ProjectionError>>>,
) -> Result<Vec<DecodedEvent>, ProjectionError> {
    let mut parts = Vec::with_capacity(tasks.len());
    for task in tasks {
        parts.push(
            task.await
                .map_err(|e| ProjectionError::Other(format!("decoding a batch failed: {e}")))??,
        );
    }
    if parts.len() == 1 {
        return Ok(parts.pop().unwrap_or_default());
    }
    // Reserved once: the parts of a batch are thousands of events, moved once.
    let mut decoded = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for part in parts {
        decoded.extend(part);
    }
    Ok(decoded)
}

fn decode_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, DECODE_THREADS)
}

/// Splits `items` into at most `parts` contiguous parts of about the same size, in order.
fn split<T>(mut items: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let size = items.len().div_ceil(parts.max(1)).max(1);
    let mut out = Vec::new();
    while items.len() > size {
        let rest = items.split_off(size);
        out.push(std::mem::replace(&mut items, rest));
    }
    out.push(items);
    out
}

/// A thread's word that it folded a batch (or why not).
type Ack = oneshot::Receiver<Result<(), ProjectionError>>;

/// What a builder thread is handed.
enum Job {
    Fold(Arc<Decoded>, oneshot::Sender<Result<(), ProjectionError>>),
    /// The pass is over at this checkpoint (`None`: it failed, write nothing).
    Finish(Option<u64>),
}

/// The builders, in groups of about equal work, one thread per group (as many as the machine
/// has cores): a thread builds each event's fact once for all the builders of its group.
struct BuilderThreads {
    senders: Vec<mpsc::Sender<Job>>,
    handles: Vec<tokio::task::JoinHandle<Result<Vec<Placed>, ProjectionError>>>,
}

/// What the builders left: each one's generation (in the order they were given) and the spent
/// builders.
type BuiltAll = (Vec<Built>, Spent);

impl BuilderThreads {
    fn start(
        folding: Vec<(Target, Box<dyn Builder>)>,
        generations: &Generations,
    ) -> BuilderThreads {
        let threads = decode_threads().min(folding.len()).max(1);
        let costs: Vec<u64> = folding
            .iter()
            .map(|(_, builder)| u64::from(builder.fold_cost()))
            .collect();
        let mut groups: Vec<Vec<Folding>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, ((target, builder), group)) in folding
            .into_iter()
            .zip(group_builders(&costs, threads))
            .enumerate()
        {
            groups[group].push(Folding {
                index: i,
                target,
                builder,
            });
        }
        groups.retain(|group| !group.is_empty());
        let (mut senders, mut handles) = (Vec::new(), Vec::new());
        for group in groups {
            let (tx, rx) = mpsc::channel::<Job>();
            let generations = generations.clone();
            senders.push(tx);
            handles.push(tokio::task::spawn_blocking(move || {
                build(group, &generations, rx)
            }));
        }
        BuilderThreads { senders, handles }
    }

    /// Hands `events` to every thread; returns one acknowledgement per thread.
    fn send(&self, events: &Arc<Decoded>) -> Result<Vec<Ack>, ProjectionError> {
        let mut acks = Vec::new();
        for sender in &self.senders {
            let (done, ack) = oneshot::channel();
            sender
                .send(Job::Fold(events.clone(), done))
                .map_err(|_| ProjectionError::Other("a rebuild thread stopped early".into()))?;
            acks.push(ack);
        }
        Ok(acks)
    }

    /// Tells every thread the pass ended at `checkpoint` and waits for the rows to be
    /// written; returns each builder's generation, in the order the builders were given.
    /// Waits for every thread; the first error wins.
    async fn finish(self, checkpoint: Option<u64>) -> Result<BuiltAll, ProjectionError> {
        for sender in &self.senders {
            // A thread that stopped on an error has nothing to write; its error comes below.
            let _ = sender.send(Job::Finish(checkpoint));
        }
        drop(self.senders);
        let mut built = Vec::new();
        let mut first_error = None;
        for handle in self.handles {
            match handle.await {
                Ok(Ok(group)) => built.extend(group),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(ProjectionError::Other(format!(
                        "rebuild builder failed: {e}"
                    )));
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        built.sort_by_key(|placed| placed.index);
        let mut spent = Spent::default();
        let mut generations = Vec::new();
        for placed in built {
            generations.push(placed.built);
            spent.0.extend(placed.spent);
        }
        Ok((generations, spent))
    }
}

/// Which of `threads` threads each builder goes to (by their fold costs, in order): the
/// grouping whose busiest thread has the least to fold. Every grouping is tried when there are
/// few; otherwise the costliest builder goes to the least busy thread, and so on.
fn group_builders(costs: &[u64], threads: usize) -> Vec<usize> {
    let threads = threads.max(1);
    let groupings = u32::try_from(costs.len())
        .ok()
        .and_then(|n| threads.checked_pow(n))
        .filter(|&g| g <= 1 << 12);
    let Some(groupings) = groupings else {
        let mut order: Vec<usize> = (0..costs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(costs[i]));
        let mut loads = vec![0u64; threads];
        let mut group = vec![0; costs.len()];
        for i in order {
            let least = (0..threads).min_by_key(|&t| loads[t]).unwrap_or(0);
            loads[least] += costs[i];
            group[i] = least;
        }
        return group;
    };
    let mut best = (u64::MAX, vec![0; costs.len()]);
    let mut group = vec![0; costs.len()];
    for mut code in 0..groupings {
        let mut loads = vec![0u64; threads];
        for (i, cost) in costs.iter().enumerate() {
            group[i] = code % threads;
            code /= threads;
            loads[group[i]] += cost;
        }
        let busiest = loads.into_iter().max().unwrap_or(0);
        if busiest < best.0 {
            best = (busiest, group.clone());
        }
    }
    best.1
}

/// A builder, the generation it fills and its place among the builders.
struct Folding {
    index: usize,
    target: Target,
    builder: Box<dyn Builder>,
}

/// What a builder leaves: the generation's rows, and the digest of the rows it wrote (`None`:
/// it wrote none).
type Built = (Table, Option<Digest>);

/// What a builder left, with its place among the builders.
struct Placed {
    index: usize,
    built: Built,
    /// The builder, once its rows are written (`None`: it wrote none, and was freed).
    spent: Option<Box<dyn Builder>>,
}

/// A builder thread: folds every batch into each builder of its group, then writes their
/// rows with the pass's checkpoint (the group's builders at once, one thread each) and
/// returns their generations as written. After a failed event it folds nothing more and
/// writes nothing (its error went to the feeder).
fn build(
    mut group: Vec<Folding>,
    generations: &Generations,
    jobs: mpsc::Receiver<Job>,
) -> Result<Vec<Placed>, ProjectionError> {
    for job in jobs {
        match job {
            Job::Fold(events, done) => {
                let text = events.text();
                let outcome = events.events.iter().try_for_each(|e| {
                    let fact = e.fact(text);
                    group
                        .iter_mut()
                        .try_for_each(|folding| folding.builder.apply(&fact))
                });
                let failed = outcome.is_err();
                // The feeder may have given up already; the outcome then goes nowhere.
                let _ = done.send(outcome);
                if failed {
                    break;
                }
            }
            Job::Finish(None) => break,
            Job::Finish(Some(checkpoint)) => {
                return std::thread::scope(|scope| {
                    let writing: Vec<_> = group
                        .into_iter()
                        .map(|folding| {
                            scope.spawn(move || {
                                let built = write(
                                    folding.builder.as_ref(),
                                    &folding.target,
                                    generations,
                                    checkpoint,
                                );
                                (folding.index, built, folding.builder)
                            })
                        })
                        .collect();
                    let mut out = Vec::new();
                    for thread in writing {
                        let (index, built, builder) = thread.join().map_err(|_| {
                            ProjectionError::Other("a rebuild builder failed".into())
                        })?;
                        out.push(Placed {
                            index,
                            built: built?,
                            spent: Some(builder),
                        });
                    }
                    Ok(out)
                });
            }
        }
    }
    Ok(group
        .into_iter()
        .map(|folding| Placed {
            index: folding.index,
            built: (folding.target.table.clone(), None),
            spent: None,
        })
        .collect())
}

/// Writes a builder's rows into its generation (a base run file when `generations` keeps
/// them), then the generation's checkpoint; returns the generation and the digest of its rows.
fn write(
    builder: &dyn Builder,
    target: &Target,
    generations: &Generations,
    checkpoint: u64,
) -> Result<Built, ProjectionError> {
    let name = target.projection.name();
    let started = std::time::Instant::now();
    let mut digest = DigestSink::new(target.projection.as_ref());
    let table = match generations.base_path(name, target.generation) {
        Some(path) => {
            let mut writer = RunWriter::create(&path)?;
            builder.write_rows(&mut Tee(&mut writer, &mut digest))?;
            let handed_out = started.elapsed();
            writer.finish()?;
            tracing::debug!(
                read_model = name,
                rows_ms = handed_out.as_millis() as u64,
                synced_ms = started.elapsed().as_millis() as u64,
                "base file written"
            );
            // Recorded once complete; the checkpoint last: a generation with its checkpoint
            // has all its rows. (A crash before the switch leaves a generation the next
            // rebuild drops, file included.)
            generations.set_base(name, target.generation)?;
            let tree = target.table.tree();
            Table::with_base(tree.clone(), Arc::new(Run::open(&path)?))
        }
        None => {
            let mut rows = TreeSink::new(target.table.tree());
            builder.write_rows(&mut Tee(&mut rows, &mut digest))?;
            rows.flush()?;
            target.table.clone()
        }
    };
    table
        .tree()
        .insert(CHECKPOINT_KEY, &checkpoint.to_be_bytes())?;
    Ok((table, Some(digest.finish())))
}

/// Hands every row to two sinks.
struct Tee<'a>(&'a mut dyn RowSink, &'a mut dyn RowSink);

impl RowSink for Tee<'_> {
    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), ProjectionError> {
        self.0.push(key, value)?;
        self.1.push(key, value)
    }
}

impl RowSink for RunWriter {
    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), ProjectionError> {
        RunWriter::push(self, key, Some(value))
    }
}

/// Rows written into a fresh generation's tree, [`ROWS_PER_WRITE`] per `apply_batch`.
struct TreeSink<'a> {
    tree: &'a sled::Tree,
    batch: sled::Batch,
    len: usize,
}

impl<'a> TreeSink<'a> {
    fn new(tree: &'a sled::Tree) -> Self {
        TreeSink {
            tree,
            batch: sled::Batch::default(),
            len: 0,
        }
    }

    fn flush(&mut self) -> Result<(), ProjectionError> {
        self.tree.apply_batch(std::mem::take(&mut self.batch))?;
        self.len = 0;
        Ok(())
    }
}

impl RowSink for TreeSink<'_> {
    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), ProjectionError> {
        self.batch.insert(key, value);
        self.len += 1;
        if self.len == ROWS_PER_WRITE {
            self.flush()?;
        }
        Ok(())
    }
}

/// The digest of the rows as they are written (what [`crate::digest_table`] computes over
/// the generation when nothing was written since).
struct DigestSink<'a> {
    projection: &'a dyn crate::Projection,
    digest: crate::digest::Hasher,
}

impl<'a> DigestSink<'a> {
    fn new(projection: &'a dyn crate::Projection) -> Self {
        DigestSink {
            projection,
            digest: crate::digest::Hasher::default(),
        }
    }

    fn finish(self) -> Digest {
        self.digest.finish()
    }
}

impl RowSink for DigestSink<'_> {
    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), ProjectionError> {
        if self.projection.in_digest(key) {
            self.digest.row(key, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The busiest thread's load under `group`.
    fn busiest(costs: &[u64], group: &[usize], threads: usize) -> u64 {
        let mut loads = vec![0; threads];
        for (cost, g) in costs.iter().zip(group) {
            loads[*g] += cost;
        }
        loads.into_iter().max().unwrap_or(0)
    }

    #[test]
    fn builders_are_grouped_so_that_the_busiest_thread_has_the_least_to_fold() {
        // The built-in read models' costs on two threads: 740 against 690 is the best split
        // (round-robin in that order gave one thread 870).
        let costs = [400, 340, 280, 220, 190];
        let group = group_builders(&costs, 2);
        assert_eq!(busiest(&costs, &group, 2), 740);
        assert!(group.iter().all(|&g| g < 2));
        // One thread: everything on it.
        assert_eq!(group_builders(&costs, 1), vec![0; 5]);
        // More threads than builders: one each.
        let spread = group_builders(&[5, 4, 3], 4);
        assert_eq!(busiest(&[5, 4, 3], &spread, 4), 5);
    }

    #[test]
    fn many_builders_are_grouped_costliest_first() {
        // 4^12 groupings are too many to try: the costliest builder goes to the least busy
        // thread first.
        let costs: Vec<u64> = (1..=12).collect();
        let group = group_builders(&costs, 4);
        assert_eq!(group.len(), 12);
        // 78 in all over four threads: the best split reaches 20, this one 21.
        assert_eq!(busiest(&costs, &group, 4), 21);
    }

    #[test]
    fn a_batch_splits_into_ordered_parts_of_about_the_same_size() {
        for (len, parts) in [
            (0usize, 2usize),
            (1, 2),
            (7, 2),
            (10, 3),
            (50_000, 4),
            (3, 8),
        ] {
            let split = split((0..len).collect::<Vec<_>>(), parts);
            assert!(split.len() <= parts.max(1), "{len} {parts}");
            let sizes: Vec<usize> = split.iter().map(Vec::len).collect();
            assert!(
                sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= len.div_ceil(parts)
            );
            assert_eq!(split.concat(), (0..len).collect::<Vec<_>>());
        }
    }
}
