//! A real local receiver (axum on 127.0.0.1:0) and a real pipeline (SledStore → runner →
//! webhook projector → outbox → delivery worker) for the delivery tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use vetted_domain::AppKey;
use vetted_projections::{sample, ReadModels, Runner};
use vetted_store::{EventStore, ExpectedVersion, RecordedEvent, SledStore};
use vetted_webhooks::outbox::OutboxSource;
use vetted_webhooks::{
    DeliveryConfig, DeliveryWorker, Endpoint, MemoryEndpoints, Outbox, WebhookProjector,
    WorkerHandle,
};

pub const CRYPTO_KEY: &str = "6f1c2a3b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How the receiver answers the `n`-th request (0-based) it gets for one webhook-id.
#[derive(Clone, Copy, Debug)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    pub retry_after: Option<u64>,
}

impl Reply {
    pub fn ok() -> Self {
        Reply {
            status: 200,
            delay: Duration::ZERO,
            retry_after: None,
        }
    }
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            ..Reply::ok()
        }
    }
}

type Behaviour = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    pub answered: u16,
}

impl Received {
    pub fn webhook_id(&self) -> String {
        self.header("webhook-id")
    }
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    per_id: Arc<Mutex<HashMap<String, usize>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    in_flight: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
}

async fn hook(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let now = Instant::now();
    let webhook_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let n = {
        let mut per_id = receiver.per_id.lock().unwrap();
        let n = per_id.entry(webhook_id).or_insert(0);
        *n += 1;
        *n - 1
    };
    let reply = (receiver.behaviour.lock().unwrap().clone())(n);
    let current = receiver.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    receiver.max_in_flight.fetch_max(current, Ordering::SeqCst);
    if !reply.delay.is_zero() {
        // The receiver being slow is the behaviour under test, not a wait in the test.
        tokio::time::sleep(reply.delay).await;
    }
    receiver.in_flight.fetch_sub(1, Ordering::SeqCst);
    receiver.received.lock().unwrap().push(Received {
        headers,
        body,
        at: now,
        answered: reply.status,
    });
    let status = StatusCode::from_u16(reply.status).unwrap();
    match reply.retry_after {
        Some(secs) => (status, [("retry-after", secs.to_string())]).into_response(),
        None => status.into_response(),
    }
}

impl Receiver {
    /// Starts a receiver answering every request with `behaviour(n)`.
    pub async fn start(behaviour: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let receiver = Receiver {
            url,
            received: Arc::default(),
            per_id: Arc::default(),
            behaviour: Arc::new(Mutex::new(Arc::new(behaviour))),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    pub fn set_behaviour(&self, behaviour: impl Fn(usize) -> Reply + Send + Sync + 'static) {
        *self.behaviour.lock().unwrap() = Arc::new(behaviour);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Requests per webhook-id, in arrival order.
    pub fn by_id(&self) -> BTreeMap<String, Vec<Received>> {
        let mut map: BTreeMap<String, Vec<Received>> = BTreeMap::new();
        for r in self.received() {
            map.entry(r.webhook_id()).or_default().push(r);
        }
        map
    }

    /// Webhook ids that got a 2xx.
    pub fn delivered_ids(&self) -> std::collections::BTreeSet<String> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .map(|r| r.webhook_id())
            .collect()
    }
}

/// Polls `condition` every few milliseconds until it holds; panics with `what` after `within`.
pub async fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn endpoint(url: &str) -> Endpoint {
    let headers = BTreeMap::from([("x-tenant".to_owned(), "demo".to_owned())]);
    Endpoint::new(url, headers, CRYPTO_KEY, SECRET).unwrap()
}

/// The whole outgoing side over one data directory.
pub struct Pipeline {
    pub store: SledStore,
    pub read_models: Arc<ReadModels>,
    pub outbox: Outbox,
    runner: Runner,
    worker: WorkerHandle,
}

impl Pipeline {
    pub async fn start(
        dir: &Path,
        endpoints: Arc<MemoryEndpoints>,
        config: DeliveryConfig,
    ) -> Pipeline {
        Self::start_failing_intakes(dir, endpoints, config, 0).await
    }

    /// Like [`Pipeline::start`], with the first `failures` intakes failing as if the outbox's
    /// source could not be read (a generation switched under it, a storage error).
    pub async fn start_failing_intakes(
        dir: &Path,
        endpoints: Arc<MemoryEndpoints>,
        config: DeliveryConfig,
        failures: usize,
    ) -> Pipeline {
        let store = SledStore::open(dir).unwrap();
        let db = store.db().clone();
        let projector: Arc<dyn vetted_projections::Projection> = Arc::new(WebhookProjector);
        let read_models =
            Arc::new(ReadModels::with_projections(db.clone(), vec![projector]).unwrap());
        let runner = Runner::start(read_models.clone(), Arc::new(store.clone()));
        let live = read_models.clone();
        let tries = AtomicUsize::new(0);
        let source = OutboxSource::Resolve(Arc::new(move || {
            if tries.fetch_add(1, Ordering::SeqCst) < failures {
                return Err("the outbox source is not readable (injected)".into());
            }
            live.live_tree(vetted_webhooks::projector::PROJECTION_NAME)
                .map_err(|e| e.to_string())
        }));
        let outbox = Outbox::open(&db, source).unwrap();
        let worker = DeliveryWorker::new(outbox.clone(), endpoints, config)
            .unwrap()
            .spawn();
        Pipeline {
            store,
            read_models,
            outbox,
            runner,
            worker,
        }
    }

    /// Stops the worker and the runner and releases the database (so it can be reopened).
    pub async fn stop(self) {
        self.worker.stop().await.unwrap();
        self.runner.stop().await;
    }

    pub async fn append_all(&self, appends: &[sample::Append]) {
        append_all(&self.store, appends).await;
    }

    pub async fn log(&self) -> Vec<RecordedEvent> {
        self.store.read_all(1, usize::MAX).await.unwrap()
    }
}

pub async fn append_all(store: &SledStore, appends: &[sample::Append]) {
    for a in appends {
        store
            .append(&a.stream, ExpectedVersion::Any, a.events.clone())
            .await
            .unwrap();
    }
}

/// `applicants` generated lifecycles of `app` (every event comes out of `decide`).
pub fn lifecycles(seed: u64, app: AppKey, applicants: usize) -> Vec<sample::Append> {
    sample::population(
        seed,
        app,
        applicants,
        Utc::now() - chrono::Duration::days(1),
        1,
    )
}

/// The spec's mapping table, written independently of the projector: the webhook type an
/// event must trigger.
pub fn expected_webhook(event: &RecordedEvent) -> Option<&'static str> {
    if !event.stream_id.starts_with("applicant-") {
        return None;
    }
    Some(match event.event_type.as_str() {
        "ApplicantCreated" => "applicantCreated",
        "ReviewerAssigned" => "applicantInReview",
        "StepPassed" => "applicantStepPassed",
        "StatusChanged" => match event.payload["to"].as_str()? {
            "INCOMPLETE" => "applicantIncomplete",
            "IN_PROGRESS" => "applicantInProgress",
            "COMPLETED" => "applicantCompleted",
            "ON_HOLD" => "applicantOnHold",
            "APPROVED" => "applicantApproved",
            "DECLINED" => "applicantRejected",
            _ => return None,
        },
        _ => return None,
    })
}

/// Fast retries for tests: `retries` delays of `ms` milliseconds.
pub fn fast(ms: u64, retries: usize) -> DeliveryConfig {
    DeliveryConfig {
        poll_interval_ms: 2,
        ..DeliveryConfig::with_schedule(vec![ms; retries])
    }
}
