//! The durable embedded backend: an append-only log in segment files, indexed in sled.
//!
//! Layout, in the sled database's directory:
//! - `events-log/` ([`log`]): the events in global order, framed with a CRC, in segment
//!   files; a group commit is one `pwrite` to a file opened with `O_DSYNC` (durable when it
//!   returns, like `write` + `fdatasync`), and is acknowledged after it;
//! - sled tree `stream_index` ([`index`]): per stream, runs of positions by version, written
//!   in the background many at a time, with a checkpoint; entries past the checkpoint live in
//!   memory and are read back from the log on open.
//!
//! So a durable append costs a share of one synchronous write, and no sled write of its own:
//! the stream index is derived from the log and checkpointed, like a projection. The read
//! models live in the same sled database. (Stores written by version 1 — one `events` sled
//! entry and one `streams` entry per event — are converted on open, keeping every event's
//! stored bytes.)
//!
//! One writer thread owns position allocation, the stream heads and the encoding; a flusher
//! thread writes and syncs each group and acknowledges it; an indexer thread writes index
//! runs. Readers never look past the published durable head, so no reader sees position 11
//! while 10 is in flight.
mod index;
mod log;
mod migrate;
mod writer;

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};

use self::index::Recent;
use self::log::EventLog;
use self::writer::{AppendRequest, Trees};
use crate::{
    feed, AppendResult, EventBatch, EventFeed, EventStore, ExpectedVersion, JsonEvents, NewEvent,
    RecordedEvent, StoreError,
};

/// The event log's directory inside the sled database's directory.
const LOG_DIR: &str = "events-log";

/// Appends waiting for the writer; beyond this, appenders wait for room (backpressure).
const QUEUE_DEPTH: usize = 8192;

/// The durable, embedded event store. Cheap to clone (clones share one writer).
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    trees: Trees,
    recent: Recent,
    /// `None` only while dropping, so the writer sees the channel close before it is joined.
    appends: Option<mpsc::Sender<AppendRequest>>,
    durable: watch::Receiver<u64>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Dropped after every sled handle above.
    _lock_release: LockRelease,
    /// Last: a [`SledStore::temporary`] store's directory, removed once everything is closed.
    _temporary: Option<tempfile::TempDir>,
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
        // Closing the queue lets the writer finish the group in hand, index what it holds
        // and exit; joining it means the files are released when the last handle goes.
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

/// Opens (or creates) the sled database in `dir`, where the store and the read models live.
///
/// sled's I/O threads keep its file lock for a moment after the last handle of a database is
/// dropped, so a reopen in the same process (a restart, a test) can find it still locked: this
/// retries for up to two seconds before blaming another process.
pub fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return Ok(db),
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
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = open_db(dir)?;
        // This store owns the database: dropping it waits until sled lets go of the files.
        Self::start(db, dir, Some(dir.join("db")), None)
    }

    /// A store in a fresh temporary directory, removed when the store is dropped (for tests).
    pub fn temporary() -> Result<Self, StoreError> {
        let dir = tempfile::tempdir().map_err(|e| {
            StoreError::Backend(format!("could not create a temporary directory: {e}"))
        })?;
        let db = sled::Config::new().path(dir.path()).open()?;
        let path = dir.path().to_path_buf();
        Self::start(db, &path, Some(path.join("db")), Some(dir))
    }

    /// Uses an already open sled database whose directory is `dir` (the path given to
    /// `sled::Config::path`); the projections keep their trees in the same database, and the
    /// event log goes in `dir/events-log`.
    pub fn with_db_in(db: sled::Db, dir: &Path) -> Result<Self, StoreError> {
        // The caller owns the database (and may keep other handles): nothing to wait for on drop.
        Self::start(db, dir, None, None)
    }

    fn start(
        db: sled::Db,
        dir: &Path,
        log_path: Option<std::path::PathBuf>,
        temporary: Option<tempfile::TempDir>,
    ) -> Result<Self, StoreError> {
        let log_dir = dir.join(LOG_DIR);
        let index = db.open_tree("stream_index")?;
        let log = match migrate::from_v1(&db, &index, &log_dir)? {
            Some(log) => log,
            None => EventLog::open(&log_dir, Some(index.clone()))?,
        };
        let trees = Trees {
            log: Arc::new(log),
            index,
        };
        let recent = Recent::default();
        let last_position = recover(&trees, &recent)?;
        let (durable_tx, durable_rx) = watch::channel(last_position);
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let handle = writer::spawn(trees.clone(), recent.clone(), last_position, durable_tx, rx)?;
        Ok(SledStore {
            inner: Arc::new(Inner {
                db,
                trees,
                recent,
                appends: Some(tx),
                durable: durable_rx,
                writer: Mutex::new(Some(handle)),
                _lock_release: LockRelease { log_path },
                _temporary: temporary,
            }),
        })
    }

    /// The sled database, for trees that must be written atomically beside the log's readers.
    pub fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// The stored bytes of the event at `position`, for tests that tamper with the log.
    #[doc(hidden)]
    pub fn raw_event(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.trees.log.bytes_at(position)
    }

    /// Replaces (or with `None`, removes) the stored bytes of the event at `position` behind
    /// the store's back, as a forger with disk access would; for tamper tests. Returns whether
    /// the position was there.
    #[doc(hidden)]
    pub fn tamper_event(&self, position: u64, bytes: Option<&[u8]>) -> Result<bool, StoreError> {
        self.inner.trees.log.tamper(position, bytes)
    }

    fn durable_head(&self) -> u64 {
        *self.inner.durable.borrow()
    }

    /// (version, position) of up to `max` durable events of `stream` from `from_version`, from
    /// the stream index.
    fn stream_positions(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<(u64, u64)>, StoreError> {
        let upto = self.durable_head();
        // Memory first, then the tree: see `index::positions`.
        let recent = self.inner.recent.runs_of(stream);
        let mut positions =
            index::positions(&self.inner.trees.index, &recent, stream, from_version, max)?;
        // In flight: versions after it are too.
        if let Some(cut) = positions.iter().position(|(_, p)| *p > upto) {
            positions.truncate(cut);
        }
        Ok(positions)
    }
}

/// Finds the last position in the log and reads the entries the stream index lacks back into
/// memory (the events after its checkpoint).
fn recover(trees: &Trees, recent: &Recent) -> Result<u64, StoreError> {
    let last_position = trees.log.last_position();
    let checkpoint = index::checkpoint(&trees.index)?;
    if checkpoint > last_position {
        return Err(StoreError::Corrupt {
            location: "event log".into(),
            reason: format!(
                "the stream index covers positions up to {checkpoint} but the log ends at \
                 {last_position}: events are missing from the log (run `vetted audit verify`)"
            ),
        });
    }
    let mut read_back = 0usize;
    trees
        .log
        .for_each_from(checkpoint + 1, last_position, |position, bytes| {
            let placement =
                index::Placement::of(|| format!("event log, global position {position}"), bytes)?;
            recent.add(&placement.stream_id, placement.stream_version, &[position]);
            read_back += 1;
            Ok(true)
        })?;
    if read_back > 0 {
        tracing::info!(
            events = read_back,
            "read back the stream index entries after its checkpoint"
        );
    }
    Ok(last_position)
}

/// The events at `positions` (ascending `(version, position)`), each checked against the
/// index entry that led to it.
/// The stored frames of `stream`'s events at `positions` ((version, position) pairs from the
/// stream index), checked as [`events_at`] checks the events: each frame must be the event the
/// index says. A frame in the shape stores write is checked by its first bytes (position,
/// stream, version); any other is decoded and checked as an event.
pub(crate) fn frames_at(
    log: &EventLog,
    stream: &str,
    positions: &[(u64, u64)],
) -> Result<JsonEvents, StoreError> {
    let mut out = JsonEvents::new();
    let wanted: Vec<u64> = positions.iter().map(|(_, p)| *p).collect();
    let stream_json = serde_json::to_string(stream).map_err(|e| StoreError::Corrupt {
        location: "stream index".into(),
        reason: format!("stream id {stream}: {e}"),
    })?;
    let mut expected = positions.iter();
    let mut prefix = Vec::with_capacity(64 + stream_json.len());
    log.for_positions(&wanted, |position, bytes| {
        let version = expected
            .by_ref()
            .find(|(_, p)| *p == position)
            .map(|(v, _)| *v);
        prefix.clear();
        if let Some(version) = version {
            // Writing into a `Vec` cannot fail.
            let _ = write!(
                prefix,
                "{{\"globalPosition\":{position},\"streamId\":{stream_json},\"streamVersion\":{version},"
            );
        }
        if version.is_none() || !bytes.starts_with(&prefix) {
            let event = log::decode_event(position, bytes)?;
            if event.stream_id != stream || Some(event.stream_version) != version {
                return Err(not_indexed(stream, version, position, &event));
            }
        }
        out.push(position, bytes);
        Ok(())
    })?;
    if out.len() < positions.len() {
        let missing = positions
            .iter()
            .find(|(_, p)| !out.iter().any(|(at, _)| at == *p))
            .map_or(0, |(_, p)| *p);
        return Err(missing_event(stream, missing));
    }
    Ok(out)
}

/// A log event that is not the one the stream index names.
fn not_indexed(
    stream: &str,
    version: Option<u64>,
    position: u64,
    event: &RecordedEvent,
) -> StoreError {
    StoreError::Corrupt {
        location: format!("event log, global position {position}"),
        reason: format!(
            "the stream index says {stream} version {version:?}, the log holds {} version {}",
            event.stream_id, event.stream_version
        ),
    }
}

/// A position the stream index names with no event stored there.
fn missing_event(stream: &str, position: u64) -> StoreError {
    StoreError::Corrupt {
        location: format!("event log, global position {position}"),
        reason: format!("stream {stream} indexes this position but no event is stored there"),
    }
}

/// The events of `stream` at `positions`, decoded, each checked to be the one the index says
/// (see [`frames_at`]).
pub(crate) fn events_at(
    log: &EventLog,
    stream: &str,
    positions: &[(u64, u64)],
) -> Result<Vec<RecordedEvent>, StoreError> {
    frames_at(log, stream, positions)?
        .iter()
        .map(|(position, bytes)| log::decode_event(position, bytes))
        .collect()
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
        let positions = self.stream_positions(stream, from_version, max)?;
        events_at(&self.inner.trees.log, stream, &positions)
    }

    async fn read_stream_batch(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<EventBatch, StoreError> {
        let positions = self.stream_positions(stream, from_version, max)?;
        frames_at(&self.inner.trees.log, stream, &positions).map(EventBatch::Json)
    }

    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        log::read_range(
            &self.inner.trees.log,
            from_position,
            max,
            self.durable_head(),
        )
    }

    /// The stored frames, copied out of the log without decoding ([`EventBatch::Json`]).
    async fn read_all_batch(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<EventBatch, StoreError> {
        log::read_range_json(
            &self.inner.trees.log,
            from_position,
            max,
            self.durable_head(),
        )
        .map(EventBatch::Json)
    }

    async fn stream_version(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        let upto = self.durable_head();
        let recent = self.inner.recent.runs_of(stream);
        Ok(index::last_entry(&self.inner.trees.index, &recent, stream, upto)?.map(|(v, _)| v))
    }

    async fn head(&self) -> Result<u64, StoreError> {
        Ok(self.durable_head())
    }

    fn subscribe_all(&self, from_position: u64) -> EventFeed {
        let log = self.inner.trees.log.clone();
        let reader = move |from: u64, max: usize, upto: u64| log::read_range(&log, from, max, upto);
        feed::follow(Box::new(reader), self.inner.durable.clone(), from_position)
    }
}
