//! A rebuild's fold kept in memory: every row a read model holds lives in hash maps, decoded,
//! until the whole log is folded; then each row is encoded once and handed over in key order,
//! to be written once into the new generation.
//!
//! The fold is the read model's own (`ApplicantProjection::apply_applicant`, the one the live
//! runner runs over [`crate::Rows`]): [`BulkRows`] only stores differently. The live
//! runner's rows pay for being durable after every batch — a sled read for every row an
//! event touches, an encode, a sled write — and a rebuild does not need that until the end.
use std::any::{Any, TypeId};

use rustc_hash::FxHashMap;
use serde::{de::DeserializeOwned, Serialize};

use crate::rows::{decode_json, encode_json, RowCodec, RowStore};
use crate::{ApplicantFact, ApplicantProjection, ProjectionError};

/// Bytes reserved for a row first written by an append.
const APPENDED_ROW_CAPACITY: usize = 512;

/// Where a builder's rows go, in ascending key order, each key once.
pub trait RowSink {
    /// Takes the next row.
    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), ProjectionError>;
}

/// A rebuild's in-memory fold of one read model.
pub trait Builder: Send {
    /// Folds one applicant event (in global order).
    fn apply(&mut self, fact: &ApplicantFact<'_>) -> Result<(), ProjectionError>;

    /// Hands every row of the read model to `sink`, ascending by key (no checkpoint row).
    /// The builder is spent afterwards: dropping it frees what it held.
    fn write_rows(&self, sink: &mut dyn RowSink) -> Result<(), ProjectionError>;

    /// What folding one event costs this builder, relative to other builders (the built-in
    /// read models give nanoseconds per event, as `examples/rebuild_cost` measures them). A
    /// rebuild groups its builders onto threads by it, so that no thread has much more to do.
    fn fold_cost(&self) -> u32 {
        DEFAULT_FOLD_COST
    }
}

/// The fold cost of a builder that does not tell its own (see [`Builder::fold_cost`]).
pub(crate) const DEFAULT_FOLD_COST: u32 = 250;

/// The [`Builder`] of an applicant read model: its own fold over [`BulkRows`].
pub(crate) struct BulkBuilder<P> {
    projection: P,
    rows: BulkRows,
}

impl<P: ApplicantProjection> BulkBuilder<P> {
    pub(crate) fn new(projection: P) -> Self {
        BulkBuilder {
            projection,
            rows: BulkRows::default(),
        }
    }
}

impl<P: ApplicantProjection> Builder for BulkBuilder<P> {
    fn apply(&mut self, fact: &ApplicantFact<'_>) -> Result<(), ProjectionError> {
        self.projection.apply_applicant(&mut self.rows, fact)
    }

    fn write_rows(&self, sink: &mut dyn RowSink) -> Result<(), ProjectionError> {
        self.rows.write_sorted(sink)
    }

    fn fold_cost(&self) -> u32 {
        self.projection.fold_cost()
    }
}

/// Rows held in memory. Every key lives in one place: a map of decoded rows of one type, a
/// map of one type's per-applicant rows, or the map of raw values. Absent rows are known to
/// be absent: a rebuild starts from nothing.
#[derive(Default)]
pub(crate) struct BulkRows {
    /// One map per row type reached by key, found by its `TypeId` (a read model has one or
    /// two).
    typed: Vec<(TypeId, Box<dyn TypedMap>)>,
    /// Per-applicant rows, one map per row type, keyed by applicant id: no key is spelled
    /// out (or hashed in full) until the end.
    by_applicant: Vec<(TypeId, Box<dyn TypedMap>)>,
    /// Rows written as bytes.
    raw: FxHashMap<Box<[u8]>, RawRow>,
}

/// A row written as bytes.
struct RawRow {
    /// `None`: removed.
    value: Option<Vec<u8>>,
    /// The appender's note (see `RowStore::append_with_memo`).
    memo: Option<u32>,
}

impl RawRow {
    fn whole(value: Option<Vec<u8>>) -> Self {
        RawRow { value, memo: None }
    }
}

/// Encodes a row into a buffer.
type EncodeInto<T> = fn(&T, &mut Vec<u8>) -> Result<(), ProjectionError>;

/// The decoded rows of one type, by key.
struct Map<T> {
    rows: FxHashMap<Box<[u8]>, Option<T>>,
    encode: EncodeInto<T>,
}

/// The decoded rows of one type, by applicant: row `prefix` + id.
struct ByApplicant<T> {
    rows: FxHashMap<Box<str>, Option<T>>,
    prefix: &'static str,
    encode: EncodeInto<T>,
}

/// A map of rows whatever their type.
trait TypedMap: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Whether this map holds `key`'s row (never, for rows by applicant).
    fn contains(&self, key: &[u8]) -> bool;
    /// The encoding of `key`'s row if this map holds it (`Some(None)`: removed).
    fn encoded(&self, key: &[u8]) -> Option<Result<Option<Vec<u8>>, ProjectionError>>;
    /// Drops `key`'s row; whether it was here.
    fn forget(&mut self, key: &[u8]) -> bool;
    /// The present rows in key order.
    fn sorted(&self) -> Box<dyn RowCursor + '_>;
}

/// A walk over rows in key order.
trait RowCursor {
    /// The current row's key (`None`: no row left).
    fn key(&self) -> Option<&[u8]>;
    /// Appends the current row's value to `out`.
    fn value(&self, out: &mut Vec<u8>) -> Result<(), ProjectionError>;
    /// Moves to the next row.
    fn advance(&mut self);
}

/// Rows sorted by key, each with what encodes it.
struct SortedRows<'a, V: ?Sized> {
    rows: Vec<(&'a [u8], &'a V)>,
    at: usize,
    encode: fn(&V, &mut Vec<u8>) -> Result<(), ProjectionError>,
}

impl<'a, V: ?Sized> SortedRows<'a, V> {
    fn new(
        mut rows: Vec<(&'a [u8], &'a V)>,
        encode: fn(&V, &mut Vec<u8>) -> Result<(), ProjectionError>,
    ) -> Self {
        sort_by_key(&mut rows);
        SortedRows {
            rows,
            at: 0,
            encode,
        }
    }
}

impl<V: ?Sized> RowCursor for SortedRows<'_, V> {
    fn key(&self) -> Option<&[u8]> {
        self.rows.get(self.at).map(|(k, _)| *k)
    }

    fn value(&self, out: &mut Vec<u8>) -> Result<(), ProjectionError> {
        match self.rows.get(self.at) {
            Some((_, v)) => (self.encode)(v, out),
            None => Ok(()),
        }
    }

    fn advance(&mut self) {
        self.at += 1;
    }
}

/// Per-applicant rows sorted by id, which sorts their keys (one prefix for all).
struct SortedByApplicant<'a, T> {
    rows: Vec<(&'a str, &'a T)>,
    at: usize,
    prefix: &'static str,
    key: Vec<u8>,
    encode: EncodeInto<T>,
    /// The rows already encoded, when they were encoded in parallel.
    encoded: Option<Result<Encoded, ProjectionError>>,
}

impl<T> SortedByApplicant<'_, T> {
    fn spell_key(&mut self) {
        self.key.clear();
        if let Some((id, _)) = self.rows.get(self.at) {
            self.key.extend_from_slice(self.prefix.as_bytes());
            self.key.extend_from_slice(id.as_bytes());
        }
    }
}

impl<T> RowCursor for SortedByApplicant<'_, T> {
    fn key(&self) -> Option<&[u8]> {
        (self.at < self.rows.len()).then_some(self.key.as_slice())
    }

    fn value(&self, out: &mut Vec<u8>) -> Result<(), ProjectionError> {
        match &self.encoded {
            Some(Ok(encoded)) => {
                let start = match self.at.checked_sub(1) {
                    Some(previous) => encoded.ends.get(previous).copied().unwrap_or(0),
                    None => 0,
                };
                let end = encoded.ends.get(self.at).copied().unwrap_or(start);
                out.extend_from_slice(encoded.bytes.get(start..end).unwrap_or_default());
                Ok(())
            }
            Some(Err(e)) => Err(ProjectionError::Other(format!("encoding rows failed: {e}"))),
            None => match self.rows.get(self.at) {
                Some((_, row)) => (self.encode)(row, out),
                None => Ok(()),
            },
        }
    }

    fn advance(&mut self) {
        self.at += 1;
        self.spell_key();
    }
}

impl<T: Send + 'static> TypedMap for Map<T> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.rows.contains_key(key)
    }

    fn encoded(&self, key: &[u8]) -> Option<Result<Option<Vec<u8>>, ProjectionError>> {
        let row = self.rows.get(key)?;
        Some(
            row.as_ref()
                .map(|row| {
                    let mut out = Vec::new();
                    (self.encode)(row, &mut out).map(|()| out)
                })
                .transpose(),
        )
    }

    fn forget(&mut self, key: &[u8]) -> bool {
        self.rows.remove(key).is_some()
    }

    fn sorted(&self) -> Box<dyn RowCursor + '_> {
        let rows = self
            .rows
            .iter()
            .filter_map(|(k, v)| Some((&k[..], v.as_ref()?)))
            .collect();
        Box::new(SortedRows::new(rows, self.encode))
    }
}

impl<T: Send + Sync + 'static> TypedMap for ByApplicant<T> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    // Per-applicant rows are not reached by key (see `RowStore::update_applicant_row`).
    fn contains(&self, _key: &[u8]) -> bool {
        false
    }

    fn encoded(&self, _key: &[u8]) -> Option<Result<Option<Vec<u8>>, ProjectionError>> {
        None
    }

    fn forget(&mut self, _key: &[u8]) -> bool {
        false
    }

    fn sorted(&self) -> Box<dyn RowCursor + '_> {
        let mut rows: Vec<(&str, &T)> = self
            .rows
            .iter()
            .filter_map(|(id, row)| Some((&id[..], row.as_ref()?)))
            .collect();
        sort_by_key(&mut rows);
        let encoded = encode_in_parallel(&rows, self.encode);
        let mut cursor = SortedByApplicant {
            rows,
            at: 0,
            prefix: self.prefix,
            key: Vec::new(),
            encode: self.encode,
            encoded,
        };
        cursor.spell_key();
        Box::new(cursor)
    }
}

/// Sorts rows by key. The keys of a map often share a long prefix (`status/…`, a read
/// model's row type), which a plain sort compares again at every step; here the 16 bytes
/// after the prefix all keys share are compared as one integer, and whole keys only when
/// those are equal.
fn sort_by_key<K: AsRef<[u8]> + Copy, V: Copy>(rows: &mut [(K, V)]) {
    let Some((first, _)) = rows.first() else {
        return;
    };
    let first = first.as_ref();
    let shared = rows.iter().fold(first.len(), |shared, (key, _)| {
        crate::run::common_prefix(&first[..shared], key.as_ref())
    });
    let word = |key: &[u8]| {
        let rest = key.get(shared..).unwrap_or_default();
        let mut word = [0u8; 16];
        let n = rest.len().min(16);
        word[..n].copy_from_slice(&rest[..n]);
        // Big-endian, zero-padded: integers order as the bytes do, and a key whose word is
        // padded ties with the keys it is a prefix of, which the whole keys then order.
        u128::from_be_bytes(word)
    };
    let mut keyed: Vec<(u128, K, V)> = rows
        .iter()
        .map(|&(key, value)| (word(key.as_ref()), key, value))
        .collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.as_ref().cmp(b.1.as_ref())));
    for (row, (_, key, value)) in rows.iter_mut().zip(keyed) {
        *row = (key, value);
    }
}

/// Rows a map must hold before its rows are encoded on several threads at once.
const PARALLEL_ENCODE: usize = 20_000;

/// The encodings of `rows` (in order, back to back, with where each ends), made on as many
/// threads as there are cores when there are many: encoding is most of writing a large read
/// model's rows, and the read model with the most is the last to finish. `None`: encode
/// them one at a time as they are written.
fn encode_in_parallel<T: Sync>(
    rows: &[(&str, &T)],
    encode: EncodeInto<T>,
) -> Option<Result<Encoded, ProjectionError>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if rows.len() < PARALLEL_ENCODE || threads < 2 {
        return None;
    }
    let per_thread = rows.len().div_ceil(threads);
    let parts: Vec<Result<Encoded, ProjectionError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = rows
            .chunks(per_thread)
            .map(|part| {
                scope.spawn(move || {
                    let mut out = Encoded::default();
                    for (_, row) in part {
                        encode(row, &mut out.bytes)?;
                        out.ends.push(out.bytes.len());
                    }
                    Ok(out)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(ProjectionError::Other("encoding rows failed".into())))
            })
            .collect()
    });
    let mut all = Encoded::default();
    for part in parts {
        let part = match part {
            Ok(part) => part,
            Err(e) => return Some(Err(e)),
        };
        let base = all.bytes.len();
        all.bytes.extend_from_slice(&part.bytes);
        all.ends.extend(part.ends.iter().map(|end| base + end));
    }
    Some(Ok(all))
}

/// Rows encoded back to back.
#[derive(Default)]
struct Encoded {
    bytes: Vec<u8>,
    /// Where each row's encoding ends in `bytes`.
    ends: Vec<usize>,
}

/// Appends raw bytes (a raw row's value).
fn copy_raw(value: &[u8], out: &mut Vec<u8>) -> Result<(), ProjectionError> {
    out.extend_from_slice(value);
    Ok(())
}

/// Appends a compact row's encoding.
fn encode_row_into<T: RowCodec>(row: &T, out: &mut Vec<u8>) -> Result<(), ProjectionError> {
    row.encode_into(out);
    Ok(())
}

/// Appends a JSON row's encoding.
fn encode_json_into<T: Serialize>(row: &T, out: &mut Vec<u8>) -> Result<(), ProjectionError> {
    out.extend_from_slice(&encode_json(row)?);
    Ok(())
}

impl BulkRows {
    /// Hands every present row to `sink`, encoded, ascending by key: a merge of each map's
    /// rows sorted on their own (a handful of maps).
    pub(crate) fn write_sorted(&self, sink: &mut dyn RowSink) -> Result<(), ProjectionError> {
        let raw: Vec<(&[u8], &[u8])> = self
            .raw
            .iter()
            .filter_map(|(k, v)| Some((&k[..], v.value.as_deref()?)))
            .collect();
        let mut cursors: Vec<Box<dyn RowCursor + '_>> =
            vec![Box::new(SortedRows::new(raw, copy_raw))];
        for (_, map) in self.typed.iter().chain(&self.by_applicant) {
            cursors.push(map.sorted());
        }
        let mut value = Vec::with_capacity(4096);
        loop {
            let mut next: Option<usize> = None;
            for (i, cursor) in cursors.iter().enumerate() {
                let Some(key) = cursor.key() else { continue };
                match next.and_then(|n| cursors[n].key()) {
                    Some(best) if best < key => {}
                    Some(best) if best == key => {
                        return Err(ProjectionError::Other(format!(
                            "row {} is held twice by a rebuild",
                            String::from_utf8_lossy(key)
                        )))
                    }
                    _ => next = Some(i),
                }
            }
            let Some(i) = next else { return Ok(()) };
            value.clear();
            cursors[i].value(&mut value)?;
            if let Some(key) = cursors[i].key() {
                sink.push(key, &value)?;
            }
            cursors[i].advance();
        }
    }

    fn update_with<T: Send + 'static, R>(
        &mut self,
        key: &[u8],
        decode: fn(&[u8], &[u8]) -> Result<T, ProjectionError>,
        encode: EncodeInto<T>,
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R, ProjectionError> {
        let wanted = TypeId::of::<T>();
        let index = match self.typed.iter().position(|(t, _)| *t == wanted) {
            Some(i) => i,
            None => {
                self.one_way(wanted, false)?;
                let map = Map::<T> {
                    rows: FxHashMap::default(),
                    encode,
                };
                self.typed.push((wanted, Box::new(map)));
                self.typed.len() - 1
            }
        };
        if !map_of::<Map<T>>(&mut self.typed[index].1)?
            .rows
            .contains_key(key)
        {
            // First touch: the row may have been written as bytes, never as another type.
            if self
                .typed
                .iter()
                .any(|(t, map)| *t != wanted && map.contains(key))
            {
                return Err(ProjectionError::Decode {
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason: "row updated as two different types".into(),
                });
            }
            let value = match self.raw.remove(key).and_then(|row| row.value) {
                Some(bytes) => Some(decode(key, &bytes)?),
                None => None,
            };
            map_of::<Map<T>>(&mut self.typed[index].1)?
                .rows
                .insert(key.into(), value);
        }
        let map = map_of::<Map<T>>(&mut self.typed[index].1)?;
        let row = map
            .rows
            .get_mut(key)
            .ok_or_else(|| ProjectionError::Decode {
                key: String::from_utf8_lossy(key).into_owned(),
                reason: "row vanished while being updated".into(),
            })?;
        Ok(f(row))
    }

    /// Refuses a row type reached both by key and by applicant.
    fn one_way(&self, wanted: TypeId, by_applicant: bool) -> Result<(), ProjectionError> {
        let other = if by_applicant {
            &self.typed
        } else {
            &self.by_applicant
        };
        if other.iter().any(|(t, _)| *t == wanted) {
            return Err(ProjectionError::Other(
                "a row type is reached both by key and by applicant".into(),
            ));
        }
        Ok(())
    }

    fn forget_typed(&mut self, key: &[u8]) {
        for (_, map) in &mut self.typed {
            if map.forget(key) {
                return;
            }
        }
    }
}

/// The concrete map behind a type-erased one.
fn map_of<M: 'static>(map: &mut Box<dyn TypedMap>) -> Result<&mut M, ProjectionError> {
    map.as_any_mut()
        .downcast_mut::<M>()
        .ok_or_else(|| ProjectionError::Other("a row map holds another type".into()))
}

impl RowStore for BulkRows {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        for (_, map) in &self.typed {
            if let Some(encoded) = map.encoded(key) {
                return encoded;
            }
        }
        Ok(self.raw.get(key).and_then(|row| row.value.clone()))
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.forget_typed(&key);
        self.raw
            .insert(key.into_boxed_slice(), RawRow::whole(Some(value)));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.forget_typed(&key);
        // No tombstone: a rebuild starts from nothing, so an absent row is a removed one (the
        // list's status index moves every applicant several times; its tombstones were most
        // of that read model's memory).
        self.raw.remove(&key[..]);
    }

    fn update_applicant_row<T: RowCodec, R>(
        &mut self,
        prefix: &'static str,
        applicant_id: &str,
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R, ProjectionError> {
        let wanted = TypeId::of::<T>();
        let index = match self.by_applicant.iter().position(|(t, _)| *t == wanted) {
            Some(i) => i,
            None => {
                self.one_way(wanted, true)?;
                let map = ByApplicant::<T> {
                    rows: FxHashMap::default(),
                    prefix,
                    encode: encode_row_into::<T>,
                };
                self.by_applicant.push((wanted, Box::new(map)));
                self.by_applicant.len() - 1
            }
        };
        let map = map_of::<ByApplicant<T>>(&mut self.by_applicant[index].1)?;
        if map.prefix != prefix {
            return Err(ProjectionError::Other(format!(
                "one row type under two prefixes ({} and {prefix})",
                map.prefix
            )));
        }
        if let Some(row) = map.rows.get_mut(applicant_id) {
            return Ok(f(row));
        }
        // First touch: a rebuild starts from nothing, so the row is absent.
        let mut row = None;
        let out = f(&mut row);
        map.rows.insert(applicant_id.into(), row);
        Ok(out)
    }

    fn update_json<T, R>(
        &mut self,
        key: &[u8],
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R, ProjectionError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        self.update_with(key, decode_json::<T>, encode_json_into::<T>, f)
    }

    fn append_with_memo(
        &mut self,
        key: &[u8],
        f: impl FnOnce(&mut Vec<u8>, &mut Option<u32>) -> Result<(), ProjectionError>,
    ) -> Result<(), ProjectionError> {
        if let Some(RawRow {
            value: Some(value),
            memo,
        }) = self.raw.get_mut(key)
        {
            return f(value, memo);
        }
        let mut value = match self.get(key)? {
            Some(value) => value,
            // A row that grows by appends (a timeline) grows from a useful size.
            None => Vec::with_capacity(APPENDED_ROW_CAPACITY),
        };
        let mut memo = None;
        f(&mut value, &mut memo)?;
        self.forget_typed(key);
        self.raw.insert(
            key.into(),
            RawRow {
                value: Some(value),
                memo,
            },
        );
        Ok(())
    }
}

impl RowSink for Vec<(Vec<u8>, Vec<u8>)> {
    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), ProjectionError> {
        Vec::push(self, (key.to_vec(), value.to_vec()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Sorting on the word past the shared prefix orders rows as sorting whole keys does,
        /// whatever the keys share: prefixes of one another, zero bytes, long common starts.
        #[test]
        fn rows_sort_as_their_whole_keys_do(
            start in proptest::collection::vec(0u8..2, 0..20),
            tails in proptest::collection::hash_set(proptest::collection::vec(0u8..3, 0..24), 0..40),
        ) {
            let keys: Vec<Vec<u8>> = tails
                .into_iter()
                .map(|tail| start.iter().chain(&tail).copied().collect())
                .collect();
            let mut rows: Vec<(&[u8], usize)> =
                keys.iter().enumerate().map(|(i, k)| (k.as_slice(), i)).collect();
            let mut expected = rows.clone();
            expected.sort_unstable_by(|a, b| a.0.cmp(b.0));
            sort_by_key(&mut rows);
            prop_assert_eq!(rows, expected);
        }
    }

    #[test]
    fn rows_read_back_as_written_and_come_out_sorted_once_each() {
        let mut rows = BulkRows::default();
        rows.put(b"b".to_vec(), b"2".to_vec());
        rows.update_json::<u64, _>(b"n", |n| *n = Some(5)).unwrap();
        rows.update_json::<u64, _>(b"n", |n| *n = n.map(|n| n + 1))
            .unwrap();
        assert_eq!(rows.get(b"n").unwrap(), Some(b"6".to_vec()));
        rows.append_with_memo(b"a", |v, _| {
            v.extend_from_slice(b"x");
            Ok(())
        })
        .unwrap();
        rows.append_with_memo(b"a", |v, _| {
            v.extend_from_slice(b"y");
            Ok(())
        })
        .unwrap();
        // A raw row read as a typed one, then written raw again.
        rows.put(b"m".to_vec(), b"41".to_vec());
        rows.update_json::<u64, _>(b"m", |m| *m = m.map(|m| m + 1))
            .unwrap();
        rows.update_json::<u64, _>(b"gone", |g| *g = None).unwrap();
        rows.put(b"r".to_vec(), b"1".to_vec());
        rows.remove(b"r".to_vec());
        assert_eq!(rows.get(b"r").unwrap(), None);
        // One key, two types: refused as `Rows` refuses it.
        assert!(rows.update_json::<String, _>(b"n", |_| ()).is_err());
        // Rows by applicant come out under their keys, merged in key order with the rest.
        rows.update_applicant_row::<Counter, _>("c/", "p", |c| *c = Some(Counter(1)))
            .unwrap();
        rows.update_applicant_row::<Counter, _>("c/", "p", |c| {
            if let Some(c) = c {
                c.0 += 1
            }
        })
        .unwrap();
        rows.update_applicant_row::<Counter, _>("c/", "a", |c| *c = Some(Counter(9)))
            .unwrap();
        rows.update_applicant_row::<Counter, _>("c/", "q", |c| *c = None)
            .unwrap();
        assert!(rows
            .update_applicant_row::<Counter, _>("d/", "q", |_| ())
            .is_err());
        let mut sorted = Vec::new();
        rows.write_sorted(&mut sorted).unwrap();
        let expected: Vec<(Vec<u8>, Vec<u8>)> = [
            (&b"a"[..], &b"xy"[..]),
            (b"b", b"2"),
            (b"c/a", &[200, 9]),
            (b"c/p", &[200, 2]),
            (b"m", b"42"),
            (b"n", b"6"),
        ]
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
        assert_eq!(sorted, expected);
    }

    #[test]
    fn many_rows_by_applicant_are_encoded_in_parallel_and_come_out_in_order() {
        let mut rows = BulkRows::default();
        let n = PARALLEL_ENCODE + 5_003;
        for i in 0..n {
            let id = format!("{:08}", (i * 7_919) % n);
            rows.update_applicant_row::<Counter, _>("c/", &id, |c| *c = Some(Counter(i as u8)))
                .unwrap();
        }
        rows.put(b"c/00000100x".to_vec(), b"raw".to_vec());
        let mut writer = vec![0; n];
        for i in 0..n {
            writer[(i * 7_919) % n] = i;
        }
        let mut sorted = Vec::new();
        rows.write_sorted(&mut sorted).unwrap();
        assert_eq!(sorted.len(), n + 1);
        assert!(sorted.windows(2).all(|w| w[0].0 < w[1].0));
        for (key, value) in &sorted {
            if key.as_slice() == b"c/00000100x" {
                assert_eq!(value.as_slice(), b"raw");
                continue;
            }
            let id: usize = std::str::from_utf8(&key[2..]).unwrap().parse().unwrap();
            assert_eq!(value.as_slice(), &[200, writer[id] as u8], "{id}");
        }
    }

    struct Counter(u8);

    impl RowCodec for Counter {
        const TAG: u8 = 200;
        fn write(&self, w: &mut crate::codec::Writer<'_>) {
            w.u8(self.0);
        }
        fn read(r: &mut crate::codec::Reader<'_>) -> Result<Self, ProjectionError> {
            Ok(Counter(r.u8()?))
        }
    }
}
