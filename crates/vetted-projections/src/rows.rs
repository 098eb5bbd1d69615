use std::any::Any;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hasher;

use serde::{de::DeserializeOwned, Serialize};

use crate::codec::{Reader, Writer};
use crate::{ProjectionError, Table};

/// Key of the checkpoint row inside a projection's tree (sorts before every row key).
pub const CHECKPOINT_KEY: &[u8] = b"\x00checkpoint";

/// A projection's pending changes over its generation's rows: reads see pending writes first,
/// and [`Rows::commit`] writes them together with the new checkpoint in one atomic
/// `apply_batch` on the generation's tree.
pub struct Rows<'a> {
    table: std::borrow::Cow<'a, Table>,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    // Decoded rows changed in this batch, encoded once at commit: a hot row (a dashboard
    // counter, an applicant's state) touched by many events of a batch is decoded once.
    typed: HashMap<Vec<u8>, Box<dyn TypedRow>>,
    muted: bool,
    // When known: the hashes of every key the tree may hold. A rebuild starts on an empty tree
    // and adds what each flush writes, so reads of other keys skip sled (a miss still walks
    // the tree) and removals of them write nothing. `None`: any key may be there.
    written: Option<HashSet<u64>>,
}

/// A decoded row waiting to be encoded at commit (`None`: the row is removed).
trait TypedRow: Send {
    fn encode(&self) -> Result<Option<Vec<u8>>, ProjectionError>;
    /// Whether the row was absent, with nothing pending, when first read in this batch: a row
    /// still absent then needs no removal.
    fn was_absent(&self) -> bool;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// Encodes a decoded row.
type Encode<T> = fn(&T) -> Result<Vec<u8>, ProjectionError>;

/// Decodes the row stored under a key.
type Decode<T> = fn(&[u8], &[u8]) -> Result<T, ProjectionError>;

/// A decoded row and how to encode it.
struct Typed<T> {
    value: Option<T>,
    encode: Encode<T>,
    was_absent: bool,
}

impl<T: Send + 'static> TypedRow for Typed<T> {
    fn encode(&self) -> Result<Option<Vec<u8>>, ProjectionError> {
        self.value.as_ref().map(self.encode).transpose()
    }
    fn was_absent(&self) -> bool {
        self.was_absent
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// A row's own compact encoding (see `crate::codec`), for rows only this crate reads.
///
/// A row is its layout byte [`RowCodec::TAG`], then the fields [`RowCodec::write`] writes and
/// [`RowCodec::read`] reads back, and nothing after them.
pub(crate) trait RowCodec: Sized + Send + Sync + 'static {
    /// The layout byte every row of this kind starts with.
    const TAG: u8;
    /// Bytes to reserve when encoding a row.
    const CAPACITY: usize = 128;

    /// Writes the row's fields (after the tag).
    fn write(&self, w: &mut Writer<'_>);

    /// Reads the fields [`RowCodec::write`] wrote.
    fn read(r: &mut Reader<'_>) -> Result<Self, ProjectionError>;

    fn encode_row(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::CAPACITY);
        self.encode_into(&mut out);
        out
    }

    /// Appends the row's encoding to `out`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        w.u8(Self::TAG);
        self.write(&mut w);
    }

    fn decode_row(key: &[u8], bytes: &[u8]) -> Result<Self, ProjectionError> {
        let mut r = Reader::new(key, bytes);
        r.tag(Self::TAG)?;
        let row = Self::read(&mut r)?;
        if !r.is_done() {
            return Err(r.error("bytes left after the row"));
        }
        Ok(row)
    }
}

pub(crate) fn encode_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ProjectionError> {
    serde_json::to_vec(value)
        .map_err(|e| ProjectionError::Other(format!("row could not be encoded: {e}")))
}

pub(crate) fn decode_json<T: DeserializeOwned>(
    key: &[u8],
    bytes: &[u8],
) -> Result<T, ProjectionError> {
    serde_json::from_slice(bytes).map_err(|e| ProjectionError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

impl<'a> Rows<'a> {
    /// Starts an empty batch of changes over `tree` (a generation without a base).
    pub fn new(tree: &'a sled::Tree) -> Self {
        Rows::with_table(std::borrow::Cow::Owned(Table::plain(tree.clone())))
    }

    /// Starts an empty batch of changes over a generation's rows.
    pub fn over(table: &'a Table) -> Self {
        Rows::with_table(std::borrow::Cow::Borrowed(table))
    }

    fn with_table(table: std::borrow::Cow<'a, Table>) -> Self {
        Rows {
            table,
            pending: BTreeMap::new(),
            typed: HashMap::new(),
            muted: false,
            written: None,
        }
    }

    /// Like [`Rows::muted`] over a generation with no rows yet (a fresh rebuild generation),
    /// checked here: rows not written in this batch are known to be absent without asking
    /// sled.
    pub(crate) fn muted_over_empty(table: &'a Table) -> Result<Self, ProjectionError> {
        let written = table.is_empty()?.then(HashSet::new);
        Ok(Rows {
            written,
            muted: true,
            ..Rows::over(table)
        })
    }

    /// Starts a batch for a rebuild: side-effecting projections must not emit (no outbox rows).
    pub fn muted(tree: &'a sled::Tree) -> Self {
        Rows {
            muted: true,
            ..Rows::new(tree)
        }
    }

    /// Like [`Rows::muted`] over a generation's rows.
    pub(crate) fn muted_over(table: &'a Table) -> Self {
        Rows {
            muted: true,
            ..Rows::over(table)
        }
    }

    /// Whether this batch replays history (rebuild, verify): skip side effects when `true`.
    pub fn is_muted(&self) -> bool {
        self.muted
    }

    /// Reads the JSON row `key` as `T` (`None` if absent), lets `f` change it, and keeps the
    /// result for the commit (`None` removes the row). Repeated updates of one row in a batch
    /// decode it once and encode it once.
    pub fn update_json<T, R>(
        &mut self,
        key: &[u8],
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R, ProjectionError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        self.update_with(key, decode_json::<T>, encode_json::<T>, f)
    }

    /// Like [`Rows::update_json`] for a row in its own compact encoding.
    pub(crate) fn update_row<T: RowCodec, R>(
        &mut self,
        key: &[u8],
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R, ProjectionError> {
        self.update_with(key, T::decode_row, |v: &T| Ok(v.encode_row()), f)
    }

    fn update_with<T: Send + 'static, R>(
        &mut self,
        key: &[u8],
        decode: Decode<T>,
        encode: Encode<T>,
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R, ProjectionError> {
        if !self.typed.contains_key(key) {
            let value = match self.get(key)? {
                Some(bytes) => Some(decode(key, &bytes)?),
                None => None,
            };
            let was_absent = value.is_none() && self.pending.remove(key).is_none();
            self.typed.insert(
                key.to_vec(),
                Box::new(Typed {
                    value,
                    encode,
                    was_absent,
                }),
            );
        }
        let typed = self
            .typed
            .get_mut(key)
            .and_then(|row| row.as_any_mut().downcast_mut::<Typed<T>>())
            .ok_or_else(|| ProjectionError::Decode {
                key: String::from_utf8_lossy(key).into_owned(),
                reason: "row updated as two different types in one batch".into(),
            })?;
        Ok(f(&mut typed.value))
    }

    /// The current value of `key`, pending changes included.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        if let Some(row) = self.typed.get(key) {
            return row.encode();
        }
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        if !self.may_hold(key) {
            return Ok(None);
        }
        Ok(self.table.get(key)?.map(|v| v.to_vec()))
    }

    /// The current value of `key` decoded from JSON.
    pub fn get_json<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, ProjectionError> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => decode_json(key, &bytes).map(Some),
        }
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let key = key.into();
        self.typed.remove(&key);
        self.pending.insert(key, Some(value.into()));
    }

    /// Sets `key` to `value` encoded as JSON.
    pub fn put_json<T: Serialize>(
        &mut self,
        key: impl Into<Vec<u8>>,
        value: &T,
    ) -> Result<(), ProjectionError> {
        self.put(key, encode_json(value)?);
        Ok(())
    }

    /// Appends `bytes` to the value of `key` (an absent row starts empty). Repeated appends in
    /// one batch extend the pending value in place, so a row that grows by one record per
    /// event is read once and written once per batch.
    pub fn append(&mut self, key: &[u8], bytes: &[u8]) -> Result<(), ProjectionError> {
        self.append_with(key, |value| {
            value.extend_from_slice(bytes);
            Ok(())
        })
    }

    /// Like [`Rows::append`], with `f` appending to the row's current value (empty if absent),
    /// which it may read first.
    pub(crate) fn append_with(
        &mut self,
        key: &[u8],
        f: impl FnOnce(&mut Vec<u8>) -> Result<(), ProjectionError>,
    ) -> Result<(), ProjectionError> {
        if let Some(Some(value)) = self.pending.get_mut(key) {
            return f(value);
        }
        let mut value = self.get(key)?.unwrap_or_default();
        f(&mut value)?;
        self.put(key.to_vec(), value);
        Ok(())
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.typed.remove(&key);
        self.pending.insert(key, None);
    }

    /// Number of pending changes.
    pub fn len(&self) -> usize {
        self.pending.len() + self.typed.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.typed.is_empty()
    }

    /// Whether the tree may hold `key` (see `written`).
    fn may_hold(&self, key: &[u8]) -> bool {
        self.written
            .as_ref()
            .is_none_or(|written| written.contains(&key_hash(key)))
    }

    /// Writes every pending change and `checkpoint` in one atomic batch.
    pub fn commit(mut self, checkpoint: u64) -> Result<(), ProjectionError> {
        self.flush(checkpoint)
    }

    /// Like [`Rows::commit`], then goes on as an empty batch over the same tree (a rebuild
    /// worker's periodic flush: it keeps knowing which keys the tree holds).
    pub(crate) fn flush(&mut self, checkpoint: u64) -> Result<(), ProjectionError> {
        let mut pending = std::mem::take(&mut self.pending);
        for (k, row) in std::mem::take(&mut self.typed) {
            match row.encode()? {
                None if row.was_absent() => {}
                value => {
                    pending.insert(k, value);
                }
            }
        }
        let mut changes = Vec::with_capacity(pending.len());
        for (k, v) in pending {
            match v {
                Some(v) => {
                    if let Some(written) = &mut self.written {
                        written.insert(key_hash(&k));
                    }
                    changes.push((k, Some(v)));
                }
                None if !self.may_hold(&k) => {}
                None => changes.push((k, None)),
            }
        }
        self.table.commit(changes, checkpoint)
    }
}

/// Row access a projection's fold is written against. The live runner's [`Rows`] (over the
/// generation's tree) and a rebuild's in-memory [`crate::bulk::BulkRows`] both implement it,
/// so a read model has one fold whichever way it is built, and `verify` can compare the two.
pub(crate) trait RowStore {
    /// The current value of `key`, pending changes included.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError>;

    /// Sets `key` to `value`.
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);

    /// Removes `key`.
    fn remove(&mut self, key: Vec<u8>);

    /// Reads the compact row an applicant has in this read model (`None` if absent), under
    /// key `prefix` + `applicant_id`, and lets `f` change it (`None` removes it). A row type
    /// is reached either this way or by key, never both: a rebuild keeps these rows by
    /// applicant and spells their keys out at the end.
    fn update_applicant_row<T: RowCodec, R>(
        &mut self,
        prefix: &'static str,
        applicant_id: &str,
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R, ProjectionError>;

    /// Reads the JSON row `key` (`None` if absent), lets `f` change it (`None` removes it).
    fn update_json<T, R>(
        &mut self,
        key: &[u8],
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R, ProjectionError>
    where
        T: Serialize + DeserializeOwned + Send + 'static;

    /// Lets `f` append to the value of `key` (empty if absent), which it may read first. `f`
    /// is also given a number the store keeps beside the row while it holds the row in memory
    /// (`None` whenever the row was just read from storage or written whole): an appender's
    /// note of where something is in the row.
    fn append_with_memo(
        &mut self,
        key: &[u8],
        f: impl FnOnce(&mut Vec<u8>, &mut Option<u32>) -> Result<(), ProjectionError>,
    ) -> Result<(), ProjectionError>;

    /// Sets `key` to `value` encoded as JSON.
    fn put_json<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<(), ProjectionError> {
        self.put(key, encode_json(value)?);
        Ok(())
    }
}

impl RowStore for Rows<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        Rows::get(self, key)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        Rows::put(self, key, value)
    }

    fn remove(&mut self, key: Vec<u8>) {
        Rows::remove(self, key)
    }

    fn update_applicant_row<T: RowCodec, R>(
        &mut self,
        prefix: &'static str,
        applicant_id: &str,
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R, ProjectionError> {
        let mut key = Vec::with_capacity(prefix.len() + applicant_id.len());
        key.extend_from_slice(prefix.as_bytes());
        key.extend_from_slice(applicant_id.as_bytes());
        Rows::update_row(self, &key, f)
    }

    fn update_json<T, R>(
        &mut self,
        key: &[u8],
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R, ProjectionError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        Rows::update_json(self, key, f)
    }

    fn append_with_memo(
        &mut self,
        key: &[u8],
        f: impl FnOnce(&mut Vec<u8>, &mut Option<u32>) -> Result<(), ProjectionError>,
    ) -> Result<(), ProjectionError> {
        Rows::append_with(self, key, |row| f(row, &mut None))
    }
}

/// A key's hash in `Rows::written` (a collision only costs a read from sled).
fn key_hash(key: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(key);
    hasher.finish()
}

/// The checkpoint stored in `tree` (0 when the projection has applied nothing).
pub fn checkpoint_of(tree: &sled::Tree) -> Result<u64, ProjectionError> {
    Ok(match tree.get(CHECKPOINT_KEY)? {
        Some(v) if v.len() == 8 => u64::from_be_bytes(v.as_ref().try_into().expect("8 bytes")),
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuild_batch_reads_back_what_it_flushed_and_knows_other_keys_are_absent() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let table = Table::plain(tree.clone());
        let mut rows = Rows::muted_over_empty(&table).unwrap();
        rows.put(b"a".to_vec(), b"1".to_vec());
        rows.update_json::<u64, _>(b"n", |n| *n = Some(5)).unwrap();
        rows.flush(10).unwrap();
        assert!(rows.is_empty());
        assert_eq!(checkpoint_of(&tree).unwrap(), 10);
        // Flushed rows come back from the tree; others are absent.
        assert_eq!(rows.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(rows.get_json::<u64>(b"n").unwrap(), Some(5));
        assert_eq!(rows.get(b"b").unwrap(), None);
        rows.update_json::<u64, _>(b"n", |n| *n = n.map(|n| n + 1))
            .unwrap();
        rows.remove(b"a".to_vec());
        rows.remove(b"never".to_vec());
        rows.append(b"c", b"x").unwrap();
        rows.commit(20).unwrap();
        let keys: Vec<Vec<u8>> = tree.iter().keys().map(|k| k.unwrap().to_vec()).collect();
        assert_eq!(
            keys,
            vec![CHECKPOINT_KEY.to_vec(), b"c".to_vec(), b"n".to_vec()]
        );
        assert_eq!(tree.get(b"n").unwrap().unwrap().as_ref(), b"6");
        assert_eq!(checkpoint_of(&tree).unwrap(), 20);
    }
}
