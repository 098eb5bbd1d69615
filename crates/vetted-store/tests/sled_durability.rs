//! Sled-specific guarantees the generic contract cannot express: what survives a reopen.
use uuid::Uuid;
use vetted_store::{verify, Actor, EventStore, ExpectedVersion, NewEvent, SledStore};

fn step_passed(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "StepPassed".into(),
        schema_version: 1,
        tenant: "app-1".into(),
        actor: Actor::system(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        payload: serde_json::json!({ "step": "liveness", "attempt": n }),
    }
}

#[tokio::test]
async fn acknowledged_events_survive_a_reopen_with_their_hashes_and_the_chain_continues() {
    let dir = tempfile::tempdir().expect("temp dir");
    let before = {
        let store = SledStore::open(dir.path()).expect("open");
        for n in 0..5 {
            store
                .append("applicant-a", ExpectedVersion::Any, vec![step_passed(n)])
                .await
                .expect("append a");
        }
        store
            .append(
                "applicant-b",
                ExpectedVersion::NoStream,
                vec![step_passed(0), step_passed(1)],
            )
            .await
            .expect("append b");
        store.read_all(1, 100).await.expect("read")
    };
    assert_eq!(before.len(), 7);

    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(store.head().await.expect("head"), 7);
    assert_eq!(
        store.read_all(1, 100).await.expect("read after reopen"),
        before
    );
    assert_eq!(
        store.stream_version("applicant-a").await.expect("version"),
        Some(4)
    );

    let more = store
        .append(
            "applicant-a",
            ExpectedVersion::Exact(4),
            vec![step_passed(5)],
        )
        .await
        .expect("append");
    assert_eq!((more.first_position, more.stream_version), (8, 5));
    let last = store
        .read_stream("applicant-a", 5, 1)
        .await
        .expect("read stream");
    assert_eq!(
        last[0].prev_hash, before[4].hash,
        "the chain continues from the hash stored before the reopen"
    );
    let report = verify(&store).await.expect("verify");
    assert!(report.is_intact(), "{:?}", report.first_mismatch);
    assert_eq!((report.streams, report.events), (2, 8));
}
