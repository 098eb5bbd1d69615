//! Sled-specific guarantees the generic contract cannot express: what survives a reopen.
use vetted_store::contract::step_passed;
use vetted_store::{verify, AppendResult, EventStore, ExpectedVersion, NewEvent, SledStore};

/// Appends `events` to `stream`, which must succeed.
async fn append(
    store: &impl EventStore,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendResult {
    store
        .append(stream, expected, events)
        .await
        .unwrap_or_else(|e| panic!("append to {stream}: {e}"))
}

#[tokio::test]
async fn acknowledged_events_survive_a_reopen_with_their_hashes_and_the_chain_continues() {
    let dir = tempfile::tempdir().expect("temp dir");
    let before = {
        let store = SledStore::open(dir.path()).expect("open");
        for n in 0..5 {
            append(
                &store,
                "applicant-a",
                ExpectedVersion::Any,
                vec![step_passed(n)],
            )
            .await;
        }
        append(
            &store,
            "applicant-b",
            ExpectedVersion::NoStream,
            vec![step_passed(0), step_passed(1)],
        )
        .await;
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

    let more = append(
        &store,
        "applicant-a",
        ExpectedVersion::Exact(4),
        vec![step_passed(5)],
    )
    .await;
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

/// Every entry of a sled tree, to put it back later.
fn snapshot(tree: &sled::Tree) -> Vec<(sled::IVec, sled::IVec)> {
    tree.iter().map(|e| e.expect("entry")).collect()
}

#[tokio::test]
async fn index_entries_a_crash_kept_only_in_memory_are_read_back_from_the_log_on_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = SledStore::open(dir.path()).expect("open");
        append(
            &store,
            "applicant-a",
            ExpectedVersion::NoStream,
            vec![step_passed(0)],
        )
        .await;
    }
    // The index as a crash right after this point would leave it: it covers position 1 only.
    let indexed_before = {
        let db = vetted_store::open_db(dir.path()).expect("raw open");
        snapshot(&db.open_tree("stream_index").expect("tree"))
    };
    let written = {
        let store = SledStore::open(dir.path()).expect("reopen");
        append(
            &store,
            "applicant-a",
            ExpectedVersion::Exact(0),
            vec![step_passed(1), step_passed(2)],
        )
        .await;
        append(
            &store,
            "applicant-b",
            ExpectedVersion::NoStream,
            vec![step_passed(0)],
        )
        .await;
        store.read_all(1, 100).await.expect("read")
    };
    {
        let db = vetted_store::open_db(dir.path()).expect("raw open");
        let index = db.open_tree("stream_index").expect("tree");
        index.clear().expect("clear");
        for (key, value) in indexed_before {
            index.insert(key, value).expect("restore");
        }
        db.flush().expect("flush");
    }

    let store = SledStore::open(dir.path()).expect("reopen after the crash");
    assert_eq!(store.read_all(1, 100).await.expect("read"), written);
    assert_eq!(
        store.stream_version("applicant-a").await.expect("version"),
        Some(2)
    );
    assert_eq!(
        store.stream_version("applicant-b").await.expect("version"),
        Some(0)
    );
    assert_eq!(
        store.read_stream("applicant-a", 0, 10).await.expect("read"),
        written[..3].to_vec(),
        "version 0 from the index tree, 1 and 2 read back from the log"
    );
    let next = append(
        &store,
        "applicant-a",
        ExpectedVersion::Exact(2),
        vec![step_passed(3)],
    )
    .await;
    assert_eq!((next.first_position, next.stream_version), (5, 3));
    let refused = store
        .append(
            "applicant-b",
            ExpectedVersion::NoStream,
            vec![step_passed(1)],
        )
        .await;
    assert!(refused.is_err(), "applicant-b exists: {refused:?}");
    let report = verify(&store).await.expect("verify");
    assert!(report.is_intact(), "{:?}", report.first_mismatch);
    assert_eq!((report.streams, report.events), (2, 5));
}

#[tokio::test]
async fn an_event_larger_than_a_read_window_reads_back_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut big = step_passed(0);
    big.payload = serde_json::json!({ "step": "questionnaire", "answers": "x".repeat(100_000) });
    let written = {
        let store = SledStore::open(dir.path()).expect("open");
        append(
            &store,
            "applicant-a",
            ExpectedVersion::NoStream,
            vec![step_passed(0)],
        )
        .await;
        append(
            &store,
            "applicant-a",
            ExpectedVersion::Exact(0),
            vec![big, step_passed(2)],
        )
        .await;
        append(
            &store,
            "applicant-b",
            ExpectedVersion::NoStream,
            vec![step_passed(0)],
        )
        .await;
        store.read_all(1, 100).await.expect("read")
    };
    assert_eq!(written.len(), 4);
    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(store.read_all(1, 100).await.expect("read"), written);
    assert_eq!(
        store.read_all(3, 100).await.expect("read"),
        written[2..].to_vec()
    );
    assert_eq!(
        store.read_stream("applicant-a", 1, 1).await.expect("read"),
        written[1..2].to_vec()
    );
    assert!(verify(&store).await.expect("verify").is_intact());
}

#[tokio::test]
async fn an_event_too_large_for_the_log_is_refused_and_its_append_leaves_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path()).expect("open");
    let mut huge = step_passed(1);
    huge.payload = serde_json::json!({ "step": "questionnaire", "answers": "x".repeat(65 << 20) });
    let refused = store
        .append(
            "applicant-a",
            ExpectedVersion::NoStream,
            vec![step_passed(0), huge],
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(vetted_store::StoreError::TooLarge {
                what: "an event",
                ..
            })
        ),
        "{refused:?}"
    );
    // Nothing of the append was kept: the stream starts afresh and the log reopens whole.
    append(
        &store,
        "applicant-a",
        ExpectedVersion::NoStream,
        vec![step_passed(0)],
    )
    .await;
    drop(store);
    let store = SledStore::open(dir.path()).expect("reopen");
    let events = store.read_all(1, 100).await.expect("read");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].stream_version, 0);
    assert!(verify(&store).await.expect("verify").is_intact());
}

#[tokio::test]
async fn a_version_1_store_is_converted_on_open_keeping_every_stored_byte() {
    // Version 1: `events` held one JSON entry per position, `streams` one entry per version.
    let source = vetted_store::MemoryStore::new();
    for (stream, n) in [("applicant-a", 3), ("applicant-b", 2), ("applicant-a", 1)] {
        append(
            &source,
            stream,
            ExpectedVersion::Any,
            (0..n).map(step_passed).collect(),
        )
        .await;
    }
    let events = source.read_all(1, 100).await.expect("read");
    let dir = tempfile::tempdir().expect("temp dir");
    let stored: Vec<Vec<u8>> = events
        .iter()
        .map(|e| serde_json::to_vec(e).expect("encode"))
        .collect();
    {
        let db = vetted_store::open_db(dir.path()).expect("raw open");
        let old = db.open_tree("events").expect("tree");
        let streams = db.open_tree("streams").expect("tree");
        for (event, bytes) in events.iter().zip(&stored) {
            old.insert(event.global_position.to_be_bytes(), bytes.as_slice())
                .expect("insert");
            let key = [
                event.stream_id.as_bytes(),
                &[0],
                &event.stream_version.to_be_bytes(),
            ]
            .concat();
            streams
                .insert(key, &event.global_position.to_be_bytes())
                .expect("insert");
        }
        db.flush().expect("flush");
    }

    let store = SledStore::open(dir.path()).expect("open converts");
    assert_eq!(store.head().await.expect("head"), 6);
    assert_eq!(store.read_all(1, 100).await.expect("read"), events);
    for (event, bytes) in events.iter().zip(&stored) {
        assert_eq!(
            store
                .raw_event(event.global_position)
                .expect("raw")
                .as_ref(),
            Some(bytes),
            "stored bytes kept"
        );
    }
    assert_eq!(
        store
            .read_stream("applicant-a", 0, 10)
            .await
            .expect("read")
            .len(),
        4
    );
    assert_eq!(
        store.stream_version("applicant-b").await.expect("version"),
        Some(1)
    );
    append(
        &store,
        "applicant-a",
        ExpectedVersion::Exact(3),
        vec![step_passed(9)],
    )
    .await;
    let report = verify(&store).await.expect("verify");
    assert!(report.is_intact(), "{:?}", report.first_mismatch);
    let names = store.db().tree_names();
    for old in ["events", "streams"] {
        assert!(
            !names.iter().any(|n| n.as_ref() == old.as_bytes()),
            "old tree {old} dropped"
        );
    }
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
                        let ack =
                            append(store.as_ref(), &stream, ExpectedVersion::Any, events).await;
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
