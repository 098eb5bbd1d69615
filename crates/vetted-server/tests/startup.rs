//! Engine start-up: read models left by an earlier version in another row layout, or whose
//! base file went missing, are rebuilt before the node serves.
use vetted_server::{Config, Engine};

#[tokio::test]
async fn start_rebuilds_read_models_written_in_an_older_row_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // What an earlier version left: a JSON row in generation 0, no layout recorded.
        let db = vetted_store::open_db(dir.path()).expect("sled opens");
        let generations = vetted_projections::Generations::open(&db).expect("generations");
        let tree = generations.tree("applicant_view", 0).expect("tree");
        tree.insert(b"v/old-row", br#"{"old":"json"}"#.to_vec())
            .expect("insert");
        db.flush().expect("flush");
    }
    let engine = Engine::open(Config::for_data_dir(dir.path()))
        .await
        .expect("engine opens");
    assert_eq!(
        engine.read_models.stale_layouts().expect("layouts"),
        vec!["applicant_view"]
    );
    engine.start().await.expect("engine starts");
    assert!(
        engine
            .read_models
            .stale_layouts()
            .expect("layouts")
            .is_empty(),
        "start rebuilt the stale read model before serving"
    );
    assert_eq!(
        engine
            .read_models
            .live_table("applicant_view")
            .expect("live rows")
            .get(b"v/old-row")
            .expect("read"),
        None,
        "the old rows are gone with their generation"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn start_rebuilds_a_read_model_whose_base_file_went_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(Config::for_data_dir(dir.path()))
        .await
        .expect("engine opens");
    engine.start().await.expect("engine starts");
    let mut rng = vetted_projections::sample::Rng::new(3);
    let app = vetted_domain::AppKey(uuid::Uuid::from_u128(3));
    let flow = vetted_projections::sample::kyc_basic();
    for append in vetted_projections::sample::lifecycle(&mut rng, app, &flow, chrono::Utc::now(), 0)
    {
        engine
            .store
            .append(
                &append.stream,
                vetted_store::ExpectedVersion::Any,
                append.events,
            )
            .await
            .expect("append");
    }
    let demo = engine
        .read_models
        .names()
        .into_iter()
        .filter(|n| *n == "timeline")
        .collect::<Vec<_>>();
    let reports = vetted_projections::rebuild(
        &engine.read_models,
        engine.store.as_ref(),
        &demo,
        &mut |_| {},
    )
    .await
    .expect("rebuild");
    let generation = reports[0].generation;
    engine.shutdown().await;
    drop(engine);

    let base = dir
        .path()
        .join("read-models")
        .join(format!("timeline-g{generation}.run"));
    std::fs::remove_file(&base).expect("the rebuild wrote a base file");
    let engine = Engine::open(Config::for_data_dir(dir.path()))
        .await
        .expect("engine opens");
    assert_eq!(
        engine.read_models.stale_layouts().expect("layouts"),
        vec!["timeline"]
    );
    engine.start().await.expect("engine starts");
    assert!(engine
        .read_models
        .stale_layouts()
        .expect("layouts")
        .is_empty());
    assert!(engine.read_models.live_table("timeline").is_ok());
    engine.shutdown().await;
}
