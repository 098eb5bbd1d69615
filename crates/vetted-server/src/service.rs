//! The command pipeline: read the applicant's stream, fold it, `decide`, append the new events
//! with optimistic concurrency, and answer with the view folded from the same stream.
//! Applications and flows are created the same way on their own streams.
use std::collections::BTreeMap;

use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;
use vetted_domain::{
    decide, AppKey, ApplicantId, Application, ApplicationEvent, Command, Context, Flow, FlowEvent,
    FlowSettings, Mode, StepSpec,
};
use vetted_projections::{ApplicantFold, ApplicantView};
use vetted_store::{Actor, AppendResult, ExpectedVersion, NewEvent, StoreError};

use crate::error::ApiError;
use crate::keys::{self, ApplicationSecrets};
use crate::registry::{application_stream, flow_stream};
use crate::Engine;

/// How many times a command without `If-Match` is re-decided after losing a race.
const CONFLICT_RETRIES: usize = 5;

/// Request metadata stamped on the events a command appends.
#[derive(Debug, Clone)]
pub struct Meta {
    pub actor: Actor,
    pub correlation_id: Uuid,
}

impl Meta {
    /// Metadata for a system action (bootstrap, demo, scheduled jobs).
    pub fn system() -> Self {
        Meta {
            actor: Actor::system(),
            correlation_id: Uuid::now_v7(),
        }
    }
}

/// `POST /v1/applications` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewApplication {
    pub name: String,
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub webhook_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub redirect_url: Option<String>,
    #[serde(default)]
    pub mode: Option<Mode>,
}

/// `POST /v1/flows` body: a flow definition without id and version. Read strictly (see
/// [`FlowRequest`]): a misspelt setting is refused, not silently left at its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "FlowRequest")]
pub struct NewFlow {
    pub name: String,
    pub steps: Vec<StepSpec>,
    pub settings: FlowSettings,
}

/// The wire shape of [`NewFlow`]: the flow's settings beside its name and steps, every field
/// known (the domain types stay lenient, for events written by other versions).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FlowRequest {
    name: String,
    steps: Vec<StepRequest>,
    #[serde(default)]
    auto_approval: Option<bool>,
    #[serde(default)]
    face_match_threshold: Option<f64>,
    #[serde(default)]
    permitted_countries: Option<Vec<String>>,
    #[serde(default)]
    excluded_countries: Option<Vec<String>>,
    #[serde(default)]
    kind: Option<vetted_domain::FlowKind>,
}

/// The wire shape of one [`StepSpec`], every field known.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StepRequest {
    #[serde(rename = "type")]
    step_type: vetted_domain::StepType,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    sources: Vec<String>,
    #[serde(default)]
    countries: Vec<String>,
}

impl From<FlowRequest> for NewFlow {
    fn from(r: FlowRequest) -> Self {
        let defaults = FlowSettings::default();
        NewFlow {
            name: r.name,
            steps: r
                .steps
                .into_iter()
                .map(|s| StepSpec {
                    step_type: s.step_type,
                    max_attempts: s.max_attempts,
                    threshold: s.threshold,
                    sources: s.sources,
                    countries: s.countries,
                })
                .collect(),
            settings: FlowSettings {
                auto_approval: r.auto_approval.unwrap_or(defaults.auto_approval),
                face_match_threshold: r
                    .face_match_threshold
                    .unwrap_or(defaults.face_match_threshold),
                permitted_countries: r.permitted_countries.unwrap_or_default(),
                excluded_countries: r.excluded_countries.unwrap_or_default(),
                kind: r.kind.unwrap_or(defaults.kind),
            },
        }
    }
}

/// `POST /v1/applicants` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewApplicant {
    pub external_user_id: String,
    pub flow: String,
    #[serde(default)]
    pub flow_version: Option<u32>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub lang: Option<String>,
}

/// What a command produced: the applicant's whole stream after it, and the append (if any).
pub struct CommandOutcome {
    pub view: ApplicantView,
    pub appended: Option<AppendResult>,
}

fn envelopes(
    tenant: &str,
    meta: &Meta,
    events: Vec<(String, u32, serde_json::Value)>,
) -> Vec<NewEvent> {
    let mut first: Option<Uuid> = None;
    events
        .into_iter()
        .map(|(event_type, schema_version, payload)| {
            let event_id = Uuid::now_v7();
            // Follow-on events of one command (e.g. StatusChanged) are caused by the first.
            let causation_id = first;
            first.get_or_insert(event_id);
            NewEvent {
                event_id,
                event_type,
                schema_version,
                tenant: tenant.to_string(),
                actor: meta.actor.clone(),
                correlation_id: meta.correlation_id,
                causation_id,
                payload,
            }
        })
        .collect()
}

fn validate_url(field: &str, url: &Option<String>) -> Result<(), ApiError> {
    if let Some(u) = url {
        let ok = (u.starts_with("http://") || u.starts_with("https://"))
            && u.len() <= 2048
            && !u.contains(char::is_whitespace);
        if !ok {
            return Err(ApiError::validation(format!(
                "{field} must be an http(s) URL, got {u:?}"
            )));
        }
    }
    Ok(())
}

/// What every stored application must satisfy: a name, http(s) URLs, and webhook settings the
/// delivery worker can use (so a bad header or URL is refused here, not at every delivery).
fn validate_application(app: &Application) -> Result<(), ApiError> {
    non_empty("name", &app.name, 200)?;
    validate_url("webhookUrl", &app.webhook_url)?;
    validate_url("redirectUrl", &app.redirect_url)?;
    if let Some(url) = &app.webhook_url {
        vetted_webhooks::endpoint::check_url(url)
            .map_err(|e| ApiError::validation(format!("webhookUrl: {e}")))?;
    }
    vetted_webhooks::endpoint::check_headers(&app.webhook_headers)
        .map_err(|e| ApiError::validation(format!("webhookHeaders: {e}")))?;
    Ok(())
}

/// Checks an identifier a client chooses (an external user id, a reviewer id): 1 to `max`
/// characters, none of them a control character (read models index these ids, and a NUL or
/// line break would also make them unreadable in a timeline).
pub(crate) fn identifier(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    non_empty(field, value, max)?;
    if value.chars().any(char::is_control) {
        return Err(ApiError::validation(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

fn non_empty(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::validation(format!("{field} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(ApiError::validation(format!(
            "{field} is longer than {max} characters"
        )));
    }
    Ok(())
}

impl Engine {
    /// Creates an application (tenant) and returns it with its secrets (shown once).
    pub async fn create_application(
        &self,
        req: NewApplication,
        meta: &Meta,
    ) -> Result<(Application, ApplicationSecrets), ApiError> {
        let secrets = keys::generate()
            .map_err(|e| ApiError::internal(format!("random source failed: {e}")))?;
        let app = Application {
            app_key: AppKey(Uuid::new_v4()),
            name: req.name.trim().to_string(),
            private_key_hash: keys::hash_private_key(&secrets.private_key),
            crypto_key: secrets.crypto_key.clone(),
            signing_secret: secrets.signing_secret.clone(),
            webhook_url: req.webhook_url,
            webhook_headers: req.webhook_headers,
            redirect_url: req.redirect_url,
            mode: req.mode.unwrap_or(Mode::Test),
        };
        validate_application(&app)?;
        self.record_application(
            ApplicationEvent::ApplicationCreated(app.clone()),
            ExpectedVersion::NoStream,
            meta,
        )
        .await?;
        Ok((app, secrets))
    }

    /// Appends an application event to its stream and waits until the registry shows it.
    async fn record_application(
        &self,
        event: ApplicationEvent,
        expected: ExpectedVersion,
        meta: &Meta,
    ) -> Result<(), ApiError> {
        let appended = self.append_application(event, expected, meta).await?;
        self.wait_for_registry(appended.last_position).await
    }

    /// Appends an application event to its stream.
    async fn append_application(
        &self,
        event: ApplicationEvent,
        expected: ExpectedVersion,
        meta: &Meta,
    ) -> Result<AppendResult, StoreError> {
        let app_key = event.application().app_key;
        let batch = envelopes(
            &app_key.to_string(),
            meta,
            vec![(
                event.event_type().to_string(),
                event.schema_version(),
                event.to_payload(),
            )],
        );
        self.store
            .append(&application_stream(&app_key), expected, batch)
            .await
    }

    /// Changes an application: `change` is applied to its latest state as the log holds it,
    /// and the result is appended only if nothing else changed it meanwhile (otherwise it is
    /// read and changed again), so two concurrent changes never undo each other — a rotated-out
    /// key cannot come back. `change` may run more than once; what it returns for the attempt
    /// that was stored is returned.
    pub async fn update_application<T>(
        &self,
        app_key: &AppKey,
        meta: &Meta,
        change: impl Fn(&mut Application) -> Result<T, ApiError>,
    ) -> Result<(Application, T), ApiError> {
        let stream = application_stream(app_key);
        for _ in 0..CONFLICT_RETRIES {
            let events = self.store.read_stream(&stream, 0, usize::MAX).await?;
            let Some(last) = events.last() else {
                return Err(ApiError::not_found(format!("no application {app_key}")));
            };
            let mut app = ApplicationEvent::from_payload(
                &last.event_type,
                last.schema_version,
                &last.payload,
            )
            .map_err(|e| ApiError::internal(format!("application {app_key} unreadable: {e}")))?
            .application()
            .clone();
            let shown = change(&mut app)?;
            validate_application(&app)?;
            let expected = ExpectedVersion::Exact(last.stream_version);
            let event = ApplicationEvent::ApplicationUpdated(app.clone());
            match self.append_application(event, expected, meta).await {
                Ok(appended) => {
                    self.wait_for_registry(appended.last_position).await?;
                    return Ok((app, shown));
                }
                Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                    self.until_readable(&stream, actual).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::version_conflict(
            None,
            "the application's latest version (it kept changing; try again)",
        ))
    }

    /// After losing a race: waits (bounded) until reads of `stream` show the version the store
    /// said it is at. The winner's events may still be on their way to durability, and a retry
    /// that read the old state again would only lose again.
    async fn until_readable(&self, stream: &str, actual: Option<u64>) -> Result<(), ApiError> {
        let Some(actual) = actual else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while self
            .store
            .stream_version(stream)
            .await?
            .is_none_or(|v| v < actual)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// Creates a flow, or a new version of it when the name exists.
    pub async fn create_flow(
        &self,
        app_key: &AppKey,
        req: NewFlow,
        meta: &Meta,
    ) -> Result<Flow, ApiError> {
        non_empty("name", &req.name, 100)?;
        if !req
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ApiError::validation(
                "flow name may only use letters, digits, '-' and '_'",
            ));
        }
        let stream = flow_stream(app_key, &req.name);
        for _ in 0..CONFLICT_RETRIES {
            // The next version number comes from the flow's own stream (the registry may lag):
            // the append below expects exactly this stream version, so two concurrent saves
            // of one name can never both get the same version.
            let current = self.store.stream_version(&stream).await?;
            let version = match current {
                None => 1,
                Some(at) => {
                    let last = self.store.read_stream(&stream, at, 1).await?;
                    let Some(last) = last.first() else { continue };
                    let FlowEvent::FlowVersionCreated { flow, .. } = FlowEvent::from_payload(
                        &last.event_type,
                        last.schema_version,
                        &last.payload,
                    )
                    .map_err(|e| {
                        ApiError::internal(format!("flow {} unreadable: {e}", req.name))
                    })?;
                    flow.version + 1
                }
            };
            let flow = Flow {
                id: Uuid::now_v7(),
                name: req.name.clone(),
                version,
                steps: req.steps.clone(),
                settings: req.settings.clone(),
            };
            flow.validate()?;
            let event = FlowEvent::FlowVersionCreated {
                app_key: *app_key,
                flow: flow.clone(),
            };
            let batch = envelopes(
                &app_key.to_string(),
                meta,
                vec![(
                    event.event_type().to_string(),
                    event.schema_version(),
                    event.to_payload(),
                )],
            );
            let expected = current
                .map(ExpectedVersion::Exact)
                .unwrap_or(ExpectedVersion::NoStream);
            match self.store.append(&stream, expected, batch).await {
                Ok(appended) => {
                    self.wait_for_registry(appended.last_position).await?;
                    return Ok(flow);
                }
                Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                    self.until_readable(&stream, actual).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::version_conflict(None, "the latest flow version"))
    }

    /// Creates an applicant pinned to the named flow (latest version unless one is given).
    pub async fn create_applicant(
        &self,
        app_key: &AppKey,
        req: NewApplicant,
        meta: &Meta,
    ) -> Result<CommandOutcome, ApiError> {
        identifier("externalUserId", &req.external_user_id, 256)?;
        let flow = match req.flow_version {
            Some(v) => self.registry.flow_version(app_key, &req.flow, v)?,
            None => self.registry.flow(app_key, &req.flow)?,
        }
        .ok_or_else(|| {
            ApiError::validation(format!(
                "no flow named {:?} in this application; create it with POST /v1/flows",
                req.flow
            ))
        })?;
        let id = ApplicantId(Uuid::now_v7());
        let command = Command::CreateApplicant {
            id,
            app_key: *app_key,
            external_user_id: req.external_user_id,
            email: req.email,
            phone: req.phone,
            lang: req.lang,
            flow,
        };
        self.execute(app_key, &id, None, meta, command).await
    }

    /// Runs `command` on an applicant: fold, decide, append (retrying lost races unless the caller
    /// pinned a version with `If-Match`), then answer with the new view.
    pub async fn execute(
        &self,
        app_key: &AppKey,
        id: &ApplicantId,
        if_match: Option<u64>,
        meta: &Meta,
        command: Command,
    ) -> Result<CommandOutcome, ApiError> {
        let stream = id.stream();
        let creating = matches!(command, Command::CreateApplicant { .. });
        for _ in 0..CONFLICT_RETRIES {
            // One fold serves the tenancy check, the domain state for `decide` and the answer.
            let stored = self.store.read_stream(&stream, 0, usize::MAX).await?;
            let mut fold = ApplicantFold::default();
            for event in &stored {
                fold.apply(event)?;
            }
            let mine = fold.applicant.app_key.as_ref() == Some(app_key);
            if !creating && !mine {
                // 404 for unknown and for another application's applicant alike.
                return Err(ApiError::not_found(format!(
                    "no applicant {id} in this application"
                )));
            }
            let current = stored.last().map(|e| e.stream_version);
            if let Some(expected) = if_match {
                if current != Some(expected) {
                    return Err(ApiError::version_conflict(current, expected));
                }
            }
            let new_events = decide(
                &fold.applicant,
                command.clone(),
                &Context { now: Utc::now() },
            )?;
            if new_events.is_empty() {
                let view = fold
                    .view()
                    .ok_or_else(|| ApiError::not_found(format!("no applicant {id}")))?;
                return Ok(CommandOutcome {
                    view,
                    appended: None,
                });
            }
            let batch = envelopes(
                &app_key.to_string(),
                meta,
                new_events
                    .iter()
                    .map(|e| {
                        (
                            e.event_type().to_string(),
                            e.schema_version(),
                            e.to_payload(),
                        )
                    })
                    .collect(),
            );
            let expected = current
                .map(ExpectedVersion::Exact)
                .unwrap_or(ExpectedVersion::NoStream);
            match self.store.append(&stream, expected, batch).await {
                Ok(appended) => {
                    // Only the events just appended need reading (for their times and hashes).
                    // A replicated log may serve a read from a replica that has not applied them
                    // yet: read until they are there (bounded).
                    let mut from = current.map_or(0, |v| v + 1);
                    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
                    while from <= appended.stream_version {
                        let tail = self.store.read_stream(&stream, from, usize::MAX).await?;
                        for event in &tail {
                            fold.apply(event)?;
                        }
                        from = tail.last().map_or(from, |e| e.stream_version + 1);
                        if from <= appended.stream_version {
                            if tokio::time::Instant::now() >= deadline {
                                return Err(ApiError::new(
                                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                    "unavailable",
                                    format!("applicant {id}: the appended events are acknowledged but not readable yet; GET it again"),
                                ));
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                    }
                    let view = fold.view().ok_or_else(|| {
                        ApiError::internal(format!("applicant {id} vanished after an append"))
                    })?;
                    self.wait_for_read_models(appended.last_position).await;
                    return Ok(CommandOutcome {
                        view,
                        appended: Some(appended),
                    });
                }
                Err(StoreError::WrongExpectedVersion { actual, .. }) if if_match.is_some() => {
                    return Err(ApiError::version_conflict(
                        actual,
                        if_match.unwrap_or_default(),
                    ));
                }
                Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                    self.until_readable(&stream, actual).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let current = self.store.stream_version(&stream).await?;
        Err(ApiError::version_conflict(
            current,
            "a version that kept moving (too many concurrent writers)",
        ))
    }
}
