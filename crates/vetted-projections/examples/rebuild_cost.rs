//! What a rebuild's work costs per event on one thread, stage by stage, without I/O: decoding
//! stored envelopes (`DecodedEvent::from_json`), folding them into the five built-in read
//! models' builders, and handing their rows out in key order (into a sink that only counts).
//!
//! Wall times on a shared virtual machine swing by a quarter from run to run; instruction
//! counts do not. For those, run it under callgrind, counting only the measured part:
//!
//! ```sh
//! cargo build --release -p vetted-projections --example rebuild_cost
//! valgrind --tool=callgrind --toggle-collect='rebuild_cost::measured' \
//!     target/release/examples/rebuild_cost 60000
//! ```
//!
//! `cargo run --release -p vetted-projections --example rebuild_cost [EVENTS]` prints the
//! time per event of each stage (default 300,000 events).
use std::time::{Duration, Instant};

use uuid::Uuid;
use vetted_domain::AppKey;
use vetted_projections::sample;
use vetted_projections::{Builder, DecodedEvent, ProjectionError, RowSink};
use vetted_store::{EventStore, ExpectedVersion, MemoryStore};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Counts rows and bytes.
#[derive(Default)]
struct Count {
    rows: u64,
    bytes: u64,
}

impl RowSink for Count {
    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), ProjectionError> {
        self.rows += 1;
        self.bytes += (key.len() + value.len()) as u64;
        Ok(())
    }
}

/// The stages, timed: decode, fold, finish.
#[inline(never)]
fn measured(
    text: &str,
    frames: &[(u64, std::ops::Range<usize>)],
) -> ([Duration; 3], Vec<Box<dyn Builder>>) {
    let started = Instant::now();
    let decoded: Vec<DecodedEvent> = frames
        .iter()
        .filter_map(|(position, range)| {
            DecodedEvent::from_json(*position, &text[range.clone()], text).expect("decodes")
        })
        .collect();
    let decode = started.elapsed();
    let mut builders: Vec<Box<dyn Builder>> = vetted_projections::applicant_view::read_models()
        .iter()
        .filter_map(|p| p.builder())
        .collect();
    let started = Instant::now();
    for event in &decoded {
        let fact = event.fact(text);
        for builder in &mut builders {
            builder.apply(&fact).expect("folds");
        }
    }
    let fold = started.elapsed();
    let started = Instant::now();
    let mut count = Count::default();
    for builder in &builders {
        builder.write_rows(&mut count).expect("writes");
    }
    let finish = started.elapsed();
    std::hint::black_box(&count);
    // Freeing the builders is left out, as a rebuild frees them after the switch.
    ([decode, fold, finish], builders)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let wanted: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(300_000);
    // Lifecycles interleaved 64 at a time, as the rebuild bench generates them.
    let store = MemoryStore::new();
    for a in sample::interleaved(2026, AppKey(Uuid::from_u128(1)), wanted) {
        store
            .append(&a.stream, ExpectedVersion::Any, a.events)
            .await?;
    }
    // The stored frames, back to back, as a batch read from the log holds them.
    let mut text = String::new();
    let mut frames = Vec::new();
    for event in store.read_all(1, usize::MAX).await? {
        let start = text.len();
        text.push_str(&serde_json::to_string(&event)?);
        frames.push((event.global_position, start..text.len()));
    }
    let n = frames.len() as f64;
    let ([decode, fold, finish], spent) = measured(&text, &frames);
    drop(spent);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n;
    println!(
        "{} events: decode {:.2} µs, fold {:.2} µs, finish {:.2} µs per event (one thread)",
        frames.len(),
        per(decode),
        per(fold),
        per(finish)
    );
    if std::env::var_os("VETTED_COST_DETAIL").is_some() {
        detail(&text, &frames);
    }
    Ok(())
}

/// Each builder's fold and finish alone, and decoding by event type (µs per event of the
/// whole log, so the parts add up).
fn detail(text: &str, frames: &[(u64, std::ops::Range<usize>)]) {
    let n = frames.len() as f64;
    let decoded: Vec<DecodedEvent> = frames
        .iter()
        .filter_map(|(position, range)| {
            DecodedEvent::from_json(*position, &text[range.clone()], text).expect("decodes")
        })
        .collect();
    for projection in vetted_projections::applicant_view::read_models() {
        let Some(mut builder) = projection.builder() else {
            continue;
        };
        let started = Instant::now();
        for event in &decoded {
            builder.apply(&event.fact(text)).expect("folds");
        }
        let fold = started.elapsed();
        let started = Instant::now();
        let mut count = Count::default();
        builder.write_rows(&mut count).expect("writes");
        let finish = started.elapsed();
        println!(
            "  {:<15} fold {:.3} µs, finish {:.3} µs per event; {} rows, {} bytes",
            projection.name(),
            fold.as_secs_f64() * 1e6 / n,
            finish.as_secs_f64() * 1e6 / n,
            count.rows,
            count.bytes
        );
    }
    let mut by_type: std::collections::BTreeMap<String, Vec<(u64, std::ops::Range<usize>)>> =
        Default::default();
    for (event, frame) in decoded.iter().zip(frames) {
        let kind = event.fact(text).event_type.to_string();
        by_type.entry(kind).or_default().push(frame.clone());
    }
    for (kind, frames) in by_type {
        let started = Instant::now();
        for (position, range) in &frames {
            std::hint::black_box(
                DecodedEvent::from_json(*position, &text[range.clone()], text).expect("decodes"),
            );
        }
        let took = started.elapsed().as_secs_f64() * 1e6;
        println!(
            "  decode {:<22} {:>7} events ({:>4.1} %), {:.2} µs each, {:.3} µs per event of the log",
            kind,
            frames.len(),
            frames.len() as f64 * 100.0 / n,
            took / frames.len() as f64,
            took / n
        );
    }
}
