//! Sorted run files: a generation's rows written once, in key order, into an immutable file
//! (like an SSTable) that becomes the base of the generation (see `crate::table`).
//!
//! A rebuild writes ~670k rows per million events, and sled spends ~4.4 µs on each even in key
//! order, which caps a rebuild far below its target. Writing the same rows sequentially
//! through a buffer into one file costs a fraction of a microsecond per row; the sled tree of
//! the generation then only holds what changes afterwards.
//!
//! # Format (version 1)
//!
//! Fixed-size integers are little-endian; varints are LEB128 (as in `crate::codec`); every
//! CRC is CRC-32 (IEEE, `crc32fast`) of the bytes it follows.
//!
//! ```text
//! file   = block* index footer
//! block  = entry+ crc:u32                  entries of about 8 KiB (an entry larger than that
//!                                          gets a block of its own)
//! entry  = shared:varint                   bytes of the key shared with the previous entry of
//!                                          the block (0 for a block's first entry)
//!          suffix_len:varint
//!          value_len_plus_one:varint       0: a tombstone (the row is removed); n: n - 1 bytes
//!          suffix                          the key's remaining bytes
//!          value
//! index  = blocks:varint
//!          (first_key_len:varint first_key offset:varint len:varint)*
//!                                          one per block, in order; len counts the entries'
//!                                          bytes, not the block's CRC
//!          last_key_len:varint last_key    the run's last key (empty when it has no rows)
//!          crc:u32
//! footer = magic "VETTDRUN"  version:u32  index_offset:u64  index_len:u64 (CRC excluded)
//!          entries:u64  crc:u32            40 bytes, at the very end of the file
//! ```
//!
//! Keys are strictly ascending across the file. Blocks tile the bytes before the index: the
//! first starts at 0 and each starts where the one before it (and its CRC) ends. Every block's
//! CRC is checked each time it is read, so damage is an error naming the file and the offset,
//! never a panic or a silently shorter result. [`Run::open`] checks the footer and the index and
//! keeps the index in memory; blocks are read with positioned reads (`pread`), so any number
//! of threads read one [`Run`] without a lock.
use std::fmt::Display;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sled::IVec;

use crate::ProjectionError;

/// The first bytes of a run file's footer.
const MAGIC: [u8; 8] = *b"VETTDRUN";
/// The format version this module writes and reads.
const VERSION: u32 = 1;
/// Bytes of the footer: magic, version, index offset, index length, entries, CRC.
const FOOTER_LEN: usize = 8 + 4 + 8 + 8 + 8 + 4;
/// Bytes of a CRC after a block or the index.
const CRC_LEN: usize = 4;
/// A block is closed once its entries reach this many bytes.
const BLOCK_TARGET: usize = 8 * 1024;
/// The writer's buffer: blocks reach the file in large writes.
const WRITE_BUFFER: usize = 1 << 20;
/// Bytes written between two background syncs: by the time the run is finished, most of it
/// is on disk already and the final sync waits only for the rest.
const SYNC_AHEAD: u64 = 16 << 20;

/// A thread syncing a file being written, when asked (asks made while it syncs count once).
struct Syncer {
    asks: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Syncer {
    fn start(file: File) -> Syncer {
        let (asks, asked) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while asked.recv().is_ok() {
                while asked.try_recv().is_ok() {}
                file.sync_data()?;
            }
            Ok(())
        });
        Syncer { asks, thread }
    }

    fn ask(&self) {
        // A syncer that stopped on an error reports it at `finish`.
        let _ = self.asks.send(());
    }

    /// Waits for the syncs asked for; the first error, if any.
    fn finish(self) -> std::io::Result<()> {
        drop(self.asks);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the syncing thread failed")))
    }
}

/// What a reader finds under a key of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunValue {
    /// The row's value (possibly empty).
    Value(IVec),
    /// The row was removed: it hides whatever a layer below holds under the key.
    Tombstone,
}

impl RunValue {
    /// The value, `None` for a tombstone.
    pub fn into_value(self) -> Option<IVec> {
        match self {
            RunValue::Value(v) => Some(v),
            RunValue::Tombstone => None,
        }
    }
}

/// What a finished run file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunInfo {
    /// Rows written, tombstones included.
    pub entries: u64,
    /// Size of the file.
    pub bytes: u64,
    /// Data blocks in the file.
    pub blocks: u64,
}

/// An error about the run file at `path`.
fn file_error(path: &Path, reason: impl Display) -> ProjectionError {
    ProjectionError::RunFile {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// An I/O error while doing `what` to the run file at `path`.
fn io_error(path: &Path, what: &str, e: std::io::Error) -> ProjectionError {
    file_error(path, format_args!("{what}: {e}"))
}

/// Damage found in the run file at `path` (a bad CRC, a malformed structure).
fn damage(path: &Path, reason: impl Display) -> ProjectionError {
    file_error(
        path,
        format_args!(
            "{reason}; the file is damaged: rebuild the projection (`vetted projections rebuild <name>`)"
        ),
    )
}

/// A key as text for an error message.
fn show(key: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(key))
}

/// How many leading bytes `a` and `b` share, compared eight at a time: sorted keys share
/// long prefixes, and a byte at a time was a good part of writing them.
pub(crate) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_le_bytes(w)
    };
    let n = a.len().min(b.len());
    let mut at = 0;
    for (x, y) in a[..n].chunks_exact(8).zip(b[..n].chunks_exact(8)) {
        let differ = word(x) ^ word(y);
        if differ != 0 {
            // Little-endian: the lowest differing bit lies in the first differing byte.
            return at + (differ.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + a[at..n]
        .iter()
        .zip(&b[at..n])
        .take_while(|(x, y)| x == y)
        .count()
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads the fields of a block or the index; `None`: the bytes end early or a varint is
/// malformed (the caller names the place).
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Fields { bytes, at: 0 }
    }

    fn is_done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.at)?;
            self.at += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(out);
            }
        }
        None
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }

    /// The next `n` bytes, as a range of the whole.
    fn span(&mut self, n: usize) -> Option<std::ops::Range<usize>> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len())?;
        let span = self.at..end;
        self.at = end;
        Some(span)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let span = self.span(n)?;
        Some(&self.bytes[span])
    }
}

/// Writes a run file: rows pushed in strictly ascending key order, then [`RunWriter::finish`].
///
/// The rows go to `<path>.tmp`, renamed to `path` only once complete and synced, so `path`
/// never holds half a run. A writer dropped before `finish` removes its temporary file.
pub struct RunWriter {
    path: PathBuf,
    tmp: PathBuf,
    /// The file to remove if the writer is dropped now: the temporary file, or the final one
    /// while `finish` is syncing its directory; `None` once finished.
    unfinished: Option<PathBuf>,
    out: Option<BufWriter<File>>,
    block_target: usize,
    /// Entries of the open block.
    block: Vec<u8>,
    /// First key of the open block.
    block_first: Vec<u8>,
    /// The last key pushed.
    last_key: Vec<u8>,
    /// Index entries of the blocks written so far.
    index: Vec<u8>,
    blocks: u64,
    /// Bytes written so far (where the next block starts).
    offset: u64,
    entries: u64,
    /// Syncs the file in the background while it is being written.
    syncer: Option<Syncer>,
    /// Where the last background sync was asked for.
    synced_to: u64,
    /// A write failed: the file is incomplete and the writer refuses to go on.
    failed: bool,
}

impl RunWriter {
    /// Starts a run that [`RunWriter::finish`] will leave at `path` (written to `<path>.tmp`
    /// until then; an older temporary file is overwritten).
    pub fn create(path: &Path) -> Result<RunWriter, ProjectionError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp).map_err(|e| io_error(&tmp, "cannot be created", e))?;
        Ok(RunWriter {
            path: path.to_path_buf(),
            unfinished: Some(tmp.clone()),
            tmp,
            out: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            block_target: BLOCK_TARGET,
            block: Vec::with_capacity(BLOCK_TARGET + 1024),
            block_first: Vec::new(),
            last_key: Vec::new(),
            index: Vec::new(),
            blocks: 0,
            offset: 0,
            entries: 0,
            syncer: None,
            synced_to: 0,
            failed: false,
        })
    }

    /// Small blocks, so that tests span many blocks with few rows.
    #[cfg(test)]
    pub(crate) fn with_block_target(mut self, bytes: usize) -> Self {
        self.block_target = bytes.max(1);
        self
    }

    /// Appends row `key` (`None`: a tombstone). Keys must be strictly ascending: a key equal
    /// to or below the previous one is refused, and the writer stays as it was.
    pub fn push(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), ProjectionError> {
        self.check_usable()?;
        // One walk over the keys gives the prefix they share and their order.
        let common = common_prefix(&self.last_key, key);
        let ascending = match (key.get(common), self.last_key.get(common)) {
            (Some(next), Some(last)) => next > last,
            // The last key is a prefix of this one.
            (Some(_), None) => true,
            // The same key, or this one is a prefix of the last.
            (None, _) => false,
        };
        if self.entries > 0 && !ascending {
            return Err(file_error(
                &self.tmp,
                format_args!(
                    "key {} pushed after {}: a run's keys must be strictly ascending",
                    show(key),
                    show(&self.last_key)
                ),
            ));
        }
        let shared = if self.block.is_empty() {
            self.block_first.clear();
            self.block_first.extend_from_slice(key);
            0
        } else {
            common
        };
        put_varint(&mut self.block, shared as u64);
        put_varint(&mut self.block, (key.len() - shared) as u64);
        put_varint(&mut self.block, value.map_or(0, |v| v.len() as u64 + 1));
        self.block.extend_from_slice(&key[shared..]);
        if let Some(value) = value {
            self.block.extend_from_slice(value);
        }
        self.last_key.truncate(shared);
        self.last_key.extend_from_slice(&key[shared..]);
        self.entries += 1;
        if self.block.len() >= self.block_target {
            self.write_block()?;
        }
        Ok(())
    }

    /// Rows pushed so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    fn check_usable(&self) -> Result<(), ProjectionError> {
        if self.failed {
            return Err(file_error(
                &self.tmp,
                "an earlier write to this run failed; start the run again",
            ));
        }
        Ok(())
    }

    /// Writes `bytes` to the file, marking the writer failed if that fails.
    fn write(&mut self, bytes: &[u8]) -> Result<(), ProjectionError> {
        let result = match &mut self.out {
            Some(out) => out.write_all(bytes),
            None => Err(std::io::Error::other("the run is already finished")),
        };
        result.map_err(|e| {
            self.failed = true;
            io_error(&self.tmp, "cannot be written", e)
        })
    }

    /// Writes the open block and its CRC, and adds it to the index.
    fn write_block(&mut self) -> Result<(), ProjectionError> {
        let block = std::mem::take(&mut self.block);
        let crc = crc32fast::hash(&block);
        let written = self
            .write(&block)
            .and_then(|()| self.write(&crc.to_le_bytes()));
        put_varint(&mut self.index, self.block_first.len() as u64);
        self.index.extend_from_slice(&self.block_first);
        put_varint(&mut self.index, self.offset);
        put_varint(&mut self.index, block.len() as u64);
        self.offset += (block.len() + CRC_LEN) as u64;
        self.blocks += 1;
        self.block = block;
        self.block.clear();
        written?;
        if self.offset - self.synced_to >= SYNC_AHEAD {
            self.sync_ahead()?;
        }
        Ok(())
    }

    /// Hands what is written so far to the kernel and asks the background syncer to sync it.
    fn sync_ahead(&mut self) -> Result<(), ProjectionError> {
        let Some(out) = &mut self.out else {
            return Ok(());
        };
        if let Err(e) = out.flush() {
            self.failed = true;
            return Err(io_error(&self.tmp, "cannot be written", e));
        }
        if self.syncer.is_none() {
            let file = out
                .get_ref()
                .try_clone()
                .map_err(|e| io_error(&self.tmp, "cannot be synced", e))?;
            self.syncer = Some(Syncer::start(file));
        }
        if let Some(syncer) = &self.syncer {
            syncer.ask();
        }
        self.synced_to = self.offset;
        Ok(())
    }

    /// Writes the last block, the index and the footer, syncs the file, renames it to its
    /// final path and syncs the directory. On an error no file is left at the final path.
    pub fn finish(mut self) -> Result<RunInfo, ProjectionError> {
        self.check_usable()?;
        if !self.block.is_empty() {
            self.write_block()?;
        }
        let index_offset = self.offset;
        let mut index = Vec::with_capacity(self.index.len() + self.last_key.len() + 24);
        put_varint(&mut index, self.blocks);
        index.extend_from_slice(&self.index);
        let last_key: &[u8] = if self.entries > 0 {
            &self.last_key
        } else {
            &[]
        };
        put_varint(&mut index, last_key.len() as u64);
        index.extend_from_slice(last_key);
        let crc = crc32fast::hash(&index);
        self.write(&index)?;
        self.write(&crc.to_le_bytes())?;
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        footer.extend_from_slice(&MAGIC);
        footer.extend_from_slice(&VERSION.to_le_bytes());
        footer.extend_from_slice(&index_offset.to_le_bytes());
        footer.extend_from_slice(&(index.len() as u64).to_le_bytes());
        footer.extend_from_slice(&self.entries.to_le_bytes());
        let crc = crc32fast::hash(&footer);
        footer.extend_from_slice(&crc.to_le_bytes());
        self.write(&footer)?;
        let bytes = index_offset + (index.len() + CRC_LEN + FOOTER_LEN) as u64;

        let Some(out) = self.out.take() else {
            return Err(file_error(&self.tmp, "the run is already finished"));
        };
        let file = out
            .into_inner()
            .map_err(|e| io_error(&self.tmp, "cannot be written", e.into_error()))?;
        if let Some(syncer) = self.syncer.take() {
            syncer
                .finish()
                .map_err(|e| io_error(&self.tmp, "cannot be synced", e))?;
        }
        file.sync_all()
            .map_err(|e| io_error(&self.tmp, "cannot be synced", e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| {
            io_error(
                &self.tmp,
                &format!("cannot be renamed to {}", self.path.display()),
                e,
            )
        })?;
        // The file is in place; until its directory entry is durable, an error removes it.
        self.unfinished = Some(self.path.clone());
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(dir, "(the run's directory) cannot be synced", e))?;
        self.unfinished = None;
        Ok(RunInfo {
            entries: self.entries,
            bytes,
            blocks: self.blocks,
        })
    }
}

impl Drop for RunWriter {
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            // Discard the buffer: the file is removed anyway.
            drop(out.into_parts());
        }
        if let Some(unfinished) = &self.unfinished {
            let _ = std::fs::remove_file(unfinished);
        }
    }
}

/// Where a data block lies, and its first key.
struct BlockRef {
    first_key: Box<[u8]>,
    offset: u64,
    /// Bytes of the block's entries (its CRC follows them).
    len: usize,
}

/// An open run file: its index in memory, its blocks read on demand.
pub struct Run {
    path: PathBuf,
    file: File,
    blocks: Vec<BlockRef>,
    last_key: Box<[u8]>,
    entries: u64,
    bytes: u64,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("path", &self.path)
            .field("entries", &self.entries)
            .field("blocks", &self.blocks.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// Where an entry's value lies in its block.
#[derive(Clone, Copy)]
enum Stored {
    Value { start: usize, len: usize },
    Tombstone,
}

/// Walks a block's entries, rebuilding each key from the previous one.
struct Entries<'a> {
    fields: Fields<'a>,
    first_key: &'a [u8],
    key: Vec<u8>,
    seen: usize,
}

impl<'a> Entries<'a> {
    fn new(block: &'a [u8], first_key: &'a [u8]) -> Self {
        Entries {
            fields: Fields::new(block),
            first_key,
            key: Vec::with_capacity(first_key.len() + 16),
            seen: 0,
        }
    }

    /// The next entry (its key in `self.key`); `Err` describes malformed bytes.
    fn next(&mut self) -> Result<Option<Stored>, String> {
        if self.fields.is_done() {
            return if self.seen == 0 {
                Err("the block has no entries".into())
            } else {
                Ok(None)
            };
        }
        let at = self.fields.at;
        let malformed = || format!("entry at byte {at} of the block is malformed");
        let shared = self.fields.len().ok_or_else(malformed)?;
        let suffix_len = self.fields.len().ok_or_else(malformed)?;
        let value_len = self.fields.varint().ok_or_else(malformed)?;
        let suffix = self.fields.take(suffix_len).ok_or_else(malformed)?;
        if shared > self.key.len() {
            return Err(malformed());
        }
        // Keys ascend: what follows the shared prefix must sort above the previous key's rest.
        if self.seen > 0 && suffix <= &self.key[shared..] {
            return Err(format!(
                "entry at byte {at} of the block is out of key order"
            ));
        }
        self.key.truncate(shared);
        self.key.extend_from_slice(suffix);
        if self.seen == 0 && self.key != self.first_key {
            return Err("the block's first key differs from the index".into());
        }
        self.seen += 1;
        Ok(Some(match value_len {
            0 => Stored::Tombstone,
            n => {
                let len = usize::try_from(n - 1).map_err(|_| malformed())?;
                let span = self.fields.span(len).ok_or_else(malformed)?;
                Stored::Value {
                    start: span.start,
                    len,
                }
            }
        }))
    }
}

impl Run {
    /// Opens the run file at `path`, checking its footer and index (kept in memory).
    pub fn open(path: &Path) -> Result<Run, ProjectionError> {
        let file = File::open(path).map_err(|e| io_error(path, "cannot be opened", e))?;
        let bytes = file
            .metadata()
            .map_err(|e| io_error(path, "cannot be read", e))?
            .len();
        if bytes < FOOTER_LEN as u64 {
            return Err(damage(
                path,
                format_args!(
                    "{bytes} bytes, shorter than a run file's {FOOTER_LEN}-byte footer: truncated or not a run file"
                ),
            ));
        }
        let footer_at = bytes - FOOTER_LEN as u64;
        let mut footer = [0u8; FOOTER_LEN];
        file.read_exact_at(&mut footer, footer_at)
            .map_err(|e| io_error(path, "cannot be read", e))?;
        if footer[..8] != MAGIC {
            return Err(damage(
                path,
                format_args!(
                    "no run file footer at offset {footer_at}: truncated, damaged, or not a run file"
                ),
            ));
        }
        let (fields, crc) = footer.split_at(FOOTER_LEN - CRC_LEN);
        if crc32fast::hash(fields) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(damage(
                path,
                format_args!("the footer at offset {footer_at} fails its CRC"),
            ));
        }
        let u64_at =
            |at: usize| u64::from_le_bytes(footer[at..at + 8].try_into().expect("8 bytes"));
        let version = u32::from_le_bytes(footer[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(file_error(
                path,
                format_args!(
                    "run format version {version}, this build reads version {VERSION}; rebuild the projection (`vetted projections rebuild <name>`)"
                ),
            ));
        }
        let (index_offset, index_len, entries) = (u64_at(12), u64_at(20), u64_at(28));
        let index_end = index_offset
            .checked_add(index_len)
            .and_then(|end| end.checked_add(CRC_LEN as u64));
        if index_end != Some(footer_at) {
            return Err(damage(
                path,
                format_args!(
                    "the footer places the index at offset {index_offset} ({index_len} bytes), which does not end where the footer starts ({footer_at})"
                ),
            ));
        }
        let index_bytes = usize::try_from(index_len)
            .ok()
            .and_then(|n| n.checked_add(CRC_LEN))
            .ok_or_else(|| damage(path, format_args!("index of {index_len} bytes")))?;
        let mut index = vec![0u8; index_bytes];
        file.read_exact_at(&mut index, index_offset)
            .map_err(|e| io_error(path, "cannot be read", e))?;
        let (index, crc) = index.split_at(index_bytes - CRC_LEN);
        if crc32fast::hash(index) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(damage(
                path,
                format_args!("the index at offset {index_offset} fails its CRC"),
            ));
        }
        let (blocks, last_key) = Self::read_index(index, index_offset).map_err(|reason| {
            damage(
                path,
                format_args!("the index at offset {index_offset} {reason}"),
            )
        })?;
        if blocks.is_empty() != (entries == 0) {
            return Err(damage(
                path,
                format_args!(
                    "the footer counts {entries} rows in {} blocks",
                    blocks.len()
                ),
            ));
        }
        Ok(Run {
            path: path.to_path_buf(),
            file,
            blocks,
            last_key,
            entries,
            bytes,
        })
    }

    /// Decodes the index and checks that its blocks tile the bytes before it, in key order.
    fn read_index(index: &[u8], index_offset: u64) -> Result<(Vec<BlockRef>, Box<[u8]>), String> {
        let malformed = || "is malformed".to_string();
        let mut fields = Fields::new(index);
        let count = fields.len().ok_or_else(malformed)?;
        // Each block takes at least 3 bytes of index: no count can exceed that.
        if count > index.len() / 3 {
            return Err(malformed());
        }
        let mut blocks: Vec<BlockRef> = Vec::with_capacity(count);
        let mut next_offset = 0u64;
        for i in 0..count {
            let key_len = fields.len().ok_or_else(malformed)?;
            let first_key: Box<[u8]> = fields.take(key_len).ok_or_else(malformed)?.into();
            let offset = fields.varint().ok_or_else(malformed)?;
            let len = fields.len().ok_or_else(malformed)?;
            if offset != next_offset || len == 0 {
                return Err(format!(
                    "places block {i} at offset {offset} ({len} bytes), expected one at {next_offset}"
                ));
            }
            if blocks
                .last()
                .is_some_and(|prev| prev.first_key >= first_key)
            {
                return Err(format!("lists block {i} out of key order"));
            }
            next_offset = offset
                .checked_add(len as u64 + CRC_LEN as u64)
                .ok_or_else(malformed)?;
            blocks.push(BlockRef {
                first_key,
                offset,
                len,
            });
        }
        if next_offset != index_offset {
            return Err(format!(
                "lists blocks up to offset {next_offset}, but the index starts at {index_offset}"
            ));
        }
        let last_len = fields.len().ok_or_else(malformed)?;
        let last_key: Box<[u8]> = fields.take(last_len).ok_or_else(malformed)?.into();
        if !fields.is_done() {
            return Err("has bytes after its last field".into());
        }
        if blocks
            .last()
            .is_some_and(|last| *last.first_key > *last_key)
        {
            return Err("ends with a key below its last block's first key".into());
        }
        Ok((blocks, last_key))
    }

    /// The file this run was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows in the run, tombstones included.
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// Whether the run holds no row at all.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Whether `key` lies between the run's first and last keys (it may still be absent).
    pub fn may_hold(&self, key: &[u8]) -> bool {
        self.blocks
            .first()
            .is_some_and(|first| *first.first_key <= *key && key <= &*self.last_key)
    }

    /// The block that would hold `key`: the last one whose first key is at most `key`.
    fn block_for(&self, key: &[u8]) -> Option<usize> {
        self.blocks
            .partition_point(|b| *b.first_key <= *key)
            .checked_sub(1)
    }

    /// Reads block `i` and checks its CRC; the result holds the entries (the CRC cut off).
    fn read_block(&self, i: usize) -> Result<IVec, ProjectionError> {
        let mut bytes = Vec::new();
        self.read_block_into(i, &mut bytes)?;
        Ok(IVec::from(bytes))
    }

    /// Reads block `i` into `bytes` (replacing what it held) and checks its CRC; `bytes` then
    /// holds the entries (the CRC cut off).
    fn read_block_into(&self, i: usize, bytes: &mut Vec<u8>) -> Result<(), ProjectionError> {
        let block = &self.blocks[i];
        bytes.clear();
        bytes.resize(block.len + CRC_LEN, 0);
        self.file.read_exact_at(bytes, block.offset).map_err(|e| {
            io_error(
                &self.path,
                &format!("block at offset {} cannot be read", block.offset),
                e,
            )
        })?;
        let (entries, crc) = bytes.split_at(block.len);
        if crc32fast::hash(entries) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(damage(
                &self.path,
                format_args!("the block at offset {} fails its CRC", block.offset),
            ));
        }
        bytes.truncate(block.len);
        Ok(())
    }

    /// Malformed entries in block `i`.
    fn malformed(&self, i: usize, reason: String) -> ProjectionError {
        damage(
            &self.path,
            format_args!("block at offset {}: {reason}", self.blocks[i].offset),
        )
    }

    /// Reads block `i` whole: its keys and values (values share the block's buffer).
    fn entries(&self, i: usize) -> Result<Vec<(IVec, RunValue)>, ProjectionError> {
        let block = self.read_block(i)?;
        let mut entries = Entries::new(&block, &self.blocks[i].first_key);
        let mut out = Vec::with_capacity(64);
        while let Some(stored) = entries.next().map_err(|r| self.malformed(i, r))? {
            let value = match stored {
                Stored::Value { start, len } => RunValue::Value(block.subslice(start, len)),
                Stored::Tombstone => RunValue::Tombstone,
            };
            out.push((IVec::from(entries.key.as_slice()), value));
        }
        Ok(out)
    }

    /// What the run holds under `key`: a value, a tombstone, or nothing (`None`).
    pub fn get(&self, key: &[u8]) -> Result<Option<RunValue>, ProjectionError> {
        if !self.may_hold(key) {
            return Ok(None);
        }
        let Some(i) = self.block_for(key) else {
            return Ok(None);
        };
        // Each thread reads blocks for point lookups into one buffer of its own.
        thread_local! {
            static BLOCK: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BLOCK.with_borrow_mut(|block| {
            self.read_block_into(i, block)?;
            let mut entries = Entries::new(block, &self.blocks[i].first_key);
            while let Some(stored) = entries.next().map_err(|r| self.malformed(i, r))? {
                match entries.key.as_slice().cmp(key) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Greater => return Ok(None),
                    std::cmp::Ordering::Equal => {}
                }
                return Ok(Some(match stored {
                    Stored::Value { start, len } => {
                        RunValue::Value(IVec::from(&block[start..start + len]))
                    }
                    Stored::Tombstone => RunValue::Tombstone,
                }));
            }
            Ok(None)
        })
    }

    /// The rows between `lower` and `upper` in key order; iterate from the back
    /// (`next_back`, or [`Run::range_rev`]) for descending order. Both ends may be used on one
    /// range: they meet without repeating a row.
    pub fn range(self: &Arc<Self>, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> RunRange {
        RunRange {
            run: Arc::clone(self),
            lower: lower.map(<[u8]>::to_vec),
            upper: upper.map(<[u8]>::to_vec),
            front: None,
            back: None,
            last_front: None,
            last_back: None,
            done: false,
        }
    }

    /// The rows between `lower` and `upper` in descending key order.
    pub fn range_rev(
        self: &Arc<Self>,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> std::iter::Rev<RunRange> {
        self.range(lower, upper).rev()
    }
}

/// A block being read from one end of a [`RunRange`].
struct Cursor {
    block: usize,
    entries: std::vec::IntoIter<(IVec, RunValue)>,
    /// Index in the block of the entry this end yields next (front: counting up; back: one
    /// past it, counting down).
    at: usize,
}

/// Whether `key` lies above the lower bound `lower`.
fn above(lower: &Bound<Vec<u8>>, key: &[u8]) -> bool {
    match lower {
        Bound::Included(l) => key >= l.as_slice(),
        Bound::Excluded(l) => key > l.as_slice(),
        Bound::Unbounded => true,
    }
}

/// Whether `key` lies below the upper bound `upper`.
fn below(upper: &Bound<Vec<u8>>, key: &[u8]) -> bool {
    match upper {
        Bound::Included(u) => key <= u.as_slice(),
        Bound::Excluded(u) => key < u.as_slice(),
        Bound::Unbounded => true,
    }
}

/// An entry's place in a run: block, index in the block.
type Position = (usize, usize);

/// A range of a run's rows (tombstones included), read a block at a time from either end.
///
/// Yields `(key, RunValue)` in key order from the front and in descending order from the back.
/// After an error it yields nothing more: a damaged block ends the range with an error, never
/// with a shorter result.
pub struct RunRange {
    run: Arc<Run>,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    front: Option<Cursor>,
    back: Option<Cursor>,
    last_front: Option<Position>,
    last_back: Option<Position>,
    done: bool,
}

type RunEntry = (Position, IVec, RunValue);

impl RunRange {
    /// Block `i` for the front: its entries from the lower bound on.
    fn front_cursor(&self, i: usize) -> Result<Cursor, ProjectionError> {
        let entries = self.run.entries(i)?;
        let skip = entries.partition_point(|(k, _)| !above(&self.lower, k));
        let mut entries = entries.into_iter();
        if skip > 0 {
            entries.nth(skip - 1);
        }
        Ok(Cursor {
            block: i,
            entries,
            at: skip,
        })
    }

    /// Block `i` for the back: its entries up to the upper bound.
    fn back_cursor(&self, i: usize) -> Result<Cursor, ProjectionError> {
        let mut entries = self.run.entries(i)?;
        let keep = entries.partition_point(|(k, _)| below(&self.upper, k));
        entries.truncate(keep);
        Ok(Cursor {
            block: i,
            entries: entries.into_iter(),
            at: keep,
        })
    }

    /// The next entry from the front, bounds not yet checked against it.
    fn step_front(&mut self) -> Result<Option<RunEntry>, ProjectionError> {
        loop {
            let next_block = match &mut self.front {
                Some(cursor) => {
                    if let Some((key, value)) = cursor.entries.next() {
                        let at = (cursor.block, cursor.at);
                        cursor.at += 1;
                        return Ok(Some((at, key, value)));
                    }
                    cursor.block + 1
                }
                None => match &self.lower {
                    Bound::Included(l) | Bound::Excluded(l) => self.run.block_for(l).unwrap_or(0),
                    Bound::Unbounded => 0,
                },
            };
            let Some(block) = self.run.blocks.get(next_block) else {
                return Ok(None);
            };
            // Stop before reading a block wholly above the range or taken by the back.
            if !below(&self.upper, &block.first_key)
                || self.last_back.is_some_and(|(b, _)| next_block > b)
            {
                return Ok(None);
            }
            self.front = Some(self.front_cursor(next_block)?);
        }
    }

    /// The next entry from the back, bounds not yet checked against it.
    fn step_back(&mut self) -> Result<Option<RunEntry>, ProjectionError> {
        loop {
            let next_block = match &mut self.back {
                Some(cursor) => {
                    if let Some((key, value)) = cursor.entries.next_back() {
                        cursor.at -= 1;
                        return Ok(Some(((cursor.block, cursor.at), key, value)));
                    }
                    // Every key of the block below sorts under this block's first key: when
                    // that is at or below the lower bound, the range has no more rows.
                    let first = &self.run.blocks[cursor.block].first_key;
                    if cursor.block == 0 || at_or_below(&self.lower, first) {
                        return Ok(None);
                    }
                    cursor.block - 1
                }
                None => {
                    let last = match &self.upper {
                        Bound::Included(u) => self.run.block_for(u),
                        Bound::Excluded(u) => self
                            .run
                            .blocks
                            .partition_point(|b| *b.first_key < **u)
                            .checked_sub(1),
                        Bound::Unbounded => self.run.blocks.len().checked_sub(1),
                    };
                    match last {
                        Some(i) => i,
                        None => return Ok(None),
                    }
                }
            };
            if self.last_front.is_some_and(|(f, _)| next_block < f) {
                return Ok(None);
            }
            self.back = Some(self.back_cursor(next_block)?);
        }
    }
}

/// Whether `key` sorts at or below the key of the lower bound `lower`: every key under it is
/// out of range.
fn at_or_below(lower: &Bound<Vec<u8>>, key: &[u8]) -> bool {
    match lower {
        Bound::Included(l) | Bound::Excluded(l) => key <= l.as_slice(),
        Bound::Unbounded => false,
    }
}

impl Iterator for RunRange {
    type Item = Result<(IVec, RunValue), ProjectionError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step_front() {
            Ok(Some((at, key, value)))
                if self.last_back.is_none_or(|back| at < back) && below(&self.upper, &key) =>
            {
                self.last_front = Some(at);
                Some(Ok((key, value)))
            }
            Ok(_) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl DoubleEndedIterator for RunRange {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step_back() {
            Ok(Some((at, key, value)))
                if self.last_front.is_none_or(|front| at > front) && above(&self.lower, &key) =>
            {
                self.last_back = Some(at);
                Some(Ok((key, value)))
            }
            Ok(_) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// Rows as a model: key → value (`None`: tombstone).
    type Model = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

    fn write(path: &Path, rows: &Model, block_target: usize) -> RunInfo {
        let mut writer = RunWriter::create(path)
            .unwrap()
            .with_block_target(block_target);
        for (key, value) in rows {
            writer.push(key, value.as_deref()).unwrap();
        }
        writer.finish().unwrap()
    }

    fn open(path: &Path) -> Arc<Run> {
        Arc::new(Run::open(path).unwrap())
    }

    fn run_value(value: &Option<Vec<u8>>) -> RunValue {
        match value {
            Some(v) => RunValue::Value(IVec::from(v.as_slice())),
            None => RunValue::Tombstone,
        }
    }

    fn collect(iter: impl Iterator<Item = Result<(IVec, RunValue), ProjectionError>>) -> Model {
        let mut out = Model::new();
        for item in iter {
            let (key, value) = item.unwrap();
            out.insert(key.to_vec(), value.into_value().map(|v| v.to_vec()));
        }
        out
    }

    fn in_order(
        iter: impl Iterator<Item = Result<(IVec, RunValue), ProjectionError>>,
    ) -> Vec<(Vec<u8>, RunValue)> {
        iter.map(|item| {
            let (key, value) = item.unwrap();
            (key.to_vec(), value)
        })
        .collect()
    }

    fn model_range(
        model: &Model,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Vec<(Vec<u8>, RunValue)> {
        model
            .iter()
            .filter(|(k, _)| {
                above(&lower.map(<[u8]>::to_vec), k) && below(&upper.map(<[u8]>::to_vec), k)
            })
            .map(|(k, v)| (k.clone(), run_value(v)))
            .collect()
    }

    /// Rows of every kind: empty values, tombstones, keys sharing long prefixes, keys that are
    /// prefixes of others, a value larger than a block.
    fn varied_rows() -> Model {
        let mut rows = Model::new();
        let long_prefix = "applicant/0123456789abcdef0123456789abcdef/timeline/".repeat(3);
        for i in 0..3_000u32 {
            let key = format!("{long_prefix}{i:08}").into_bytes();
            let value = match i % 7 {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(format!("value {i} ").repeat((i % 13) as usize).into_bytes()),
            };
            rows.insert(key, value);
        }
        rows.insert(b"a".to_vec(), Some(b"1".to_vec()));
        rows.insert(b"ab".to_vec(), Some(b"2".to_vec()));
        rows.insert(b"abc".to_vec(), None);
        rows.insert(Vec::new(), Some(b"the empty key".to_vec()));
        rows.insert(vec![0xff; 40], Some(vec![0; 3]));
        rows.insert(
            b"big".to_vec(),
            Some((0..30_000u32).map(|i| i as u8).collect()),
        );
        rows
    }

    #[test]
    fn rows_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        let rows = varied_rows();
        let info = write(&path, &rows, BLOCK_TARGET);
        assert_eq!(info.entries, rows.len() as u64);
        assert_eq!(info.bytes, std::fs::metadata(&path).unwrap().len());
        assert!(info.blocks > 10, "{info:?}");
        let run = open(&path);
        assert_eq!(run.len(), rows.len() as u64);
        assert_eq!(run.path(), path);
        for (key, value) in &rows {
            assert_eq!(
                run.get(key).unwrap(),
                Some(run_value(value)),
                "{}",
                show(key)
            );
        }
        let all = model_range(&rows, Bound::Unbounded, Bound::Unbounded);
        assert_eq!(in_order(run.range(Bound::Unbounded, Bound::Unbounded)), all);
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(
            in_order(run.range_rev(Bound::Unbounded, Bound::Unbounded)),
            reversed
        );
        assert!(!dir.path().join("run.tmp").exists());
    }

    #[test]
    fn an_empty_run_has_no_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        let info = write(&path, &Model::new(), BLOCK_TARGET);
        assert_eq!((info.entries, info.blocks), (0, 0));
        let run = open(&path);
        assert!(run.is_empty());
        assert_eq!(run.get(b"").unwrap(), None);
        assert_eq!(run.get(b"a").unwrap(), None);
        assert_eq!(run.range(Bound::Unbounded, Bound::Unbounded).count(), 0);
        assert_eq!(
            run.range_rev(Bound::Included(b"a"), Bound::Unbounded)
                .count(),
            0
        );
    }

    #[test]
    fn a_run_of_one_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        let rows = Model::from([(b"only".to_vec(), Some(b"row".to_vec()))]);
        write(&path, &rows, BLOCK_TARGET);
        let run = open(&path);
        assert_eq!(run.len(), 1);
        assert_eq!(
            run.get(b"only").unwrap(),
            Some(RunValue::Value(IVec::from(b"row")))
        );
        for absent in [&b""[..], b"a", b"onl", b"only\0", b"z"] {
            assert_eq!(run.get(absent).unwrap(), None);
        }
        assert_eq!(collect(run.range(Bound::Unbounded, Bound::Unbounded)), rows);
        assert_eq!(
            collect(run.range_rev(Bound::Excluded(b"a"), Bound::Included(b"only"))),
            rows
        );
        assert_eq!(
            run.range(Bound::Excluded(b"only"), Bound::Unbounded)
                .count(),
            0
        );
        assert_eq!(
            run.range_rev(Bound::Unbounded, Bound::Excluded(b"only"))
                .count(),
            0
        );
    }

    #[test]
    fn get_finds_keys_in_every_block_and_nothing_before_between_or_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        // Even numbers only, in blocks of a few rows: every odd number is absent, some just
        // below a block's first key, some just above a block's last.
        let rows: Model = (1..=500u32)
            .map(|i| {
                (
                    format!("k{:06}", i * 2).into_bytes(),
                    Some(i.to_be_bytes().to_vec()),
                )
            })
            .collect();
        let info = write(&path, &rows, 64);
        assert!(info.blocks > 50, "{info:?}");
        let run = open(&path);
        for i in 0..=1_001u32 {
            let key = format!("k{i:06}").into_bytes();
            let expected = rows.get(&key).map(run_value);
            assert_eq!(run.get(&key).unwrap(), expected, "{i}");
        }
        for absent in [
            &b""[..],
            b"a",
            b"k",
            b"k000002\0",
            b"k001000\0",
            b"l",
            &[0xff; 8],
        ] {
            assert_eq!(run.get(absent).unwrap(), None, "{}", show(absent));
        }
    }

    #[test]
    fn ranges_honour_every_kind_of_bound_in_both_directions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        let rows: Model = (0..200u32)
            .map(|i| {
                let value = (i % 5 != 0).then(|| vec![i as u8; (i % 9) as usize]);
                (format!("r{:04}", i * 3).into_bytes(), value)
            })
            .collect();
        write(&path, &rows, 40);
        let run = open(&path);
        // Keys present, absent between rows, before the first and after the last.
        let probes: Vec<Vec<u8>> = [0u32, 1, 2, 3, 57, 58, 60, 300, 301, 596, 597, 598, 1000]
            .iter()
            .map(|i| format!("r{i:04}").into_bytes())
            .chain([b"".to_vec(), b"r".to_vec(), b"s".to_vec()])
            .collect();
        let mut lowers = vec![Bound::Unbounded];
        for p in &probes {
            lowers.extend([Bound::Included(p.as_slice()), Bound::Excluded(p.as_slice())]);
        }
        let uppers = lowers.clone();
        for lower in &lowers {
            for upper in &uppers {
                let expected = model_range(&rows, *lower, *upper);
                assert_eq!(
                    in_order(run.range(*lower, *upper)),
                    expected,
                    "{lower:?}..{upper:?}"
                );
                let mut reversed = expected.clone();
                reversed.reverse();
                assert_eq!(
                    in_order(run.range_rev(*lower, *upper)),
                    reversed,
                    "{lower:?}..{upper:?} reversed"
                );
            }
        }
    }

    #[test]
    fn both_ends_of_a_range_meet_without_repeating_a_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        let rows: Model = (0..100u32)
            .map(|i| (format!("m{i:03}").into_bytes(), Some(vec![i as u8])))
            .collect();
        write(&path, &rows, 30);
        let run = open(&path);
        let expected: Vec<Vec<u8>> = rows.keys().cloned().collect();
        // Alternate ends in several rhythms; the rows taken from each end must add up.
        for rhythm in 1..6usize {
            let mut range = run.range(Bound::Unbounded, Bound::Unbounded);
            let (mut front, mut back) = (Vec::new(), Vec::new());
            let mut step = 0;
            loop {
                let from_front = (step / rhythm) % 2 == 0;
                let item = if from_front {
                    range.next()
                } else {
                    range.next_back()
                };
                let Some(item) = item else { break };
                let key = item.unwrap().0.to_vec();
                if from_front {
                    front.push(key)
                } else {
                    back.push(key)
                }
                step += 1;
            }
            assert!(range.next().is_none() && range.next_back().is_none());
            back.reverse();
            front.extend(back);
            assert_eq!(front, expected, "rhythm {rhythm}");
        }
    }

    #[test]
    fn keys_out_of_order_or_repeated_are_refused_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        let mut writer = RunWriter::create(&path).unwrap();
        writer.push(b"b", Some(b"1")).unwrap();
        for bad in [&b"b"[..], b"a", b""] {
            let err = writer.push(bad, Some(b"x")).unwrap_err();
            assert!(
                matches!(&err, ProjectionError::RunFile { reason, .. } if reason.contains("strictly ascending")),
                "{err}"
            );
        }
        writer.push(b"c", None).unwrap();
        assert_eq!(writer.entries(), 2);
        writer.finish().unwrap();
        let run = open(&path);
        assert_eq!(
            in_order(run.range(Bound::Unbounded, Bound::Unbounded)),
            vec![
                (b"b".to_vec(), RunValue::Value(IVec::from(b"1"))),
                (b"c".to_vec(), RunValue::Tombstone)
            ]
        );
    }

    #[test]
    fn empty_values_are_not_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        let rows = Model::from([
            (b"empty".to_vec(), Some(Vec::new())),
            (b"gone".to_vec(), None),
        ]);
        write(&path, &rows, BLOCK_TARGET);
        let run = open(&path);
        assert_eq!(
            run.get(b"empty").unwrap(),
            Some(RunValue::Value(IVec::default()))
        );
        assert_eq!(run.get(b"gone").unwrap(), Some(RunValue::Tombstone));
    }

    #[test]
    fn a_writer_dropped_unfinished_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        let mut writer = RunWriter::create(&path).unwrap().with_block_target(16);
        for i in 0..100u32 {
            writer.push(&i.to_be_bytes(), Some(b"value")).unwrap();
        }
        assert!(dir.path().join("run.tmp").exists());
        drop(writer);
        assert!(!path.exists());
        assert!(!dir.path().join("run.tmp").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Runs every read of `path`: open, a full scan each way, and a get of each of `keys`.
    /// `Err`: the first error any of them reported.
    fn read_everything(path: &Path, keys: &[Vec<u8>]) -> Result<usize, ProjectionError> {
        let run = Arc::new(Run::open(path)?);
        let mut rows = 0;
        for item in run.range(Bound::Unbounded, Bound::Unbounded) {
            item?;
            rows += 1;
        }
        for item in run.range_rev(Bound::Unbounded, Bound::Unbounded) {
            item?;
        }
        for key in keys {
            run.get(key)?;
        }
        Ok(rows)
    }

    /// A small run of several blocks; its keys and the offset where its index starts.
    fn small_run(path: &Path) -> (Vec<Vec<u8>>, usize) {
        let rows: Model = (0..40u32)
            .map(|i| {
                (
                    format!("row/{i:03}").into_bytes(),
                    (i % 6 != 0).then(|| vec![i as u8; 5]),
                )
            })
            .collect();
        write(path, &rows, 50);
        let len = std::fs::metadata(path).unwrap().len() as usize;
        let footer_at = len - FOOTER_LEN;
        let footer = std::fs::read(path).unwrap()[footer_at..].to_vec();
        let index_at = u64::from_le_bytes(footer[12..20].try_into().unwrap()) as usize;
        (rows.into_keys().collect(), index_at)
    }

    #[test]
    fn every_flipped_byte_is_detected_in_blocks_index_and_footer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        let (keys, index_at) = small_run(&path);
        let good = std::fs::read(&path).unwrap();
        assert_eq!(read_everything(&path, &keys).unwrap(), keys.len());
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            let err = read_everything(&path, &keys)
                .expect_err(&format!("a flipped byte at offset {at} went unnoticed"));
            let ProjectionError::RunFile {
                path: named,
                reason,
            } = &err
            else {
                panic!("byte {at}: {err}");
            };
            assert_eq!(named, &path.display().to_string());
            assert!(reason.contains("offset"), "byte {at}: {reason}");
            // Damage in the index or footer is found on open, before any row is read.
            if at >= index_at {
                assert!(Run::open(&path).is_err(), "byte {at}");
            }
        }
    }

    #[test]
    fn a_damaged_block_ends_a_scan_with_an_error_naming_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        let (keys, _) = small_run(&path);
        let run = open(&path);
        let second = run.blocks[1].offset as usize;
        let first_of_second = run.blocks[1].first_key.to_vec();
        drop(run);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[second + 2] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let run = open(&path);
        let items: Vec<_> = run.range(Bound::Unbounded, Bound::Unbounded).collect();
        let (rows, errors): (Vec<_>, Vec<_>) = items.into_iter().partition(Result::is_ok);
        // The rows of the first block, then the error, then nothing.
        assert!(!rows.is_empty() && rows.len() < keys.len());
        assert_eq!(errors.len(), 1);
        let err = errors.into_iter().next().unwrap().unwrap_err().to_string();
        assert!(
            err.contains(&format!("block at offset {second} fails its CRC")),
            "{err}"
        );
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("rebuild the projection"), "{err}");
        assert!(run.get(&first_of_second).is_err());
        assert!(run.get(&keys[0]).is_ok());
    }

    #[test]
    fn a_truncated_or_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        small_run(&path);
        let good = std::fs::read(&path).unwrap();
        let len = good.len();
        for cut in [
            0,
            1,
            FOOTER_LEN - 1,
            FOOTER_LEN,
            len / 2,
            len - FOOTER_LEN,
            len - 1,
        ] {
            std::fs::write(&path, &good[..cut]).unwrap();
            let err = Run::open(&path).expect_err(&format!("cut at {cut}"));
            assert!(matches!(err, ProjectionError::RunFile { .. }), "{err}");
        }
        // Bytes appended after the footer: the footer is no longer at the end.
        let mut longer = good.clone();
        longer.extend_from_slice(b"tail");
        std::fs::write(&path, &longer).unwrap();
        assert!(Run::open(&path).is_err());
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        assert!(Run::open(&path).is_err());
        assert!(Run::open(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_run_is_read_from_several_threads_at_once() {
        fn shared<T: Send + Sync>() {}
        shared::<Run>();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        let rows = varied_rows();
        write(&path, &rows, 256);
        let run = open(&path);
        let rows = &rows;
        std::thread::scope(|scope| {
            for t in 0..4 {
                let run = Arc::clone(&run);
                scope.spawn(move || {
                    for (i, (key, value)) in rows.iter().enumerate() {
                        if i % 4 == t {
                            assert_eq!(run.get(key).unwrap(), Some(run_value(value)));
                        }
                    }
                    assert_eq!(
                        collect(run.range(Bound::Unbounded, Bound::Unbounded)),
                        *rows
                    );
                });
            }
        });
    }

    fn rows_strategy() -> impl Strategy<Value = Model> {
        let key = prop::collection::vec(prop::sample::select(vec![0u8, 1, b'a', b'b', 0xff]), 0..5);
        let value = prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..20));
        prop::collection::btree_map(key, value, 0..60)
    }

    fn bound_strategy() -> impl Strategy<Value = Bound<Vec<u8>>> {
        let key = prop::collection::vec(prop::sample::select(vec![0u8, 1, b'a', b'b', 0xff]), 0..4);
        prop_oneof![
            Just(Bound::Unbounded),
            key.clone().prop_map(Bound::Included),
            key.prop_map(Bound::Excluded),
        ]
    }

    proptest! {
        /// The word-at-a-time prefix is the byte-at-a-time one, whatever the lengths.
        #[test]
        fn common_prefix_counts_the_shared_leading_bytes(
            a in proptest::collection::vec(0u8..3, 0..40),
            b in proptest::collection::vec(0u8..3, 0..40),
        ) {
            let expected = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            prop_assert_eq!(common_prefix(&a, &b), expected);
            prop_assert_eq!(common_prefix(&a, &a), a.len());
        }

        #[test]
        fn a_run_reads_like_the_map_it_was_written_from(
            rows in rows_strategy(),
            block_target in 1usize..120,
            lower in bound_strategy(),
            upper in bound_strategy(),
            probes in prop::collection::vec(prop::collection::vec(prop::sample::select(vec![0u8, 1, b'a', b'b', 0xff]), 0..5), 0..20),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("run");
            write(&path, &rows, block_target);
            let run = open(&path);
            prop_assert_eq!(run.len(), rows.len() as u64);
            for key in rows.keys().chain(&probes) {
                prop_assert_eq!(run.get(key).unwrap(), rows.get(key).map(run_value));
            }
            let (lower, upper) = (lower.as_ref().map(Vec::as_slice), upper.as_ref().map(Vec::as_slice));
            let expected = model_range(&rows, lower, upper);
            prop_assert_eq!(in_order(run.range(lower, upper)), expected.clone());
            let mut reversed = expected;
            reversed.reverse();
            prop_assert_eq!(in_order(run.range_rev(lower, upper)), reversed);
        }
    }
}
