//! `vetted audit verify` on a sled store whose stored bytes were tampered with behind its back:
//! the report names the first event that no longer matches its chain.
use uuid::Uuid;
use vetted_store::{
    verify, verify_stream, Actor, EventStore, ExpectedVersion, MismatchReason, NewEvent,
    RecordedEvent, SledStore,
};

fn step_passed(attempt: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "StepPassed".into(),
        schema_version: 1,
        tenant: "app-1".into(),
        actor: Actor::system(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        payload: serde_json::json!({ "step": "face_match", "score": 90 + attempt }),
    }
}

/// Positions 1..=5 are applicant-a versions 0..=4, then 6..=7 are applicant-b.
async fn audited_log() -> (SledStore, Vec<RecordedEvent>) {
    let store = SledStore::temporary().expect("store");
    for n in 0..5 {
        store
            .append("applicant-a", ExpectedVersion::Any, vec![step_passed(n)])
            .await
            .expect("append");
    }
    store
        .append(
            "applicant-b",
            ExpectedVersion::NoStream,
            vec![step_passed(0), step_passed(1)],
        )
        .await
        .expect("append");
    let events = store.read_all(1, 100).await.expect("read");
    let report = verify(&store).await.expect("verify");
    assert!(
        report.is_intact(),
        "an untouched log verifies: {:?}",
        report.first_mismatch
    );
    assert_eq!((report.streams, report.events), (2, 7));
    (store, events)
}

fn raw(store: &SledStore, position: u64) -> Vec<u8> {
    store.raw_event(position).expect("read").expect("stored")
}

/// Rewrites (or removes) the stored bytes of `position` as a forger with disk access would.
fn tamper(store: &SledStore, position: u64, bytes: Option<&[u8]>) {
    assert!(
        store.tamper_event(position, bytes).expect("tamper"),
        "position {position} is stored"
    );
}

#[tokio::test]
async fn an_edited_face_match_score_is_named_by_the_audit() {
    let (store, events) = audited_log().await;
    let stored = String::from_utf8(raw(&store, 3)).expect("json text");
    assert!(stored.contains("\"score\":92"), "{stored}");
    let forged = stored.replace("\"score\":92", "\"score\":99");
    tamper(&store, 3, Some(forged.as_bytes()));

    let report = verify(&store).await.expect("verify");
    let mismatch = report.first_mismatch.expect("the edit is found");
    assert_eq!(mismatch.reason, MismatchReason::HashMismatch);
    assert_eq!(mismatch.global_position, 3);
    assert_eq!(
        (mismatch.stream_id.as_str(), mismatch.stream_version),
        ("applicant-a", 2)
    );
    assert_eq!(mismatch.event_id, events[2].event_id);
    assert_eq!(
        mismatch.stored_hash, events[2].hash,
        "the stored hash is the original one"
    );
    assert_ne!(mismatch.expected_hash, mismatch.stored_hash);
    assert_eq!(report.events, 7, "the audit still counts the whole log");

    let stream_report = verify_stream(&store, "applicant-a")
        .await
        .expect("verify_stream");
    assert_eq!(
        stream_report.first_mismatch.map(|m| m.stream_version),
        Some(2)
    );
    assert!(verify_stream(&store, "applicant-b")
        .await
        .expect("verify_stream")
        .is_intact());
}

#[tokio::test]
async fn a_deleted_event_is_named_by_the_event_after_the_hole() {
    let (store, events) = audited_log().await;
    tamper(&store, 3, None);

    let mismatch = verify(&store)
        .await
        .expect("verify")
        .first_mismatch
        .expect("the deletion is found");
    assert_eq!(
        mismatch.reason,
        MismatchReason::PositionOutOfOrder { expected: 3 }
    );
    assert_eq!(mismatch.global_position, 4);
    assert_eq!(mismatch.event_id, events[3].event_id);
    assert_eq!(
        (mismatch.stream_id.as_str(), mismatch.stream_version),
        ("applicant-a", 3)
    );
}

#[tokio::test]
async fn a_deleted_event_with_positions_renumbered_still_breaks_its_stream() {
    // A careful forger closes the hole by moving every later event down one position.
    let (store, events) = audited_log().await;
    for position in 3..7u64 {
        let mut moved: RecordedEvent =
            serde_json::from_slice(&raw(&store, position + 1)).expect("decode");
        moved.global_position = position;
        tamper(
            &store,
            position,
            Some(&serde_json::to_vec(&moved).expect("encode")),
        );
    }
    tamper(&store, 7, None);

    let mismatch = verify(&store)
        .await
        .expect("verify")
        .first_mismatch
        .expect("the deletion is found");
    assert_eq!(
        mismatch.reason,
        MismatchReason::VersionOutOfOrder { expected: 2 }
    );
    assert_eq!(
        mismatch.event_id, events[3].event_id,
        "the event that now follows the hole is named"
    );
}

#[tokio::test]
async fn two_swapped_events_are_named_at_the_first_swapped_slot() {
    let (store, events) = audited_log().await;
    let (second, fourth) = (raw(&store, 2), raw(&store, 4));
    tamper(&store, 2, Some(&fourth));
    tamper(&store, 4, Some(&second));

    let mismatch = verify(&store)
        .await
        .expect("verify")
        .first_mismatch
        .expect("the swap is found");
    assert_eq!(
        mismatch.reason,
        MismatchReason::PositionOutOfOrder { expected: 2 }
    );
    assert_eq!(
        mismatch.event_id, events[3].event_id,
        "slot 2 now holds the event of position 4"
    );
}

#[tokio::test]
async fn a_rewritten_prev_hash_is_named_even_when_the_hash_is_resealed() {
    let (store, events) = audited_log().await;
    let mut forged: RecordedEvent = serde_json::from_slice(&raw(&store, 6)).expect("decode");
    forged.payload = serde_json::json!({ "step": "face_match", "score": 100 });
    vetted_store::chain::seal(&mut forged, &"ab".repeat(32));
    tamper(
        &store,
        6,
        Some(&serde_json::to_vec(&forged).expect("encode")),
    );

    let mismatch = verify(&store)
        .await
        .expect("verify")
        .first_mismatch
        .expect("the forgery is found");
    assert_eq!(mismatch.reason, MismatchReason::PrevHashMismatch);
    assert_eq!(mismatch.event_id, events[5].event_id);
    assert_eq!(
        mismatch.expected_hash,
        vetted_store::chain::GENESIS,
        "applicant-b starts from genesis"
    );
}
