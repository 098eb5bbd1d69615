//! Durable appends per second on the sled store: one writer (each append waits for its own
//! fsync) and 64 concurrent writers on their own streams (appends share fsyncs: group commit).
//!
//! Run: `cargo bench -p vetted-store --bench append`. The store lives in a temporary directory
//! on the disk behind `$TMPDIR` (or `VETTED_BENCH_DIR`), so fsync is real.
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use uuid::Uuid;
use vetted_store::{Actor, EventStore, ExpectedVersion, NewEvent, SledStore};

const WRITERS: u64 = 64;

/// A face match result of about 200 bytes once enveloped: a typical applicant event.
fn face_match(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "StepPassed".into(),
        schema_version: 1,
        tenant: "app-bench".into(),
        actor: Actor::system(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        payload: serde_json::json!({ "step": "face_match", "score": 92.5, "attempt": n }),
    }
}

fn fresh_store() -> (tempfile::TempDir, SledStore) {
    let base = std::env::var_os("VETTED_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).expect("bench directory");
    let store = SledStore::open(dir.path()).expect("open sled store");
    (dir, store)
}

fn appends(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("sled_append");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));

    let (_dir, store) = fresh_store();
    let store = Arc::new(store);
    group.bench_function("one_writer", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let store = Arc::clone(&store);
            async move {
                let start = Instant::now();
                for n in 0..iters {
                    store
                        .append("applicant-bench", ExpectedVersion::Any, vec![face_match(n)])
                        .await
                        .expect("append");
                }
                start.elapsed()
            }
        })
    });

    group.bench_function("64_writers", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let store = Arc::clone(&store);
            async move {
                let each = iters.div_ceil(WRITERS);
                let start = Instant::now();
                let tasks: Vec<_> = (0..WRITERS)
                    .map(|w| {
                        let store = Arc::clone(&store);
                        tokio::spawn(async move {
                            let stream = format!("applicant-bench-{w}");
                            for n in 0..each {
                                store
                                    .append(&stream, ExpectedVersion::Any, vec![face_match(n)])
                                    .await
                                    .expect("append");
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("writer task");
                }
                // Time per append, counting the appends actually made (each * 64 >= iters).
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (each * WRITERS) as f64)
            }
        })
    });
    group.finish();
}

criterion_group!(benches, appends);
criterion_main!(benches);
