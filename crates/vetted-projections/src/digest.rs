//! SHA-256 digest of a projection's rows, so `verify` can say whether two generations hold
//! the same read model without comparing them row by row in memory.
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::{ProjectionError, Table};

/// The digest of a projection's rows (checkpoint excluded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Digest {
    /// Lowercase hex SHA-256 over every included row, in key order.
    pub sha256: String,
    /// Number of rows hashed.
    pub rows: u64,
}

/// Hashes every row of `tree` (a generation without a base) for which `include(key)` holds.
pub fn digest_tree(
    tree: &sled::Tree,
    include: impl Fn(&[u8]) -> bool,
) -> Result<Digest, ProjectionError> {
    digest_table(&Table::plain(tree.clone()), include)
}

/// Hashes every row of a generation (base and tree; the checkpoint is not a row) for which
/// `include(key)` holds.
///
/// Each row contributes its key and value, each prefixed by its length (big-endian u64), so
/// no two different row sets can produce the same byte stream, however they are stored.
pub fn digest_table(
    table: &Table,
    include: impl Fn(&[u8]) -> bool,
) -> Result<Digest, ProjectionError> {
    let mut hasher = Hasher::default();
    for item in table.iter() {
        let (key, value) = item?;
        if include(&key) {
            hasher.row(&key, &value);
        }
    }
    Ok(hasher.finish())
}

/// Rows hashed one at a time, in key order.
#[derive(Default)]
pub(crate) struct Hasher {
    sha256: Sha256,
    rows: u64,
}

impl Hasher {
    /// Adds one row.
    pub(crate) fn row(&mut self, key: &[u8], value: &[u8]) {
        self.sha256.update((key.len() as u64).to_be_bytes());
        self.sha256.update(key);
        self.sha256.update((value.len() as u64).to_be_bytes());
        self.sha256.update(value);
        self.rows += 1;
    }

    /// The digest of the rows added.
    pub(crate) fn finish(self) -> Digest {
        Digest {
            sha256: hex::encode(self.sha256.finalize()),
            rows: self.rows,
        }
    }
}
