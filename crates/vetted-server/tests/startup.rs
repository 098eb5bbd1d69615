//! Engine start-up: read models left by an earlier version in another row layout are rebuilt
//! before the node serves.
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
            .live_tree("applicant_view")
            .expect("live tree")
            .get(b"v/old-row")
            .expect("read"),
        None,
        "the old rows are gone with their generation"
    );
    engine.shutdown().await;
}
