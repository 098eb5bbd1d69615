//! A rebuild's fold kept in memory: every row a read model holds lives in hash maps, decoded,
//! until the whole log is folded; then each row is encoded once and the rows are handed over
//! in key order, to be written once into the new generation.
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

/// Rows as a rebuild writes them: (key, value), ascending by key.
pub type SortedRows = Vec<(Vec<u8>, Vec<u8>)>;

/// A rebuild's in-memory fold of one read model.
pub trait Builder: Send {
    /// Folds one applicant event (in global order).
    fn apply(&mut self, fact: &ApplicantFact<'_>) -> Result<(), ProjectionError>;

    /// Every row of the read model, ascending by key, each key once (no checkpoint row).
    fn finish(self: Box<Self>) -> Result<SortedRows, ProjectionError>;
}

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

    fn finish(self: Box<Self>) -> Result<SortedRows, ProjectionError> {
        self.rows.into_sorted()
    }
}

/// Rows held in memory. Every key lives in one place: a map of decoded rows of one type, or
/// the map of raw values. Absent rows are known to be absent: a rebuild starts from nothing.
#[derive(Default)]
pub(crate) struct BulkRows {
    /// One map per row type, found by its `TypeId` (a read model has two or three types).
    typed: Vec<(TypeId, Box<dyn TypedMap>)>,
    /// Rows written as bytes (`None`: removed).
    raw: FxHashMap<Box<[u8]>, Option<Vec<u8>>>,
    /// Per-applicant rows, one map per row type, keyed by applicant id: no key is spelled
    /// out (or hashed in full) until the end.
    by_applicant: Vec<(TypeId, Box<dyn TypedMap>)>,
}

/// The decoded per-applicant rows of one type.
struct ByApplicant<T> {
    rows: FxHashMap<Box<str>, Option<T>>,
    key_of: fn(&str) -> String,
    encode: fn(&T) -> Result<Vec<u8>, ProjectionError>,
}

impl<T: Send + 'static> TypedMap for ByApplicant<T> {
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

    fn drain_into(&mut self, out: &mut Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), ProjectionError> {
        out.reserve(self.rows.len());
        for (id, row) in self.rows.drain() {
            if let Some(row) = row {
                out.push(((self.key_of)(&id).into_bytes(), (self.encode)(&row)?));
            }
        }
        Ok(())
    }
}

/// The decoded rows of one type.
struct Map<T> {
    rows: FxHashMap<Box<[u8]>, Option<T>>,
    encode: fn(&T) -> Result<Vec<u8>, ProjectionError>,
}

/// A [`Map`] whatever its row type.
trait TypedMap: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn contains(&self, key: &[u8]) -> bool;
    /// The encoding of `key`'s row if this map holds it (`Some(None)`: removed).
    fn encoded(&self, key: &[u8]) -> Option<Result<Option<Vec<u8>>, ProjectionError>>;
    /// Drops `key`'s row; whether it was here.
    fn forget(&mut self, key: &[u8]) -> bool;
    /// Moves every present row, encoded, into `out`.
    fn drain_into(&mut self, out: &mut Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), ProjectionError>;
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
        Some(row.as_ref().map(self.encode).transpose())
    }

    fn forget(&mut self, key: &[u8]) -> bool {
        self.rows.remove(key).is_some()
    }

    fn drain_into(&mut self, out: &mut Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), ProjectionError> {
        out.reserve(self.rows.len());
        for (key, row) in self.rows.drain() {
            if let Some(row) = row {
                out.push((key.into_vec(), (self.encode)(&row)?));
            }
        }
        Ok(())
    }
}

impl BulkRows {
    /// Every present row, encoded, ascending by key.
    pub(crate) fn into_sorted(mut self) -> Result<SortedRows, ProjectionError> {
        let mut out = Vec::new();
        for (_, map) in self.typed.iter_mut().chain(&mut self.by_applicant) {
            map.drain_into(&mut out)?;
        }
        out.reserve(self.raw.len());
        out.extend(
            self.raw
                .into_iter()
                .filter_map(|(key, value)| Some((key.into_vec(), value?))),
        );
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
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

    fn update_with<T: Send + 'static, R>(
        &mut self,
        key: &[u8],
        decode: fn(&[u8], &[u8]) -> Result<T, ProjectionError>,
        encode: fn(&T) -> Result<Vec<u8>, ProjectionError>,
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
        if !self.map_of::<T>(index)?.rows.contains_key(key) {
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
            let value = match self.raw.remove(key) {
                Some(Some(bytes)) => Some(decode(key, &bytes)?),
                Some(None) | None => None,
            };
            self.map_of::<T>(index)?.rows.insert(key.into(), value);
        }
        let map = self.map_of::<T>(index)?;
        let row = map
            .rows
            .get_mut(key)
            .ok_or_else(|| ProjectionError::Decode {
                key: String::from_utf8_lossy(key).into_owned(),
                reason: "row vanished while being updated".into(),
            })?;
        Ok(f(row))
    }

    fn map_of<T: Send + 'static>(&mut self, index: usize) -> Result<&mut Map<T>, ProjectionError> {
        self.typed[index]
            .1
            .as_any_mut()
            .downcast_mut::<Map<T>>()
            .ok_or_else(|| ProjectionError::Other("a row map holds another type".into()))
    }

    fn forget_typed(&mut self, key: &[u8]) {
        for (_, map) in &mut self.typed {
            if map.forget(key) {
                return;
            }
        }
    }
}

impl RowStore for BulkRows {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        for (_, map) in &self.typed {
            if let Some(encoded) = map.encoded(key) {
                return encoded;
            }
        }
        Ok(self.raw.get(key).cloned().flatten())
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.forget_typed(&key);
        self.raw.insert(key.into_boxed_slice(), Some(value));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.forget_typed(&key);
        self.raw.insert(key.into_boxed_slice(), None);
    }

    fn update_applicant_row<T: RowCodec, R>(
        &mut self,
        applicant_id: &str,
        key_of: fn(&str) -> String,
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R, ProjectionError> {
        let wanted = TypeId::of::<T>();
        let index = match self.by_applicant.iter().position(|(t, _)| *t == wanted) {
            Some(i) => i,
            None => {
                self.one_way(wanted, true)?;
                let map = ByApplicant::<T> {
                    rows: FxHashMap::default(),
                    key_of,
                    encode: |row: &T| Ok(row.encode_row()),
                };
                self.by_applicant.push((wanted, Box::new(map)));
                self.by_applicant.len() - 1
            }
        };
        let map = self.by_applicant[index]
            .1
            .as_any_mut()
            .downcast_mut::<ByApplicant<T>>()
            .ok_or_else(|| ProjectionError::Other("a row map holds another type".into()))?;
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
        self.update_with(key, decode_json::<T>, encode_json::<T>, f)
    }

    fn append_with(
        &mut self,
        key: &[u8],
        f: impl FnOnce(&mut Vec<u8>) -> Result<(), ProjectionError>,
    ) -> Result<(), ProjectionError> {
        if let Some(Some(value)) = self.raw.get_mut(key) {
            return f(value);
        }
        let mut value = match self.get(key)? {
            Some(value) => value,
            // A row that grows by appends (a timeline) grows from a useful size.
            None => Vec::with_capacity(APPENDED_ROW_CAPACITY),
        };
        f(&mut value)?;
        self.put(key.to_vec(), value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_back_as_written_and_come_out_sorted_once_each() {
        let mut rows = BulkRows::default();
        rows.put(b"b".to_vec(), b"2".to_vec());
        rows.update_json::<u64, _>(b"n", |n| *n = Some(5)).unwrap();
        rows.update_json::<u64, _>(b"n", |n| *n = n.map(|n| n + 1))
            .unwrap();
        assert_eq!(rows.get(b"n").unwrap(), Some(b"6".to_vec()));
        rows.append_with(b"a", |v| {
            v.extend_from_slice(b"x");
            Ok(())
        })
        .unwrap();
        rows.append_with(b"a", |v| {
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
        // Rows by applicant come out under their keys.
        let key_of = |id: &str| format!("z/{id}");
        rows.update_applicant_row::<Counter, _>("p", key_of, |c| *c = Some(Counter(1)))
            .unwrap();
        rows.update_applicant_row::<Counter, _>("p", key_of, |c| c.as_mut().unwrap().0 += 1)
            .unwrap();
        rows.update_applicant_row::<Counter, _>("q", key_of, |c| *c = None)
            .unwrap();
        let sorted = rows.into_sorted().unwrap();
        let expected: Vec<(Vec<u8>, Vec<u8>)> = [
            (&b"a"[..], &b"xy"[..]),
            (b"b", b"2"),
            (b"m", b"42"),
            (b"n", b"6"),
            (b"z/p", &[200, 2]),
        ]
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
        assert_eq!(sorted, expected);
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
