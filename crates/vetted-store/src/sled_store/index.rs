//! The stream index: which global positions hold a stream's versions.
//!
//! The log is the truth; the index is derived from it and checkpointed, the way a projection
//! is. Recent entries live in memory ([`Recent`]) and are written to the `stream_index` tree
//! in the background, many at a time, so an append costs no index write of its own:
//! - `stream_index` key: stream id bytes, `0x00`, first version (big-endian `u64`); value: the
//!   positions of that version and the following ones, big-endian `u64` each (a run);
//! - key `0xFF` (never the start of a UTF-8 stream id): the position up to which every event
//!   is in the tree (the index checkpoint), written in the same atomic batch as the runs.
//!
//! On open, the log after the checkpoint is read back into memory (bounded by how often the
//! writer hands entries to the indexer), so a crash loses no index entry.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sled::{Batch, Tree};

use crate::StoreError;

/// Just what the index needs from a stored event: its stream and version.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Placement<'a> {
    #[serde(borrow)]
    pub stream_id: std::borrow::Cow<'a, str>,
    pub stream_version: u64,
}

impl<'a> Placement<'a> {
    /// Reads the placement of an event stored as `bytes` at `location` (named in the error).
    pub fn of(location: impl FnOnce() -> String, bytes: &'a [u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            location: location(),
            reason: e.to_string(),
        })
    }
}

/// Key of the index checkpoint in the `stream_index` tree.
pub(crate) const CHECKPOINT_KEY: &[u8] = &[0xFF];

/// Consecutive versions of one stream from `first_version`, with their positions.
#[derive(Debug, Clone, Default)]
pub(crate) struct Run {
    pub first_version: u64,
    pub positions: Vec<u64>,
}

impl Run {
    fn last_version(&self) -> Option<u64> {
        (self.positions.len() as u64)
            .checked_sub(1)
            .map(|n| self.first_version + n)
    }
}

/// Index entries not in the tree yet: `open` is filling, `sealed` is being written.
#[derive(Default)]
struct RecentRuns {
    open: HashMap<String, Run>,
    open_entries: usize,
    /// Handed to the indexer thread; dropped once its batch is in the tree.
    sealed: Option<Arc<HashMap<String, Run>>>,
}

impl RecentRuns {
    fn add(&mut self, stream: &str, first_version: u64, positions: &[u64]) {
        self.open_entries += positions.len();
        match self.open.get_mut(stream) {
            Some(run) => run.positions.extend_from_slice(positions),
            None => {
                self.open.insert(
                    stream.to_string(),
                    Run {
                        first_version,
                        positions: positions.to_vec(),
                    },
                );
            }
        }
    }
}

/// The in-memory part of the index, shared by the writer, the indexer and readers.
#[derive(Clone, Default)]
pub(crate) struct Recent {
    runs: Arc<RwLock<RecentRuns>>,
}

impl Recent {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, RecentRuns> {
        self.runs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RecentRuns> {
        self.runs.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `stream`'s versions from `first_version` are at `positions`.
    pub fn add(&self, stream: &str, first_version: u64, positions: &[u64]) {
        self.write().add(stream, first_version, positions);
    }

    /// Records a whole group's runs (stream, first version, positions) under one lock.
    pub fn add_all(&self, group: &[(String, u64, Vec<u64>)]) {
        let mut runs = self.write();
        for (stream, first_version, positions) in group {
            runs.add(stream, *first_version, positions);
        }
    }

    /// Entries waiting in `open`.
    pub fn open_entries(&self) -> usize {
        self.read().open_entries
    }

    /// Whether the indexer is still writing the last sealed batch.
    pub fn indexing(&self) -> bool {
        self.read().sealed.is_some()
    }

    /// Moves `open` to `sealed` for the indexer, unless a sealed batch is still being written.
    pub fn seal(&self) -> Option<Arc<HashMap<String, Run>>> {
        let mut runs = self.write();
        if runs.sealed.is_some() || runs.open.is_empty() {
            return None;
        }
        let sealed = Arc::new(std::mem::take(&mut runs.open));
        runs.open_entries = 0;
        runs.sealed = Some(sealed.clone());
        Some(sealed)
    }

    /// The sealed batch is in the tree: readers find it there now.
    pub fn indexed(&self) {
        self.write().sealed = None;
    }

    /// `stream`'s runs held in memory, oldest first.
    pub fn runs_of(&self, stream: &str) -> Vec<Run> {
        let runs = self.read();
        let sealed = runs.sealed.as_ref().and_then(|s| s.get(stream)).cloned();
        let open = runs.open.get(stream).cloned();
        sealed.into_iter().chain(open).collect()
    }
}

fn run_key(stream: &str, first_version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 9);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&first_version.to_be_bytes());
    key
}

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        location: "stream_index tree".into(),
        reason: reason.into(),
    }
}

fn decode_run(stream: &str, key: &[u8], value: &[u8]) -> Result<Run, StoreError> {
    let version = key
        .get(stream.len() + 1..)
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .ok_or_else(|| corrupt("a run key is not stream, 0x00, version"))?;
    if value.len() % 8 != 0 {
        return Err(corrupt(format!(
            "the run of {stream} at version {} is not whole positions",
            u64::from_be_bytes(version)
        )));
    }
    Ok(Run {
        first_version: u64::from_be_bytes(version),
        positions: value
            .chunks_exact(8)
            .map(|p| u64::from_be_bytes(p.try_into().unwrap_or_default()))
            .collect(),
    })
}

/// The index checkpoint: every event up to it has its entry in the tree.
pub(crate) fn checkpoint(tree: &Tree) -> Result<u64, StoreError> {
    match tree.get(CHECKPOINT_KEY)? {
        Some(bytes) => <[u8; 8]>::try_from(bytes.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt("the checkpoint is not a big-endian u64")),
        None => Ok(0),
    }
}

/// Writes `runs` and the new checkpoint `upto` in one atomic batch.
pub(crate) fn write_runs(
    tree: &Tree,
    runs: &HashMap<String, Run>,
    upto: u64,
) -> Result<(), StoreError> {
    write_batch(tree, runs.iter().map(|(s, r)| (s.as_str(), r)), upto)
}

/// Like [`write_runs`] with several runs per stream (a conversion with holes in versions).
pub(crate) fn write_all_runs(
    tree: &Tree,
    runs: &HashMap<String, Vec<Run>>,
    upto: u64,
) -> Result<(), StoreError> {
    let each = runs
        .iter()
        .flat_map(|(s, rs)| rs.iter().map(move |r| (s.as_str(), r)));
    write_batch(tree, each, upto)
}

fn write_batch<'a>(
    tree: &Tree,
    runs: impl Iterator<Item = (&'a str, &'a Run)>,
    upto: u64,
) -> Result<(), StoreError> {
    let mut batch = Batch::default();
    for (stream, run) in runs {
        let mut value = Vec::with_capacity(run.positions.len() * 8);
        for position in &run.positions {
            value.extend_from_slice(&position.to_be_bytes());
        }
        batch.insert(run_key(stream, run.first_version), value);
    }
    batch.insert(CHECKPOINT_KEY, &upto.to_be_bytes());
    tree.apply_batch(batch)?;
    Ok(())
}

/// `stream`'s `(version, position)` pairs from `from_version` on, at most `max`: the tree's
/// runs, then the recent ones. `recent` must be taken *before* reading the tree, so a run the
/// indexer moves meanwhile is seen at least once (twice is harmless: versions only grow).
pub(crate) fn positions(
    tree: &Tree,
    recent: &[Run],
    stream: &str,
    from_version: u64,
    max: usize,
) -> Result<Vec<(u64, u64)>, StoreError> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let key_len = stream.len() + 9;
    // Start at the run holding `from_version`: the last run starting at or before it.
    let start = tree
        .range(run_key(stream, 0)..=run_key(stream, from_version))
        .rev()
        .find_map(|entry| match entry {
            Ok((key, _)) if key.len() != key_len => None,
            Ok((key, _)) => Some(Ok(key)),
            Err(e) => Some(Err(e)),
        })
        .transpose()?
        .map_or_else(|| run_key(stream, from_version), |k| k.to_vec());
    for entry in tree.range(start..=run_key(stream, u64::MAX)) {
        let (key, value) = entry?;
        // Another stream whose id extends this one with a NUL byte sorts in between.
        if key.len() != key_len {
            continue;
        }
        let run = decode_run(stream, &key, &value)?;
        if push_run(&mut out, &run, from_version, max) {
            return Ok(out);
        }
    }
    for run in recent {
        if push_run(&mut out, run, from_version, max) {
            break;
        }
    }
    Ok(out)
}

/// Appends `run`'s versions past what `out` holds and from `from_version`; true once full.
fn push_run(out: &mut Vec<(u64, u64)>, run: &Run, from_version: u64, max: usize) -> bool {
    let after = out
        .last()
        .map_or(from_version, |(v, _)| (v + 1).max(from_version));
    for (version, position) in (run.first_version..).zip(&run.positions) {
        if version < after {
            continue;
        }
        if out.len() >= max {
            return true;
        }
        out.push((version, *position));
    }
    out.len() >= max
}

/// `stream`'s last `(version, position)` with position ≤ `upto`.
pub(crate) fn last_entry(
    tree: &Tree,
    recent: &[Run],
    stream: &str,
    upto: u64,
) -> Result<Option<(u64, u64)>, StoreError> {
    for run in recent.iter().rev() {
        for (i, position) in run.positions.iter().enumerate().rev() {
            if *position <= upto {
                return Ok(Some((run.first_version + i as u64, *position)));
            }
        }
    }
    let key_len = stream.len() + 9;
    for entry in tree
        .range(run_key(stream, 0)..=run_key(stream, u64::MAX))
        .rev()
    {
        let (key, value) = entry?;
        if key.len() != key_len {
            continue;
        }
        let run = decode_run(stream, &key, &value)?;
        // The tree only holds durable events (the writer seals entries after their flush).
        if let (Some(version), Some(position)) = (run.last_version(), run.positions.last()) {
            return Ok(Some((version, *position)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Tree {
        let db = sled::Config::new().temporary(true).open().expect("db");
        db.open_tree("stream_index").expect("tree")
    }

    #[test]
    fn runs_in_the_tree_and_in_memory_read_as_one_stream() {
        let tree = tree();
        let recent = Recent::default();
        recent.add("applicant-a", 0, &[1, 2]);
        recent.add("applicant-a\0x", 0, &[3]);
        recent.add("applicant-a", 2, &[4]);
        let sealed = recent.seal().expect("sealed");
        assert!(recent.seal().is_none(), "one sealed batch at a time");
        recent.add("applicant-a", 3, &[5, 6]);
        // A reader between the indexer's write and `indexed` sees the sealed run twice.
        let before = recent.runs_of("applicant-a");
        write_runs(&tree, &sealed, 4).expect("write");
        assert_eq!(checkpoint(&tree).expect("checkpoint"), 4);
        let all = positions(&tree, &before, "applicant-a", 0, 100).expect("positions");
        assert_eq!(all, vec![(0, 1), (1, 2), (2, 4), (3, 5), (4, 6)]);
        recent.indexed();
        let now = recent.runs_of("applicant-a");
        assert_eq!(
            positions(&tree, &now, "applicant-a", 2, 2).expect("positions"),
            vec![(2, 4), (3, 5)]
        );
        assert_eq!(
            positions(
                &tree,
                &recent.runs_of("applicant-a\0x"),
                "applicant-a\0x",
                0,
                9
            )
            .expect("positions"),
            vec![(0, 3)]
        );
        assert_eq!(
            last_entry(&tree, &now, "applicant-a", 5).expect("last"),
            Some((3, 5)),
            "position 6 is not durable yet"
        );
        assert_eq!(
            last_entry(&tree, &now, "applicant-a", 4).expect("last"),
            Some((2, 4)),
            "falls back to the tree"
        );
        assert_eq!(last_entry(&tree, &[], "nobody", 9).expect("last"), None);
    }
}
