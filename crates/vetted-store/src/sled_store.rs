//! The durable embedded backend on sled.
//!
//! Layout (all integer keys big-endian `u64`, so byte order is numeric order):
//! - `events`: global position → JSON [`RecordedEvent`];
//! - `streams`: stream id bytes, `0x00`, version → global position.
//!
//! A stream's head (last version and hash, which the next append chains from) is the last
//! `streams` entry of that stream and its event; the writer caches heads in memory and reads
//! one from disk the first time a stream is appended to after opening. (Stores written by
//! earlier versions also hold a `stream_heads` tree; it is no longer read or written.)
//!
//! One writer thread owns position allocation, the stream heads, the writes and the flush
//! (a plain thread, so its blocking fsync never stalls a tokio worker).
//!
//! Durability: sled's `flush` writes its log buffers with `sync_file_range`, which neither
//! persists the file's size nor flushes the disk's write cache, so it survives a process crash
//! but not a power cut. When the store knows its directory ([`SledStore::open`],
//! [`SledStore::with_db_in`]) each group is also `fdatasync`'d before it is acknowledged.
//! Appenders queue requests; the writer takes everything queued (group commit), writes the
//! accepted appends, flushes once, then publishes the new durable head and acknowledges.
//! Readers never look past the published head, so no reader sees position 11 while 10 is in
//! flight.
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sled::{Batch, IVec, Tree};
use tokio::sync::{mpsc, oneshot, watch};

use crate::sealing::{self, StreamHead};
use crate::{
    chain, feed, AppendResult, EventFeed, EventStore, ExpectedVersion, NewEvent, RecordedEvent,
    StoreError,
};

/// Appends waiting for the writer; beyond this, appenders wait for room (backpressure).
const QUEUE_DEPTH: usize = 8192;
/// Most events one group commit writes, so a flood of appends still gets acknowledged steadily.
const MAX_GROUP_EVENTS: usize = 16_384;

/// The durable, embedded event store. Cheap to clone (clones share one writer).
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Trees {
    events: Tree,
    streams: Tree,
}

struct Inner {
    db: sled::Db,
    trees: Trees,
    /// `None` only while dropping, so the writer sees the channel close before it is joined.
    appends: Option<mpsc::Sender<AppendRequest>>,
    durable: watch::Receiver<u64>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Last, so it is dropped after every sled handle above.
    _lock_release: LockRelease,
}

/// Waits on drop until sled has let go of its file lock.
///
/// sled's I/O threads hold the database for a moment after its last handle is dropped, so
/// without this a reopen right after dropping the store can fail with "could not acquire
/// lock" (seen about once in fifteen runs of the durability tests).
struct LockRelease {
    /// sled's log file, which sled locks; `None` when the directory is unknown.
    log_path: Option<std::path::PathBuf>,
}

impl Drop for LockRelease {
    fn drop(&mut self) {
        let Some(path) = &self.log_path else { return };
        let Ok(file) = File::open(path) else { return };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        // The same `flock` sled takes (through fs2).
        while fs2::FileExt::try_lock_exclusive(&file).is_err()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // Dropping `file` releases the lock taken just to observe that sled's is gone.
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish the group in hand and exit; joining it means
        // the database files are released when the last handle goes (reopen works at once).
        self.appends.take();
        let handle = self
            .writer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("the event store writer thread panicked");
            }
        }
    }
}

struct AppendRequest {
    stream: String,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        // sled's I/O threads keep its file lock for a moment after the last handle of a
        // database is dropped, so a reopen in the same process (a restart, a test) can find it
        // still locked: retry briefly before blaming another process.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let db = loop {
            match sled::Config::new().path(dir).open() {
                Ok(db) => break db,
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "could not open the sled database in {}: {e} (is another vetted process \
                         using it?)",
                        dir.display()
                    )))
                }
            }
        };
        // This store owns the database: dropping it waits until sled lets go of the files.
        Self::attach(db, dir, true)
    }

    /// Uses an already open sled database (projections keep their trees in the same one).
    ///
    /// Without the directory the store cannot `fdatasync` sled's log file, so acknowledged
    /// appends survive a process crash but not a power cut: prefer [`SledStore::with_db_in`].
    pub fn with_db(db: sled::Db) -> Result<Self, StoreError> {
        Self::start(db, None, None)
    }

    /// Uses an already open sled database whose directory is `dir` (the path given to
    /// `sled::Config::path`); every acknowledged group is `fdatasync`'d.
    pub fn with_db_in(db: sled::Db, dir: &Path) -> Result<Self, StoreError> {
        // The caller owns the database (and may keep other handles): nothing to wait for on drop.
        Self::attach(db, dir, false)
    }

    fn attach(db: sled::Db, dir: &Path, owns_db: bool) -> Result<Self, StoreError> {
        let path = dir.join("db");
        let log = File::open(&path).map_err(|e| {
            StoreError::Unavailable(format!(
                "could not open sled's log file {} to sync it: {e} (is {} the directory the \
                 sled database was opened in?)",
                path.display(),
                dir.display()
            ))
        })?;
        Self::start(db, Some(log), owns_db.then_some(path))
    }

    fn start(
        db: sled::Db,
        log: Option<File>,
        log_path: Option<std::path::PathBuf>,
    ) -> Result<Self, StoreError> {
        let trees = Trees {
            events: db.open_tree("events")?,
            streams: db.open_tree("streams")?,
        };
        let last_position = recover(&db, &trees, log.as_ref())?;
        let (durable_tx, durable_rx) = watch::channel(last_position);
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (flushes, flush_queue) = std::sync::mpsc::channel();
        let (verdicts, verdict_queue) = std::sync::mpsc::channel();
        let flusher = Flusher {
            db: db.clone(),
            log,
            durable: durable_tx,
        };
        let flusher = std::thread::Builder::new()
            .name("vetted-store-flusher".into())
            .spawn(move || flusher.run(flush_queue, verdicts))
            .map_err(|e| {
                StoreError::Backend(format!(
                    "could not start the event store flusher thread: {e}"
                ))
            })?;
        let writer = Writer {
            trees: trees.clone(),
            heads: HashMap::new(),
            next_position: last_position + 1,
            flushes: Some(flushes),
            verdicts: verdict_queue,
            flusher: Some(flusher),
            in_flight: false,
            failed: None,
        };
        let handle = std::thread::Builder::new()
            .name("vetted-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| {
                StoreError::Backend(format!(
                    "could not start the event store writer thread: {e}"
                ))
            })?;
        Ok(SledStore {
            inner: Arc::new(Inner {
                db,
                trees,
                appends: Some(tx),
                durable: durable_rx,
                writer: Mutex::new(Some(handle)),
                _lock_release: LockRelease { log_path },
            }),
        })
    }

    /// The sled database, for trees that must be written atomically beside the log's readers.
    pub fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// The raw `events` tree, so tests can tamper with stored bytes.
    #[doc(hidden)]
    pub fn raw_events_tree(&self) -> Tree {
        self.inner.trees.events.clone()
    }

    fn durable_head(&self) -> u64 {
        *self.inner.durable.borrow()
    }
}

/// Finds the last position on disk, indexing any events whose index writes a crash cut off.
///
/// The writer starts a group only after the previous one is flushed, and writes a group's
/// events before its index, so only the last group can be partly indexed. Its events share
/// one `recorded_at`, so every event with the newest timestamp is checked, plus any older
/// event still not indexed.
fn recover(db: &sled::Db, trees: &Trees, log: Option<&File>) -> Result<u64, StoreError> {
    let last_position = match trees.events.last()? {
        Some((key, _)) => {
            decode_u64(&key).ok_or_else(|| corrupt("events", "key is not a big-endian u64"))?
        }
        None => 0,
    };
    let mut unindexed = Vec::new();
    let mut last_group_time = None;
    for entry in trees.events.iter().rev() {
        let (key, value) = entry?;
        let event = decode_event(&key, &value)?;
        let last_group_time = *last_group_time.get_or_insert(event.recorded_at);
        let indexed = trees
            .streams
            .contains_key(stream_key(&event.stream_id, event.stream_version))?;
        if indexed && event.recorded_at != last_group_time {
            break;
        }
        if !indexed {
            unindexed.push(event);
        }
    }
    if !unindexed.is_empty() {
        tracing::warn!(
            count = unindexed.len(),
            "indexing events whose index a crash cut off"
        );
        for event in unindexed.into_iter().rev() {
            trees.streams.insert(
                stream_key(&event.stream_id, event.stream_version),
                &event.global_position.to_be_bytes(),
            )?;
        }
        db.flush()?;
        sync_log(log)?;
    }
    Ok(last_position)
}

/// `fdatasync` of sled's log file, after a `flush` has written it: see the module docs.
fn sync_log(log: Option<&File>) -> Result<(), StoreError> {
    match log {
        Some(file) => file
            .sync_data()
            .map_err(|e| StoreError::Backend(format!("could not fdatasync sled's log file: {e}"))),
        None => Ok(()),
    }
}

/// The head of `stream` as stored: its last indexed version and that event's hash.
fn stored_head(trees: &Trees, stream: &str) -> Result<Option<StreamHead>, StoreError> {
    let key_len = stream.len() + 9;
    let range = trees
        .streams
        .range(stream_key(stream, 0)..=stream_key(stream, u64::MAX));
    for entry in range.rev() {
        let (key, value) = entry?;
        // Another stream whose id extends this one with a NUL byte sorts in between.
        if key.len() != key_len {
            continue;
        }
        let position = decode_u64(&value)
            .ok_or_else(|| corrupt("streams", "value is not a big-endian u64"))?;
        let Some(bytes) = trees.events.get(position.to_be_bytes())? else {
            return Err(StoreError::Corrupt {
                location: format!("events tree, global position {position}"),
                reason: format!(
                    "stream {stream} indexes this position but no event is stored there"
                ),
            });
        };
        let event = decode_event(&position.to_be_bytes(), &bytes)?;
        return Ok(Some(StreamHead {
            version: event.stream_version,
            hash: event.hash,
        }));
    }
    Ok(None)
}

/// The writer thread's state: the only place positions are handed out.
///
/// Groups are pipelined with the [`Flusher`]: once group N's events are in sled, the flusher
/// makes them durable while the writer indexes them and seals group N+1 from the requests
/// that queued meanwhile. The writer writes N+1's events only after N's flush returned, so at
/// most one group is ever unflushed (what `recover` relies on), and N is acknowledged only
/// after both its flush and its index are done.
struct Writer {
    trees: Trees,
    /// Heads of the streams appended to since opening; others are read from disk on first use.
    /// Sealing updates them before the group is durable (the next group chains on them); a
    /// group that fails to write stops the store, so they are never used after a failure.
    heads: HashMap<String, StreamHead>,
    next_position: u64,
    /// `None` only while shutting down, so the flusher sees its queue close.
    flushes: Option<std::sync::mpsc::Sender<Flush>>,
    /// The flusher's verdict on each group handed to it, in order.
    verdicts: std::sync::mpsc::Receiver<Result<(), String>>,
    flusher: Option<JoinHandle<()>>,
    /// A group was handed to the flusher and its verdict not read yet.
    in_flight: bool,
    /// Set after a failed write: the on-disk state is unknown, so refuse appends until reopened.
    failed: Option<String>,
}

/// An append the writer accepted into the current group, waiting for the flush.
struct Accepted {
    reply: oneshot::Sender<Result<AppendResult, StoreError>>,
    result: AppendResult,
}

/// A group sealed in memory: its stored bytes, index entries and waiting appenders.
struct Group {
    /// Every event of a group carries the same time: `recover` finds the last group by it.
    recorded_at: DateTime<Utc>,
    /// Global position and encoded event, in position order.
    events: Vec<(u64, Vec<u8>)>,
    /// `streams` key and global position, in position order.
    index: Vec<(Vec<u8>, u64)>,
    accepted: Vec<Accepted>,
}

/// A group whose events are in sled, for the flusher to make durable and acknowledge.
struct Flush {
    last_position: u64,
    accepted: Vec<Accepted>,
    /// The writer's result of indexing the group (acknowledging waits for it, so a reader
    /// who sees the new head can also find the events by stream).
    indexed: std::sync::mpsc::Receiver<Result<(), String>>,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<AppendRequest>) {
        while let Some(first) = queue.blocking_recv() {
            let mut group = Group {
                recorded_at: chain::truncate_to_micros(Utc::now()),
                events: Vec::new(),
                index: Vec::new(),
                accepted: Vec::new(),
            };
            self.seal(first, &mut group);
            self.seal_queued(&mut queue, &mut group);
            if self.in_flight {
                self.await_verdict();
                // Whatever queued while the previous group was flushing joins this one.
                self.seal_queued(&mut queue, &mut group);
            }
            // With nothing queued there is no next group to overlap with the flush, so the
            // index goes first and the flush covers it: an idle store has nothing left dirty
            // (and the next open nothing to repair).
            let overlap = !queue.is_empty();
            self.write(group, overlap);
        }
        if self.in_flight {
            self.await_verdict();
        }
        // Closing the flusher's queue ends it; joining it means nothing is left unflushed.
        self.flushes.take();
        if let Some(flusher) = self.flusher.take() {
            if flusher.join().is_err() {
                tracing::error!("the event store flusher thread panicked");
            }
        }
    }

    /// Seals every request already queued, up to [`MAX_GROUP_EVENTS`] in the group.
    fn seal_queued(&mut self, queue: &mut mpsc::Receiver<AppendRequest>, group: &mut Group) {
        while group.events.len() < MAX_GROUP_EVENTS {
            match queue.try_recv() {
                Ok(request) => self.seal(request, group),
                Err(_) => break,
            }
        }
    }

    fn await_verdict(&mut self) {
        self.in_flight = false;
        let verdict = self
            .verdicts
            .recv()
            .unwrap_or_else(|_| Err("the event store flusher thread stopped".to_string()));
        if let Err(reason) = verdict {
            self.failed.get_or_insert(reason);
        }
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
        if new_events.is_empty() {
            let _ = reply.send(Err(StoreError::EmptyAppend));
            return;
        }
        if !self.heads.contains_key(&stream) {
            match stored_head(&self.trees, &stream) {
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
        // Each event is encoded once, straight into the bytes sled stores.
        let encoded: Result<Vec<Vec<u8>>, _> = recorded
            .iter()
            .map(|event| {
                let mut bytes = Vec::with_capacity(512);
                serde_json::to_writer(&mut bytes, event).map(|()| bytes)
            })
            .collect();
        let encoded = match encoded {
            Ok(encoded) => encoded,
            Err(e) => {
                let _ = reply.send(Err(StoreError::Backend(format!(
                    "could not encode an event of stream {stream} ({e}); nothing was written"
                ))));
                return;
            }
        };
        for (event, bytes) in recorded.iter().zip(encoded) {
            group.events.push((event.global_position, bytes));
            group.index.push((
                stream_key(&stream, event.stream_version),
                event.global_position,
            ));
        }
        self.next_position = position + recorded.len() as u64;
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

    /// Writes `group`'s events and hands them to the flusher, indexing them meanwhile when
    /// `overlap` (else before).
    fn write(&mut self, group: Group, overlap: bool) {
        let Group {
            events,
            index,
            accepted,
            ..
        } = group;
        if let Some(reason) = &self.failed {
            for a in accepted {
                let _ = a.reply.send(Err(StoreError::Unavailable(reason.clone())));
            }
            return;
        }
        let Some(last_position) = events.last().map(|(position, _)| *position) else {
            return;
        };
        if let Err(e) = self.write_events(events) {
            self.fail(format!("{e}"), accepted);
            return;
        }
        let (indexed_tx, indexed) = std::sync::mpsc::channel();
        let mut index_result = None;
        if !overlap {
            index_result = Some(self.write_index(&index));
        }
        let handed = self.flushes.as_ref().map(|flushes| {
            flushes.send(Flush {
                last_position,
                accepted,
                indexed,
            })
        });
        match handed {
            Some(Ok(())) => self.in_flight = true,
            Some(Err(std::sync::mpsc::SendError(flush))) => {
                self.fail(
                    "the event store flusher thread stopped".into(),
                    flush.accepted,
                );
                return;
            }
            None => return,
        }
        let result = index_result.unwrap_or_else(|| self.write_index(&index));
        if let Err(reason) = &result {
            self.failed.get_or_insert(reason.clone());
        }
        let _ = indexed_tx.send(result);
    }

    /// The group's `streams` entries, as plain inserts: a crash can only lose a tail of them,
    /// which `recover` rebuilds from the events on open.
    fn write_index(&self, index: &[(Vec<u8>, u64)]) -> Result<(), String> {
        index
            .iter()
            .try_for_each(|(key, position)| {
                self.trees
                    .streams
                    .insert(key.as_slice(), &position.to_be_bytes())
                    .map(drop)
            })
            .map_err(|e| {
                format!(
                    "writing to the sled event store failed ({e}); reopen the store after \
                     fixing the disk"
                )
            })
    }

    fn write_events(&self, mut events: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        // Several events go in one atomic batch, so a crash never keeps part of an append or
        // leaves a hole in the positions. A lone event is atomic by itself, and a plain insert
        // spares the batch's fixed cost (sled writes a batch marker in a log buffer of its own).
        if events.len() == 1 {
            if let Some((position, bytes)) = events.pop() {
                self.trees.events.insert(position.to_be_bytes(), bytes)?;
            }
        } else {
            let mut batch = Batch::default();
            for (position, bytes) in events {
                batch.insert(&position.to_be_bytes(), bytes);
            }
            self.trees.events.apply_batch(batch)?;
        }
        Ok(())
    }

    fn fail(&mut self, error: String, accepted: Vec<Accepted>) {
        let reason = format!(
            "writing to the sled event store failed ({error}); reopen the store after fixing the disk"
        );
        tracing::error!("{reason}");
        for a in accepted {
            let _ = a.reply.send(Err(StoreError::Unavailable(reason.clone())));
        }
        self.failed.get_or_insert(reason);
    }
}

/// Makes each group durable, publishes the durable head and acknowledges the appenders.
struct Flusher {
    db: sled::Db,
    /// sled's log file, to `fdatasync` after each flush (`None`: directory unknown).
    log: Option<File>,
    durable: watch::Sender<u64>,
}

impl Flusher {
    fn run(
        self,
        queue: std::sync::mpsc::Receiver<Flush>,
        verdicts: std::sync::mpsc::Sender<Result<(), String>>,
    ) {
        let mut failed: Option<String> = None;
        for flush in queue {
            // One flush (and fdatasync) for the whole group: where concurrent appends share
            // the cost.
            let flushed = match &failed {
                Some(reason) => Err(reason.clone()),
                None => self
                    .db
                    .flush()
                    .map_err(StoreError::from)
                    .and_then(|_| sync_log(self.log.as_ref()))
                    .map_err(|e| {
                        format!(
                            "writing to the sled event store failed ({e}); reopen the store \
                             after fixing the disk"
                        )
                    }),
            };
            // The index is not part of what must be durable (recovery rebuilds it), but
            // readers must find the events by stream once they are acknowledged.
            let indexed = flush.indexed.recv().unwrap_or_else(|_| {
                Err("the event store writer stopped before indexing a group".to_string())
            });
            let verdict = flushed.and(indexed);
            match &verdict {
                Ok(()) => {
                    self.durable.send_replace(flush.last_position);
                    for a in flush.accepted {
                        let _ = a.reply.send(Ok(a.result));
                    }
                }
                Err(reason) => {
                    tracing::error!("{reason}");
                    for a in flush.accepted {
                        let _ = a.reply.send(Err(StoreError::Unavailable(reason.clone())));
                    }
                    failed.get_or_insert(reason.clone());
                }
            }
            if verdicts.send(verdict).is_err() {
                return;
            }
        }
    }
}

fn stream_key(stream: &str, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 9);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn decode_event(key: &[u8], value: &[u8]) -> Result<RecordedEvent, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        location: match decode_u64(key) {
            Some(p) => format!("events tree, global position {p}"),
            None => "events tree, a key that is not a position".to_string(),
        },
        reason: e.to_string(),
    })
}

fn corrupt(tree: &str, reason: &str) -> StoreError {
    StoreError::Corrupt {
        location: format!("{tree} tree"),
        reason: reason.to_string(),
    }
}

/// Events with global position in `[from, upto]`, at most `max`.
fn read_range(
    events: &Tree,
    from: u64,
    max: usize,
    upto: u64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let from = from.max(1);
    if from > upto || max == 0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(max.min(1024));
    for entry in events
        .range(from.to_be_bytes()..=upto.to_be_bytes())
        .take(max)
    {
        let (key, value): (IVec, IVec) = entry?;
        out.push(decode_event(&key, &value)?);
    }
    Ok(out)
}

#[async_trait]
impl EventStore for SledStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        if events.is_empty() {
            return Err(StoreError::EmptyAppend);
        }
        let queue = self.inner.appends.as_ref().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        queue
            .send(AppendRequest {
                stream: stream.to_string(),
                expected,
                events,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let upto = self.durable_head();
        let key_len = stream.len() + 9;
        let mut out = Vec::new();
        let range = self
            .inner
            .trees
            .streams
            .range(stream_key(stream, from_version)..=stream_key(stream, u64::MAX));
        for entry in range {
            if out.len() >= max {
                break;
            }
            let (key, value) = entry?;
            // Another stream whose id extends this one with a NUL byte sorts in between.
            if key.len() != key_len {
                continue;
            }
            let position = decode_u64(&value)
                .ok_or_else(|| corrupt("streams", "value is not a big-endian u64"))?;
            if position > upto {
                break; // in flight: versions after it are too
            }
            let Some(bytes) = self.inner.trees.events.get(position.to_be_bytes())? else {
                return Err(StoreError::Corrupt {
                    location: format!("events tree, global position {position}"),
                    reason: format!(
                        "stream {stream} indexes this position but no event is stored there"
                    ),
                });
            };
            out.push(decode_event(&position.to_be_bytes(), &bytes)?);
        }
        Ok(out)
    }

    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read_range(
            &self.inner.trees.events,
            from_position,
            max,
            self.durable_head(),
        )
    }

    async fn stream_version(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        let upto = self.durable_head();
        let key_len = stream.len() + 9;
        let range = self
            .inner
            .trees
            .streams
            .range(stream_key(stream, 0)..=stream_key(stream, u64::MAX));
        for entry in range.rev() {
            let (key, value) = entry?;
            if key.len() != key_len {
                continue;
            }
            let position = decode_u64(&value)
                .ok_or_else(|| corrupt("streams", "value is not a big-endian u64"))?;
            if position <= upto {
                return Ok(decode_u64(&key[stream.len() + 1..]));
            }
        }
        Ok(None)
    }

    async fn head(&self) -> Result<u64, StoreError> {
        Ok(self.durable_head())
    }

    fn subscribe_all(&self, from_position: u64) -> EventFeed {
        let events = self.inner.trees.events.clone();
        let reader = move |from: u64, max: usize, upto: u64| read_range(&events, from, max, upto);
        feed::follow(Box::new(reader), self.inner.durable.clone(), from_position)
    }
}
