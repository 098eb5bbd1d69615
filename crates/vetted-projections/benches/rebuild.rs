//! Rebuild of every read model from a generated log, and as-of replay of a long applicant.
//!
//! `VETTED_BENCH_EVENTS` (default 1,000,000) sets the log size. The log is generated in
//! memory through `vetted_domain::decide` (realistic lifecycles: retries, warnings, reviewers,
//! decisions), copied into the embedded event log (`SledStore`, segment files on disk: what a
//! rebuild reads in production), then rebuilt into a fresh read-model database per run, base
//! files in a temporary directory. `VETTED_BENCH_SOURCE=memory` rebuilds from the in-memory
//! `MemoryStore` instead (events already decoded into structs, copied out per read).
//! `VETTED_BENCH_REBUILD_ONLY=1` runs only the timed rebuilds (for profiling);
//! `VETTED_LOG=vetted_projections=debug` logs when each stage of a rebuild ends.
//! Allocates with mimalloc, like the `vetted` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use uuid::Uuid;
use vetted_domain::{AppKey, ApplicantId};
use vetted_projections::replay::view_as_of;
use vetted_projections::sample::{self, Rng};
use vetted_projections::{rebuild, ReadModels};
use vetted_store::{EventStore, ExpectedVersion, MemoryStore, SledStore};

fn app() -> AppKey {
    AppKey(Uuid::from_u128(0x0a99_0000_0000_4000_8000_0000_0000_0001))
}

async fn generated_store(events: usize) -> MemoryStore {
    let store = MemoryStore::new();
    let started = Instant::now();
    let mut appended = 0;
    // Lifecycles interleave in batches of 64 applicants, as concurrent traffic would.
    for a in sample::interleaved(2026, app(), events) {
        appended += a.events.len();
        store
            .append(&a.stream, ExpectedVersion::Any, a.events)
            .await
            .expect("append");
    }
    eprintln!(
        "generated {appended} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    store
}

/// Copies every event of `from` into `to`. Per chunk of 10,000 events each stream's events
/// go in one append, all streams of the chunk concurrently, so the store's writer groups them
/// (one fsync per group, not per event); stream order is kept.
async fn copy_log(from: &MemoryStore, to: &SledStore) {
    let started = Instant::now();
    let mut position = 1;
    loop {
        let events = from.read_all(position, 10_000).await.unwrap();
        let Some(last) = events.last() else { break };
        position = last.global_position + 1;
        let mut streams: Vec<(String, Vec<vetted_store::NewEvent>)> = Vec::new();
        for e in events {
            let new = vetted_store::NewEvent {
                event_id: e.event_id,
                event_type: e.event_type,
                schema_version: e.schema_version,
                tenant: e.tenant,
                actor: e.actor,
                correlation_id: e.correlation_id,
                causation_id: e.causation_id,
                payload: e.payload,
            };
            match streams.iter_mut().find(|(s, _)| *s == e.stream_id) {
                Some((_, list)) => list.push(new),
                None => streams.push((e.stream_id, vec![new])),
            }
        }
        futures::future::join_all(streams.into_iter().map(|(stream, events)| async move {
            to.append(&stream, ExpectedVersion::Any, events)
                .await
                .unwrap()
        }))
        .await;
    }
    eprintln!(
        "copied the log into a SledStore in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

fn bench_rebuild(c: &mut Criterion) {
    // `VETTED_LOG=vetted_projections=debug` shows when each stage of a rebuild ends.
    if let Ok(filter) = std::env::var("VETTED_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .try_init();
    }
    let events: usize = std::env::var("VETTED_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(generated_store(events));
    let head = runtime.block_on(store.head()).unwrap();

    // Timed runs of their own: at 1M events a criterion sample set (11 rebuilds) would
    // occupy the shared 2-core machine for many minutes. Criterion times a smaller log below.
    let sled_dir = tempfile::tempdir().unwrap();
    let source: Arc<dyn EventStore> = match std::env::var("VETTED_BENCH_SOURCE").as_deref() {
        Ok("memory") => Arc::new(store),
        _ => {
            let sled_store = SledStore::open(sled_dir.path()).unwrap();
            runtime.block_on(copy_log(&store, &sled_store));
            // The generated log goes: only the on-disk one is read.
            drop(store);
            Arc::new(sled_store)
        }
    };
    eprintln!(
        "source: {}",
        match std::env::var("VETTED_BENCH_SOURCE").as_deref() {
            Ok("memory") => "MemoryStore",
            _ => "SledStore (segment files)",
        }
    );
    let rounds: usize = std::env::var("VETTED_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let only = std::env::var("VETTED_BENCH_ONLY").ok();
    let mut rates = Vec::new();
    let mut cpus = Vec::new();
    for round in 1..=rounds {
        // Each run rebuilds into a fresh read-model database and base-file directory.
        let db = sled::Config::new().temporary(true).open().unwrap();
        let runs = tempfile::tempdir().unwrap();
        let read_models = ReadModels::open_in(db, runs.path()).unwrap();
        let names: Vec<&str> = read_models
            .names()
            .into_iter()
            .filter(|n| only.as_deref().is_none_or(|o| o == *n))
            .collect();
        let cpu_before = process_cpu();
        let started = Instant::now();
        // When the last batch was folded: the rest is writing the rows and the switch.
        let mut folded = Duration::ZERO;
        let mut folded_cpu = Duration::ZERO;
        let reports = runtime
            .block_on(rebuild(&read_models, source.as_ref(), &names, &mut |p| {
                if folded.is_zero() && p.done + 1 >= p.total {
                    folded = started.elapsed();
                    let (user, system) = process_cpu();
                    folded_cpu = user + system;
                }
            }))
            .unwrap();
        let took = started.elapsed();
        let cpu_live = process_cpu();
        // The rebuilt read models are live now; their builders' memory is freed in the
        // background, which dropping the read models waits for: counted in the CPU per event.
        drop(read_models);
        let cpu_after = process_cpu();
        let since =
            |at: (Duration, Duration)| (at.0 + at.1).saturating_sub(cpu_before.0 + cpu_before.1);
        let (user, system) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
        let cpu = user + system;
        let rate = head as f64 / took.as_secs_f64();
        let per_event = cpu.as_secs_f64() * 1e6 / head as f64;
        let busy = |cpu: Duration, wall: Duration| cpu.as_secs_f64() / wall.as_secs_f64();
        eprintln!(
            "run {round}: rebuild of {names:?} from {head} events: {:.2}s = {rate:.0} events/s; \
             CPU {:.2}s ({per_event:.1} µs per event; user {:.2}s, system {:.2}s; {:.2}s of it \
             freeing memory after the switch); {:.2} cores busy until live, {:.2} until the \
             last batch was folded at {:.2}s",
            took.as_secs_f64(),
            cpu.as_secs_f64(),
            user.as_secs_f64(),
            system.as_secs_f64(),
            (cpu - since(cpu_live)).as_secs_f64(),
            busy(since(cpu_live), took),
            busy(
                folded_cpu.saturating_sub(cpu_before.0 + cpu_before.1),
                folded
            ),
            folded.as_secs_f64(),
        );
        if round == 1 {
            for r in &reports {
                eprintln!("  {}: {} rows", r.projection, r.digest.rows);
            }
        }
        rates.push(rate);
        cpus.push(per_event);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!(
        "median of {rounds} runs: {:.0} events/s, {:.1} µs of CPU per event",
        median(&mut rates),
        median(&mut cpus)
    );
    drop(source);
    if rebuild_only() {
        return;
    }

    let small = runtime.block_on(generated_store(50_000));
    let small_head = runtime.block_on(small.head()).unwrap();
    let mut group = c.benchmark_group("rebuild");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(small_head));
    group.bench_function(format!("all_read_models_{small_head}_events"), |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let db = sled::Config::new().temporary(true).open().unwrap();
                let runs = tempfile::tempdir().unwrap();
                let read_models = ReadModels::open_in(db, runs.path()).unwrap();
                let names = read_models.names();
                let started = Instant::now();
                runtime
                    .block_on(rebuild(&read_models, &small, &names, &mut |_| {}))
                    .unwrap();
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
}

/// CPU time (user, system) this process has used so far, from `/proc/self/stat` (Linux;
/// zero elsewhere).
fn process_cpu() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line: indexes 11 and 12 here, where the
    // state (field 3) is index 0.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // The kernel's USER_HZ is 100 on every Linux we run on.
    (
        Duration::from_millis(ticks(11) * 10),
        Duration::from_millis(ticks(12) * 10),
    )
}

fn rebuild_only() -> bool {
    std::env::var_os("VETTED_BENCH_REBUILD_ONLY").is_some()
}

fn bench_as_of(c: &mut Criterion) {
    if rebuild_only() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sled_store = SledStore::open(dir.path()).unwrap();
    let memory_store = MemoryStore::new();
    let mut rng = Rng::new(7);
    let mut life = sample::lifecycle(&mut rng, app(), &sample::kyc_basic(), Utc::now(), 0);
    let so_far: usize = life.iter().map(|a| a.events.len()).sum();
    let more = sample::lifecycle(&mut rng, app(), &sample::kyc_basic(), Utc::now(), 200);
    // Pad the first applicant with comments to 200 events.
    let id = ApplicantId::from_stream(&life[0].stream).unwrap();
    let mut comments = more
        .into_iter()
        .filter(|a| a.events[0].event_type == "CommentAdded")
        .take(200 - so_far)
        .collect::<Vec<_>>();
    for c in comments.iter_mut() {
        c.stream = id.stream();
    }
    life.extend(comments);
    let events: usize = life.iter().map(|a| a.events.len()).sum();
    assert_eq!(events, 200, "the replayed applicant has 200 events");
    for a in &life {
        runtime
            .block_on(sled_store.append(&a.stream, ExpectedVersion::Any, a.events.clone()))
            .unwrap();
        runtime
            .block_on(memory_store.append(&a.stream, ExpectedVersion::Any, a.events.clone()))
            .unwrap();
    }
    let middle = runtime
        .block_on(sled_store.read_stream(&id.stream(), 120, 1))
        .unwrap()[0]
        .recorded_at;
    let app = app().to_string();
    let stores: [(&str, Arc<dyn EventStore>); 2] = [
        ("sled", Arc::new(sled_store)),
        ("memory", Arc::new(memory_store)),
    ];

    let mut group = c.benchmark_group("as_of_replay_200_events");
    for (name, store) in &stores {
        // p50/p99 over 2,000 replays (criterion reports the mean and its spread).
        let mut samples: Vec<Duration> = (0..2000)
            .map(|_| {
                let started = Instant::now();
                let view = runtime
                    .block_on(view_as_of(store.as_ref(), &app, &id, Some(middle)))
                    .unwrap();
                let took = started.elapsed();
                assert!(view.is_some());
                took
            })
            .collect();
        samples.sort();
        let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        eprintln!(
            "as-of replay of 200 events ({name}): p50 {:?}, p99 {:?}, max {:?}",
            pct(0.50),
            pct(0.99),
            samples[samples.len() - 1]
        );
        group.bench_function(*name, |b| {
            b.iter(|| {
                runtime
                    .block_on(view_as_of(store.as_ref(), &app, &id, Some(middle)))
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_as_of, bench_rebuild);
criterion_main!(benches);
