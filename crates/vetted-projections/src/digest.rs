//! SHA-256 digest of a projection's rows, so `verify` can say whether two generations hold
//! the same read model without comparing them row by row in memory.
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::{ProjectionError, CHECKPOINT_KEY};

/// The digest of a projection's rows (checkpoint excluded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Digest {
    /// Lowercase hex SHA-256 over every included row, in key order.
    pub sha256: String,
    /// Number of rows hashed.
    pub rows: u64,
}

/// Hashes every row of `tree` but the checkpoint for which `include(key)` holds.
///
/// Each row contributes its key and value, each prefixed by its length (big-endian u64), so
/// no two different row sets can produce the same byte stream.
pub fn digest_tree(
    tree: &sled::Tree,
    include: impl Fn(&[u8]) -> bool,
) -> Result<Digest, ProjectionError> {
    let mut hasher = Sha256::new();
    let mut rows = 0u64;
    for item in tree.iter() {
        let (key, value) = item?;
        if key.as_ref() == CHECKPOINT_KEY || !include(&key) {
            continue;
        }
        hasher.update((key.len() as u64).to_be_bytes());
        hasher.update(&key);
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(&value);
        rows += 1;
    }
    Ok(Digest {
        sha256: hex::encode(hasher.finalize()),
        rows,
    })
}
