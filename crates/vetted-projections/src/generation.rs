//! The generation table: which sled tree (and base file) holds each projection's live rows.
//!
//! A projection's rows live in tree `proj/<name>/g<generation>`, and, for a generation a
//! rebuild wrote with a builder, in the base run file `<runs dir>/<name>-g<generation>.run`
//! under it (see `crate::table`). Tree `projection_meta` maps the projection name to its live
//! generation (big-endian u64; absent means generation 0) and records which generations have a
//! base. A rebuild fills a fresh generation beside the live one and switches with one insert
//! into `projection_meta`, which sled applies atomically.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::run::Run;
use crate::{ProjectionError, Table};

/// Name of the tree that maps projection names to their live generation.
pub const META_TREE: &str = "projection_meta";

/// The generation table over one sled database.
#[derive(Clone)]
pub struct Generations {
    db: sled::Db,
    meta: sled::Tree,
    /// Where base run files live; `None`: rebuilt rows go into the trees.
    runs: Option<PathBuf>,
    /// Memory a rebuild's builders may hold (bytes): a log too large for it is rebuilt the
    /// slower way, a batch at a time through the trees.
    bulk_memory: u64,
    /// Frees what finished rebuilds held, off their critical path.
    reclaimer: Arc<crate::pass::Reclaimer>,
}

/// Memory a rebuild's builders may hold unless told otherwise: 8 GiB.
pub const DEFAULT_REBUILD_MEMORY: u64 = 8 << 30;

/// What the built-in read models' builders hold per event of the log, at their peak
/// (measured: a rebuild of 1,000,000 generated events peaked at ~0.93 GB above the process's
/// start), rounded up.
pub(crate) const BULK_BYTES_PER_EVENT: u64 = 1024;

/// Name of the tree holding generation `generation` of projection `name`.
pub(crate) fn tree_name(name: &str, generation: u64) -> String {
    format!("proj/{name}/g{generation}")
}

/// Key of a generation's row layout in the meta tree (projection names have no `/`).
fn layout_key(name: &str, generation: u64) -> Vec<u8> {
    format!("layout/{name}/g{generation}").into_bytes()
}

/// Key of the record that a generation has a base run file (its file name).
fn base_key(name: &str, generation: u64) -> Vec<u8> {
    format!("base/{name}/g{generation}").into_bytes()
}

/// File name of a generation's base run.
fn base_file(name: &str, generation: u64) -> String {
    format!("{name}-g{generation}.run")
}

impl Generations {
    /// Opens (or creates) the generation table in `db`; rebuilt rows go into the trees.
    pub fn open(db: &sled::Db) -> Result<Self, ProjectionError> {
        Ok(Generations {
            db: db.clone(),
            meta: db.open_tree(META_TREE)?,
            runs: None,
            bulk_memory: DEFAULT_REBUILD_MEMORY,
            reclaimer: Arc::default(),
        })
    }

    /// Opens (or creates) the generation table in `db`, with base run files in `runs` (created
    /// if missing): a rebuild then writes a builder's rows there, in one sequential file.
    pub fn open_in(db: &sled::Db, runs: &Path) -> Result<Self, ProjectionError> {
        std::fs::create_dir_all(runs).map_err(|e| ProjectionError::RunFile {
            path: runs.display().to_string(),
            reason: format!("cannot create the directory: {e}"),
        })?;
        Ok(Generations {
            runs: Some(runs.to_path_buf()),
            ..Generations::open(db)?
        })
    }

    /// Memory a rebuild's builders may hold, in bytes.
    pub fn rebuild_memory(&self) -> u64 {
        self.bulk_memory
    }

    pub(crate) fn set_rebuild_memory(&mut self, bytes: u64) {
        self.bulk_memory = bytes;
    }

    /// Who frees the memory of finished rebuilds (see [`crate::pass::Reclaimer`]).
    pub(crate) fn reclaimer(&self) -> &Arc<crate::pass::Reclaimer> {
        &self.reclaimer
    }

    /// Whether a log of `events` events fits a rebuild's builders (see
    /// [`Generations::rebuild_memory`]).
    pub(crate) fn fits_in_memory(&self, events: u64) -> bool {
        events.saturating_mul(BULK_BYTES_PER_EVENT) <= self.bulk_memory
    }

    /// Where generation `generation` of `name` keeps its base, if base files are kept.
    pub(crate) fn base_path(&self, name: &str, generation: u64) -> Option<PathBuf> {
        Some(self.runs.as_ref()?.join(base_file(name, generation)))
    }

    /// The rows of generation `generation` of `name`: its tree, under its base if it has one.
    /// A recorded base that cannot be opened (missing, damaged, or no directory for base
    /// files given) is an error: the generation's rows are incomplete without it.
    pub fn table(&self, name: &str, generation: u64) -> Result<Table, ProjectionError> {
        let tree = self.tree(name, generation)?;
        let Some(file) = self.meta.get(base_key(name, generation))? else {
            return Ok(Table::plain(tree));
        };
        let file = String::from_utf8_lossy(&file).into_owned();
        let path = self
            .runs
            .as_ref()
            .map(|dir| dir.join(&file))
            .ok_or_else(|| ProjectionError::RunFile {
                path: file.clone(),
                reason: "this generation has a base file, but the read models were opened \
                         without its directory"
                    .into(),
            })?;
        let run = Run::open(&path)?;
        Ok(Table::with_base(tree, Arc::new(run)))
    }

    /// Records that generation `generation` of `name` has its base at
    /// [`Generations::base_path`] (written and synced before).
    pub(crate) fn set_base(&self, name: &str, generation: u64) -> Result<(), ProjectionError> {
        self.meta.insert(
            base_key(name, generation),
            base_file(name, generation).as_bytes(),
        )?;
        Ok(())
    }

    /// The sled database the generations live in.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The live generation of `name` (0 for a projection never rebuilt).
    pub fn live(&self, name: &str) -> Result<u64, ProjectionError> {
        Ok(match self.meta.get(name.as_bytes())? {
            Some(v) => u64::from_be_bytes(fixed(&v, || format!("{META_TREE}/{name}"))?),
            None => 0,
        })
    }

    /// Opens the tree of generation `generation` of `name`.
    pub fn tree(&self, name: &str, generation: u64) -> Result<sled::Tree, ProjectionError> {
        Ok(self.db.open_tree(tree_name(name, generation))?)
    }

    /// The generations of `name` that have a tree on disk, in ascending order.
    pub fn on_disk(&self, name: &str) -> Vec<u64> {
        let prefix = format!("proj/{name}/g");
        let mut found: Vec<u64> = self
            .db
            .tree_names()
            .iter()
            .filter_map(|t| {
                std::str::from_utf8(t)
                    .ok()?
                    .strip_prefix(&prefix)?
                    .parse()
                    .ok()
            })
            .collect();
        found.sort_unstable();
        found
    }

    /// Creates an empty generation of `name` above every existing one, first dropping the
    /// leftovers of rebuilds that never switched (a crash mid-rebuild leaves such a tree, or a
    /// base file never recorded).
    pub fn fresh(&self, name: &str) -> Result<(u64, sled::Tree), ProjectionError> {
        let live = self.live(name)?;
        let on_disk = self.on_disk(name);
        for stale in on_disk.iter().filter(|g| **g != live) {
            self.drop_generation(name, *stale)?;
        }
        self.remove_stray_bases(name, live)?;
        let next = on_disk.last().copied().unwrap_or(live).max(live) + 1;
        let tree = self.tree(name, next)?;
        // A tree of that name could only exist if it was just dropped; start from nothing.
        tree.clear()?;
        Ok((next, tree))
    }

    /// Makes `generation` the live generation of `name` (one atomic insert, flushed).
    pub fn switch(&self, name: &str, generation: u64) -> Result<(), ProjectionError> {
        self.meta
            .insert(name.as_bytes(), &generation.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// The row layout generation `generation` of `name` was written with (`None`: not
    /// recorded, i.e. written before layouts were recorded: layout 1).
    pub fn layout(&self, name: &str, generation: u64) -> Result<Option<u32>, ProjectionError> {
        match self.meta.get(layout_key(name, generation))? {
            Some(v) => Ok(Some(u32::from_be_bytes(fixed(&v, || {
                format!("{META_TREE}/layout/{name}/g{generation}")
            })?))),
            None => Ok(None),
        }
    }

    /// Records the row layout of generation `generation` of `name`.
    pub fn set_layout(
        &self,
        name: &str,
        generation: u64,
        layout: u32,
    ) -> Result<(), ProjectionError> {
        self.meta
            .insert(layout_key(name, generation), &layout.to_be_bytes())?;
        Ok(())
    }

    /// Drops the tree (and base file) of a generation that is no longer live.
    pub fn drop_generation(&self, name: &str, generation: u64) -> Result<(), ProjectionError> {
        self.db.drop_tree(tree_name(name, generation))?;
        self.meta.remove(layout_key(name, generation))?;
        self.meta.remove(base_key(name, generation))?;
        if let Some(path) = self.base_path(name, generation) {
            // Readers that still hold the file keep reading it; it goes when they let go.
            remove_file(&path)?;
        }
        Ok(())
    }

    /// Removes base files of `name` other than the live generation's: written by a rebuild
    /// that never switched.
    fn remove_stray_bases(&self, name: &str, live: u64) -> Result<(), ProjectionError> {
        let Some(dir) = &self.runs else {
            return Ok(());
        };
        let entries = std::fs::read_dir(dir).map_err(|e| ProjectionError::RunFile {
            path: dir.display().to_string(),
            reason: format!("cannot list the directory: {e}"),
        })?;
        let prefix = format!("{name}-g");
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(generation) = file
                .to_str()
                .and_then(|f| f.strip_prefix(&prefix))
                .and_then(|rest| rest.split('.').next())
                .and_then(|g| g.parse::<u64>().ok())
            else {
                continue;
            };
            if generation != live {
                remove_file(&entry.path())?;
            }
        }
        Ok(())
    }
}

/// Removes `path` if it exists.
fn remove_file(path: &Path) -> Result<(), ProjectionError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ProjectionError::RunFile {
            path: path.display().to_string(),
            reason: format!("cannot remove it: {e}"),
        }),
    }
}

/// A meta value of exactly `N` bytes (a big-endian number); `key` names it in the error.
fn fixed<const N: usize>(
    value: &[u8],
    key: impl FnOnce() -> String,
) -> Result<[u8; N], ProjectionError> {
    value.try_into().map_err(|_| ProjectionError::Decode {
        key: key(),
        reason: format!("expected {N} bytes, found {}", value.len()),
    })
}
