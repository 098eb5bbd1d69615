//! The runner, the checkpoint and crash safety, rebuild and verify, over a projection that
//! counts events (no domain rules involved).
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{append_round_robin, eventually, raw_event, EventCount};
use vetted_projections::{
    checkpoint_of, digest_tree, rebuild, verify, Projection, ProjectionError, ReadModels, Rows,
    Runner,
};
use vetted_store::{EventStore, ExpectedVersion, MemoryStore, SledStore};

const WAIT: Duration = Duration::from_secs(10);

fn streams(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("applicant-{i:04}")).collect()
}

fn count_of(tree: &sled::Tree, stream: &str) -> u64 {
    tree.get(format!("count/{stream}"))
        .unwrap()
        .map(|v| serde_json::from_slice(&v).unwrap())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_runner_applies_every_event_once_and_reports_no_lag() {
    let store = Arc::new(MemoryStore::new());
    let db = sled::Config::new().temporary(true).open().unwrap();
    let read_models =
        Arc::new(ReadModels::with_projections(db, vec![Arc::new(EventCount::new())]).unwrap());
    let streams = streams(5);
    append_round_robin(store.as_ref(), &streams, 10).await;
    // Events of other streams still move the checkpoint.
    store
        .append(
            "application-x",
            ExpectedVersion::Any,
            vec![raw_event("ApplicationCreated")],
        )
        .await
        .unwrap();

    let runner = Runner::start(read_models.clone(), store.clone());
    let head = append_round_robin(store.as_ref(), &streams, 10).await;
    runner.wait_for(head, WAIT).await.unwrap();

    let tree = read_models.live_tree("event_count").unwrap();
    for s in &streams {
        assert_eq!(count_of(&tree, s), 20, "{s} has every event counted once");
    }
    let status = read_models.status(store.as_ref()).await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(
        (
            status[0].checkpoint,
            status[0].head,
            status[0].lag,
            status[0].generation
        ),
        (head, head, 0, 0)
    );
    assert_eq!(status[0].error, None);
    runner.stop().await;
}

#[tokio::test]
async fn waiting_for_a_position_no_runner_reaches_says_how_far_behind_it_is() {
    let store = MemoryStore::new();
    let db = sled::Config::new().temporary(true).open().unwrap();
    let read_models = ReadModels::with_projections(db, vec![Arc::new(EventCount::new())]).unwrap();
    let head = append_round_robin(&store, &streams(1), 3).await;
    let err = read_models
        .wait_for(head, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProjectionError::Lagging {
                checkpoint: 0,
                wanted: 3,
                ..
            }
        ),
        "expected Lagging at 0 of 3, got {err}"
    );
}

#[tokio::test]
async fn an_event_that_fails_stops_the_checkpoint_right_before_it_and_nothing_half_applied_is_kept()
{
    let store = Arc::new(MemoryStore::new());
    let db = sled::Config::new().temporary(true).open().unwrap();
    let counter = Arc::new(EventCount::failing_at(7));
    let read_models = Arc::new(
        ReadModels::with_projections(db, vec![counter.clone() as Arc<dyn Projection>]).unwrap(),
    );
    let streams = streams(3);
    let head = append_round_robin(store.as_ref(), &streams, 4).await;
    let runner = Runner::start(read_models.clone(), store.clone());

    let tree = read_models.live_tree("event_count").unwrap();
    eventually("checkpoint stops at 6", WAIT, || {
        checkpoint_of(&tree).unwrap() == 6
    })
    .await;
    // Positions 1..=6 are 2 events per stream; event 7 (stream 0) counted half and failed.
    let counted: u64 = streams.iter().map(|s| count_of(&tree, s)).sum();
    assert_eq!(counted, 6, "rows match the checkpoint exactly");
    // The runner commits what precedes the failing event, then records the error: wait
    // (bounded) for the record rather than racing it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        let status = read_models.status(store.as_ref()).await.unwrap();
        if status[0].error.is_some() || tokio::time::Instant::now() >= deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        status[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("global position 7"),
        "{:?}",
        status[0].error
    );
    assert_eq!(status[0].lag, head - 6);
    assert_eq!(checkpoint_of(&tree).unwrap(), 6, "and stays there");

    counter.heal();
    runner.wait_for(head, WAIT).await.unwrap();
    let counted: u64 = streams.iter().map(|s| count_of(&tree, s)).sum();
    assert_eq!(counted, head, "after the fix every event is counted once");
    assert_eq!(
        read_models.status(store.as_ref()).await.unwrap()[0].error,
        None,
        "the error clears"
    );
    runner.stop().await;
}

#[tokio::test]
async fn changes_applied_but_not_committed_are_gone_after_reopen_and_committed_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::new();
    let head = append_round_robin(&store, &streams(2), 5).await;
    let events = store.read_all(1, 100).await.unwrap();
    let counter = EventCount::new();
    {
        let db = vetted_store::open_db(dir.path()).unwrap();
        let tree = db.open_tree("proj/event_count/g0").unwrap();
        let mut rows = Rows::new(&tree);
        for e in &events[..4] {
            counter.apply(&mut rows, e).unwrap();
        }
        rows.commit(4).unwrap();
        let mut rows = Rows::new(&tree);
        for e in &events[4..] {
            counter.apply(&mut rows, e).unwrap();
        }
        // Crash between apply and commit: the batch is dropped, the Db closed.
        drop(rows);
        db.flush().unwrap();
    }
    let db = vetted_store::open_db(dir.path()).unwrap();
    let read_models = ReadModels::with_projections(db, vec![Arc::new(EventCount::new())]).unwrap();
    let tree = read_models.live_tree("event_count").unwrap();
    assert_eq!(checkpoint_of(&tree).unwrap(), 4);
    let counted: u64 = streams(2).iter().map(|s| count_of(&tree, s)).sum();
    assert_eq!(counted, 4, "only the committed batch is there");

    // The runner resumes from the checkpoint: nothing applied twice, nothing skipped.
    let store = Arc::new(store);
    let runner = Runner::start(Arc::new(read_models), store.clone());
    runner.wait_for(head, WAIT).await.unwrap();
    let counted: u64 = streams(2).iter().map(|s| count_of(&tree, s)).sum();
    assert_eq!(counted, head);
    runner.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_rebuild_under_concurrent_appends_equals_a_fresh_offline_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let read_models = Arc::new(
        ReadModels::with_projections(store.db().clone(), vec![Arc::new(EventCount::new())])
            .unwrap(),
    );
    let streams = streams(8);
    append_round_robin(store.as_ref(), &streams, 50).await;
    let runner = Runner::start(read_models.clone(), store.clone());

    // Keep appending while the rebuild runs.
    let writer = {
        let store = store.clone();
        let streams = streams.clone();
        tokio::spawn(async move { append_round_robin(store.as_ref(), &streams, 40).await })
    };
    let mut seen = Vec::new();
    let reports = rebuild(&read_models, store.as_ref(), &["event_count"], &mut |p| {
        seen.push(p)
    })
    .await
    .unwrap();
    assert_eq!(reports[0].old_generation, 0);
    assert_eq!(reports[0].generation, 1);
    assert!(!seen.is_empty(), "progress was reported");
    assert!(
        seen.windows(2).all(|w| w[0].done <= w[1].done),
        "progress never goes back"
    );
    let head = writer.await.unwrap();
    runner.wait_for(head, WAIT).await.unwrap();

    let status = read_models.status(store.as_ref()).await.unwrap();
    assert_eq!((status[0].generation, status[0].lag), (1, 0));
    assert_eq!(
        read_models.generations().on_disk("event_count"),
        vec![1],
        "the old generation is dropped"
    );
    let live = digest_tree(&read_models.live_tree("event_count").unwrap(), |_| true).unwrap();

    // A fresh offline rebuild into another database, from the same log.
    let offline_db = sled::Config::new().temporary(true).open().unwrap();
    let offline =
        ReadModels::with_projections(offline_db, vec![Arc::new(EventCount::new())]).unwrap();
    rebuild(&offline, store.as_ref(), &["event_count"], &mut |_| {})
        .await
        .unwrap();
    let fresh = digest_tree(&offline.live_tree("event_count").unwrap(), |_| true).unwrap();
    assert_eq!(live, fresh);
    assert_eq!(
        live.rows,
        2 * 8,
        "a count row and a last-type row per stream"
    );

    let report = verify(&read_models, store.as_ref(), "event_count")
        .await
        .unwrap();
    assert!(report.matches, "{report:?}");
    runner.stop().await;
}

#[tokio::test]
async fn verify_notices_a_live_row_that_differs_from_the_log() {
    let store = Arc::new(MemoryStore::new());
    let db = sled::Config::new().temporary(true).open().unwrap();
    let read_models =
        Arc::new(ReadModels::with_projections(db, vec![Arc::new(EventCount::new())]).unwrap());
    let head = append_round_robin(store.as_ref(), &streams(3), 3).await;
    let runner = Runner::start(read_models.clone(), store.clone());
    runner.wait_for(head, WAIT).await.unwrap();
    assert!(
        verify(&read_models, store.as_ref(), "event_count")
            .await
            .unwrap()
            .matches
    );

    read_models
        .live_tree("event_count")
        .unwrap()
        .insert("count/applicant-0001", "99")
        .unwrap();
    let report = verify(&read_models, store.as_ref(), "event_count")
        .await
        .unwrap();
    assert!(!report.matches);
    assert_ne!(report.live.sha256, report.rebuilt.sha256);
    assert_eq!(
        read_models.generations().on_disk("event_count"),
        vec![0],
        "the scratch generation is gone"
    );
    runner.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_while_a_rebuild_of_the_same_projection_runs_is_refused() {
    let store = Arc::new(MemoryStore::new());
    append_round_robin(store.as_ref(), &streams(2), 2).await;
    let db = sled::Config::new().temporary(true).open().unwrap();
    let read_models =
        Arc::new(ReadModels::with_projections(db, vec![Arc::new(EventCount::new())]).unwrap());
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let running = {
        let (read_models, store) = (read_models.clone(), store.clone());
        tokio::spawn(async move {
            let mut first = true;
            // The first progress report parks the rebuild until the test lets it go.
            let mut hold = move |_| {
                if std::mem::take(&mut first) {
                    entered_tx.send(()).unwrap();
                    go_rx.recv_timeout(WAIT).unwrap();
                }
            };
            rebuild(&read_models, store.as_ref(), &["event_count"], &mut hold).await
        })
    };
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(WAIT))
        .await
        .unwrap()
        .unwrap();

    let err = verify(&read_models, store.as_ref(), "event_count")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProjectionError::RebuildInProgress(ref n) if n == "event_count"),
        "{err}"
    );
    assert!(read_models.status(store.as_ref()).await.unwrap()[0].rebuilding);

    go_tx.send(()).unwrap();
    let reports = running.await.unwrap().unwrap();
    assert_eq!(reports[0].generation, 1);
    assert!(
        verify(&read_models, store.as_ref(), "event_count")
            .await
            .unwrap()
            .matches
    );
}
