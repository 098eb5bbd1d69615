//! Read models rebuilt into base run files: what they serve equals what the live runner folds
//! event by event, before and after more events land in the tree over the base, across a
//! restart, and a base file that goes missing is found and rebuilt.
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;
use vetted_domain::{AppKey, ApplicantId, ApplicantStatus};
use vetted_projections::sample::{self, Append};
use vetted_projections::{digest_table, rebuild, verify, ListFilter, Page, ReadModels, Runner};
use vetted_store::{EventStore, ExpectedVersion, SledStore};

const WAIT: Duration = Duration::from_secs(20);

fn app() -> AppKey {
    AppKey(Uuid::from_u128(0x0a99_0000_0000_4000_8000_0000_0000_0002))
}

async fn append_all(store: &dyn EventStore, appends: &[Append]) -> u64 {
    let mut head = 0;
    for a in appends {
        head = store
            .append(&a.stream, ExpectedVersion::Any, a.events.clone())
            .await
            .unwrap()
            .last_position;
    }
    head
}

fn read_models_in(dir: &Path) -> ReadModels {
    let db = vetted_store::open_db(&dir.join("read-models")).unwrap();
    ReadModels::open_in(db, &dir.join("runs")).unwrap()
}

/// Every built-in read model holds the same rows in both, and serves the same answers.
fn assert_same(based: &ReadModels, reference: &ReadModels, ids: &[ApplicantId]) {
    let app = app().to_string();
    for name in reference.names() {
        let a = digest_table(&based.live_table(name).unwrap(), |_| true).unwrap();
        let b = digest_table(&reference.live_table(name).unwrap(), |_| true).unwrap();
        assert_eq!(a, b, "{name}");
        assert!(a.rows > 0, "{name} has rows");
    }
    for id in ids {
        assert_eq!(
            based.get_view(&app, id).unwrap(),
            reference.get_view(&app, id).unwrap()
        );
        assert_eq!(
            based.timeline(&app, id).unwrap(),
            reference.timeline(&app, id).unwrap()
        );
    }
    let mut filters = vec![ListFilter::default()];
    filters.extend(ApplicantStatus::ALL.iter().map(|s| ListFilter {
        status: Some(*s),
        ..ListFilter::default()
    }));
    for filter in filters {
        let mut cursor = None;
        loop {
            let page = Page {
                limit: 7,
                cursor: cursor.clone(),
            };
            let a = based.list(&app, &filter, &page).unwrap();
            let b = reference.list(&app, &filter, &page).unwrap();
            assert_eq!(a, b, "{filter:?}");
            match a.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    let today = Utc::now().date_naive();
    let from = today - chrono::Duration::days(10);
    let to = today + chrono::Duration::days(10);
    assert_eq!(
        based.dashboard(&app, from, to).unwrap(),
        reference.dashboard(&app, from, to).unwrap()
    );
    assert_eq!(
        based.reviewer_queues(&app).unwrap(),
        reference.reviewer_queues(&app).unwrap()
    );
}

fn applicants(appends: &[Append]) -> Vec<ApplicantId> {
    let ids: BTreeSet<String> = appends.iter().map(|a| a.stream.clone()).collect();
    ids.iter()
        .filter_map(|s| ApplicantId::from_stream(s))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_into_base_files_serves_what_the_live_fold_serves_before_and_after_new_events_and_a_restart(
) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(&dir.path().join("log")).unwrap());
    let appends = sample::population(31, app(), 160, Utc::now(), 3);
    let types: BTreeSet<&str> = appends
        .iter()
        .flat_map(|a| a.events.iter().map(|e| e.event_type.as_str()))
        .collect();
    for rare in [
        "StepReactivated",
        "FlowRestarted",
        "WarningResolved",
        "ReviewerUnassigned",
    ] {
        assert!(types.contains(rare), "{rare} in {types:?}");
    }
    let ids = applicants(&appends);
    let quarter = appends.len() / 4;
    let (before, rest) = appends.split_at(2 * quarter);
    let (during, after) = rest.split_at(quarter);
    append_all(store.as_ref(), before).await;

    // The reference: the live runner alone, event by event, rows in sled only.
    let reference =
        Arc::new(ReadModels::open(sled::Config::new().temporary(true).open().unwrap()).unwrap());
    let reference_runner = Runner::start(reference.clone(), store.clone());
    let based = Arc::new(read_models_in(dir.path()));
    let runner = Runner::start(based.clone(), store.clone());

    // Rebuilt online while a client keeps appending.
    let writer = {
        let (store, during) = (store.clone(), during.to_vec());
        tokio::spawn(async move { append_all(store.as_ref(), &during).await })
    };
    let names = based.names();
    let reports = rebuild(&based, store.as_ref(), &names, &mut |_| {})
        .await
        .unwrap();
    assert!(reports.iter().all(|r| r.generation == 1));
    let head = writer.await.unwrap();
    runner.wait_for(head, WAIT).await.unwrap();
    reference_runner.wait_for(head, WAIT).await.unwrap();
    for name in &names {
        assert!(based.live_table(name).unwrap().has_base(), "{name}");
    }
    assert_same(&based, &reference, &ids);

    // More events through the tree over the base: status moves remove index rows the base
    // holds, reviewers come and go, timelines grow.
    let head = append_all(store.as_ref(), after).await;
    runner.wait_for(head, WAIT).await.unwrap();
    reference_runner.wait_for(head, WAIT).await.unwrap();
    let tombstones = based
        .live_table("applicant_list")
        .unwrap()
        .tree()
        .iter()
        .values()
        .filter(|v| v.as_ref().is_ok_and(|v| v.as_ref() == [0]))
        .count();
    assert!(
        tombstones > 0,
        "status moves removed index rows of the base"
    );
    assert_same(&based, &reference, &ids);
    for name in &names {
        assert!(
            verify(&based, store.as_ref(), name).await.unwrap().matches,
            "{name}"
        );
    }
    runner.stop().await;

    // The next start opens the same bases.
    drop(based);
    let reopened = read_models_in(dir.path());
    assert!(reopened.stale_layouts().unwrap().is_empty());
    assert_same(&reopened, &reference, &ids);
    reference_runner.stop().await;
}

#[tokio::test]
async fn a_missing_base_file_marks_its_read_model_for_a_rebuild_and_the_rebuild_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("log")).unwrap();
    let appends = sample::population(5, app(), 40, Utc::now(), 1);
    let ids = applicants(&appends);
    append_all(&store, &appends).await;
    let read_models = read_models_in(dir.path());
    let names = read_models.names();
    let reports = rebuild(&read_models, &store, &names, &mut |_| {})
        .await
        .unwrap();
    for report in &reports {
        // Taken as the rows were written, it is the digest of the generation as read.
        let read = digest_table(&read_models.live_table(&report.projection).unwrap(), |_| {
            true
        });
        assert_eq!(report.digest, read.unwrap(), "{}", report.projection);
    }
    let before = digest_table(&read_models.live_table("timeline").unwrap(), |_| true).unwrap();
    drop(read_models);

    let runs = dir.path().join("runs");
    std::fs::remove_file(runs.join("timeline-g1.run")).unwrap();
    // Leftovers of a rebuild that never switched: removed by the next rebuild.
    std::fs::write(runs.join("timeline-g7.run.tmp"), b"half written").unwrap();
    std::fs::write(runs.join("timeline-g9.run"), b"never recorded").unwrap();

    let read_models = read_models_in(dir.path());
    assert_eq!(read_models.stale_layouts().unwrap(), vec!["timeline"]);
    let err = read_models
        .timeline(&app().to_string(), &ids[0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("rebuild"), "{err}");

    rebuild(&read_models, &store, &["timeline"], &mut |_| {})
        .await
        .unwrap();
    assert!(read_models.stale_layouts().unwrap().is_empty());
    let after = digest_table(&read_models.live_table("timeline").unwrap(), |_| true).unwrap();
    assert_eq!(before, after);
    let mut files: Vec<String> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with("timeline-"))
        .collect();
    files.sort();
    assert_eq!(files, vec!["timeline-g2.run"]);
    assert!(!read_models
        .timeline(&app().to_string(), &ids[0])
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn a_log_too_large_for_the_rebuild_memory_is_rebuilt_a_batch_at_a_time_to_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("log")).unwrap();
    append_all(&store, &sample::population(6, app(), 40, Utc::now(), 1)).await;
    let in_memory = read_models_in(dir.path());
    let names = in_memory.names();
    rebuild(&in_memory, &store, &names, &mut |_| {})
        .await
        .unwrap();
    let small = ReadModels::open_in(
        sled::Config::new().temporary(true).open().unwrap(),
        &dir.path().join("small-runs"),
    )
    .unwrap()
    .with_rebuild_memory(1024);
    rebuild(&small, &store, &names, &mut |_| {}).await.unwrap();
    for name in &names {
        let a = digest_table(&in_memory.live_table(name).unwrap(), |_| true).unwrap();
        let b = digest_table(&small.live_table(name).unwrap(), |_| true).unwrap();
        assert_eq!(a, b, "{name}");
        assert!(in_memory.live_table(name).unwrap().has_base());
        assert!(
            !small.live_table(name).unwrap().has_base(),
            "{name} was rebuilt through its tree"
        );
    }
}
