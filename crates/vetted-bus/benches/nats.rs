//! NATS benchmarks, run once with `cargo bench -p vetted-bus --bench nats`:
//! - append → consumer latency (p50/p99) on `JetStreamStore`: the time from calling `append`
//!   until the event comes out of a `subscribe_all` feed;
//! - append → fan-out subscriber latency: log append (memory store) → `NatsPublisher` →
//!   `VETTED_EVENTS` → durable pull `EventSubscriber`;
//! - acknowledged appends/s on `JetStreamStore` with 64 concurrent writers (one applicant
//!   stream each, single-event appends).
//!
//! A single local nats-server 2.9 (file storage, R1) is started for the run.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use uuid::Uuid;
use vetted_bus::testing::NatsServer;
use vetted_bus::{
    EventSubscriber, JetStreamStore, JetStreamStoreConfig, NatsPublisher, PublisherConfig,
    SubscriberConfig,
};
use vetted_store::{Actor, EventStore, ExpectedVersion, MemoryStore, NewEvent};

const LATENCY_SAMPLES: usize = 2_000;
const WRITERS: usize = 64;
const THROUGHPUT_FOR: Duration = Duration::from_secs(10);

fn new_event(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "StepPassed".into(),
        schema_version: 1,
        tenant: "0190aaaa-0000-7000-8000-000000000001".into(),
        actor: Actor::system(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        payload: serde_json::json!({ "step": "document_check", "attempt": n, "data": { "country": "UTO" } }),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    println!(
        "{name}: n={} p50={:.2?} p99={:.2?} max={:.2?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

async fn store_feed_latency(url: &str) {
    let config = JetStreamStoreConfig {
        stream: "BENCH_LATENCY".into(),
        subject_prefix: "bench1.log".into(),
        ..Default::default()
    };
    let store = JetStreamStore::connect(url, config).await.expect("store");
    let mut feed = store.subscribe_all(1);
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for n in 0..LATENCY_SAMPLES as u64 {
        let start = Instant::now();
        store
            .append(
                "applicant-latency",
                ExpectedVersion::Any,
                vec![new_event(n)],
            )
            .await
            .expect("append");
        let event = feed.next().await.expect("feed open").expect("event");
        assert_eq!(event.stream_version, n);
        samples.push(start.elapsed());
    }
    report("JetStreamStore append -> subscribe_all", samples);
}

async fn fan_out_latency(url: &str) {
    let client = vetted_bus::connect(url).await.expect("connect");
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path().join("db")).expect("sled");
    let publisher = NatsPublisher::new(
        client.clone(),
        store.clone(),
        &db,
        PublisherConfig::default(),
    )
    .expect("publisher");
    publisher.ensure_stream().await.expect("events stream");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(publisher.run(async move {
        let _ = stopped.await;
    }));
    let subscriber = EventSubscriber::new(
        client,
        SubscriberConfig {
            durable: "bench".into(),
            ..Default::default()
        },
    )
    .await
    .expect("subscriber");
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for n in 0..LATENCY_SAMPLES as u64 {
        let start = Instant::now();
        store
            .append("applicant-fanout", ExpectedVersion::Any, vec![new_event(n)])
            .await
            .expect("append");
        loop {
            let got = subscriber
                .fetch(1, Duration::from_secs(5))
                .await
                .expect("fetch");
            if let Some(d) = got.into_iter().next() {
                d.ack().await.expect("ack");
                break;
            }
        }
        samples.push(start.elapsed());
    }
    let _ = stop.send(());
    let _ = running.await;
    report("log append -> NatsPublisher -> EventSubscriber", samples);
}

async fn durable_appends_per_second(url: &str) {
    let config = JetStreamStoreConfig {
        stream: "BENCH_THROUGHPUT".into(),
        subject_prefix: "bench2.log".into(),
        ..Default::default()
    };
    let store = JetStreamStore::connect(url, config).await.expect("store");
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, done, count) = (store.clone(), done.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let stream = format!("applicant-writer-{w}");
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                store
                    .append(&stream, ExpectedVersion::Any, vec![new_event(n)])
                    .await
                    .expect("append");
                n += 1;
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(THROUGHPUT_FOR).await;
    done.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("writer");
    }
    let elapsed = start.elapsed();
    let total = count.load(Ordering::Relaxed);
    assert_eq!(
        store.head().await.expect("head"),
        total,
        "every acknowledged append is in the log"
    );
    println!(
        "JetStreamStore {WRITERS} writers: {total} acknowledged appends in {elapsed:.2?} = {:.0} appends/s",
        total as f64 / elapsed.as_secs_f64()
    );
}

fn main() {
    // `cargo test --benches` passes no `--bench`: skip the run then, there is nothing to check.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let server = NatsServer::start().expect("nats-server starts");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        store_feed_latency(&server.url()).await;
        fan_out_latency(&server.url()).await;
        durable_appends_per_second(&server.url()).await;
    });
}
