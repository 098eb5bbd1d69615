//! Rebuild of every read model from a generated log, and as-of replay of a long applicant.
//!
//! `VETTED_BENCH_EVENTS` (default 1,000,000) sets the log size. The log is generated in
//! memory through `vetted_domain::decide` (realistic lifecycles: retries, warnings, reviewers,
//! decisions), appended to a `MemoryStore`, then rebuilt into a fresh sled database per run.
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
    let mut rng = Rng::new(2026);
    let flow = sample::kyc_basic();
    let mut appended = 0;
    // Lifecycles interleave in batches of 64 applicants, as concurrent traffic would.
    while appended < events {
        let mut lives: Vec<_> = (0..64)
            .map(|_| sample::lifecycle(&mut rng, app(), &flow, Utc::now(), 0).into_iter())
            .collect();
        let mut progressed = true;
        while progressed && appended < events {
            progressed = false;
            for life in lives.iter_mut() {
                if let Some(a) = life.next() {
                    appended += a.events.len();
                    store
                        .append(&a.stream, ExpectedVersion::Any, a.events)
                        .await
                        .expect("append");
                    progressed = true;
                }
            }
        }
    }
    eprintln!(
        "generated {appended} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    store
}

fn bench_rebuild(c: &mut Criterion) {
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

    // One timed run: at 1M events a criterion sample set (11 rebuilds) would occupy the
    // shared 2-core machine for many minutes. Criterion times a smaller log below.
    let db = sled::Config::new().temporary(true).open().unwrap();
    let read_models = ReadModels::open(db).unwrap();
    let only = std::env::var("VETTED_BENCH_ONLY").ok();
    let names: Vec<&str> = read_models
        .names()
        .into_iter()
        .filter(|n| only.as_deref().is_none_or(|o| o == *n))
        .collect();
    let started = Instant::now();
    runtime
        .block_on(rebuild(&read_models, &store, &names, &mut |_| {}))
        .unwrap();
    let took = started.elapsed();
    eprintln!(
        "single run: rebuild of {names:?} from {head} events: {:.2}s = {:.0} events/s",
        took.as_secs_f64(),
        head as f64 / took.as_secs_f64()
    );
    drop(store);

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
                let read_models = ReadModels::open(db).unwrap();
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

fn bench_as_of(c: &mut Criterion) {
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
