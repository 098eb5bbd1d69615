//! The generation table: which sled tree holds each projection's live rows.
//!
//! A projection's rows live in tree `proj/<name>/g<generation>`. Tree `projection_meta` maps
//! the projection name to its live generation (big-endian u64; absent means generation 0). A
//! rebuild fills a fresh generation beside the live one and switches with one insert into
//! `projection_meta`, which sled applies atomically.
use crate::ProjectionError;

/// Name of the tree that maps projection names to their live generation.
pub const META_TREE: &str = "projection_meta";

/// The generation table over one sled database.
#[derive(Clone)]
pub struct Generations {
    db: sled::Db,
    meta: sled::Tree,
}

/// Name of the tree holding generation `generation` of projection `name`.
pub(crate) fn tree_name(name: &str, generation: u64) -> String {
    format!("proj/{name}/g{generation}")
}

/// Key of a generation's row layout in the meta tree (projection names have no `/`).
fn layout_key(name: &str, generation: u64) -> Vec<u8> {
    format!("layout/{name}/g{generation}").into_bytes()
}

impl Generations {
    /// Opens (or creates) the generation table in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, ProjectionError> {
        Ok(Generations {
            db: db.clone(),
            meta: db.open_tree(META_TREE)?,
        })
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
    /// leftovers of rebuilds that never switched (a crash mid-rebuild leaves such a tree).
    pub fn fresh(&self, name: &str) -> Result<(u64, sled::Tree), ProjectionError> {
        let live = self.live(name)?;
        let on_disk = self.on_disk(name);
        for stale in on_disk.iter().filter(|g| **g != live) {
            self.drop_generation(name, *stale)?;
        }
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

    /// Drops the tree of a generation that is no longer live.
    pub fn drop_generation(&self, name: &str, generation: u64) -> Result<(), ProjectionError> {
        self.db.drop_tree(tree_name(name, generation))?;
        self.meta.remove(layout_key(name, generation))?;
        Ok(())
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
