//! The threads behind appends: the writer (positions, stream heads, sealing, encoding), the
//! flusher (synchronous log writes, acknowledgements) and the indexer (stream index runs, in
//! the background). Plain threads, so their blocking I/O never stalls a tokio worker.
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sled::Tree;
use tokio::sync::{mpsc, oneshot, watch};

use super::index::{self, Recent, Run};
use super::log::{EventLog, GroupFrames, Reservation};
use crate::sealing::{self, StreamHead};
use crate::{chain, AppendResult, ExpectedVersion, NewEvent, StoreError};

/// Most events one group commit writes, so a flood of appends still gets acknowledged steadily.
const MAX_GROUP_EVENTS: usize = 16_384;
/// Index entries kept in memory before they are handed to the indexer (this also bounds what
/// an open reads back from the log after a crash).
const INDEX_EVERY_ENTRIES: usize = 32_768;
/// ... or after this long, whichever comes first (checked when a group is written).
const INDEX_EVERY: Duration = Duration::from_secs(1);
/// Groups written concurrently. With one, an append that arrives while a group is being
/// synced waits for that sync and then its own: with 64 writers the groups alternate between
/// two halves of them and each append waits two syncs. With two, a group starts its sync as
/// soon as it is sealed; acknowledgements still go out in position order.
const MAX_IN_FLIGHT: usize = 2;
/// Bytes after which a group takes no more appends (the last one may go past; the log
/// refuses a group past its own, larger limit).
const GROUP_CLOSE_BYTES: usize = 32 * 1024 * 1024;
/// Most events a group takes while no other group is being written.
const IDLE_GROUP_EVENTS: usize = 32;

/// Writes sealed `runs` to the stream index with checkpoint `upto`, then lets `recent` drop
/// them. On failure the runs stay in memory (readers still find them) and appends fail at
/// their next flush on the same disk.
fn write_index(tree: &sled::Tree, recent: &Recent, runs: &HashMap<String, index::Run>, upto: u64) {
    match index::write_runs(tree, runs, upto) {
        Ok(()) => recent.indexed(),
        Err(e) => tracing::error!("writing the stream index failed: {e}"),
    }
}

pub(crate) struct AppendRequest {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    pub reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

/// Runs for the indexer, and the position up to which they cover the log.
type IndexJob = (Arc<HashMap<String, Run>>, u64);

/// Where the writer threads write: the log files and the stream index tree.
#[derive(Clone)]
pub(crate) struct Trees {
    pub log: Arc<EventLog>,
    pub index: Tree,
}

/// Starts the flusher, indexer and writer threads after `last_position`.
pub(crate) fn spawn(
    trees: Trees,
    recent: Recent,
    last_position: u64,
    durable: watch::Sender<u64>,
    queue: mpsc::Receiver<AppendRequest>,
) -> Result<JoinHandle<()>, StoreError> {
    let spawn_err = |what: &str, e: std::io::Error| {
        StoreError::Backend(format!(
            "could not start the event store {what} thread: {e}"
        ))
    };
    let (flushes, flush_queue) = std_mpsc::channel::<Box<Flush>>();
    let (verdicts, verdict_queue) = std_mpsc::channel();
    let flush_queue = Arc::new(std::sync::Mutex::new(flush_queue));
    let sequencer = Arc::new(std::sync::Mutex::new(Sequencer {
        next: 0,
        done: BTreeMap::new(),
        failed: None,
        log: trees.log.clone(),
        durable,
        verdicts,
    }));
    let mut flushers = Vec::new();
    for n in 0..MAX_IN_FLIGHT {
        let flusher = Flusher {
            log: trees.log.clone(),
            queue: flush_queue.clone(),
            sequencer: sequencer.clone(),
        };
        flushers.push(
            std::thread::Builder::new()
                .name(format!("vetted-store-flusher-{n}"))
                .spawn(move || flusher.run())
                .map_err(|e| spawn_err("flusher", e))?,
        );
    }
    let (to_index, index_queue) = std_mpsc::channel::<IndexJob>();
    let indexer = {
        let (tree, recent) = (trees.index.clone(), recent.clone());
        std::thread::Builder::new()
            .name("vetted-store-indexer".into())
            .spawn(move || {
                for (runs, upto) in index_queue {
                    write_index(&tree, &recent, &runs, upto);
                }
            })
            .map_err(|e| spawn_err("indexer", e))?
    };
    let writer = Writer {
        trees,
        recent,
        heads: HashMap::new(),
        next_position: last_position + 1,
        written_upto: last_position,
        flushes: Some(flushes),
        verdicts: verdict_queue,
        flushers,
        next_seq: 0,
        to_index: Some(to_index),
        indexer: Some(indexer),
        last_indexed: Instant::now(),
        in_flight: 0,
        failed: None,
    };
    std::thread::Builder::new()
        .name("vetted-store-writer".into())
        .spawn(move || writer.run(queue))
        .map_err(|e| spawn_err("writer", e))
}

/// The writer thread's state: the only place positions are handed out.
///
/// Groups are pipelined with the [`Flusher`]s: while they write and sync up to
/// [`MAX_IN_FLIGHT`] groups, the writer seals the next one from the requests that queued
/// meanwhile. Groups are acknowledged in position order, and a group after one that failed is
/// never acknowledged, so an acknowledged position never follows an unwritten one.
struct Writer {
    trees: Trees,
    recent: Recent,
    /// Heads of the streams appended to since opening; others are read from disk on first use.
    /// Sealing updates them before the group is durable (the next group chains on them); a
    /// group that fails to write stops the store, so they are never used after a failure.
    heads: HashMap<String, StreamHead>,
    next_position: u64,
    /// Last position handed to the flusher (durable once no group is in flight).
    written_upto: u64,
    /// `None` only while shutting down, so the flusher sees its queue close.
    flushes: Option<std_mpsc::Sender<Box<Flush>>>,
    /// The verdict on each group handed to the flushers, in order.
    verdicts: std_mpsc::Receiver<Result<(), String>>,
    flushers: Vec<JoinHandle<()>>,
    /// Sequence number of the next group handed to the flushers.
    next_seq: u64,
    to_index: Option<std_mpsc::Sender<IndexJob>>,
    indexer: Option<JoinHandle<()>>,
    last_indexed: Instant,
    /// Groups handed to the flushers whose verdicts are not read yet.
    in_flight: usize,
    /// Set after a failed write: the on-disk state is unknown, so refuse appends until reopened.
    failed: Option<String>,
}

/// An append the writer accepted into the current group, waiting for the flush.
struct Accepted {
    reply: oneshot::Sender<Result<AppendResult, StoreError>>,
    result: AppendResult,
}

/// A group sealed in memory: its frames, index runs and waiting appenders.
struct Group {
    recorded_at: DateTime<Utc>,
    /// The encoded events, framed, from the group's first position.
    frames: GroupFrames,
    /// Stream, first version, positions of each accepted append.
    runs: Vec<(String, u64, Vec<u64>)>,
    accepted: Vec<Accepted>,
}

/// A group for a flusher to write, make durable and acknowledge.
struct Flush {
    seq: u64,
    frames: GroupFrames,
    reservation: Reservation,
    accepted: Vec<Accepted>,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<AppendRequest>) {
        while let Some(first) = queue.blocking_recv() {
            let mut group = Group {
                recorded_at: chain::truncate_to_micros(Utc::now()),
                frames: GroupFrames::new(self.next_position),
                runs: Vec::new(),
                accepted: Vec::new(),
            };
            self.seal(first, &mut group);
            self.seal_queued(&mut queue, &mut group);
            if self.in_flight >= MAX_IN_FLIGHT {
                self.await_verdict();
                // Whatever queued while waiting joins this group.
                self.seal_queued(&mut queue, &mut group);
            }
            // The index and a new segment both want everything written so far to be durable.
            // (Not while the indexer still writes the last batch: nothing could be handed.)
            let open = self.recent.open_entries();
            let index_due = open > 0
                && !self.recent.indexing()
                && (open >= INDEX_EVERY_ENTRIES || self.last_indexed.elapsed() >= INDEX_EVERY);
            if index_due || self.trees.log.rotation_due() {
                while self.in_flight > 0 {
                    self.await_verdict();
                }
            }
            if index_due {
                self.hand_to_indexer();
            }
            self.write(group);
        }
        while self.in_flight > 0 {
            self.await_verdict();
        }
        self.close();
    }

    /// Stops the flusher and indexer, writing every index entry still in memory.
    fn close(&mut self) {
        // Closing the flushers' queue ends them; joining them means nothing is left unwritten.
        self.flushes.take();
        for flusher in self.flushers.drain(..) {
            if flusher.join().is_err() {
                tracing::error!("the event store flusher thread panicked");
            }
        }
        self.to_index.take();
        if let Some(indexer) = self.indexer.take() {
            if indexer.join().is_err() {
                tracing::error!("the event store indexer thread panicked");
            }
        }
        if self.failed.is_none() {
            if let Some(runs) = self.recent.seal() {
                write_index(&self.trees.index, &self.recent, &runs, self.written_upto);
            }
        }
    }

    fn hand_to_indexer(&mut self) {
        if self.failed.is_some() {
            return;
        }
        if let (Some(runs), Some(to_index)) = (self.recent.seal(), &self.to_index) {
            self.last_indexed = Instant::now();
            let _ = to_index.send((runs, self.written_upto));
        }
    }

    /// Seals every request already queued, up to [`MAX_GROUP_EVENTS`] in the group.
    fn seal_queued(&mut self, queue: &mut mpsc::Receiver<AppendRequest>, group: &mut Group) {
        // With the disk idle, start it early on part of what queued and seal the rest as the
        // next group meanwhile, so sealing overlaps with syncing.
        let cap = if self.in_flight == 0 {
            IDLE_GROUP_EVENTS
        } else {
            MAX_GROUP_EVENTS
        };
        while (group.frames.count as usize) < cap && group.frames.len() < GROUP_CLOSE_BYTES {
            match queue.try_recv() {
                Ok(request) => self.seal(request, group),
                Err(_) => break,
            }
        }
    }

    fn await_verdict(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let verdict = self
            .verdicts
            .recv()
            .unwrap_or_else(|_| Err("the event store flusher thread stopped".to_string()));
        if let Err(reason) = verdict {
            self.failed.get_or_insert(reason);
        }
    }

    /// The head of `stream` as stored (the writer's cache missed).
    fn stored_head(&self, stream: &str) -> Result<Option<StreamHead>, StoreError> {
        let recent = self.recent.runs_of(stream);
        let Some((version, position)) =
            index::last_entry(&self.trees.index, &recent, stream, self.written_upto)?
        else {
            return Ok(None);
        };
        // A stream missing from `heads` was not appended to since opening: its head is on disk.
        // `events_at` checks the event is the one the index names (or says what is wrong),
        // and returns exactly one event for one position.
        let event =
            super::events_at(&self.trees.log, stream, &[(version, position)])?.swap_remove(0);
        Ok(Some(StreamHead {
            version: event.stream_version,
            hash: event.hash,
        }))
    }

    /// Checks, stamps, seals and encodes one append into `group`, or answers it at once.
    fn seal(&mut self, request: AppendRequest, group: &mut Group) {
        let AppendRequest {
            stream,
            expected,
            events: new_events,
            reply,
        } = request;
        if let Some(reason) = &self.failed {
            let _ = reply.send(Err(StoreError::Unavailable(reason.clone())));
            return;
        }
        if !self.heads.contains_key(&stream) {
            match self.stored_head(&stream) {
                Ok(Some(head)) => {
                    self.heads.insert(stream.clone(), head);
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        let head = self.heads.get(&stream);
        if let Err(e) = sealing::check_expected(&stream, expected, head.map(|h| h.version)) {
            let _ = reply.send(Err(e));
            return;
        }
        let position = self.next_position;
        let (recorded, new_head) =
            sealing::seal_append(&stream, head, new_events, position, group.recorded_at);
        // Each event is encoded once, straight into the group's bytes; an append that cannot
        // be stored whole leaves none of its events in the group.
        let savepoint = group.frames.savepoint();
        let pushed = recorded
            .iter()
            .try_for_each(|event| {
                group
                    .frames
                    .push_with(|bytes| serde_json::to_writer(bytes, event))
            })
            .and_then(|()| group.frames.check_size());
        if let Err(e) = pushed {
            group.frames.rollback(savepoint);
            let _ = reply.send(Err(e));
            return;
        }
        let first_version = recorded.first().map_or(0, |e| e.stream_version);
        self.next_position = position + recorded.len() as u64;
        group.runs.push((
            stream.clone(),
            first_version,
            (position..self.next_position).collect(),
        ));
        group.accepted.push(Accepted {
            reply,
            result: AppendResult {
                first_position: position,
                last_position: self.next_position - 1,
                stream_version: new_head.version,
            },
        });
        self.heads.insert(stream, new_head);
    }

    /// Records `group`'s index entries and hands it to the flusher.
    fn write(&mut self, group: Group) {
        let Group {
            frames,
            runs,
            accepted,
            ..
        } = group;
        if let Some(reason) = &self.failed {
            for a in accepted {
                let _ = a.reply.send(Err(StoreError::Unavailable(reason.clone())));
            }
            return;
        }
        if frames.is_empty() {
            return;
        }
        let reservation = match self.trees.log.reserve(&frames) {
            Ok(reservation) => reservation,
            Err(e) => {
                self.fail(format!("{e}"), accepted);
                return;
            }
        };
        self.written_upto = frames.first_position + frames.count - 1;
        // Readers filter by the durable head, so they see these entries only once acknowledged.
        self.recent.add_all(&runs);
        let seq = self.next_seq;
        self.next_seq += 1;
        let handed = self.flushes.as_ref().map(|flushes| {
            flushes.send(Box::new(Flush {
                seq,
                frames,
                reservation,
                accepted,
            }))
        });
        match handed {
            Some(Ok(())) => self.in_flight += 1,
            Some(Err(std_mpsc::SendError(flush))) => {
                self.fail(
                    "the event store flusher threads stopped".into(),
                    flush.accepted,
                );
            }
            None => {}
        }
    }

    fn fail(&mut self, error: String, accepted: Vec<Accepted>) {
        let reason = format!(
            "writing to the event log failed ({error}); reopen the store after fixing the disk"
        );
        tracing::error!("{reason}");
        for a in accepted {
            let _ = a.reply.send(Err(StoreError::Unavailable(reason.clone())));
        }
        self.failed.get_or_insert(reason);
    }
}

/// Writes groups to the log (several at once), then hands each to the [`Sequencer`].
struct Flusher {
    log: Arc<EventLog>,
    queue: Arc<std::sync::Mutex<std_mpsc::Receiver<Box<Flush>>>>,
    sequencer: Arc<std::sync::Mutex<Sequencer>>,
}

impl Flusher {
    fn run(self) {
        loop {
            let next = self.queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
            let Ok(flush) = next else { return };
            // The file is opened with O_DSYNC: durable once this returns.
            let written = self
                .log
                .write(&flush.reservation, &flush.frames)
                .map_err(|e| {
                    format!(
                        "writing to the event log failed ({e}); reopen the store after fixing \
                         the disk"
                    )
                });
            let mut sequencer = self.sequencer.lock().unwrap_or_else(|e| e.into_inner());
            sequencer.done.insert(flush.seq, (flush, written));
            if !sequencer.finish_ready() {
                return;
            }
        }
    }
}

/// Finishes written groups in position order: publishes each to readers, advances the durable
/// head, acknowledges its appends and reports the verdict to the writer.
struct Sequencer {
    /// Sequence number of the next group to finish.
    next: u64,
    done: BTreeMap<u64, (Box<Flush>, Result<(), String>)>,
    /// Once a group failed, no later group is acknowledged (it may follow a hole).
    failed: Option<String>,
    log: Arc<EventLog>,
    durable: watch::Sender<u64>,
    verdicts: std_mpsc::Sender<Result<(), String>>,
}

impl Sequencer {
    /// Finishes every group whose turn has come; false once the writer is gone.
    fn finish_ready(&mut self) -> bool {
        while let Some((flush, written)) = self.done.remove(&self.next) {
            self.next += 1;
            let verdict = match &self.failed {
                Some(reason) => Err(reason.clone()),
                None => written,
            };
            match &verdict {
                Ok(()) => {
                    self.log.publish(&flush.reservation, &flush.frames);
                    self.durable
                        .send_replace(flush.frames.first_position + flush.frames.count - 1);
                    for a in flush.accepted {
                        let _ = a.reply.send(Ok(a.result));
                    }
                }
                Err(reason) => {
                    tracing::error!("{reason}");
                    for a in flush.accepted {
                        let _ = a.reply.send(Err(StoreError::Unavailable(reason.clone())));
                    }
                    self.failed.get_or_insert(reason.clone());
                }
            }
            if self.verdicts.send(verdict).is_err() {
                return false;
            }
        }
        true
    }
}
