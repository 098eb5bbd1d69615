//! A generation's rows as one sorted map: an optional immutable base (a run file a rebuild
//! wrote, see `crate::run`) under the generation's sled tree, which holds every later change
//! (the overlay) and the checkpoint.
//!
//! Reads look in the overlay first, then in the base. A removal cannot delete a row from the
//! immutable base, so when a base is present the overlay marks it: every overlay row is
//! tagged, `[1] ++ value` for a value and `[0]` alone for a tombstone (a row removed that the
//! base holds). Without a base, overlay rows are raw values, as every generation stored them
//! before run files existed, so existing data directories read as they are. The checkpoint row
//! ([`CHECKPOINT_KEY`], a raw big-endian u64) is never tagged and never shows as a row.
use std::cmp::Ordering;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use sled::IVec;

use crate::run::{Run, RunRange, RunValue};
use crate::{checkpoint_of, ProjectionError, CHECKPOINT_KEY};

/// Overlay tag of a value (followed by the value's bytes).
const VALUE: u8 = 1;
/// Overlay tag of a tombstone (alone).
const TOMBSTONE: u8 = 0;

/// A generation's rows: an optional immutable base run plus the sled tree (overlay +
/// checkpoint).
#[derive(Clone)]
pub struct Table {
    tree: sled::Tree,
    base: Option<Arc<Run>>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("tree", &String::from_utf8_lossy(&self.tree.name()))
            .field("base", &self.base.as_ref().map(|b| b.path()))
            .finish()
    }
}

/// A range's bounds as byte slices.
type Bounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

impl Table {
    /// A generation stored wholly in its sled tree (raw rows, no base).
    pub fn plain(tree: sled::Tree) -> Table {
        Table { tree, base: None }
    }

    /// A generation whose rows start as `base`, with `tree` holding the tagged changes since.
    pub fn with_base(tree: sled::Tree, base: Arc<Run>) -> Table {
        Table {
            tree,
            base: Some(base),
        }
    }

    /// The sled tree: the overlay and the checkpoint.
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// The base run, if the generation has one.
    pub fn base(&self) -> Option<&Arc<Run>> {
        self.base.as_ref()
    }

    /// Whether the generation has a base run (and so a tagged overlay).
    pub fn has_base(&self) -> bool {
        self.base.is_some()
    }

    /// The value of row `key` (`None`: absent or removed).
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<IVec>, ProjectionError> {
        let key = key.as_ref();
        if key == CHECKPOINT_KEY {
            return Ok(None);
        }
        let stored = self.tree.get(key)?;
        let Some(base) = &self.base else {
            return Ok(stored);
        };
        if let Some(stored) = stored {
            return Ok(untag(key, stored)?.into_value());
        }
        Ok(base.get(key)?.and_then(RunValue::into_value))
    }

    /// The rows in `range`, in key order; iterate from the back (`next_back`) for newest-first
    /// lists, as with `sled::Tree::range`.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> TableIter {
        self.bounded((
            range.start_bound().map(AsRef::as_ref),
            range.end_bound().map(AsRef::as_ref),
        ))
    }

    /// The rows in `range`, in descending key order.
    pub fn range_rev<K: AsRef<[u8]>, R: RangeBounds<K>>(
        &self,
        range: R,
    ) -> std::iter::Rev<TableIter> {
        self.range(range).rev()
    }

    /// The rows whose keys start with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> TableIter {
        let prefix = prefix.as_ref();
        match prefix_end(prefix) {
            Some(end) => self.bounded((Bound::Included(prefix), Bound::Excluded(&end))),
            None => self.bounded((Bound::Included(prefix), Bound::Unbounded)),
        }
    }

    /// Every row, in key order.
    pub fn iter(&self) -> TableIter {
        self.bounded((Bound::Unbounded, Bound::Unbounded))
    }

    fn bounded(&self, (lower, upper): Bounds<'_>) -> TableIter {
        let overlay = Overlay {
            iter: self.tree.range::<&[u8], _>((lower, upper)),
            tagged: self.base.is_some(),
        };
        TableIter {
            overlay: Ends::new(overlay),
            base: self.base.as_ref().map(|b| Ends::new(b.range(lower, upper))),
            // `BTreeMap::range` panics on such bounds; here they only hold no rows.
            done: is_empty_range(lower, upper),
        }
    }

    /// The last position applied to this generation (0: none).
    pub fn checkpoint(&self) -> Result<u64, ProjectionError> {
        checkpoint_of(&self.tree)
    }

    /// Writes `changes` (`None` removes the row) and `checkpoint` in one atomic batch.
    ///
    /// With a base, values are tagged and the removal of a row the base holds becomes a
    /// tombstone; removing a row the base does not hold just removes it from the overlay, so
    /// rows written and removed after the rebuild (an outbox) leave nothing behind.
    pub fn commit(
        &self,
        changes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
        checkpoint: u64,
    ) -> Result<(), ProjectionError> {
        let mut batch = sled::Batch::default();
        for (key, value) in changes {
            match (&self.base, value) {
                (None, Some(value)) => batch.insert(key, value),
                (None, None) => batch.remove(key),
                (Some(_), Some(value)) => {
                    let mut tagged = Vec::with_capacity(value.len() + 1);
                    tagged.push(VALUE);
                    tagged.extend_from_slice(&value);
                    batch.insert(key, tagged);
                }
                (Some(base), None) => {
                    if matches!(base.get(&key)?, Some(RunValue::Value(_))) {
                        batch.insert(key, &[TOMBSTONE]);
                    } else {
                        batch.remove(key);
                    }
                }
            }
        }
        batch.insert(CHECKPOINT_KEY, &checkpoint.to_be_bytes());
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Whether the generation holds no row at all (the checkpoint aside; base rows count).
    pub fn is_empty(&self) -> Result<bool, ProjectionError> {
        Ok(self.iter().next().transpose()?.is_none())
    }
}

/// The first key above every key starting with `prefix` (`None`: there is none).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Whether no key can lie between `lower` and `upper`.
fn is_empty_range(lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u))
        | (Bound::Excluded(l), Bound::Included(u)) => l >= u,
        _ => false,
    }
}

/// An overlay row of a table with a base: a value or a tombstone.
fn untag(key: &[u8], stored: IVec) -> Result<RunValue, ProjectionError> {
    match stored.first() {
        Some(&VALUE) => Ok(RunValue::Value(stored.subslice(1, stored.len() - 1))),
        Some(&TOMBSTONE) if stored.len() == 1 => Ok(RunValue::Tombstone),
        _ => Err(ProjectionError::Decode {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: format!(
                "overlay row of a generation with a base run is neither a tagged value nor a tombstone ({} bytes, first {:?}); rebuild the projection",
                stored.len(),
                stored.first()
            ),
        }),
    }
}

/// An overlay row or a base row.
type Entry = (IVec, RunValue);

/// The overlay's rows from sled, the checkpoint left out, tags read when the table has a base.
struct Overlay {
    iter: sled::Iter,
    tagged: bool,
}

impl Overlay {
    fn entry(&self, row: sled::Result<(IVec, IVec)>) -> Option<Result<Entry, ProjectionError>> {
        let (key, stored) = match row {
            Ok(row) => row,
            Err(e) => return Some(Err(e.into())),
        };
        if key.as_ref() == CHECKPOINT_KEY {
            return None;
        }
        Some(if self.tagged {
            untag(&key, stored).map(|value| (key, value))
        } else {
            Ok((key, RunValue::Value(stored)))
        })
    }
}

impl Iterator for Overlay {
    type Item = Result<Entry, ProjectionError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let row = self.iter.next()?;
            if let Some(entry) = self.entry(row) {
                return Some(entry);
            }
        }
    }
}

impl DoubleEndedIterator for Overlay {
    fn next_back(&mut self) -> Option<Self::Item> {
        loop {
            let row = self.iter.next_back()?;
            if let Some(entry) = self.entry(row) {
                return Some(entry);
            }
        }
    }
}

/// Which end of an iterator.
#[derive(Clone, Copy)]
enum End {
    Front,
    Back,
}

/// A double-ended source with one entry looked at, not yet taken, at each end. Once the
/// source is exhausted, each end falls back on the entry the other end looked at, so the two
/// ends meet without losing or repeating an entry.
struct Ends<I> {
    source: I,
    front: Option<Entry>,
    back: Option<Entry>,
}

impl<I: DoubleEndedIterator<Item = Result<Entry, ProjectionError>>> Ends<I> {
    fn new(source: I) -> Self {
        Ends {
            source,
            front: None,
            back: None,
        }
    }

    /// The key of the next entry at `end`, reading it from the source if need be.
    fn peek(&mut self, end: End) -> Result<Option<&[u8]>, ProjectionError> {
        let (slot, other) = match end {
            End::Front => (&mut self.front, &mut self.back),
            End::Back => (&mut self.back, &mut self.front),
        };
        if slot.is_none() {
            let next = match end {
                End::Front => self.source.next(),
                End::Back => self.source.next_back(),
            };
            *slot = match next {
                Some(entry) => Some(entry?),
                None => other.take(),
            };
        }
        Ok(slot.as_ref().map(|(key, _)| key.as_ref()))
    }

    /// Takes the entry [`Ends::peek`] looked at.
    fn take(&mut self, end: End) -> Option<Entry> {
        match end {
            End::Front => self.front.take(),
            End::Back => self.back.take(),
        }
    }
}

/// Rows of a [`Table`] in key order, overlay and base merged: the overlay wins on equal keys,
/// tombstones and the checkpoint are left out. Double-ended: `next_back` (or `.rev()`) gives
/// descending order, and both ends may be used on one iterator.
///
/// After an error it yields nothing more, so a damaged row or run block ends the iteration
/// with the error instead of a shorter result.
pub struct TableIter {
    overlay: Ends<Overlay>,
    base: Option<Ends<RunRange>>,
    done: bool,
}

impl TableIter {
    /// The next entry at `end`, tombstones included.
    fn step(&mut self, end: End) -> Result<Option<Entry>, ProjectionError> {
        let overlay = self.overlay.peek(end)?;
        let base = match &mut self.base {
            Some(base) => base.peek(end)?,
            None => None,
        };
        // Which source holds the next key at this end.
        let order = match (overlay, base) {
            (None, None) => return Ok(None),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(o), Some(b)) => match end {
                End::Front => o.cmp(b),
                End::Back => b.cmp(o),
            },
        };
        let base = self.base.as_mut();
        Ok(match order {
            Ordering::Less => self.overlay.take(end),
            Ordering::Greater => base.and_then(|b| b.take(end)),
            Ordering::Equal => {
                // The overlay's row replaces the base's.
                base.and_then(|b| b.take(end));
                self.overlay.take(end)
            }
        })
    }

    fn next_at(&mut self, end: End) -> Option<Result<(IVec, IVec), ProjectionError>> {
        while !self.done {
            match self.step(end) {
                Ok(Some((key, RunValue::Value(value)))) if key.as_ref() != CHECKPOINT_KEY => {
                    return Some(Ok((key, value)));
                }
                // A tombstone, or a checkpoint row in the base.
                Ok(Some(_)) => {}
                Ok(None) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

impl Iterator for TableIter {
    type Item = Result<(IVec, IVec), ProjectionError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_at(End::Front)
    }
}

impl DoubleEndedIterator for TableIter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.next_at(End::Back)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::run::RunWriter;

    /// A base run written from `rows` (`None`: tombstone), in blocks of `block_target` bytes.
    fn base(
        path: &Path,
        rows: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        block_target: usize,
    ) -> Arc<Run> {
        let mut writer = RunWriter::create(path)
            .unwrap()
            .with_block_target(block_target);
        for (key, value) in rows {
            writer.push(key, value.as_deref()).unwrap();
        }
        writer.finish().unwrap();
        Arc::new(Run::open(path).unwrap())
    }

    fn tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("proj/test/g1").unwrap()
    }

    fn rows(
        iter: impl Iterator<Item = Result<(IVec, IVec), ProjectionError>>,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        iter.map(|row| {
            let (k, v) = row.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
    }

    fn change(key: &str, value: Option<&str>) -> (Vec<u8>, Option<Vec<u8>>) {
        (
            key.as_bytes().to_vec(),
            value.map(|v| v.as_bytes().to_vec()),
        )
    }

    fn pair(key: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
        (key.as_bytes().to_vec(), value.as_bytes().to_vec())
    }

    #[test]
    fn without_a_base_rows_are_stored_raw_as_before() {
        let tree = tree();
        // A tree written the old way reads as it is.
        tree.insert(b"old", b"raw").unwrap();
        let table = Table::plain(tree.clone());
        assert!(!table.has_base());
        table
            .commit(
                [
                    change("a", Some("1")),
                    change("b", Some("")),
                    change("old", None),
                ],
                7,
            )
            .unwrap();
        assert_eq!(tree.get(b"a").unwrap().unwrap().as_ref(), b"1");
        assert_eq!(tree.get(b"b").unwrap().unwrap().as_ref(), b"");
        assert_eq!(tree.get(b"old").unwrap(), None);
        assert_eq!(table.checkpoint().unwrap(), 7);
        assert_eq!(table.checkpoint().unwrap(), checkpoint_of(&tree).unwrap());
        assert_eq!(rows(table.iter()), vec![pair("a", "1"), pair("b", "")]);
        assert_eq!(table.get(b"b").unwrap().unwrap().as_ref(), b"");
    }

    #[test]
    fn with_a_base_overlay_rows_are_tagged_and_only_base_rows_need_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let base_rows = BTreeMap::from([
            (b"a".to_vec(), Some(b"base a".to_vec())),
            (b"c".to_vec(), Some(b"base c".to_vec())),
            (b"d".to_vec(), None),
        ]);
        let tree = tree();
        let table = Table::with_base(tree.clone(), base(&dir.path().join("run"), &base_rows, 64));
        assert!(table.has_base());
        table
            .commit(
                [
                    change("a", None),          // in the base: a tombstone
                    change("b", Some("new b")), // tagged value
                    change("e", Some("")),      // an empty value, tagged
                    change("x", None),          // never there: nothing to hide
                    change("d", None),          // a tombstone in the base already
                ],
                3,
            )
            .unwrap();
        let raw: Vec<(Vec<u8>, Vec<u8>)> = tree
            .iter()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        assert_eq!(
            raw,
            vec![
                (CHECKPOINT_KEY.to_vec(), 3u64.to_be_bytes().to_vec()),
                (b"a".to_vec(), vec![TOMBSTONE]),
                (b"b".to_vec(), b"\x01new b".to_vec()),
                (b"e".to_vec(), vec![VALUE]),
            ]
        );
        assert_eq!(table.get(b"a").unwrap(), None);
        assert_eq!(table.get(b"b").unwrap().unwrap().as_ref(), b"new b");
        assert_eq!(table.get(b"c").unwrap().unwrap().as_ref(), b"base c");
        assert_eq!(table.get(b"d").unwrap(), None);
        assert_eq!(table.get(b"e").unwrap().unwrap().as_ref(), b"");
        assert_eq!(
            rows(table.iter()),
            vec![pair("b", "new b"), pair("c", "base c"), pair("e", "")]
        );
        // A removed base row comes back when written again.
        table.commit([change("a", Some("again"))], 4).unwrap();
        assert_eq!(table.get(b"a").unwrap().unwrap().as_ref(), b"again");
        assert_eq!(table.checkpoint().unwrap(), 4);
    }

    #[test]
    fn the_checkpoint_never_shows_as_a_row() {
        let dir = tempfile::tempdir().unwrap();
        // Keys sorting just around the checkpoint's.
        let around = BTreeMap::from([
            (b"\x00".to_vec(), Some(b"zero".to_vec())),
            (b"\x00checkpoint\x00".to_vec(), Some(b"after".to_vec())),
        ]);
        let run = base(&dir.path().join("run"), &around, 64);
        for table in [Table::plain(tree()), Table::with_base(tree(), run)] {
            table
                .commit([change("\x00chec", Some("before"))], 9)
                .unwrap();
            assert_eq!(table.get(CHECKPOINT_KEY).unwrap(), None);
            let all = rows_of(&table);
            assert!(all.iter().all(|(k, _)| k != CHECKPOINT_KEY), "{all:?}");
            assert_eq!(rows(table.scan_prefix(b"\x00")).len(), all.len());
            assert_eq!(rows(table.range_rev::<&[u8], _>(..)).len(), all.len());
            assert_eq!(table.checkpoint().unwrap(), 9);
        }
    }

    fn rows_of(table: &Table) -> Vec<(Vec<u8>, Vec<u8>)> {
        rows(table.iter())
    }

    #[test]
    fn is_empty_counts_base_rows_and_ignores_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let plain = Table::plain(tree());
        assert!(plain.is_empty().unwrap());
        plain.commit([], 5).unwrap();
        assert!(plain.is_empty().unwrap());
        plain.commit([change("a", Some("1"))], 6).unwrap();
        assert!(!plain.is_empty().unwrap());

        let one = BTreeMap::from([(b"a".to_vec(), Some(b"1".to_vec()))]);
        let based = Table::with_base(tree(), base(&dir.path().join("run"), &one, 64));
        assert!(!based.is_empty().unwrap());
        based.commit([change("a", None)], 7).unwrap();
        assert!(based.is_empty().unwrap());
        let empty_base = base(&dir.path().join("empty"), &BTreeMap::new(), 64);
        assert!(Table::with_base(tree(), empty_base).is_empty().unwrap());
    }

    #[test]
    fn newest_first_lists_read_a_range_from_the_back() {
        let dir = tempfile::tempdir().unwrap();
        let listed: BTreeMap<Vec<u8>, Option<Vec<u8>>> = (0..50u32)
            .map(|i| (format!("s/app/{i:03}").into_bytes(), Some(vec![b'b'])))
            .collect();
        let table = Table::with_base(tree(), base(&dir.path().join("run"), &listed, 40));
        table
            .commit(
                [
                    change("s/app/049", None),
                    change("s/app/050", Some("o")),
                    change("s/app/010", Some("o")),
                ],
                1,
            )
            .unwrap();
        // As the list queries do: `range(low..high)`, then `next_back()` page by page.
        let mut scan = table.range(b"s/app/".as_slice()..b"s/app0".as_slice());
        let mut keys = Vec::new();
        while let Some(row) = scan.next_back() {
            keys.push(String::from_utf8(row.unwrap().0.to_vec()).unwrap());
        }
        let mut expected: Vec<String> = (0..=50u32)
            .filter(|i| *i != 49)
            .map(|i| format!("s/app/{i:03}"))
            .collect();
        expected.reverse();
        assert_eq!(keys, expected);
        assert_eq!(table.get(b"s/app/010").unwrap().unwrap().as_ref(), b"o");
    }

    #[test]
    fn a_damaged_overlay_row_is_an_error_not_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let tree = tree();
        tree.insert(b"bad", b"\x07junk").unwrap();
        tree.insert(b"long tombstone", b"\x00\x00").unwrap();
        let table = Table::with_base(tree, base(&dir.path().join("run"), &BTreeMap::new(), 64));
        assert!(matches!(
            table.get(b"bad"),
            Err(ProjectionError::Decode { .. })
        ));
        assert!(table.get(b"long tombstone").is_err());
        let mut iter = table.iter();
        assert!(iter.next().unwrap().is_err());
        assert!(iter.next().is_none(), "an error ends the iteration");
    }

    type Model = BTreeMap<Vec<u8>, Vec<u8>>;

    fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(vec![0u8, 1, b'a', b'b', 0xff]), 0..4)
    }

    fn bound_strategy() -> impl Strategy<Value = Bound<Vec<u8>>> {
        prop_oneof![
            Just(Bound::Unbounded),
            key_strategy().prop_map(Bound::Included),
            key_strategy().prop_map(Bound::Excluded),
        ]
    }

    /// The model's rows in a range; empty for bounds that `BTreeMap::range` refuses.
    fn model_range(
        model: &Model,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        if is_empty_range(lower, upper) {
            return Vec::new();
        }
        model
            .range::<[u8], _>((lower, upper))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn a_table_reads_like_a_map_of_its_base_and_commits(
            with_base in any::<bool>(),
            base_rows in prop::collection::btree_map(
                key_strategy(),
                prop::option::weighted(0.85, prop::collection::vec(any::<u8>(), 0..12)),
                0..40,
            ),
            block_target in 1usize..100,
            commits in prop::collection::vec(
                prop::collection::vec(
                    (key_strategy(), prop::option::weighted(0.6, prop::collection::vec(any::<u8>(), 0..6))),
                    0..12,
                ),
                0..5,
            ),
            probes in prop::collection::vec(key_strategy(), 0..12),
            bounds in prop::collection::vec((bound_strategy(), bound_strategy()), 1..6),
            prefixes in prop::collection::vec(key_strategy(), 1..4),
            ends in prop::collection::vec(any::<bool>(), 0..30),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (table, mut model) = if with_base {
                let run = base(&dir.path().join("run"), &base_rows, block_target);
                let model: Model = base_rows
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
                    .collect();
                (Table::with_base(tree(), run), model)
            } else {
                (Table::plain(tree()), Model::new())
            };
            for (i, changes) in commits.iter().enumerate() {
                for (key, value) in changes {
                    match value {
                        Some(v) => model.insert(key.clone(), v.clone()),
                        None => model.remove(key),
                    };
                }
                table.commit(changes.clone(), i as u64 + 1).unwrap();
            }
            prop_assert_eq!(table.checkpoint().unwrap(), commits.len() as u64);
            prop_assert_eq!(table.is_empty().unwrap(), model.is_empty());
            for key in model.keys().chain(&probes).chain(base_rows.keys()) {
                prop_assert_eq!(
                    table.get(key).unwrap().map(|v| v.to_vec()),
                    model.get(key).cloned()
                );
            }
            let all: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(rows(table.iter()), all.clone());
            prop_assert_eq!(rows(table.range::<&[u8], _>(..)), all.clone());
            for (lower, upper) in &bounds {
                let (lower, upper) = (lower.as_ref().map(Vec::as_slice), upper.as_ref().map(Vec::as_slice));
                let expected = model_range(&model, lower, upper);
                prop_assert_eq!(rows(table.range::<&[u8], _>((lower, upper))), expected.clone());
                let mut reversed = expected;
                reversed.reverse();
                prop_assert_eq!(rows(table.range_rev::<&[u8], _>((lower, upper))), reversed);
            }
            for prefix in &prefixes {
                let expected: Vec<(Vec<u8>, Vec<u8>)> = all
                    .iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .cloned()
                    .collect();
                prop_assert_eq!(rows(table.scan_prefix(prefix)), expected);
            }
            // Both ends of one iterator, in a random order, against the model's.
            let mut ours = table.iter();
            let mut theirs = model.iter();
            for from_front in ends {
                let (a, b) = if from_front {
                    (ours.next(), theirs.next())
                } else {
                    (ours.next_back(), theirs.next_back())
                };
                let a = a.map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap());
                prop_assert_eq!(a, b.map(|(k, v)| (k.clone(), v.clone())));
            }
        }
    }
}
