//! The JetStream event store against a real single-node nats-server.
mod common;

use std::time::Duration;

use common::{event, eventually};
use futures::StreamExt;
use vetted_bus::testing::NatsServer;
use vetted_bus::{JetStreamStore, JetStreamStoreConfig};
use vetted_store::{chain, EventStore, ExpectedVersion, StoreError};

async fn store(server: &NatsServer) -> JetStreamStore {
    JetStreamStore::connect(&server.url(), JetStreamStoreConfig::default())
        .await
        .expect("store opens")
}

#[tokio::test]
async fn appended_events_read_back_in_version_and_global_order_with_an_intact_chain() {
    let server = NatsServer::start().expect("nats-server starts");
    let store = store(&server).await;
    let a = store
        .append(
            "applicant-a",
            ExpectedVersion::NoStream,
            vec![
                event("app", "ApplicantCreated", 0),
                event("app", "StepPassed", 1),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        (a.first_position, a.last_position, a.stream_version),
        (1, 2, 1)
    );
    let b = store
        .append(
            "applicant-b",
            ExpectedVersion::Any,
            vec![event("app", "ApplicantCreated", 0)],
        )
        .await
        .unwrap();
    assert_eq!((b.first_position, b.stream_version), (3, 0));
    let c = store
        .append(
            "applicant-a",
            ExpectedVersion::Exact(1),
            vec![event("app", "StepFailed", 2)],
        )
        .await
        .unwrap();
    assert_eq!((c.first_position, c.stream_version), (4, 2));

    let stream = store.read_stream("applicant-a", 0, 100).await.unwrap();
    assert_eq!(
        stream.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(
        stream.iter().map(|e| e.global_position).collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
    assert_eq!(stream[0].prev_hash, chain::GENESIS);
    for pair in stream.windows(2) {
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "each event chains to the previous one"
        );
    }
    for e in &stream {
        assert_eq!(
            chain::compute_hash(&e.prev_hash, e),
            e.hash,
            "stored hash matches the content"
        );
    }
    assert_eq!(
        store
            .read_stream("applicant-a", 2, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.read_stream("applicant-a", 0, 2).await.unwrap().len(),
        2
    );
    assert!(store
        .read_stream("applicant-none", 0, 10)
        .await
        .unwrap()
        .is_empty());

    let all = store.read_all(2, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.global_position).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(store.head().await.unwrap(), 4);
    assert_eq!(store.stream_version("applicant-a").await.unwrap(), Some(2));
    assert_eq!(store.stream_version("applicant-none").await.unwrap(), None);
}

#[tokio::test]
async fn a_stale_expected_version_is_refused_with_the_actual_version_and_writes_nothing() {
    let server = NatsServer::start().expect("nats-server starts");
    let store = store(&server).await;
    store
        .append(
            "applicant-x",
            ExpectedVersion::NoStream,
            vec![event("app", "ApplicantCreated", 0)],
        )
        .await
        .unwrap();
    let err = store
        .append(
            "applicant-x",
            ExpectedVersion::NoStream,
            vec![event("app", "X", 1)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::WrongExpectedVersion {
                actual: Some(0),
                ..
            }
        ),
        "{err:?}"
    );
    let err = store
        .append(
            "applicant-x",
            ExpectedVersion::Exact(5),
            vec![event("app", "X", 1)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::WrongExpectedVersion {
                actual: Some(0),
                ..
            }
        ),
        "{err:?}"
    );
    let err = store
        .append(
            "applicant-y",
            ExpectedVersion::Exact(0),
            vec![event("app", "X", 1)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::WrongExpectedVersion { actual: None, .. }),
        "{err:?}"
    );
    assert!(matches!(
        store
            .append("applicant-x", ExpectedVersion::Any, vec![])
            .await,
        Err(StoreError::EmptyAppend)
    ));
    assert_eq!(store.head().await.unwrap(), 1);
}

#[tokio::test]
async fn two_stores_racing_on_one_applicant_let_exactly_one_writer_win_each_version() {
    let server = NatsServer::start().expect("nats-server starts");
    let first = store(&server).await;
    let second = store(&server).await;
    first
        .append(
            "applicant-race",
            ExpectedVersion::NoStream,
            vec![event("app", "ApplicantCreated", 0)],
        )
        .await
        .unwrap();
    let mut wins = 0;
    for round in 0..20u64 {
        let (a, b) = tokio::join!(
            first.append(
                "applicant-race",
                ExpectedVersion::Exact(round),
                vec![event("app", "A", round)]
            ),
            second.append(
                "applicant-race",
                ExpectedVersion::Exact(round),
                vec![event("app", "B", round)]
            ),
        );
        let ok = [a.is_ok(), b.is_ok()].iter().filter(|x| **x).count();
        assert_eq!(
            ok, 1,
            "round {round}: exactly one writer wins ({a:?} / {b:?})"
        );
        for r in [a, b] {
            if let Err(e) = r {
                assert!(
                    matches!(e, StoreError::WrongExpectedVersion { actual: Some(v), .. } if v == round + 1),
                    "{e:?}"
                );
            }
        }
        wins += ok;
    }
    let events = first.read_stream("applicant-race", 0, 1000).await.unwrap();
    assert_eq!(events.len(), 1 + wins);
    assert!(events
        .iter()
        .enumerate()
        .all(|(i, e)| e.stream_version == i as u64));
}

#[tokio::test]
async fn concurrent_any_appends_from_two_stores_all_land_with_contiguous_versions() {
    let server = NatsServer::start().expect("nats-server starts");
    let first = store(&server).await;
    let second = store(&server).await;
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let s = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            s.append(
                "applicant-busy",
                ExpectedVersion::Any,
                vec![event("app", "Noted", i)],
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("Any never conflicts");
    }
    let events = first.read_stream("applicant-busy", 0, 1000).await.unwrap();
    assert_eq!(events.len(), 40);
    assert!(events
        .iter()
        .enumerate()
        .all(|(i, e)| e.stream_version == i as u64));
    for pair in events.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
}

#[tokio::test]
async fn the_subscription_catches_up_then_follows_live_appends_without_gaps() {
    let server = NatsServer::start().expect("nats-server starts");
    let store = store(&server).await;
    for i in 0..5 {
        store
            .append(
                &format!("applicant-{i}"),
                ExpectedVersion::NoStream,
                vec![event("app", "ApplicantCreated", i)],
            )
            .await
            .unwrap();
    }
    let mut feed = store.subscribe_all(3);
    let writer = store.clone();
    let live = tokio::spawn(async move {
        for i in 5..50 {
            writer
                .append(
                    &format!("applicant-{i}"),
                    ExpectedVersion::NoStream,
                    vec![event("app", "ApplicantCreated", i)],
                )
                .await
                .unwrap();
        }
    });
    let mut positions = Vec::new();
    while positions.len() < 48 {
        let next = tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .expect("feed keeps up");
        positions.push(
            next.expect("feed open")
                .expect("event decodes")
                .global_position,
        );
    }
    live.await.unwrap();
    assert_eq!(positions, (3..=50).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_acknowledged_append_survives_a_server_kill() {
    let mut server = NatsServer::start().expect("nats-server starts");
    let store = store(&server).await;
    for i in 0..20 {
        store
            .append(
                "applicant-durable",
                ExpectedVersion::Any,
                vec![event("app", "Noted", i)],
            )
            .await
            .unwrap();
    }
    server.kill();
    server.restart().expect("nats-server restarts");
    let events = eventually(
        Duration::from_secs(15),
        "the store to answer after restart",
        || {
            let store = store.clone();
            async move { store.read_stream("applicant-durable", 0, 100).await.ok() }
        },
    )
    .await;
    assert_eq!(events.len(), 20);
    let next = store
        .append(
            "applicant-durable",
            ExpectedVersion::Exact(19),
            vec![event("app", "Noted", 20)],
        )
        .await
        .unwrap();
    assert_eq!(next.stream_version, 20);
}

#[tokio::test]
async fn batches_are_the_stored_bodies_with_their_sequence_as_position() {
    let server = NatsServer::start().expect("nats-server starts");
    let store = store(&server).await;
    for n in 0..3 {
        store
            .append(
                "applicant-a",
                ExpectedVersion::Any,
                vec![event("app", "StepPassed", n)],
            )
            .await
            .unwrap();
    }
    let read = store.read_all_batch(2, 10).await.unwrap();
    let vetted_store::EventBatch::Json(frames) = read else {
        panic!("JetStream hands out the stored bodies, got {read:?}");
    };
    assert_eq!(
        frames.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(
        frames
            .iter()
            .map(|(_, json)| serde_json::from_slice::<vetted_store::RecordedEvent>(json).unwrap())
            .collect::<Vec<_>>(),
        store.read_all(2, 10).await.unwrap()
    );
}
