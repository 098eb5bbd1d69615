//! The engine: the event store, the read models and their runner, the webhook worker and the
//! NATS publisher, wired together for `vetted serve`, the offline commands and the tests.
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use vetted_domain::{
    AppKey, ApplicantId, Application, Flow, FlowKind, FlowSettings, StepSpec, StepType,
};
use vetted_projections::{
    replay, ApplicantView, ListFilter, Page, Projection, ReadModels, Runner, TimelineEntry,
};
use vetted_store::{EventStore, SledStore};

use crate::api::extract::AppState;
use crate::config::{Config, StoreKind};
use crate::error::ApiError;
use crate::keys::ApplicationSecrets;
use crate::registry::{Registry, RegistryProjection, REGISTRY};
use crate::service::{Meta, NewApplication, NewFlow};

/// How long a command waits for the read models to show its own events before answering.
const READ_YOUR_WRITES: Duration = Duration::from_secs(5);

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot open the data directory {dir}: {reason}")]
    DataDir { dir: String, reason: String },
    #[error(transparent)]
    Store(#[from] vetted_store::StoreError),
    #[error(transparent)]
    Projection(#[from] vetted_projections::ProjectionError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// Everything a running Vetted node holds.
pub struct Engine {
    pub config: Config,
    pub store: Arc<dyn EventStore>,
    pub db: sled::Db,
    pub read_models: Arc<ReadModels>,
    pub registry: Registry,
    /// Webhook deliveries (the worker's state over the webhook projector's outbox rows).
    pub outbox: vetted_webhooks::Outbox,
    webhook_worker: tokio::sync::Mutex<Option<vetted_webhooks::WorkerHandle>>,
    runner: tokio::sync::Mutex<Option<Runner>>,
    /// Background tasks (NATS publisher, webhook worker) and the signal that stops them.
    background: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    stop: tokio::sync::watch::Sender<bool>,
    /// Progress of online rebuilds by projection name, for `GET /v1/projections`.
    rebuild_progress: Arc<
        std::sync::Mutex<std::collections::HashMap<String, vetted_projections::RebuildProgress>>,
    >,
}

/// The read-model projections every node runs (the registry first: tenancy needs it).
pub fn projections() -> Vec<Arc<dyn Projection>> {
    let mut all: Vec<Arc<dyn Projection>> = vec![Arc::new(RegistryProjection)];
    all.extend(vetted_projections::applicant_view::read_models());
    all.push(Arc::new(vetted_webhooks::WebhookProjector));
    all
}

impl Engine {
    /// Opens the data directory and the configured store; does not start the runners.
    pub async fn open(config: Config) -> Result<Arc<Engine>, EngineError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| EngineError::DataDir {
            dir: config.data_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let db = vetted_store::open_db(&config.data_dir).map_err(|e| EngineError::DataDir {
            dir: config.data_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let store: Arc<dyn EventStore> = match config.store {
            StoreKind::Sled => Arc::new(SledStore::with_db_in(db.clone(), &config.data_dir)?),
            StoreKind::Jetstream => {
                let url = config.nats_url.clone().ok_or_else(|| {
                    EngineError::Config("--store jetstream needs VETTED_NATS_URL".into())
                })?;
                Arc::new(
                    vetted_bus::JetStreamStore::connect(
                        &url,
                        vetted_bus::JetStreamStoreConfig {
                            replicas: config.nats_replicas,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| {
                        EngineError::Config(format!(
                            "cannot open the JetStream log at {}: {e}",
                            vetted_bus::redacted_urls(&url)
                        ))
                    })?,
                )
            }
        };
        // Rebuilt read models keep their rows in base files here (see vetted-projections' table).
        let read_models = Arc::new(
            ReadModels::with_projections_in(
                db.clone(),
                &config.data_dir.join("read-models"),
                projections(),
            )?
            .with_rebuild_memory(config.rebuild_memory_mib.saturating_mul(1 << 20)),
        );
        let registry = Registry::new(read_models.clone());
        let outbox = vetted_webhooks::Outbox::open(
            &db,
            vetted_webhooks::OutboxSource::live_projection(read_models.clone()),
        )
        .map_err(|e| EngineError::Config(format!("cannot open the webhook outbox: {e}")))?;
        Ok(Arc::new(Engine {
            config,
            store,
            db,
            read_models,
            registry,
            outbox,
            webhook_worker: tokio::sync::Mutex::new(None),
            runner: tokio::sync::Mutex::new(None),
            background: tokio::sync::Mutex::new(Vec::new()),
            stop: tokio::sync::watch::Sender::new(false),
            rebuild_progress: Arc::default(),
        }))
    }

    /// Rebuilds the read models whose live rows an earlier version wrote in another layout,
    /// before the runner applies new events to them (they could not be read meanwhile). The
    /// node is not listening yet, so progress goes to the log every 10 seconds.
    async fn rebuild_stale_layouts(&self) -> Result<(), EngineError> {
        let stale = self.read_models.stale_layouts()?;
        if stale.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            projections = ?stale,
            "read models were written with an older row layout; rebuilding them before serving"
        );
        let mut logged = std::time::Instant::now();
        let mut progress = |p: vetted_projections::RebuildProgress| {
            if logged.elapsed() >= std::time::Duration::from_secs(10) {
                logged = std::time::Instant::now();
                tracing::info!(done = p.done, total = p.total, "rebuilding read models");
            }
        };
        let reports = vetted_projections::rebuild(
            &self.read_models,
            self.store.as_ref(),
            &stale,
            &mut progress,
        )
        .await?;
        for report in reports {
            tracing::info!(
                projection = %report.projection,
                generation = report.generation,
                checkpoint = report.checkpoint,
                elapsed_ms = report.elapsed_ms,
                "read model rebuilt in the current layout"
            );
        }
        Ok(())
    }

    /// Starts the projection runner and, when configured, the NATS publisher (idempotent).
    ///
    /// Fails, serving nothing, when a read model written in an older row layout cannot be
    /// rebuilt: its rows could not be read.
    pub async fn start(self: &Arc<Self>) -> Result<(), EngineError> {
        let mut runner = self.runner.lock().await;
        if runner.is_some() {
            return Ok(());
        }
        self.rebuild_stale_layouts().await?;
        *runner = Some(Runner::start(self.read_models.clone(), self.store.clone()));
        let directory = Arc::new(crate::registry::RegistryEndpoints::new(
            self.registry.clone(),
        ));
        match vetted_webhooks::DeliveryWorker::new(
            self.outbox.clone(),
            directory,
            self.delivery_config(),
        ) {
            Ok(worker) => *self.webhook_worker.lock().await = Some(worker.spawn()),
            Err(e) => {
                tracing::error!(error = %e, "webhook worker cannot start; deliveries wait in the outbox")
            }
        }
        if let Some(url) = self.config.nats_url.clone() {
            let task = tokio::spawn(publish_to_nats(self.clone(), url));
            self.background.lock().await.push(task);
        }
        Ok(())
    }

    /// A future that completes when the engine is asked to stop.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Stops the background tasks and the runner after its current batch, and flushes.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        if let Some(worker) = self.webhook_worker.lock().await.take() {
            if let Err(e) = worker.stop().await {
                tracing::warn!(error = %e, "webhook worker stopped with an error");
            }
        }
        for task in std::mem::take(&mut *self.background.lock().await) {
            let _ = task.await;
        }
        if let Some(runner) = self.runner.lock().await.take() {
            runner.stop().await;
        }
        let _ = self.db.flush_async().await;
    }

    /// On a data directory with no application, creates the default application and flow and
    /// returns them with the secrets (printed once by `vetted serve`).
    pub async fn bootstrap(
        self: &Arc<Self>,
    ) -> Result<Option<(Application, ApplicationSecrets, Flow)>, ApiError> {
        let head = self.store.head().await?;
        self.read_models
            .wait_for_projection(REGISTRY, head, Duration::from_secs(60))
            .await
            .map_err(|e| ApiError::internal(format!("the registry did not catch up: {e}")))?;
        if !self.registry.applications()?.is_empty() {
            return Ok(None);
        }
        let meta = Meta::system();
        let (app, secrets) = self
            .create_application(
                NewApplication {
                    name: "Default".into(),
                    webhook_url: None,
                    webhook_headers: Default::default(),
                    redirect_url: None,
                    mode: None,
                },
                &meta,
            )
            .await?;
        let flow = self
            .create_flow(&app.app_key, default_flow(), &meta)
            .await?;
        Ok(Some((app, secrets, flow)))
    }

    pub(crate) async fn wait_for_registry(&self, position: u64) -> Result<(), ApiError> {
        self.read_models
            .wait_for_projection(REGISTRY, position, READ_YOUR_WRITES)
            .await
            .map_err(|e| ApiError::internal(format!("the registry is lagging: {e}")))
    }

    /// Waits (bounded) until every projection shows the event at `position`.
    pub(crate) async fn wait_for_read_models(&self, position: u64) {
        if let Err(e) = self.read_models.wait_for(position, READ_YOUR_WRITES).await {
            tracing::warn!(position, error = %e, "read models lag behind the log");
        }
    }

    /// The live applicant view (404 when absent or another application's).
    pub async fn applicant_view(
        &self,
        app_key: &AppKey,
        id: &ApplicantId,
    ) -> Result<ApplicantView, ApiError> {
        self.read_models
            .get_view(&app_key.to_string(), id)?
            .ok_or_else(|| ApiError::not_found(format!("no applicant {id} in this application")))
    }

    /// The applicant view as it was at `t`, replayed from the log.
    pub async fn applicant_view_as_of(
        &self,
        app_key: &AppKey,
        id: &ApplicantId,
        t: DateTime<Utc>,
    ) -> Result<ApplicantView, ApiError> {
        replay::view_as_of(self.store.as_ref(), &app_key.to_string(), id, Some(t))
            .await?
            .ok_or_else(|| {
                ApiError::not_found(format!("no applicant {id} in this application as of {t}"))
            })
    }

    /// The live timeline.
    pub async fn timeline(
        &self,
        app_key: &AppKey,
        id: &ApplicantId,
    ) -> Result<Vec<TimelineEntry>, ApiError> {
        self.applicant_view(app_key, id).await?;
        Ok(self.read_models.timeline(&app_key.to_string(), id)?.items)
    }

    /// The timeline as it was at `t`.
    pub async fn timeline_as_of(
        &self,
        app_key: &AppKey,
        id: &ApplicantId,
        t: DateTime<Utc>,
    ) -> Result<Vec<TimelineEntry>, ApiError> {
        self.applicant_view(app_key, id).await?;
        Ok(
            replay::timeline_as_of(self.store.as_ref(), &app_key.to_string(), id, Some(t))
                .await?
                .items,
        )
    }

    /// One page of the applicant list.
    pub async fn list_applicants(
        &self,
        app_key: &AppKey,
        q: crate::api::ListQuery,
    ) -> Result<Value, ApiError> {
        let filter = ListFilter {
            status: q
                .status
                .map(|s| {
                    s.parse()
                        .map_err(|_| ApiError::bad_request(format!("unknown status {s:?}")))
                })
                .transpose()?,
            external_user_id: q.external_user_id,
            created_from: q.created_from.map(|t| parse_time(&t)).transpose()?,
            created_to: q.created_to.map(|t| parse_time(&t)).transpose()?,
        };
        let page = Page {
            limit: q.limit.unwrap_or(50).clamp(1, 500),
            cursor: q.cursor,
        };
        let page = self
            .read_models
            .list(&app_key.to_string(), &filter, &page)
            .map_err(|e| match e {
                vetted_projections::ProjectionError::Other(m) => ApiError::bad_request(m),
                other => other.into(),
            })?;
        Ok(serde_json::to_value(page).unwrap_or_default())
    }

    /// The dashboard of one application over the days of `[from, to]`.
    pub async fn dashboard(
        &self,
        app_key: &AppKey,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Value, ApiError> {
        let d = self
            .read_models
            .dashboard(&app_key.to_string(), from.date_naive(), to.date_naive())
            .map_err(|e| match e {
                vetted_projections::ProjectionError::Other(m) => ApiError::bad_request(m),
                other => other.into(),
            })?;
        Ok(serde_json::to_value(d).unwrap_or_default())
    }

    /// Applicants awaiting `reviewer`'s decision, oldest first.
    pub async fn reviewer_queue(
        &self,
        app_key: &AppKey,
        reviewer: &str,
    ) -> Result<Value, ApiError> {
        let q = self
            .read_models
            .reviewer_queue(&app_key.to_string(), reviewer)?;
        Ok(serde_json::to_value(q).unwrap_or_default())
    }

    /// Checkpoint, head, lag and generation of every projection.
    pub async fn projection_status(&self) -> Result<Value, ApiError> {
        let status = self.read_models.status(self.store.as_ref()).await?;
        let progress = self
            .rebuild_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let items = status
            .into_iter()
            .map(|s| {
                let mut item = serde_json::to_value(&s).unwrap_or_default();
                if let Some(p) = progress.get(&s.name) {
                    item["rebuildProgress"] = json!({ "done": p.done, "total": p.total });
                }
                item
            })
            .collect();
        Ok(Value::Array(items))
    }

    /// Rebuilds projection `name` (or `all`) online into a new generation and switches to it,
    /// calling `progress` after every batch.
    pub async fn rebuild_projections(
        &self,
        name: &str,
        progress: &mut (dyn FnMut(vetted_projections::RebuildProgress) + Send),
    ) -> Result<Value, ApiError> {
        let names = self.projection_names(name)?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let reports =
            vetted_projections::rebuild(&self.read_models, self.store.as_ref(), &names, progress)
                .await?;
        Ok(json!({ "items": reports }))
    }

    /// Rebuilds projection `name` (or `all`) online, for the admin API; its progress shows in
    /// `GET /v1/projections` (`rebuildProgress`) while it runs.
    pub async fn rebuild_projection(&self, name: &str) -> Result<Value, ApiError> {
        let names = self.projection_names(name)?;
        let progress = self.rebuild_progress.clone();
        let shown = names.clone();
        let result = self
            .rebuild_projections(name, &mut move |p| {
                let mut map = progress.lock().unwrap_or_else(|e| e.into_inner());
                for n in &shown {
                    map.insert(n.clone(), p.clone());
                }
            })
            .await;
        let mut map = self
            .rebuild_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for n in &names {
            map.remove(n);
        }
        result
    }

    /// Rebuilds `name` (or `all`) into a scratch generation and compares digests with the live one.
    pub async fn verify_projection(&self, name: &str) -> Result<Value, ApiError> {
        let names = self.projection_names(name)?;
        let mut reports = Vec::new();
        for n in names {
            let report =
                vetted_projections::verify(&self.read_models, self.store.as_ref(), &n).await?;
            reports.push(serde_json::to_value(report).unwrap_or_default());
        }
        Ok(json!({ "items": reports }))
    }

    fn projection_names(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let known = self.read_models.names();
        if name == "all" {
            return Ok(known.iter().map(|n| n.to_string()).collect());
        }
        if known.contains(&name) {
            Ok(vec![name.to_string()])
        } else {
            Err(ApiError::not_found(format!(
                "no projection named {name:?}; known: {}",
                known.join(", ")
            )))
        }
    }

    /// Prometheus text: head, per-projection checkpoint and lag.
    pub async fn metrics_text(&self) -> Result<String, ApiError> {
        let head = self.store.head().await?;
        let status = self.read_models.status(self.store.as_ref()).await?;
        let mut out = String::new();
        out.push_str("# HELP vetted_log_head Global position of the last durable event.\n# TYPE vetted_log_head gauge\n");
        out.push_str(&format!("vetted_log_head {head}\n"));
        out.push_str("# HELP vetted_projection_checkpoint Global position of the last event a projection applied.\n# TYPE vetted_projection_checkpoint gauge\n");
        for s in &status {
            out.push_str(&format!(
                "vetted_projection_checkpoint{{projection=\"{}\"}} {}\n",
                s.name, s.checkpoint
            ));
        }
        out.push_str("# HELP vetted_projection_lag Events in the log a projection has not applied yet.\n# TYPE vetted_projection_lag gauge\n");
        for s in &status {
            out.push_str(&format!(
                "vetted_projection_lag{{projection=\"{}\"}} {}\n",
                s.name, s.lag
            ));
        }
        out.push_str("# HELP vetted_projection_generation Live generation of a projection.\n# TYPE vetted_projection_generation gauge\n");
        for s in &status {
            out.push_str(&format!(
                "vetted_projection_generation{{projection=\"{}\"}} {}\n",
                s.name, s.generation
            ));
        }
        Ok(out)
    }

    fn delivery_config(&self) -> vetted_webhooks::DeliveryConfig {
        let ms = |secs: f64| (secs.max(0.0) * 1000.0).round() as u64;
        vetted_webhooks::DeliveryConfig {
            retry_schedule: self
                .config
                .webhook_retry_schedule
                .iter()
                .map(|s| ms(*s))
                .collect(),
            request_timeout_ms: ms(self.config.webhook_timeout).max(1),
            ..vetted_webhooks::DeliveryConfig::default()
        }
    }

    /// Webhook deliveries of an application, optionally in one state, with their attempts.
    pub fn list_deliveries(
        &self,
        app_key: &AppKey,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Value>, ApiError> {
        let state = state
            .map(|s| s.parse::<vetted_webhooks::DeliveryState>())
            .transpose()
            .map_err(ApiError::bad_request)?;
        let items = self
            .outbox
            .list(&app_key.to_string(), state, None, limit)
            .map_err(outbox_error)?;
        Ok(items
            .into_iter()
            .map(|d| serde_json::to_value(d).unwrap_or_default())
            .collect())
    }

    /// Sends one delivery again (same `webhook-id`).
    pub fn redeliver(&self, app_key: &AppKey, id: &str) -> Result<Value, ApiError> {
        let id: u64 = id
            .parse()
            .map_err(|_| ApiError::not_found(format!("no webhook delivery {id:?}")))?;
        let d = self
            .outbox
            .redeliver(&app_key.to_string(), id)
            .map_err(outbox_error)?;
        Ok(serde_json::to_value(d).unwrap_or_default())
    }

    /// Sends every dead delivery of an application again.
    pub fn redeliver_dead(&self, app_key: &AppKey) -> Result<usize, ApiError> {
        self.outbox
            .redeliver_dead(&app_key.to_string())
            .map_err(outbox_error)
    }

    /// After an application's webhook settings changed: a 410-disabled endpoint is retried.
    pub fn webhook_endpoint_changed(&self, app_key: &AppKey) -> Result<(), ApiError> {
        self.outbox
            .enable_endpoint(&app_key.to_string())
            .map_err(outbox_error)
    }

    /// The shared state handlers receive.
    pub fn state(self: &Arc<Self>) -> AppState {
        self.clone()
    }
}

/// The NATS publisher: connects (retrying), creates the fan-out stream, publishes every
/// applicant event in log order and checkpoints after each acknowledged window.
async fn publish_to_nats(engine: Arc<Engine>, url: String) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = async {
            let client = vetted_bus::connect(&url).await?;
            let config = vetted_bus::PublisherConfig {
                replicas: engine.config.nats_replicas,
                ..Default::default()
            };
            let publisher =
                vetted_bus::NatsPublisher::new(client, engine.store.clone(), &engine.db, config)?;
            publisher.ensure_stream().await?;
            tracing::info!(
                checkpoint = publisher.checkpoint()?,
                "publishing events to NATS JetStream"
            );
            publisher.run(engine.stopped()).await
        };
        tokio::select! {
            result = attempt => match result {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "NATS publisher stopped; retrying"),
            },
            _ = engine.stopped() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {},
            _ = engine.stopped() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

fn outbox_error(e: vetted_webhooks::OutboxError) -> ApiError {
    match e {
        vetted_webhooks::OutboxError::NotFound { .. } => ApiError::not_found(e.to_string()),
        vetted_webhooks::OutboxError::StillPending { .. } => ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "delivery_pending",
            e.to_string(),
        ),
        other => ApiError::internal(other.to_string()),
    }
}

fn parse_time(raw: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ApiError::bad_request(format!("{raw:?} is not an RFC 3339 time: {e}")))
}

/// The flow a fresh data directory starts with.
pub fn default_flow() -> NewFlow {
    let step = |step_type, max_attempts, threshold| StepSpec {
        step_type,
        max_attempts,
        threshold,
        sources: Vec::new(),
        countries: Vec::new(),
    };
    NewFlow {
        name: "kyc-basic".into(),
        steps: vec![
            step(StepType::DocumentCheck, Some(3), None),
            step(StepType::Liveness, Some(5), None),
            StepSpec {
                sources: vec!["document".into(), "liveness".into()],
                ..step(StepType::FaceMatch, None, Some(85.0))
            },
            step(StepType::Aml, None, None),
        ],
        settings: FlowSettings {
            auto_approval: true,
            face_match_threshold: 85.0,
            permitted_countries: Vec::new(),
            excluded_countries: Vec::new(),
            kind: FlowKind::Regular,
        },
    }
}
