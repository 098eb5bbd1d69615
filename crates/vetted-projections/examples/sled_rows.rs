//! What one row costs sled: inserts `ROWS` rows of `BYTES` bytes into a fresh tree in
//! batches of `BATCH`, keys scattered (as a rebuild's flushes write them) and then in
//! ascending order, and prints the time per row; then the same rows split over five trees as a
//! 1M-event rebuild's five read models hold them, each tree written in ascending order by its
//! own thread at once (how much writing trees in parallel gains). Figures in
//! docs/benchmarks.md.
//!
//! `cargo run --release -p vetted-projections --example sled_rows [ROWS] [BYTES] [BATCH]`
//! (defaults: 672,000 rows — a 1M-event rebuild's — of 150 bytes, batches of 1,000).
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), sled::Error> {
    let (rows, bytes, batch) = (arg(1, 672_000), arg(2, 150), arg(3, 1_000));
    // Keys shaped like a view row's (`view/<uuid>`), in an order unrelated to their sort order.
    let scattered: Vec<Vec<u8>> = (0..rows as u64)
        .map(|i| {
            let mixed = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            format!("view/{mixed:016x}-{i:012}").into_bytes()
        })
        .collect();
    let mut ascending = scattered.clone();
    ascending.sort();
    let value = vec![7u8; bytes];
    let db = sled::Config::new().temporary(true).open()?;
    for (name, keys) in [("scattered", &scattered), ("ascending", &ascending)] {
        let tree = db.open_tree(name)?;
        let started = Instant::now();
        for chunk in keys.chunks(batch.max(1)) {
            let mut write = sled::Batch::default();
            for key in chunk {
                write.insert(key.as_slice(), value.as_slice());
            }
            tree.apply_batch(write)?;
        }
        let took = started.elapsed();
        println!(
            "{rows} rows of {bytes} B, batches of {batch}, keys {name}: {:.2} s = {:.2} µs per row",
            took.as_secs_f64(),
            took.as_secs_f64() * 1e6 / rows as f64
        );
    }
    // A 1M-event rebuild's rows per read model: view, timeline, list, dashboard, queue.
    let shares = [93_121, 93_120, 279_360, 93_121, 113_477];
    let whole: usize = shares.iter().sum();
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<(), sled::Error> {
        let mut writers = Vec::new();
        let mut rest = ascending.as_slice();
        for (i, share) in shares.iter().enumerate() {
            let (mine, others) = rest.split_at((rows * share / whole).min(rest.len()));
            rest = others;
            let tree = db.open_tree(format!("parallel-{i}"))?;
            let value = &value;
            writers.push(scope.spawn(move || -> Result<(), sled::Error> {
                for chunk in mine.chunks(batch.max(1)) {
                    let mut write = sled::Batch::default();
                    for key in chunk {
                        write.insert(key.as_slice(), value.as_slice());
                    }
                    tree.apply_batch(write)?;
                }
                Ok(())
            }));
        }
        for writer in writers {
            writer.join().expect("writer thread")?;
        }
        Ok(())
    })?;
    let took = started.elapsed();
    println!(
        "the same rows over five trees, one thread each, keys ascending: {:.2} s = {:.2} µs per row",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / rows as f64
    );
    Ok(())
}
