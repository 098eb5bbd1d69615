//! What reading the whole log costs on the sled store: `read_all` (every event decoded into a
//! `RecordedEvent`) against `read_all_batch` (the stored JSON frames copied out), in pages of
//! `PAGE` events as a rebuild reads them. Times are the reading thread's CPU time
//! (`/proc/thread-self/schedstat`, updated every scheduler tick) over `ROUNDS` passes over the
//! whole log, so a busy machine distorts them less than wall time; the wall time shown is the
//! best pass. The files are in the page cache after the fill.
//!
//! Run: `cargo run --release -p vetted-store --example read_batch [EVENTS]` (default 250,000);
//! the store lives under `$VETTED_BENCH_DIR` (default: the temporary directory).
use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;
use vetted_store::{
    Actor, ActorKind, EventBatch, EventStore, ExpectedVersion, NewEvent, SledStore,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Events per read, as a rebuild pages through the log.
const PAGE: usize = 50_000;
/// Passes over the log per figure.
const ROUNDS: usize = 10;
/// Concurrent appenders while filling (so appends share group commits).
const WRITERS: u64 = 64;

/// A step result with an actor and a payload of typical size (the envelope is ~750 bytes).
fn step_passed(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "StepPassed".into(),
        schema_version: 1,
        tenant: Uuid::from_u128(1).to_string(),
        actor: Actor {
            kind: ActorKind::Applicant,
            id: Some(Uuid::from_u128(u128::from(n)).to_string()),
            ip: Some(format!("203.0.113.{}", n % 250)),
            user_agent: Some(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/126.0 Safari/537.36"
                    .into(),
            ),
            os: Some("Linux".into()),
            browser: Some("Chrome".into()),
        },
        correlation_id: Uuid::now_v7(),
        causation_id: Some(Uuid::now_v7()),
        payload: serde_json::json!({
            "step": "document_check",
            "attempt": 1,
            "data": { "country": "UTO", "documentNumber": format!("L{n:08}"), "score": 0.93 },
        }),
    }
}

/// CPU time of the calling thread so far, in seconds.
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns / 1e9)
}

/// [`ROUNDS`] passes of `pass` (which returns how many events it read): (CPU µs per event over
/// all passes, wall µs per event of the best pass).
async fn best_of<F, Fut>(mut pass: F) -> Result<(f64, f64), Box<dyn std::error::Error>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize, Box<dyn std::error::Error>>>,
{
    let (cpu_start, mut read, mut wall) = (thread_cpu_seconds(), 0.0, f64::INFINITY);
    for _ in 0..ROUNDS {
        let wall_start = Instant::now();
        let events = pass().await? as f64;
        read += events;
        wall = wall.min(wall_start.elapsed().as_secs_f64() * 1e6 / events);
    }
    Ok(((thread_cpu_seconds() - cpu_start) * 1e6 / read, wall))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let wanted: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(250_000);
    let dir = match std::env::var_os("VETTED_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let store = SledStore::open(dir.path())?;

    // Fill: many writers, appends of 1 to 3 events to their own streams.
    let fill = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    fill.block_on(async {
        let store = Arc::new(store.clone());
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let store = Arc::clone(&store);
            writers.push(tokio::spawn(async move {
                let mut n = w;
                let mut round = 0u64;
                while n < wanted {
                    let events = (0..1 + round % 3)
                        .map(|i| step_passed(n + i * WRITERS))
                        .collect();
                    store
                        .append(&format!("applicant-{w}"), ExpectedVersion::Any, events)
                        .await?;
                    n += (1 + round % 3) * WRITERS;
                    round += 1;
                }
                Ok::<(), vetted_store::StoreError>(())
            }));
        }
        for writer in writers {
            writer.await??;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    drop(fill);

    let reads = tokio::runtime::Builder::new_current_thread().build()?;
    reads.block_on(async {
        let head = store.head().await?;
        let bytes: usize = match store.read_all_batch(1, PAGE).await? {
            EventBatch::Json(frames) => frames.bytes().len() / frames.len().max(1),
            EventBatch::Decoded(_) => 0,
        };
        println!(
            "{head} events ({bytes} bytes each on average) appended in {:.1?}",
            started.elapsed()
        );
        let (cpu, wall) = best_of(|| async {
            let (mut from, mut read) = (1, 0);
            loop {
                let page = store.read_all(from, PAGE).await?;
                let Some(last) = page.last() else { break };
                from = last.global_position + 1;
                read += std::hint::black_box(page).len();
            }
            Ok(read)
        })
        .await?;
        println!("read_all (decoded):          {cpu:.3} µs CPU per event ({wall:.3} µs wall)");
        let (cpu, wall) = best_of(|| async {
            let (mut from, mut read) = (1, 0);
            loop {
                let page = store.read_all_batch(from, PAGE).await?;
                let Some(last) = page.last_position() else {
                    break;
                };
                from = last + 1;
                read += std::hint::black_box(page).len();
            }
            Ok(read)
        })
        .await?;
        println!("read_all_batch (stored JSON): {cpu:.3} µs CPU per event ({wall:.3} µs wall)");
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
