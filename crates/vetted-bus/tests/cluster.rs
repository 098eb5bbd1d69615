//! A 3-node JetStream cluster on loopback with an R3 log: appends keep going while a node is
//! killed and restarted, and no acknowledged event is lost or duplicated.
mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{event, eventually};
use tokio::time::Instant;
use vetted_bus::testing::NatsCluster;
use vetted_bus::{JetStreamStore, JetStreamStoreConfig};
use vetted_store::{verify, EventStore, ExpectedVersion, StoreError};

const WRITERS: u64 = 8;

async fn r3_store(cluster: &NatsCluster) -> JetStreamStore {
    let config = JetStreamStoreConfig {
        replicas: 3,
        ..Default::default()
    };
    JetStreamStore::connect(&cluster.urls(), config)
        .await
        .expect("R3 store opens")
}

/// Appends from `WRITERS` tasks until `stop` is set, each writer on its own applicant stream
/// with `Exact` versions; returns every acknowledged (stream, version, event id).
async fn write_until(
    store: JetStreamStore,
    stop: Arc<AtomicBool>,
) -> Vec<(String, u64, uuid::Uuid)> {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, stop) = (store.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let stream = format!("applicant-w{w}");
            let mut acked = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let expected = match store.stream_version(&stream).await {
                    Ok(Some(v)) => ExpectedVersion::Exact(v),
                    Ok(None) => ExpectedVersion::NoStream,
                    Err(_) => continue, // the cluster is electing a leader; ask again
                };
                let e = event("app", "Noted", n);
                let id = e.event_id;
                match store.append(&stream, expected, vec![e]).await {
                    Ok(r) => {
                        acked.push((stream.clone(), r.stream_version, id));
                        n += 1;
                    }
                    // Unacknowledged: it may or may not be stored; it is not counted as acked.
                    Err(StoreError::Unavailable(_))
                    | Err(StoreError::WrongExpectedVersion { .. }) => {}
                    Err(other) => panic!("unexpected append error: {other}"),
                }
            }
            acked
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_continue_through_a_node_kill_and_restart_without_losing_or_duplicating() {
    let mut cluster = NatsCluster::start(3).expect("3-node cluster starts");
    let store = r3_store(&cluster).await;
    let info = store
        .jetstream()
        .get_stream("VETTED_LOG")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(info.config.num_replicas, 3);

    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(write_until(store.clone(), stop.clone()));
    // Let writes flow, then kill the node that leads the log stream (the worst case).
    eventually(
        Duration::from_secs(10),
        "some appends before the kill",
        || {
            let store = store.clone();
            async move { store.head().await.ok().filter(|h| *h > 50) }
        },
    )
    .await;
    let leader = store
        .jetstream()
        .get_stream("VETTED_LOG")
        .await
        .unwrap()
        .cached_info()
        .cluster
        .clone();
    let leader = leader.and_then(|c| c.leader).unwrap_or_default();
    let victim = ["n1", "n2", "n3"]
        .iter()
        .position(|n| *n == leader)
        .unwrap_or(0);
    let before_kill = store.head().await.unwrap();
    cluster.kill(victim);
    let killed_at = Instant::now();
    let after_kill = eventually(
        Duration::from_secs(60),
        "appends to continue on two nodes",
        || {
            let store = store.clone();
            async move { store.head().await.ok().filter(|h| *h > before_kill + 50) }
        },
    )
    .await;
    eprintln!(
        "appends resumed {:?} after killing leader {leader}",
        killed_at.elapsed()
    );
    cluster.restart(victim).expect("node restarts");
    eventually(
        Duration::from_secs(60),
        "appends to continue after the restart",
        || {
            let store = store.clone();
            async move { store.head().await.ok().filter(|h| *h > after_kill + 50) }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let acked = writing.await.unwrap();
    assert!(
        acked.len() > 100,
        "writes kept flowing ({} acked)",
        acked.len()
    );

    // Every acknowledged event is in the log exactly once, at the version it was acked with.
    let all = eventually(
        Duration::from_secs(20),
        "the whole log to be readable",
        || {
            let store = store.clone();
            async move { store.read_all(1, 1_000_000).await.ok() }
        },
    )
    .await;
    let mut ids = HashSet::new();
    for e in &all {
        assert!(ids.insert(e.event_id), "event {} stored twice", e.event_id);
    }
    let positions: Vec<u64> = all.iter().map(|e| e.global_position).collect();
    assert_eq!(
        positions,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "positions have no gap"
    );
    let stored: std::collections::HashMap<_, _> = all
        .iter()
        .map(|e| (e.event_id, (e.stream_id.clone(), e.stream_version)))
        .collect();
    for (stream, version, id) in &acked {
        assert_eq!(
            stored.get(id),
            Some(&(stream.clone(), *version)),
            "acknowledged event {id} is stored as acked"
        );
    }
    let report = verify(&store).await.expect("verify");
    assert!(
        report.is_intact(),
        "hash chains intact: {:?}",
        report.first_mismatch
    );

    // The restarted node has caught up: a store connected only to it reads the same log.
    let only_victim = JetStreamStore::connect(
        &cluster.url(victim),
        JetStreamStoreConfig {
            replicas: 3,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let head = store.head().await.unwrap();
    eventually(
        Duration::from_secs(20),
        "the restarted node to serve the full log",
        || {
            let s = only_victim.clone();
            async move {
                s.read_all(1, 1_000_000)
                    .await
                    .ok()
                    .filter(|v| v.len() as u64 == head)
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_different_nodes_see_the_same_log() {
    let cluster = NatsCluster::start(3).expect("3-node cluster starts");
    let config = || JetStreamStoreConfig {
        replicas: 3,
        ..Default::default()
    };
    let a = JetStreamStore::connect(&cluster.url(0), config())
        .await
        .unwrap();
    let b = JetStreamStore::connect(&cluster.url(2), config())
        .await
        .unwrap();
    let a = Arc::new(a);
    let b = Arc::new(b);
    let (ra, rb) = tokio::join!(
        async {
            for i in 0..50 {
                a.append(
                    "applicant-shared",
                    ExpectedVersion::Any,
                    vec![event("app", "A", i)],
                )
                .await
                .unwrap();
            }
        },
        async {
            for i in 0..50 {
                b.append(
                    "applicant-shared",
                    ExpectedVersion::Any,
                    vec![event("app", "B", i)],
                )
                .await
                .unwrap();
            }
        }
    );
    let _ = (ra, rb);
    // Reads may be served by any replica (direct get), so a node can briefly lag the other's
    // acknowledged appends: wait, with a deadline, until both serve all 100.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (from_a, from_b) = loop {
        let from_a = a.read_stream("applicant-shared", 0, 1000).await.unwrap();
        let from_b = b.read_stream("applicant-shared", 0, 1000).await.unwrap();
        if (from_a.len() == 100 && from_b.len() == 100) || tokio::time::Instant::now() >= deadline {
            break (from_a, from_b);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(from_a.len(), 100);
    assert_eq!(from_a, from_b, "both nodes serve the same stream");
    assert!(from_a
        .iter()
        .enumerate()
        .all(|(i, e)| e.stream_version == i as u64));
    assert!(verify(a.as_ref()).await.unwrap().is_intact());
}
