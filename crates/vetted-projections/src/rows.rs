use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Serialize};

use crate::ProjectionError;

/// Key of the checkpoint row inside a projection's tree (sorts before every row key).
pub const CHECKPOINT_KEY: &[u8] = b"\x00checkpoint";

/// A projection's pending changes over its tree: reads see pending writes first, and
/// [`Rows::commit`] writes them together with the new checkpoint in one atomic `apply_batch`.
pub struct Rows<'a> {
    tree: &'a sled::Tree,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Rows<'a> {
    /// Starts an empty batch of changes over `tree`.
    pub fn new(tree: &'a sled::Tree) -> Self {
        Rows { tree, pending: BTreeMap::new() }
    }

    /// The current value of `key`, pending changes included.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    /// The current value of `key` decoded from JSON.
    pub fn get_json<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, ProjectionError> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                ProjectionError::Decode { key: String::from_utf8_lossy(key).into_owned(), reason: e.to_string() }
            }),
        }
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.pending.insert(key.into(), Some(value.into()));
    }

    /// Sets `key` to `value` encoded as JSON.
    pub fn put_json<T: Serialize>(&mut self, key: impl Into<Vec<u8>>, value: &T) -> Result<(), ProjectionError> {
        let bytes = serde_json::to_vec(value).map_err(|e| ProjectionError::Other(e.to_string()))?;
        self.put(key, bytes);
        Ok(())
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.pending.insert(key.into(), None);
    }

    /// Number of pending changes.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Writes every pending change and `checkpoint` in one atomic batch.
    pub fn commit(self, checkpoint: u64) -> Result<(), ProjectionError> {
        let mut batch = sled::Batch::default();
        for (k, v) in self.pending {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch.insert(CHECKPOINT_KEY, &checkpoint.to_be_bytes());
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}

/// The checkpoint stored in `tree` (0 when the projection has applied nothing).
pub fn checkpoint_of(tree: &sled::Tree) -> Result<u64, ProjectionError> {
    Ok(match tree.get(CHECKPOINT_KEY)? {
        Some(v) if v.len() == 8 => u64::from_be_bytes(v.as_ref().try_into().expect("8 bytes")),
        _ => 0,
    })
}
