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

#[tokio::test]
async fn events_written_before_a_crash_cut_off_their_index_are_indexed_on_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let written = {
        let store = SledStore::open(dir.path()).expect("open");
        store
            .append(
                "applicant-a",
                ExpectedVersion::NoStream,
                vec![step_passed(0)],
            )
            .await
            .expect("append");
        store
            .append(
                "applicant-a",
                ExpectedVersion::Exact(0),
                vec![step_passed(1), step_passed(2)],
            )
            .await
            .expect("append");
        store
            .append(
                "applicant-b",
                ExpectedVersion::NoStream,
                vec![step_passed(0)],
            )
            .await
            .expect("append");
        store.read_all(1, 100).await.expect("read")
    };
    {
        // What a crash between the events write and the index writes leaves behind:
        // the last group's events are stored, its index entries and heads are not.
        let db = sled::open(dir.path()).expect("raw open");
        let streams = db.open_tree("streams").expect("tree");
        let heads = db.open_tree("stream_heads").expect("tree");
        let key =
            |stream: &str, version: u64| [stream.as_bytes(), &[0], &version.to_be_bytes()].concat();
        streams.remove(key("applicant-a", 1)).expect("remove");
        streams.remove(key("applicant-a", 2)).expect("remove");
        streams.remove(key("applicant-b", 0)).expect("remove");
        let mut head_a = 0u64.to_be_bytes().to_vec();
        head_a.extend_from_slice(written[0].hash.as_bytes());
        heads.insert("applicant-a", head_a).expect("insert");
        heads.remove("applicant-b").expect("remove");
        db.flush().expect("flush");
    }

    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(
        store.stream_version("applicant-a").await.expect("version"),
        Some(2)
    );
    assert_eq!(
        store.stream_version("applicant-b").await.expect("version"),
        Some(0)
    );
    assert_eq!(
        store
            .read_stream("applicant-a", 0, 10)
            .await
            .expect("read")
            .len(),
        3
    );
    let next = store
        .append(
            "applicant-a",
            ExpectedVersion::Exact(2),
            vec![step_passed(3)],
        )
        .await
        .expect("append");
    assert_eq!(next.first_position, 5);
    let report = verify(&store).await.expect("verify");
    assert!(report.is_intact(), "{:?}", report.first_mismatch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_between_two_stream_heads_of_one_group_is_repaired_on_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (victim, victim_version) = {
        let store = std::sync::Arc::new(SledStore::open(dir.path()).expect("open"));
        // Racing appends share group commits, but the last group can be a lone straggler;
        // race again (a bounded number of rounds) until the last group holds several streams.
        let mut last_group = Vec::new();
        for round in 0..20u64 {
            let start = std::sync::Arc::new(tokio::sync::Barrier::new(32));
            let tasks: Vec<_> = (0..32)
                .map(|w| {
                    let (store, start) = (store.clone(), start.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        store
                            .append(
                                &format!("applicant-{w}"),
                                ExpectedVersion::Any,
                                vec![step_passed(round)],
                            )
                            .await
                            .expect("race")
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("task");
            }
            let all = store.read_all(1, 100_000).await.expect("read");
            let last_time = all.last().expect("events").recorded_at;
            last_group = all
                .into_iter()
                .filter(|e| e.recorded_at == last_time)
                .collect();
            if last_group.len() >= 2 {
                break;
            }
        }
        assert!(
            last_group.len() >= 2,
            "32 racing appends share a group commit"
        );
        // The first event of the last group loses its index and head; later streams keep theirs.
        (
            last_group[0].stream_id.clone(),
            last_group[0].stream_version,
        )
    };
    {
        let db = sled::open(dir.path()).expect("raw open");
        let streams = db.open_tree("streams").expect("tree");
        let heads = db.open_tree("stream_heads").expect("tree");
        streams
            .remove([victim.as_bytes(), &[0], &victim_version.to_be_bytes()].concat())
            .expect("remove");
        heads.remove(victim.as_bytes()).expect("remove");
        db.flush().expect("flush");
    }

    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(
        store.stream_version(&victim).await.expect("version"),
        Some(victim_version)
    );
    store
        .append(
            &victim,
            ExpectedVersion::Exact(victim_version),
            vec![step_passed(9)],
        )
        .await
        .expect("append");
    let report = verify(&store).await.expect("verify");
    assert!(report.is_intact(), "{:?}", report.first_mismatch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_append_acknowledged_under_group_commit_is_there_after_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let acknowledged = {
        let store = std::sync::Arc::new(SledStore::open(dir.path()).expect("open"));
        let tasks: Vec<_> = (0..48)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let stream = format!("applicant-{w}");
                    let mut acks = Vec::new();
                    for n in 0..20 {
                        let events = if n % 5 == 0 {
                            vec![step_passed(n), step_passed(n + 100)]
                        } else {
                            vec![step_passed(n)]
                        };
                        let ack = store
                            .append(&stream, ExpectedVersion::Any, events)
                            .await
                            .expect("append");
                        acks.push((stream.clone(), ack));
                    }
                    acks
                })
            })
            .collect();
        let mut acknowledged = Vec::new();
        for t in tasks {
            acknowledged.extend(t.await.expect("task"));
        }
        acknowledged
    };

    let store = SledStore::open(dir.path()).expect("reopen");
    let all = store.read_all(1, 10_000).await.expect("read");
    let expected_events: u64 = acknowledged
        .iter()
        .map(|(_, a)| a.last_position - a.first_position + 1)
        .sum();
    assert_eq!(
        all.len() as u64,
        expected_events,
        "no event lost, none extra"
    );
    for (stream, ack) in &acknowledged {
        let last = &all[(ack.last_position - 1) as usize];
        assert_eq!(
            (&last.stream_id, last.stream_version),
            (stream, ack.stream_version),
            "position {} holds what the append was told",
            ack.last_position
        );
    }
    for w in 0..48 {
        let stream = format!("applicant-{w}");
        assert_eq!(
            store
                .read_stream(&stream, 0, 1000)
                .await
                .expect("read")
                .len(),
            24,
            "{stream} reads back every version through the index"
        );
    }
    let report = verify(&store).await.expect("verify");
    assert!(report.is_intact(), "{:?}", report.first_mismatch);
    assert_eq!((report.streams, report.events), (48, 48 * 24));
}
