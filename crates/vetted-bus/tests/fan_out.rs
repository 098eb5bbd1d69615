//! The publisher projection and the subscriber, against a real nats-server and the sled store.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{event, eventually};
use vetted_bus::subjects::{
    self, HEADER_GLOBAL_POSITION, HEADER_HASH, HEADER_SCHEMA_VERSION, HEADER_STREAM_VERSION,
};
use vetted_bus::testing::NatsServer;
use vetted_bus::{print_events, EventSubscriber, NatsPublisher, PublisherConfig, SubscriberConfig};
use vetted_store::{EventStore, ExpectedVersion, MemoryStore, RecordedEvent};

const APP: &str = "0190aaaa-0000-7000-8000-000000000001";

fn db() -> (tempfile::TempDir, sled::Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    (dir, db)
}

/// Starts the publisher in the background; dropping the returned sender stops it.
fn start_publisher(
    client: async_nats::Client,
    store: Arc<dyn EventStore>,
    db: &sled::Db,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let publisher = NatsPublisher::new(client, store, db, PublisherConfig::default()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        publisher
            .run(async move {
                let _ = stopped.await;
            })
            .await
            .expect("publisher runs");
    });
    (stop, task)
}

async fn stream_messages(client: &async_nats::Client) -> u64 {
    let js = async_nats::jetstream::new(client.clone());
    match js.get_stream(subjects::EVENTS_STREAM).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

fn checkpoint(db: &sled::Db) -> u64 {
    db.open_tree("checkpoints")
        .unwrap()
        .get("nats_publisher")
        .unwrap()
        .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_applicant_event_is_published_once_on_its_subject_with_envelope_headers() {
    let server = NatsServer::start().expect("nats-server starts");
    let client = vetted_bus::connect(&server.url()).await.unwrap();
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    store
        .append(
            "applicant-a1",
            ExpectedVersion::NoStream,
            vec![event(APP, "ApplicantCreated", 0)],
        )
        .await
        .unwrap();
    store
        .append(
            "flow-kyc",
            ExpectedVersion::Any,
            vec![event(APP, "FlowDefined", 0)],
        )
        .await
        .unwrap();
    store
        .append(
            "applicant-a1",
            ExpectedVersion::Exact(0),
            vec![event(APP, "StepPassed", 1)],
        )
        .await
        .unwrap();
    let (_dir, db) = db();
    let (stop, task) = start_publisher(client.clone(), store.clone(), &db);

    eventually(
        Duration::from_secs(10),
        "the checkpoint to reach 3",
        || async { (checkpoint(&db) == 3).then_some(()) },
    )
    .await;
    assert_eq!(
        stream_messages(&client).await,
        2,
        "only applicant streams are fanned out"
    );

    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream(subjects::EVENTS_STREAM).await.unwrap();
    let msg = stream.get_raw_message(2).await.unwrap();
    assert_eq!(
        msg.subject.as_str(),
        format!("vetted.events.{APP}.a1.StepPassed")
    );
    let body: RecordedEvent = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(
        msg.headers.get("Nats-Msg-Id").unwrap().as_str(),
        body.event_id.to_string()
    );
    assert_eq!(
        msg.headers.get(HEADER_GLOBAL_POSITION).unwrap().as_str(),
        "3"
    );
    assert_eq!(
        msg.headers.get(HEADER_STREAM_VERSION).unwrap().as_str(),
        "1"
    );
    assert_eq!(
        msg.headers.get(HEADER_SCHEMA_VERSION).unwrap().as_str(),
        "1"
    );
    assert_eq!(msg.headers.get(HEADER_HASH).unwrap().as_str(), body.hash);

    // Live events follow; a restarted publisher (checkpoint lost) republishes nothing twice.
    store
        .append(
            "applicant-a2",
            ExpectedVersion::NoStream,
            vec![event(APP, "ApplicantCreated", 0)],
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the live event", || async {
        (checkpoint(&db) == 4).then_some(())
    })
    .await;
    let _ = stop.send(());
    task.await.unwrap();
    db.open_tree("checkpoints").unwrap().clear().unwrap();
    let (stop, task) = start_publisher(client.clone(), store.clone(), &db);
    eventually(
        Duration::from_secs(10),
        "catch-up after losing the checkpoint",
        || async { (checkpoint(&db) == 4).then_some(()) },
    )
    .await;
    assert_eq!(
        stream_messages(&client).await,
        3,
        "no event is published twice"
    );
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_nats_is_down_the_publisher_waits_then_resumes_losing_and_reordering_nothing() {
    let mut server = NatsServer::start().expect("nats-server starts");
    let client = vetted_bus::connect(&server.url()).await.unwrap();
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let (_dir, db) = db();
    let (stop, task) = start_publisher(client.clone(), store.clone(), &db);
    for i in 0..100u64 {
        store
            .append(
                &format!("applicant-{}", i % 7),
                ExpectedVersion::Any,
                vec![event(APP, "Noted", i)],
            )
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(10), "the first 100", || async {
        (checkpoint(&db) == 100).then_some(())
    })
    .await;

    server.kill();
    for i in 100..400u64 {
        store
            .append(
                &format!("applicant-{}", i % 7),
                ExpectedVersion::Any,
                vec![event(APP, "Noted", i)],
            )
            .await
            .unwrap();
    }
    assert!(checkpoint(&db) <= 400);
    server.restart().expect("nats-server restarts");
    eventually(
        Duration::from_secs(30),
        "the publisher to catch up after the outage",
        || async { (checkpoint(&db) == 400).then_some(()) },
    )
    .await;
    let _ = stop.send(());
    task.await.unwrap();

    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream(subjects::EVENTS_STREAM).await.unwrap();
    let info = stream.get_info().await.unwrap();
    assert_eq!(info.state.messages, 400, "nothing lost, nothing duplicated");
    let mut positions = Vec::new();
    for seq in 1..=400 {
        let m = stream.get_raw_message(seq).await.unwrap();
        positions.push(
            m.headers
                .get(HEADER_GLOBAL_POSITION)
                .unwrap()
                .as_str()
                .parse::<u64>()
                .unwrap(),
        );
    }
    assert_eq!(
        positions,
        (1..=400).collect::<Vec<_>>(),
        "the stream is in log order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscriber_filtered_by_applicant_resumes_where_it_stopped() {
    let server = NatsServer::start().expect("nats-server starts");
    let client = vetted_bus::connect(&server.url()).await.unwrap();
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let (_dir, db) = db();
    let (stop, task) = start_publisher(client.clone(), store.clone(), &db);
    for i in 0..10u64 {
        let applicant = if i % 2 == 0 {
            "applicant-even"
        } else {
            "applicant-odd"
        };
        store
            .append(
                applicant,
                ExpectedVersion::Any,
                vec![event(APP, "Noted", i)],
            )
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(10), "publishing", || async {
        (checkpoint(&db) == 10).then_some(())
    })
    .await;

    let config = SubscriberConfig {
        durable: "audit-even".into(),
        filter_subject: subjects::applicant_filter(APP, "even"),
        ..Default::default()
    };
    let subscriber = EventSubscriber::new(client.clone(), config.clone())
        .await
        .unwrap();
    let mut out = Vec::new();
    let printed = print_events(&subscriber, &mut out, Some(3), std::future::pending())
        .await
        .unwrap();
    assert_eq!(printed, 3);
    drop(subscriber);

    let again = EventSubscriber::new(client.clone(), config).await.unwrap();
    let printed = print_events(&again, &mut out, Some(2), std::future::pending())
        .await
        .unwrap();
    assert_eq!(printed, 2);
    let lines: Vec<RecordedEvent> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().all(|e| e.stream_id == "applicant-even"),
        "the filter keeps one applicant"
    );
    assert_eq!(
        lines.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4],
        "the second run resumes after the last acknowledged event"
    );
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_gets_the_same_event_again() {
    let server = NatsServer::start().expect("nats-server starts");
    let client = vetted_bus::connect(&server.url()).await.unwrap();
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let (_dir, db) = db();
    let (stop, task) = start_publisher(client.clone(), store.clone(), &db);
    store
        .append(
            "applicant-h",
            ExpectedVersion::NoStream,
            vec![event(APP, "ApplicantCreated", 0)],
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "publishing", || async {
        (checkpoint(&db) == 1).then_some(())
    })
    .await;

    let config = SubscriberConfig {
        durable: "by-type".into(),
        filter_subject: subjects::event_type_filter("ApplicantCreated"),
        ..Default::default()
    };
    let subscriber = EventSubscriber::new(client.clone(), config).await.unwrap();
    let refused = subscriber
        .run(
            |_event| async { Err::<(), _>("webhook target down") },
            std::future::pending(),
        )
        .await;
    assert!(
        matches!(refused, Err(vetted_bus::BusError::Handler { .. })),
        "{refused:?}"
    );
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_sub, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = subscriber.run(
        move |event| {
            let seen_tx = seen_tx.clone();
            async move { seen_tx.send(event.stream_id).map_err(|e| e.to_string()) }
        },
        async move {
            let _ = stopped.await;
        },
    );
    let check = async {
        let got = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
            .await
            .expect("redelivered");
        let _ = stop_sub.send(());
        got
    };
    let (handled, got) = tokio::join!(run, check);
    assert_eq!(got.as_deref(), Some("applicant-h"));
    assert_eq!(handled.unwrap(), 1);
    let _ = stop.send(());
    task.await.unwrap();
}

/// A store whose first feed meets an unreadable event in the middle of what is ready (a
/// message that does not decode, say) and, as the JetStream feed does, goes on after it.
struct OneBadRead {
    inner: MemoryStore,
    bad_at: u64,
    feeds: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl EventStore for OneBadRead {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<vetted_store::NewEvent>,
    ) -> Result<vetted_store::AppendResult, vetted_store::StoreError> {
        self.inner.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, vetted_store::StoreError> {
        self.inner.read_stream(stream, from_version, max).await
    }
    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, vetted_store::StoreError> {
        self.inner.read_all(from_position, max).await
    }
    async fn stream_version(&self, stream: &str) -> Result<Option<u64>, vetted_store::StoreError> {
        self.inner.stream_version(stream).await
    }
    async fn head(&self) -> Result<u64, vetted_store::StoreError> {
        self.inner.head().await
    }
    fn subscribe_all(&self, from_position: u64) -> vetted_store::EventFeed {
        use futures::StreamExt;
        let feed = self.inner.subscribe_all(from_position);
        if self.feeds.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
            return feed;
        }
        let bad_at = self.bad_at;
        feed.map(move |item| match item {
            Ok(e) if e.global_position == bad_at => Err(vetted_store::StoreError::Backend(
                format!("event at {bad_at} does not decode"),
            )),
            other => other,
        })
        .boxed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_event_in_the_middle_of_a_window_is_published_after_a_resubscribe_not_skipped(
) {
    let server = NatsServer::start().expect("nats-server starts");
    let client = vetted_bus::connect(&server.url()).await.unwrap();
    let memory = MemoryStore::new();
    for n in 0..10 {
        memory
            .append(
                "applicant-w1",
                ExpectedVersion::Any,
                vec![event(APP, "StepPassed", n)],
            )
            .await
            .unwrap();
    }
    let store: Arc<dyn EventStore> = Arc::new(OneBadRead {
        inner: memory,
        bad_at: 5,
        feeds: Default::default(),
    });
    let (_dir, db) = db();
    let (stop, task) = start_publisher(client.clone(), store, &db);
    eventually(
        Duration::from_secs(10),
        "the checkpoint to reach 10",
        || async { (checkpoint(&db) == 10).then_some(()) },
    )
    .await;
    assert_eq!(
        stream_messages(&client).await,
        10,
        "every event published, the unreadable one included once it reads"
    );
    let _ = stop.send(());
    task.await.unwrap();
}
