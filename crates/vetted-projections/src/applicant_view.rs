//! The applicant view: the `POST /v1/applicants` / `GET /v1/applicants/{id}` wire shape,
//! folded with `vetted_domain::evolve`. The projection, the live API and as-of replay all go
//! through [`ApplicantFold::apply`], so they cannot disagree.
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vetted_domain::{
    evolve, AppKey, Applicant, ApplicantEvent, ApplicantId, ApplicantStatus, Comment, Decision,
    StepState, Warning,
};
use vetted_store::{ActorKind, RecordedEvent};

use crate::{ApplicantProjection, Projection, ProjectionError, ReadModels, Rows};

/// Name of the applicant view projection.
pub const APPLICANT_VIEW: &str = "applicant_view";

/// The flow an applicant is pinned to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowRef {
    /// Flow name.
    pub name: String,
    /// Flow version the applicant started with (or changed to).
    pub version: u32,
}

/// Where the applicant (or the client's backend) last acted from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// IP address.
    pub ip: Option<String>,
    /// Raw user agent.
    pub user_agent: Option<String>,
    /// Operating system, as parsed by the API.
    pub os: Option<String>,
    /// Browser, as parsed by the API.
    pub browser: Option<String>,
}

/// An applicant as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicantView {
    /// Applicant id.
    pub id: ApplicantId,
    /// The client's own id for this user.
    pub external_user_id: String,
    /// The application (tenant).
    pub app_key: AppKey,
    /// Current status.
    pub status: ApplicantStatus,
    /// Stream version of the last event (the `ETag`).
    pub version: u64,
    /// The pinned flow.
    pub flow: Option<FlowRef>,
    /// Per-step tracker: status, attempts, last result.
    pub steps: Vec<StepState>,
    /// Every warning raised, resolved or not.
    pub warnings: Vec<Warning>,
    /// The reviewer in charge.
    pub reviewer: Option<String>,
    /// When the applicant was created (recorded-at of its first event).
    pub created_at: DateTime<Utc>,
    /// When it last changed (recorded-at of its last event).
    pub updated_at: DateTime<Utc>,
    /// Contact email.
    pub email: Option<String>,
    /// Contact phone.
    pub phone: Option<String>,
    /// Preferred language.
    pub lang: Option<String>,
    /// The decision, if taken.
    pub decision: Option<Decision>,
    /// Deactivated steps with their last result, oldest first.
    pub history: Vec<StepState>,
    /// Environment of the last applicant or API call.
    pub device: Option<Device>,
    /// Reviewer notes.
    pub comments: Vec<Comment>,
    /// When a scheduled deletion purges the data.
    pub deletion_scheduled: Option<DateTime<Utc>>,
}

/// What the applicant view keeps per applicant: the domain state plus the envelope facts the
/// domain does not see (times, device). Stored as the `view/<id>` row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicantFold {
    /// The domain state, folded by `vetted_domain::evolve`.
    pub applicant: Applicant,
    /// Recorded-at of the first event.
    pub created_at: Option<DateTime<Utc>>,
    /// Recorded-at of the last event.
    pub updated_at: Option<DateTime<Utc>>,
    /// Environment of the last applicant or API actor.
    pub device: Option<Device>,
}

/// Decodes the domain event carried by `event`.
pub fn decode(event: &RecordedEvent) -> Result<ApplicantEvent, ProjectionError> {
    ApplicantEvent::from_payload(&event.event_type, event.schema_version, &event.payload).map_err(
        |e| ProjectionError::BadEvent {
            position: event.global_position,
            event_type: event.event_type.clone(),
            reason: e.to_string(),
        },
    )
}

impl ApplicantFold {
    /// Folds one recorded event of the applicant's stream.
    pub fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let domain_event = decode(event)?;
        self.apply_decoded(event, &domain_event);
        Ok(())
    }

    /// Folds one recorded event whose payload is already decoded.
    pub fn apply_decoded(&mut self, event: &RecordedEvent, domain_event: &ApplicantEvent) {
        self.applicant = evolve(std::mem::take(&mut self.applicant), domain_event);
        self.created_at.get_or_insert(event.recorded_at);
        self.updated_at = Some(event.recorded_at);
        let actor = &event.actor;
        let has_environment = actor.ip.is_some()
            || actor.user_agent.is_some()
            || actor.os.is_some()
            || actor.browser.is_some();
        if matches!(actor.kind, ActorKind::Applicant | ActorKind::Api) && has_environment {
            self.device = Some(Device {
                ip: actor.ip.clone(),
                user_agent: actor.user_agent.clone(),
                os: actor.os.clone(),
                browser: actor.browser.clone(),
            });
        }
    }

    /// The view, once the applicant exists.
    pub fn view(&self) -> Option<ApplicantView> {
        let a = &self.applicant;
        let (id, app_key) = (a.id?, a.app_key?);
        let created_at = self.created_at?;
        Some(ApplicantView {
            id,
            external_user_id: a.external_user_id.clone(),
            app_key,
            status: a.status,
            version: a.version.unwrap_or(0),
            flow: a.flow.as_ref().map(|f| FlowRef {
                name: f.name.clone(),
                version: f.version,
            }),
            steps: a.steps.clone(),
            warnings: a.warnings.clone(),
            reviewer: a.reviewer.clone(),
            created_at,
            updated_at: self.updated_at.unwrap_or(created_at),
            email: a.email.clone(),
            phone: a.phone.clone(),
            lang: a.lang.clone(),
            decision: a.decision.clone(),
            history: a.history.clone(),
            device: self.device.clone(),
            comments: a.comments.clone(),
            deletion_scheduled: a.deletion_scheduled,
        })
    }
}

impl ApplicantView {
    /// Folds an applicant's recorded events (stream order) into its view; `None` if the
    /// events do not create an applicant.
    pub fn fold(events: &[RecordedEvent]) -> Result<Option<ApplicantView>, ProjectionError> {
        let mut fold = ApplicantFold::default();
        for event in events {
            fold.apply(event)?;
        }
        Ok(fold.view())
    }
}

/// Key of an applicant's row.
fn view_key(id: &str) -> String {
    format!("view/{id}")
}

/// The event's domain form: the one the caller decoded once for the batch, or decoded now.
pub(crate) fn decoded_or_decode<'a>(
    event: &RecordedEvent,
    decoded: Option<&'a ApplicantEvent>,
) -> Result<std::borrow::Cow<'a, ApplicantEvent>, ProjectionError> {
    match decoded {
        Some(d) => Ok(std::borrow::Cow::Borrowed(d)),
        None => decode(event).map(std::borrow::Cow::Owned),
    }
}

/// The applicant id of an applicant stream (`applicant-<uuid>`), `None` for other streams.
pub(crate) fn applicant_of(event: &RecordedEvent) -> Option<&str> {
    event.stream_id.strip_prefix("applicant-")
}

/// The applicant view projection: row `view/<id>` holds the [`ApplicantFold`].
pub struct ApplicantViewProjection;

impl ApplicantProjection for ApplicantViewProjection {
    fn name(&self) -> &'static str {
        APPLICANT_VIEW
    }

    fn apply_applicant(
        &self,
        rows: &mut Rows<'_>,
        event: &RecordedEvent,
        id: &str,
        domain_event: &ApplicantEvent,
    ) -> Result<(), ProjectionError> {
        rows.update_json::<ApplicantFold, _>(view_key(id).as_bytes(), |fold| {
            fold.get_or_insert_with(ApplicantFold::default)
                .apply_decoded(event, domain_event)
        })
    }
}

impl ReadModels {
    /// The live view of applicant `id` of application `app`; `None` if unknown to that app.
    pub fn get_view(
        &self,
        app: &str,
        id: &ApplicantId,
    ) -> Result<Option<ApplicantView>, ProjectionError> {
        Ok(self.get_fold(app, id)?.and_then(|f| f.view()))
    }

    /// The stored fold of applicant `id` of application `app` (domain state and envelope facts).
    pub fn get_fold(
        &self,
        app: &str,
        id: &ApplicantId,
    ) -> Result<Option<ApplicantFold>, ProjectionError> {
        let tree = self.live_tree(APPLICANT_VIEW)?;
        let key = view_key(&id.to_string());
        let Some(bytes) = tree.get(key.as_bytes())? else {
            return Ok(None);
        };
        let fold: ApplicantFold =
            serde_json::from_slice(&bytes).map_err(|e| ProjectionError::Decode {
                key: key.clone(),
                reason: e.to_string(),
            })?;
        let same_app = fold.applicant.app_key.is_some_and(|k| k.to_string() == app);
        Ok(same_app.then_some(fold))
    }
}

/// The built-in read models, in the order the runner starts them.
pub fn read_models() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(ApplicantViewProjection),
        Arc::new(crate::timeline::TimelineProjection),
        Arc::new(crate::applicant_list::ApplicantListProjection),
        Arc::new(crate::dashboard::DashboardProjection),
        Arc::new(crate::reviewer_queue::ReviewerQueueProjection),
    ]
}
