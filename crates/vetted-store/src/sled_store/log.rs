//! The event log: append-only segment files beside the sled database, synced by us.
//!
//! Why not a sled tree: every `sled::Db::flush` hands a buffer write to sled's I/O thread pool,
//! whose queue wakes all of its seven idle threads per job; on two cores those wake-ups, not
//! the bytes, cost most of an append (profiled: half of the CPU at 64 writers). A group commit
//! here is one `pwrite` on a file opened with `O_DSYNC` (durable when it returns, like `write`
//! + `fdatasync`) on the flusher thread, and nothing else.
//!
//! Layout: directory `events-log/`, files `<first position, 20 digits>.log`. A segment holds
//! consecutive positions from its first; each event is a frame: big-endian `u32` length, the
//! big-endian CRC-32 of the bytes, then the event's JSON (the same bytes the hash chain was
//! computed over when it was sealed, re-decodable, never re-encoded). A segment is closed
//! once it passes [`SEGMENT_BYTES`] and a new one starts at the next group.
//!
//! Lookups: each segment keeps in memory a mark (position, byte offset) at the start of every
//! group and at least every [`MARK_EVERY_BYTES`], so a read starts at most that many bytes
//! before what it wants. Marks are rebuilt on open by scanning the last segment; a closed
//! segment is scanned once and its marks kept in the stream index tree (key `0xFE` + its first
//! position, with a CRC), so an open does not read the whole log again.
//!
//! Crash safety: a group is acknowledged only once its write is durable, so only the tail
//! written after that can be torn. On open, the last segment is scanned and cut at the first
//! frame that is short or fails its CRC; the cut bytes are kept in `<segment>.torn-<offset>`
//! for the operator, never silently dropped. A bad frame inside an older segment is
//! corruption, reported, not cut.
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::{JsonEvents, RecordedEvent, StoreError};

/// A segment is closed once it holds this many bytes.
pub(crate) const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Segment files grow (`fallocate`) by steps of this size ahead of the data, so most group
/// commits do not change the file's size and their sync has no size to persist (the way
/// databases preallocate their write-ahead logs; measured: 57k appends/s at 64 writers
/// growing with every write, 95k with 4 MiB steps). The room reads back as zeros, and a zero
/// frame header marks the end of the data.
pub(crate) const GROW_BYTES: u64 = 4 * 1024 * 1024;
/// Most bytes between two marks inside a group.
pub(crate) const MARK_EVERY_BYTES: u64 = 4096;
/// Frame header: length and CRC. A group header has the same shape, with [`GROUP_FLAG`] set
/// in the length: the length and CRC of all its frames, so a group is read back whole or not
/// at all (an append of several events is atomic across a crash).
const HEADER: usize = 8;
/// Marks a group header's length word (frames are far below 2 GiB).
const GROUP_FLAG: u32 = 0x8000_0000;
/// Largest group: refused when written ([`GroupFrames`]), taken as damage when read.
const MAX_GROUP_BYTES: usize = 256 * 1024 * 1024;
/// Largest event (an event is far smaller: request bodies are ≤ 1 MiB): refused when written,
/// taken as damage when read.
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// The length word and CRC of a frame or group header.
fn parse_header(header: &[u8]) -> (u32, u32) {
    let word = |at: usize| {
        header
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, u32::from_be_bytes)
    };
    (word(0), word(4))
}

/// A group's frames, ready for [`EventLog::append`].
pub(crate) struct GroupFrames {
    pub first_position: u64,
    pub count: u64,
    /// The group header (kept up to date), then the frames.
    pub bytes: Vec<u8>,
    /// Marks relative to the group's start: (position, offset in `bytes`).
    pub marks: Vec<(u64, u64)>,
    crc: crc32fast::Hasher,
}

impl GroupFrames {
    pub fn new(first_position: u64) -> Self {
        let mut bytes = Vec::with_capacity(64 * 1024);
        bytes.extend_from_slice(&[0u8; HEADER]);
        GroupFrames {
            first_position,
            count: 0,
            bytes,
            marks: Vec::new(),
            crc: crc32fast::Hasher::new(),
        }
    }

    /// Appends one frame for the event `encode` writes. An event that cannot be encoded, or
    /// is larger than a frame may be, leaves the group as it was.
    pub fn push_with<E: std::fmt::Display>(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), StoreError> {
        let offset = self.bytes.len();
        self.bytes.extend_from_slice(&[0u8; HEADER]);
        if let Err(e) = encode(&mut self.bytes) {
            self.bytes.truncate(offset);
            return Err(StoreError::Backend(format!(
                "could not encode an event ({e}); nothing was written"
            )));
        }
        let len = self.bytes.len() - offset - HEADER;
        if len > MAX_FRAME {
            self.bytes.truncate(offset);
            return Err(StoreError::TooLarge {
                what: "an event",
                bytes: len,
                limit: MAX_FRAME,
            });
        }
        let crc = crc32fast::hash(&self.bytes[offset + HEADER..]);
        self.bytes[offset..offset + 4].copy_from_slice(&(len as u32).to_be_bytes());
        self.bytes[offset + 4..offset + HEADER].copy_from_slice(&crc.to_be_bytes());
        let last_mark = self.marks.last().map(|(_, o)| *o);
        if last_mark.is_none_or(|m| offset as u64 - m >= MARK_EVERY_BYTES) {
            self.marks
                .push((self.first_position + self.count, offset as u64));
        }
        self.crc.update(&self.bytes[offset..]);
        self.count += 1;
        self.seal_header();
        Ok(())
    }

    /// Appends one frame holding `event` (stored bytes).
    pub fn push(&mut self, event: &[u8]) -> Result<(), StoreError> {
        self.push_with(|bytes| {
            bytes.extend_from_slice(event);
            Ok::<(), std::convert::Infallible>(())
        })
    }

    /// Where the group stands now, to go back to with [`GroupFrames::rollback`].
    pub fn savepoint(&self) -> Savepoint {
        Savepoint {
            len: self.bytes.len(),
            count: self.count,
            marks: self.marks.len(),
            crc: self.crc.clone(),
        }
    }

    /// Drops every frame pushed since `savepoint`.
    pub fn rollback(&mut self, savepoint: Savepoint) {
        self.bytes.truncate(savepoint.len);
        self.count = savepoint.count;
        self.marks.truncate(savepoint.marks);
        self.crc = savepoint.crc;
        self.seal_header();
    }

    /// Refuses a group grown past the largest one the log reads back; call after the pushes
    /// of one append (and roll them back if it fails).
    pub fn check_size(&self) -> Result<(), StoreError> {
        match self.bytes.len() - HEADER {
            body if body > MAX_GROUP_BYTES => Err(StoreError::TooLarge {
                what: "a group of appends",
                bytes: body,
                limit: MAX_GROUP_BYTES,
            }),
            _ => Ok(()),
        }
    }

    /// Writes the group header: the length and CRC of every frame so far.
    fn seal_header(&mut self) {
        let body = (self.bytes.len() - HEADER) as u32;
        self.bytes[..4].copy_from_slice(&(GROUP_FLAG | body).to_be_bytes());
        self.bytes[4..HEADER].copy_from_slice(&self.crc.clone().finalize().to_be_bytes());
    }

    /// Bytes of the group as stored.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether no event was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// A group as it was before an append's frames (see [`GroupFrames::savepoint`]).
pub(crate) struct Savepoint {
    len: usize,
    count: u64,
    marks: usize,
    crc: crc32fast::Hasher,
}

/// Where a group goes: decided in position order by [`EventLog::reserve`].
pub(crate) struct Reservation {
    /// First position of the segment.
    segment: u64,
    file: Arc<File>,
    path: PathBuf,
    at: u64,
}

/// Where a lookup starts.
struct Located {
    segment: u64,
    file: Arc<File>,
    path: PathBuf,
    end: u64,
    mark_position: u64,
    mark_offset: u64,
}

struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// (position, offset) in ascending order; the first is (first, 0) once it holds a frame.
    marks: Vec<(u64, u64)>,
    /// Bytes durable (every read stops here).
    end: u64,
    /// The file's length: data, then room read back as zeros.
    allocated: u64,
    /// Bytes and first position not taken by a reserved group (the writer's view).
    reserved: u64,
    reserved_next: u64,
    /// First position not in this segment.
    next: u64,
}

/// The segment files: read by any thread, appended to by the flusher only.
pub(crate) struct EventLog {
    dir: PathBuf,
    segments: RwLock<Vec<Segment>>,
    /// Where the marks of closed segments are kept, so an open does not scan them again.
    summaries: Option<sled::Tree>,
}

/// Key of a closed segment's summary: `0xFE` (never the start of a UTF-8 stream id, so it can
/// share the stream index tree) and the segment's first position.
fn summary_key(first: u64) -> [u8; 9] {
    let mut key = [0xFE; 9];
    key[1..].copy_from_slice(&first.to_be_bytes());
    key
}

/// A closed segment's scan result: end, next position and marks, with a CRC of them all.
fn encode_summary(end: u64, next: u64, marks: &[(u64, u64)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(20 + marks.len() * 16);
    bytes.extend_from_slice(&end.to_be_bytes());
    bytes.extend_from_slice(&next.to_be_bytes());
    for (position, offset) in marks {
        bytes.extend_from_slice(&position.to_be_bytes());
        bytes.extend_from_slice(&offset.to_be_bytes());
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes
}

/// The summary stored for a segment, if it is there, whole, and fits a file of `len` bytes.
fn decode_summary(bytes: &[u8], len: u64) -> Option<Scan> {
    let (body, crc) = bytes.split_last_chunk::<4>()?;
    if crc32fast::hash(body) != u32::from_be_bytes(*crc) || body.len() < 16 || body.len() % 16 != 0
    {
        return None;
    }
    let words: Vec<u64> = body
        .chunks_exact(8)
        .filter_map(|w| <[u8; 8]>::try_from(w).ok().map(u64::from_be_bytes))
        .collect();
    let (end, next) = (words[0], words[1]);
    if end > len {
        return None;
    }
    Some(Scan {
        marks: words[2..].chunks_exact(2).map(|m| (m[0], m[1])).collect(),
        end,
        next,
        bad: None,
    })
}

fn io_error(what: String, e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("{what}: {e}"))
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.log")
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        location: format!("{}, byte {offset}", path.display()),
        reason: reason.into(),
    }
}

/// What scanning a segment found.
struct Scan {
    marks: Vec<(u64, u64)>,
    end: u64,
    next: u64,
    /// Offset of the first bad frame and why, if any.
    bad: Option<(u64, String)>,
}

/// Reads a file from offset 0 with positional reads (the file's cursor is never used, so
/// scans and appends through shared handles cannot disturb each other).
struct FromStart<'a> {
    file: &'a File,
    offset: u64,
}

impl Read for FromStart<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

fn scan(file: &File, first: u64) -> Result<Scan, std::io::Error> {
    let mut reader = std::io::BufReader::with_capacity(1 << 20, FromStart { file, offset: 0 });
    let mut marks = Vec::new();
    let (mut offset, mut position) = (0u64, first);
    let mut last_mark: Option<u64> = None;
    let mut header = [0u8; HEADER];
    let mut body = Vec::new();
    let bad = 'groups: loop {
        match read_full(&mut reader, &mut header)? {
            0 => break None,
            n if n < HEADER => break Some((offset, "a group header is cut short".to_string())),
            _ => {}
        }
        if header == [0u8; HEADER] {
            // The room after the data (no group is empty).
            break None;
        }
        let (word, crc) = parse_header(&header);
        if word & GROUP_FLAG == 0 {
            break Some((offset, "a frame outside any group".to_string()));
        }
        let len = (word & !GROUP_FLAG) as usize;
        if len > MAX_GROUP_BYTES {
            break Some((offset, format!("a group claims {len} bytes")));
        }
        body.resize(len, 0);
        if read_full(&mut reader, &mut body)? < len {
            break Some((offset, "a group is cut short".to_string()));
        }
        if crc32fast::hash(&body) != crc {
            break Some((offset, "a group fails its CRC".to_string()));
        }
        // The group is whole: index its frames.
        let mut at = 0usize;
        let mut group_position = position;
        let mut group_marks = Vec::new();
        let mut group_last_mark = last_mark;
        while at < len {
            let frame_offset = offset + (HEADER + at) as u64;
            let Some(frame_header) = body.get(at..at + HEADER) else {
                break 'groups Some((offset, "a frame header runs past its group".to_string()));
            };
            let flen = parse_header(frame_header).0 as usize;
            let Some(frame) = body.get(at + HEADER..at + HEADER + flen) else {
                break 'groups Some((offset, "a frame runs past its group".to_string()));
            };
            // The group's CRC covers every frame: each frame's own CRC is checked when it is
            // read, not hashed a second time here.
            if frame.is_empty() {
                break 'groups Some((offset, "a frame is empty".to_string()));
            }
            if group_last_mark.is_none_or(|m| frame_offset - m >= MARK_EVERY_BYTES) {
                group_marks.push((group_position, frame_offset));
                group_last_mark = Some(frame_offset);
            }
            at += HEADER + flen;
            group_position += 1;
        }
        marks.extend(group_marks);
        last_mark = group_last_mark;
        position = group_position;
        offset += (HEADER + len) as u64;
    };
    Ok(Scan {
        marks,
        end: offset,
        next: position,
        bad,
    })
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize, std::io::Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(format!("could not sync directory {}", dir.display()), e))
}

impl EventLog {
    /// Opens the segments in `dir` (creating it), cutting a torn tail off the last one.
    ///
    /// Closed segments are scanned only the first time: their marks are then kept in
    /// `summaries` (when given), and later opens read them from there.
    pub fn open(dir: &Path, summaries: Option<sled::Tree>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io_error(format!("could not create {}", dir.display()), e))?;
        let mut firsts = Vec::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| io_error(format!("could not list {}", dir.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| io_error(format!("could not list {}", dir.display()), e))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
                continue;
            };
            if let Ok(first) = stem.parse::<u64>() {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut segments: Vec<Segment> = Vec::new();
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            let path = dir.join(segment_name(first));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DSYNC)
                .open(&path)
                .map_err(|e| io_error(format!("could not open {}", path.display()), e))?;
            let closed = i + 1 < count;
            let len = file
                .metadata()
                .map_err(|e| io_error(format!("could not stat {}", path.display()), e))?
                .len();
            let summary = match (&summaries, closed) {
                (Some(tree), true) => tree
                    .get(summary_key(first))?
                    .and_then(|bytes| decode_summary(&bytes, len)),
                _ => None,
            };
            let found = match summary {
                Some(found) => found,
                None => {
                    let found = scan(&file, first)
                        .map_err(|e| io_error(format!("could not read {}", path.display()), e))?;
                    if let (Some(tree), true, None) = (&summaries, closed, &found.bad) {
                        tree.insert(
                            summary_key(first),
                            encode_summary(found.end, found.next, &found.marks),
                        )?;
                    }
                    found
                }
            };
            if let Some(previous) = segments.last() {
                if previous.next != first {
                    return Err(corrupt(
                        &path,
                        0,
                        format!(
                            "the previous segment ends before position {} but this one starts \
                             at {first}",
                            previous.next
                        ),
                    ));
                }
            }
            if closed {
                if let Some((offset, reason)) = &found.bad {
                    return Err(corrupt(&path, *offset, reason.clone()));
                }
            } else {
                settle_tail(
                    &path,
                    &file,
                    len,
                    found.end,
                    found.bad.as_ref().map(|b| b.1.as_str()),
                )?;
            }
            // The last segment now ends where its data does (`settle_tail`).
            let allocated = if closed { len } else { found.end };
            segments.push(Segment {
                first,
                path,
                file: Arc::new(file),
                marks: found.marks,
                end: found.end,
                reserved: found.end,
                reserved_next: found.next,
                allocated,
                next: found.next,
            });
        }
        Ok(EventLog {
            dir: dir.to_path_buf(),
            segments: RwLock::new(segments),
            summaries,
        })
    }

    fn read_segments(&self) -> std::sync::RwLockReadGuard<'_, Vec<Segment>> {
        self.segments.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The last position in the log (0 when empty).
    pub fn last_position(&self) -> u64 {
        self.read_segments().last().map_or(0, |s| s.next - 1)
    }

    /// Writes a group at the end of the log and syncs it: [`EventLog::reserve`],
    /// [`EventLog::write`] and [`EventLog::publish`] in one (conversions and tests).
    pub fn append(&self, group: &GroupFrames) -> Result<(), StoreError> {
        let reservation = self.reserve(group)?;
        self.write(&reservation, group)?;
        self.publish(&reservation, group);
        Ok(())
    }

    /// Whether the next group starts a new segment (the writer lets every group in flight
    /// finish first, so a crash can only tear groups in the last segment).
    pub fn rotation_due(&self) -> bool {
        self.read_segments()
            .last()
            .is_none_or(|last| last.reserved >= SEGMENT_BYTES)
    }

    /// Decides where `group` goes: after the last reserved group, in a new segment when the
    /// current one is full. Grows the file ahead of the data (`fallocate`, read back as zeros)
    /// so most writes do not change its size. Groups must be reserved in position order (the
    /// writer thread does it); they may then be written concurrently.
    pub fn reserve(&self, group: &GroupFrames) -> Result<Reservation, StoreError> {
        let len = group.bytes.len() as u64;
        let mut segments = self.segments.write().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = segments.last() {
            if last.reserved_next != group.first_position {
                return Err(StoreError::Backend(format!(
                    "the log ends before position {} but a group starts at {}",
                    last.reserved_next, group.first_position
                )));
            }
        }
        let full = segments
            .last()
            .is_none_or(|last| last.reserved >= SEGMENT_BYTES);
        if full {
            // The writer let every group of the last segment finish: it is closed for good.
            if let (Some(tree), Some(last)) = (&self.summaries, segments.last()) {
                tree.insert(
                    summary_key(last.first),
                    encode_summary(last.end, last.next, &last.marks),
                )?;
            }
            let path = self.dir.join(segment_name(group.first_position));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DSYNC)
                .create_new(true)
                .open(&path)
                .map_err(|e| io_error(format!("could not create {}", path.display()), e))?;
            // The new file's name must survive a crash before its first group is acknowledged.
            sync_dir(&self.dir)?;
            segments.push(Segment {
                first: group.first_position,
                path,
                file: Arc::new(file),
                marks: Vec::new(),
                end: 0,
                next: group.first_position,
                reserved: 0,
                reserved_next: group.first_position,
                allocated: 0,
            });
        }
        let Some(active) = segments.last_mut() else {
            return Err(StoreError::Backend("no segment to write to".into()));
        };
        let at = active.reserved;
        let end = at + len;
        if end > active.allocated {
            let grown = end.div_ceil(GROW_BYTES) * GROW_BYTES;
            fs2::FileExt::allocate(&*active.file, grown)
                .map_err(|e| io_error(format!("could not grow {}", active.path.display()), e))?;
            active.allocated = grown;
        }
        active.reserved = end;
        active.reserved_next = group.first_position + group.count;
        Ok(Reservation {
            segment: active.first,
            file: active.file.clone(),
            path: active.path.clone(),
            at,
        })
    }

    /// Writes a reserved group; the file is opened with `O_DSYNC`, so it is durable when this
    /// returns (as `write` + `fdatasync`, in one system call). Any thread may call this.
    pub fn write(&self, reservation: &Reservation, group: &GroupFrames) -> Result<(), StoreError> {
        reservation
            .file
            .write_all_at(&group.bytes, reservation.at)
            .map_err(|e| io_error(format!("could not write {}", reservation.path.display()), e))
    }

    /// Lets readers see a written group. Groups must be published in position order, each
    /// only after every earlier one is written.
    pub fn publish(&self, reservation: &Reservation, group: &GroupFrames) {
        let mut segments = self.segments.write().unwrap_or_else(|e| e.into_inner());
        if let Some(segment) = segments
            .iter_mut()
            .rev()
            .find(|s| s.first == reservation.segment)
        {
            let at = reservation.at;
            segment
                .marks
                .extend(group.marks.iter().map(|(p, o)| (*p, at + o)));
            segment.end = at + group.bytes.len() as u64;
            segment.next = group.first_position + group.count;
        }
    }

    /// Where to start reading for `position`: its segment (first position, file, path,
    /// durable end) and the nearest mark at or before it.
    fn locate(&self, position: u64) -> Option<Located> {
        let segments = self.read_segments();
        let i = segments
            .partition_point(|s| s.first <= position)
            .checked_sub(1)?;
        let segment = &segments[i];
        if position >= segment.next {
            return None;
        }
        let m = segment
            .marks
            .partition_point(|(p, _)| *p <= position)
            .checked_sub(1)?;
        let (mark_position, mark_offset) = segment.marks[m];
        Some(Located {
            segment: segment.first,
            file: segment.file.clone(),
            path: segment.path.clone(),
            end: segment.end,
            mark_position,
            mark_offset,
        })
    }

    /// Calls `f` with each stored event's position and bytes from `from` on, in order, until
    /// it returns `false`, `upto` is passed or the log ends.
    pub fn for_each_from(
        &self,
        from: u64,
        upto: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut position = from.max(1);
        while position <= upto {
            let Some(found) = self.locate(position) else {
                return Ok(());
            };
            let (mut at_position, mut offset) = (found.mark_position, found.mark_offset);
            let end = found.end;
            let mut window = Window::new(found.file, found.path, end, SCAN_READ);
            while offset < end && at_position <= upto {
                let Some((bytes, next)) = window.frame(offset)? else {
                    break;
                };
                if at_position >= position && !f(at_position, bytes)? {
                    return Ok(());
                }
                offset = next;
                at_position += 1;
            }
            if at_position <= position {
                // Fewer frames than positions: removed behind the store's back (`verify`
                // reports what is missing); there is nothing more to read here.
                return Ok(());
            }
            position = at_position;
        }
        Ok(())
    }

    /// Calls `f` with the bytes of each of `positions` (ascending) that is stored, reading
    /// neighbouring positions with one read.
    pub fn for_positions(
        &self,
        positions: &[u64],
        mut f: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // Where the last lookup stopped: segment, next position and its offset, and the buffer.
        let mut cursor: Option<(u64, u64, u64, Window)> = None;
        for &position in positions {
            let Some(found) = self.locate(position) else {
                continue;
            };
            let (mut at_position, mut offset, mut window) = match cursor.take() {
                Some((segment, at, off, window))
                    if segment == found.segment && at <= position && at >= found.mark_position =>
                {
                    (at, off, window)
                }
                _ => (
                    found.mark_position,
                    found.mark_offset,
                    Window::new(found.file, found.path, found.end, POINT_READ),
                ),
            };
            while offset < window.end {
                let Some((bytes, next)) = window.frame(offset)? else {
                    break;
                };
                let here = at_position;
                if here == position {
                    f(here, bytes)?;
                }
                offset = next;
                at_position += 1;
                if here == position {
                    break;
                }
            }
            cursor = Some((found.segment, at_position, offset, window));
        }
        Ok(())
    }

    /// The stored bytes of `position`.
    pub fn bytes_at(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let mut found = None;
        self.for_positions(&[position], |_, bytes| {
            found = Some(bytes.to_vec());
            Ok(())
        })?;
        Ok(found)
    }

    /// Rewrites the frame of `position` (`None` removes it) behind the store's back, as a
    /// forger with disk access would (recomputing the CRC); for tamper tests.
    pub fn tamper(&self, position: u64, replacement: Option<&[u8]>) -> Result<bool, StoreError> {
        let mut segments = self.segments.write().unwrap_or_else(|e| e.into_inner());
        let Some(segment) = segments
            .iter_mut()
            .find(|s| s.first <= position && position < s.next)
        else {
            return Ok(false);
        };
        let mut old = Vec::new();
        let mut window = Window::new(
            segment.file.clone(),
            segment.path.clone(),
            segment.end,
            SCAN_READ,
        );
        let mut offset = 0;
        while offset < segment.end {
            let Some((bytes, next)) = window.frame(offset)? else {
                break;
            };
            offset = next;
            old.push(bytes.to_vec());
        }
        let index = (position - segment.first) as usize;
        match replacement {
            Some(bytes) => old[index] = bytes.to_vec(),
            None => {
                old.remove(index);
            }
        }
        // Each event becomes a group of its own (a forger would rewrite group checksums too).
        let mut rewritten = Vec::new();
        for (n, frame) in old.iter().enumerate() {
            let mut group = GroupFrames::new(segment.first + n as u64);
            group.push(frame)?;
            rewritten.extend_from_slice(&group.bytes);
        }
        let io = |e| io_error(format!("could not rewrite {}", segment.path.display()), e);
        segment.file.set_len(0).map_err(io)?;
        segment.file.write_all_at(&rewritten, 0).map_err(io)?;
        segment.file.sync_data().map_err(io)?;
        if let Some(tree) = &self.summaries {
            tree.remove(summary_key(segment.first))?;
        }
        let found = scan(&segment.file, segment.first).map_err(io)?;
        segment.marks = found.marks;
        segment.end = found.end;
        segment.reserved = found.end;
        segment.allocated = found.end;
        // Positions keep what the writer handed out (a removal leaves a hole at the end).
        Ok(true)
    }
}

/// Makes the last segment end exactly where its data ends: bytes after it (a group torn by a
/// crash, or the zero-filled room) are cut, and any that are not zeros are kept in
/// `<segment>.torn-<offset>` for the operator first. Later appends then never meet stale bytes.
fn settle_tail(
    path: &Path,
    file: &File,
    len: u64,
    end: u64,
    bad: Option<&str>,
) -> Result<(), StoreError> {
    if len <= end {
        return Ok(());
    }
    let mut tail = vec![0u8; (len - end) as usize];
    file.read_exact_at(&mut tail, end)
        .map_err(|e| io_error(format!("could not read {}", path.display()), e))?;
    let written = tail.len() - tail.iter().rev().take_while(|b| **b == 0).count();
    if written > 0 {
        tail.truncate(written);
        let mut kept = path.as_os_str().to_owned();
        kept.push(format!(".torn-{end}"));
        std::fs::write(&kept, &tail).map_err(|e| {
            io_error(
                format!("could not keep the torn tail of {}", path.display()),
                e,
            )
        })?;
        tracing::warn!(
            segment = %path.display(),
            offset = end,
            bytes = tail.len(),
            reason = bad.unwrap_or("bytes after the end of the data"),
            kept = %PathBuf::from(&kept).display(),
            "cut a torn tail off the event log (written after the last acknowledged sync)"
        );
    }
    file.set_len(end)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(format!("could not truncate {}", path.display()), e))
}

/// Buffered positional reads of one segment.
struct Window {
    file: Arc<File>,
    path: PathBuf,
    /// File offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
    end: u64,
    /// Bytes read at a time.
    read_size: usize,
}

/// Read size for scans in position order.
const SCAN_READ: usize = 256 * 1024;
/// Read size for point lookups (a mark is at most [`MARK_EVERY_BYTES`] before any frame).
const POINT_READ: usize = 8 * 1024;

impl Window {
    fn new(file: Arc<File>, path: PathBuf, end: u64, read_size: usize) -> Self {
        Window {
            file,
            path,
            start: 0,
            buf: Vec::new(),
            end,
            read_size,
        }
    }

    /// Makes `[offset, offset + len)` available in `buf`.
    fn fill(&mut self, offset: u64, len: usize) -> Result<bool, StoreError> {
        if offset + len as u64 > self.end {
            return Ok(false);
        }
        let have =
            offset >= self.start && offset + len as u64 <= self.start + self.buf.len() as u64;
        if !have {
            let want = (len.max(self.read_size) as u64).min(self.end - offset) as usize;
            self.buf.resize(want, 0);
            self.file
                .read_exact_at(&mut self.buf, offset)
                .map_err(|e| io_error(format!("could not read {}", self.path.display()), e))?;
            self.start = offset;
        }
        Ok(true)
    }

    /// The checked bytes of the frame at `offset` (skipping a group header there) and the
    /// offset after it; `None` past the durable end.
    fn frame(&mut self, mut offset: u64) -> Result<Option<(&[u8], u64)>, StoreError> {
        for _ in 0..2 {
            if !self.fill(offset, HEADER)? {
                return Ok(None);
            }
            let at = (offset - self.start) as usize;
            let header = &self.buf[at..at + HEADER];
            if header == [0u8; HEADER] {
                return Ok(None);
            }
            let (word, crc) = parse_header(header);
            if word & GROUP_FLAG != 0 {
                // A group starts here; its first frame follows the header.
                offset += HEADER as u64;
                continue;
            }
            let len = word as usize;
            if len > MAX_FRAME || !self.fill(offset, HEADER + len)? {
                return Err(corrupt(
                    &self.path,
                    offset,
                    "a frame runs past the end of the log",
                ));
            }
            let at = (offset - self.start) as usize + HEADER;
            let bytes = &self.buf[at..at + len];
            if crc32fast::hash(bytes) != crc {
                return Err(corrupt(&self.path, offset, "a frame fails its CRC"));
            }
            return Ok(Some((bytes, offset + (HEADER + len) as u64)));
        }
        Err(corrupt(&self.path, offset, "two group headers in a row"))
    }
}

/// Decodes one stored event.
pub(crate) fn decode_event(position: u64, bytes: &[u8]) -> Result<RecordedEvent, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        location: format!("event log, global position {position}"),
        reason: e.to_string(),
    })
}

/// Events with global position in `[from, upto]`, at most `max`, in global order.
pub(crate) fn read_range(
    log: &EventLog,
    from: u64,
    max: usize,
    upto: u64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut out = Vec::with_capacity(max.min(1024));
    if max == 0 {
        return Ok(out);
    }
    log.for_each_from(from, upto, |position, bytes| {
        out.push(decode_event(position, bytes)?);
        Ok(out.len() < max)
    })?;
    Ok(out)
}

/// Most frames [`read_range_json`] makes room for up front.
const MAX_RESERVED_FRAMES: usize = 100_000;

/// The stored bytes of the events with global position in `[from, upto]`, at most `max`, in
/// global order: copied out of the segments (each frame's CRC checked), not decoded.
pub(crate) fn read_range_json(
    log: &EventLog,
    from: u64,
    max: usize,
    upto: u64,
) -> Result<JsonEvents, StoreError> {
    let there =
        usize::try_from(upto.saturating_sub(from.max(1)).saturating_add(1)).unwrap_or(usize::MAX);
    let expected = max.min(there);
    let mut out = JsonEvents::new();
    if max == 0 {
        return Ok(out);
    }
    log.for_each_from(from, upto, |position, bytes| {
        if out.is_empty() {
            // Room for the frames there are (up to a point) at about this one's size, so the
            // buffer is not copied as it grows (a bigger read grows it as it goes).
            let frames = expected.min(MAX_RESERVED_FRAMES);
            out.reserve(frames, frames.saturating_mul(bytes.len() + bytes.len() / 4));
        }
        out.push(position, bytes);
        Ok(out.len() < max)
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends one frame for `event` to `out`.
    fn put_frame(out: &mut Vec<u8>, event: &[u8]) {
        out.extend_from_slice(&(event.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32fast::hash(event).to_be_bytes());
        out.extend_from_slice(event);
    }

    fn group(first: u64, events: &[Vec<u8>]) -> GroupFrames {
        let mut group = GroupFrames::new(first);
        for e in events {
            group.push(e).expect("a frame within the limits");
        }
        group
    }

    fn all(log: &EventLog) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        log.for_each_from(1, u64::MAX, |p, b| {
            out.push((p, b.to_vec()));
            Ok(true)
        })
        .expect("read");
        out
    }

    #[test]
    fn groups_read_back_by_position_and_a_torn_tail_is_cut_and_kept_on_open() {
        let dir = tempfile::tempdir().expect("dir");
        let events: Vec<Vec<u8>> = (0..200u32)
            .map(|i| vec![(i % 251) as u8; 100 + i as usize])
            .collect();
        {
            let log = EventLog::open(dir.path(), None).expect("open");
            log.append(&group(1, &events[..150])).expect("append");
            log.append(&group(151, &events[150..])).expect("append");
            assert_eq!(log.last_position(), 200);
            assert_eq!(log.bytes_at(77).expect("read"), Some(events[76].clone()));
            assert_eq!(log.bytes_at(201).expect("read"), None);
            let mut seen = Vec::new();
            log.for_each_from(149, 152, |p, _| {
                seen.push(p);
                Ok(true)
            })
            .expect("read");
            assert_eq!(seen, vec![149, 150, 151, 152]);
        }
        // A crash while writing the next group: part of its bytes reached the file, in the
        // zero-filled room after the data.
        let path = dir.path().join(segment_name(1));
        // Two groups: two group headers, then one frame header per event.
        let len: u64 = 2 * HEADER as u64
            + events
                .iter()
                .map(|e| (HEADER + e.len()) as u64)
                .sum::<u64>();
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), GROW_BYTES);
        let mut torn = Vec::new();
        put_frame(&mut torn, &[9u8; 500]);
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.write_all_at(&torn[..300], len).expect("write");
        file.write_all_at(&[7u8; 10], len + 1000).expect("write");
        drop(file);

        let log = EventLog::open(dir.path(), None).expect("reopen");
        assert_eq!(log.last_position(), 200);
        let read: Vec<Vec<u8>> = all(&log).into_iter().map(|(_, b)| b).collect();
        assert_eq!(read, events);
        let kept = std::fs::read(format!("{}.torn-{len}", path.display())).expect("kept");
        let mut expected = torn[..300].to_vec();
        expected.resize(1000, 0);
        expected.extend_from_slice(&[7u8; 10]);
        assert_eq!(kept, expected, "the cut bytes are kept");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), len);
        log.append(&group(201, &events[..1]))
            .expect("append after the cut");
        assert_eq!(log.bytes_at(201).expect("read"), Some(events[0].clone()));
    }

    #[test]
    fn a_group_cut_short_by_a_crash_is_cut_whole_so_a_multi_event_append_stays_atomic() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(segment_name(1));
        let first = group(1, &[vec![1u8; 50]]);
        let second = group(2, &[vec![2u8; 50], vec![3u8; 50], vec![4u8; 50]]);
        {
            let log = EventLog::open(dir.path(), None).expect("open");
            log.append(&first).expect("append");
        }
        // The crash: the next group's header and first two frames reached the disk, not the
        // third. Every frame that did is whole and passes its own CRC.
        let cut = second.len() - (HEADER + 50);
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.write_all_at(&second.bytes[..cut], first.len() as u64)
            .expect("write");
        drop(file);

        let log = EventLog::open(dir.path(), None).expect("reopen");
        assert_eq!(
            log.last_position(),
            1,
            "none of the torn group's events is kept"
        );
        assert_eq!(all(&log).len(), 1);
        assert!(
            std::fs::metadata(format!("{}.torn-{}", path.display(), first.len())).is_ok(),
            "its bytes are kept aside"
        );
        log.append(&group(2, &[vec![5u8; 10]]))
            .expect("append after the cut");
        assert_eq!(log.bytes_at(2).expect("read"), Some(vec![5u8; 10]));
    }

    #[test]
    fn a_full_segment_is_followed_by_a_new_file_scanned_once_and_its_summary_read_on_later_opens() {
        let dir = tempfile::tempdir().expect("dir");
        let db = sled::Config::new().temporary(true).open().expect("db");
        let summaries = db.open_tree("stream_index").expect("tree");
        let big = vec![vec![1u8; 1024 * 1024]; 40];
        {
            let log = EventLog::open(dir.path(), Some(summaries.clone())).expect("open");
            log.append(&group(1, &big)).expect("append");
            log.append(&group(41, &big)).expect("append");
            log.append(&group(81, &big[..1])).expect("append");
        }
        let files = std::fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(files, 2, "the third group starts a second segment");
        let stored = summaries
            .get(summary_key(1))
            .expect("read")
            .expect("written when the segment was closed");
        let len = std::fs::metadata(dir.path().join(segment_name(1)))
            .expect("stat")
            .len();
        let summary = decode_summary(&stored, len).expect("whole");
        assert_eq!(
            (summary.end, summary.next),
            (80 * (1024 * 1024 + 8) + 16, 81)
        );
        assert!(
            summaries.get(summary_key(81)).expect("read").is_none(),
            "the last is open"
        );

        let log = EventLog::open(dir.path(), Some(summaries.clone())).expect("reopen");
        assert_eq!(log.last_position(), 81);
        assert_eq!(
            log.bytes_at(40).expect("read").map(|b| b.len()),
            Some(1024 * 1024)
        );
        assert_eq!(
            log.bytes_at(81).expect("read").map(|b| b.len()),
            Some(1024 * 1024)
        );
        assert_eq!(all(&log).len(), 81);
        drop(log);

        // A damaged summary is not trusted: the segment is scanned again and it is rewritten.
        summaries
            .insert(summary_key(1), &b"not a summary"[..])
            .expect("damage");
        let log = EventLog::open(dir.path(), Some(summaries.clone())).expect("reopen");
        assert_eq!(all(&log).len(), 81);
        assert_eq!(
            summaries
                .get(summary_key(1))
                .expect("read")
                .map(|v| v.to_vec()),
            Some(stored.to_vec())
        );
    }
}
