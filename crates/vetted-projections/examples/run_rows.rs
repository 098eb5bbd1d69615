//! What one row costs a run file (the sorted base a rebuild writes instead of sled rows, see
//! `vetted_projections::run`): writes `ROWS` rows of `BYTES` bytes in ascending key order
//! (file synced and renamed, as a rebuild would), then reads `GETS` random keys back one by
//! one, then scans the run forward and backward, and prints the time per row of each. Compare
//! with `examples/sled_rows.rs` (~4.4 µs per row into sled, keys ascending).
//!
//! `cargo run --release -p vetted-projections --example run_rows [ROWS] [BYTES] [GETS]`
//! (defaults: 672,000 rows — a 1M-event rebuild's — of 150 bytes, 100,000 gets).
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use vetted_projections::run::{Run, RunWriter};
use vetted_projections::ProjectionError;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (splitmix64), so runs are comparable.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn per_row(took: std::time::Duration, rows: usize) -> f64 {
    took.as_secs_f64() * 1e6 / rows.max(1) as f64
}

fn main() -> Result<(), ProjectionError> {
    let (rows, bytes, gets) = (arg(1, 672_000), arg(2, 150), arg(3, 100_000));
    let mut mix = Mix(42);
    // Keys shaped like a view row's (`view/<uuid>`), sorted as a rebuild would write them.
    let mut keys: Vec<Vec<u8>> = (0..rows)
        .map(|_| {
            let id = uuid::Uuid::from_u64_pair(mix.next(), mix.next());
            format!("view/{id}").into_bytes()
        })
        .collect();
    keys.sort();
    keys.dedup();
    let values: Vec<Vec<u8>> = (0..64)
        .map(|_| (0..bytes).map(|_| mix.next() as u8).collect())
        .collect();
    let dir = tempfile::tempdir().map_err(|e| ProjectionError::Other(e.to_string()))?;
    let path = dir.path().join("view.run");

    let started = Instant::now();
    let mut writer = RunWriter::create(&path)?;
    for (i, key) in keys.iter().enumerate() {
        writer.push(key, Some(&values[i % values.len()]))?;
    }
    let pushed = started.elapsed();
    let info = writer.finish()?;
    let took = started.elapsed();
    println!(
        "wrote {} rows of {bytes} B ({} blocks, {:.1} MB): {:.3} s = {:.3} µs per row ({:.2} M rows/s), of which pushing {:.3} µs per row and finishing (index, fsync, rename) {:.0} ms",
        info.entries,
        info.blocks,
        info.bytes as f64 / 1e6,
        took.as_secs_f64(),
        per_row(took, keys.len()),
        keys.len() as f64 / took.as_secs_f64() / 1e6,
        per_row(pushed, keys.len()),
        (took - pushed).as_secs_f64() * 1e3
    );

    let started = Instant::now();
    let run = Arc::new(Run::open(&path)?);
    println!(
        "opened (footer and index checked): {:.3} ms",
        started.elapsed().as_secs_f64() * 1e3
    );

    let picks: Vec<usize> = (0..gets)
        .map(|_| (mix.next() % keys.len() as u64) as usize)
        .collect();
    let started = Instant::now();
    let mut found = 0usize;
    for &i in &picks {
        found += usize::from(run.get(&keys[i])?.is_some());
    }
    let took = started.elapsed();
    assert_eq!(found, gets, "every key written must be found");
    println!(
        "{gets} gets of random present keys: {:.3} s = {:.2} µs per get",
        took.as_secs_f64(),
        per_row(took, gets)
    );

    let started = Instant::now();
    let mut missing = 0usize;
    for &i in &picks {
        let mut absent = keys[i].clone();
        absent.push(b'~');
        missing += usize::from(run.get(&absent)?.is_none());
    }
    let took = started.elapsed();
    assert_eq!(missing, gets);
    println!(
        "{gets} gets of absent keys (inside the run's key span): {:.2} µs per get",
        per_row(took, gets)
    );

    for (name, reverse) in [("forward", false), ("backward", true)] {
        let started = Instant::now();
        let mut scanned = 0usize;
        if reverse {
            for row in run.range_rev(Bound::Unbounded, Bound::Unbounded) {
                row?;
                scanned += 1;
            }
        } else {
            for row in run.range(Bound::Unbounded, Bound::Unbounded) {
                row?;
                scanned += 1;
            }
        }
        let took = started.elapsed();
        assert_eq!(scanned, keys.len());
        println!(
            "full scan {name}: {:.3} s = {:.3} µs per row",
            took.as_secs_f64(),
            per_row(took, scanned)
        );
    }
    Ok(())
}
