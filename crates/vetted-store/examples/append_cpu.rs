//! Durable appends per second and CPU time per append on the sled store, for the two cases of
//! `benches/append.rs`. CPU time (user + system, whole process, from `/proc/self/stat`) does
//! not depend on what else the machine runs, so it shows what the appends cost when the
//! wall-clock rate is distorted by a busy machine.
//!
//! Run: `cargo run --release -p vetted-store --example append_cpu [appends]`; the store lives
//! under `$VETTED_BENCH_DIR` (default: the temporary directory). On tmpfs (`/dev/shm`) sync is
//! free, which gives the CPU-bound ceiling.
use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;
use vetted_store::{Actor, EventStore, ExpectedVersion, NewEvent, SledStore};

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

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the ')'; 100 ticks a second.
    (ticks(11) + ticks(12)) / 100.0
}

fn report(case: &str, appends: u64, wall: f64, cpu: f64) {
    println!(
        "{case}: {appends} appends in {wall:.2} s = {:.0} appends/s; CPU {:.1} µs per append",
        appends as f64 / wall,
        cpu * 1e6 / appends as f64
    );
}

fn main() {
    let appends: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let base = std::env::var_os("VETTED_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).expect("bench directory");
    let store = Arc::new(SledStore::open(dir.path()).expect("open sled store"));
    runtime.block_on(async {
        let (cpu, start) = (cpu_seconds(), Instant::now());
        for n in 0..appends / 4 {
            store
                .append("applicant-one", ExpectedVersion::Any, vec![face_match(n)])
                .await
                .expect("append");
        }
        let wall = start.elapsed().as_secs_f64();
        report("one_writer", appends / 4, wall, cpu_seconds() - cpu);

        let each = appends / 64;
        let (cpu, start) = (cpu_seconds(), Instant::now());
        let tasks: Vec<_> = (0..64)
            .map(|w| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let stream = format!("applicant-{w}");
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
        let wall = start.elapsed().as_secs_f64();
        report("64_writers", each * 64, wall, cpu_seconds() - cpu);
    });
}
