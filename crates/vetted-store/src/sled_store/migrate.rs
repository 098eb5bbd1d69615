//! Converts a version 1 store (sled trees `events`: one entry per position; `streams`: one
//! entry per stream version; `stream_heads`, older still) to the log files and run index.
//!
//! Every event keeps its stored bytes exactly (the audit trail is not re-encoded). The old
//! trees are dropped only after the log is synced and the index flushed; a crash in between
//! leaves the old trees in place and the next open converts again from scratch.
use std::collections::HashMap;
use std::path::Path;

use super::index::{self, Placement, Run};
use super::log::{EventLog, GroupFrames};
use crate::StoreError;

const OLD_EVENTS: &str = "events";
const OLD_TREES: [&str; 3] = ["events", "streams", "stream_heads"];
/// Events per batch written to the new log.
const BATCH: usize = 1024;

/// Converts a version 1 layout if `db` holds one, returning the log it wrote to `log_dir`.
pub(crate) fn from_v1(
    db: &sled::Db,
    index_tree: &sled::Tree,
    log_dir: &Path,
) -> Result<Option<EventLog>, StoreError> {
    let has_old = db
        .tree_names()
        .iter()
        .any(|name| name.as_ref() == OLD_EVENTS.as_bytes());
    if !has_old {
        return Ok(None);
    }
    let old = db.open_tree(OLD_EVENTS)?;
    if !old.is_empty() {
        tracing::warn!("converting the event store to log files (every stored byte is kept)");
        // A conversion cut short left a partial log and index: start over.
        remove_segments(log_dir)?;
        index_tree.clear()?;
    }
    let log = EventLog::open(log_dir, Some(index_tree.clone()))?;
    if !old.is_empty() {
        let mut runs: HashMap<String, Vec<Run>> = HashMap::new();
        let mut batch = GroupFrames::new(1);
        let mut last = 0u64;
        for entry in old.iter() {
            let (key, value) = entry?;
            let position = <[u8; 8]>::try_from(key.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    location: "events tree (version 1 layout)".into(),
                    reason: "a key is not a big-endian u64".into(),
                })?;
            let placement = Placement::of(
                || format!("events tree (version 1 layout), global position {position}"),
                &value,
            )?;
            // The log's positions are consecutive from 1: a hole in the old tree (which
            // `verify` would report) cannot be carried over.
            if position != last + 1 {
                return Err(StoreError::Corrupt {
                    location: format!("events tree (version 1 layout), global position {position}"),
                    reason: format!(
                        "position {} is missing; the store cannot be converted (keep a copy \
                         of the data directory and run `vetted audit verify` with the version \
                         that wrote it)",
                        last + 1
                    ),
                });
            }
            if batch.count as usize >= BATCH {
                log.append(&batch)?;
                batch = GroupFrames::new(position);
            }
            batch.push(&value)?;
            last = position;
            let stream_runs = runs.entry(placement.stream_id.into_owned()).or_default();
            match stream_runs.last_mut() {
                Some(run)
                    if run.first_version + run.positions.len() as u64
                        == placement.stream_version =>
                {
                    run.positions.push(position)
                }
                _ => stream_runs.push(Run {
                    first_version: placement.stream_version,
                    positions: vec![position],
                }),
            }
        }
        if !batch.is_empty() {
            log.append(&batch)?;
        }
        index::write_all_runs(index_tree, &runs, last)?;
        tracing::info!(events = last, "event store converted to log files");
    }
    db.flush()?;
    for name in OLD_TREES {
        // `Ok(false)` for a tree that is not there.
        db.drop_tree(name)?;
    }
    db.flush()?;
    Ok(Some(log))
}

/// Removes the segment files of a conversion that was cut short.
fn remove_segments(log_dir: &Path) -> Result<(), StoreError> {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            std::fs::remove_file(&path).map_err(|e| {
                StoreError::Backend(format!("could not remove {}: {e}", path.display()))
            })?;
        }
    }
    Ok(())
}
