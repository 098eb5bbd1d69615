//! The applicant view: the `POST /v1/applicants` / `GET /v1/applicants/{id}` wire shape,
//! folded with `vetted_domain::evolve`. The projection, the live API and as-of replay all go
//! through [`ApplicantFold::apply`], so they cannot disagree.
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use vetted_domain::{
    evolve, AppKey, Applicant, ApplicantEvent, ApplicantId, ApplicantStatus, Comment, Decision,
    Flow, StepState, Warning,
};
use vetted_store::{ActorKind, RecordedEvent};

use crate::codec::{Reader, Writer};
use crate::rows::{RowCodec, RowStore};
use crate::{
    ActorFact, ApplicantFact, ApplicantProjection, Projection, ProjectionError, ReadModels, Table,
};

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
        self.fold(
            event.recorded_at,
            ActorFact::from(&event.actor),
            domain_event,
        );
    }

    /// Folds one applicant event.
    pub fn apply_fact(&mut self, fact: &ApplicantFact<'_>) {
        self.fold(fact.recorded_at, fact.actor, fact.event);
    }

    fn fold(
        &mut self,
        recorded_at: DateTime<Utc>,
        actor: ActorFact<'_>,
        domain_event: &ApplicantEvent,
    ) {
        self.applicant = evolve(std::mem::take(&mut self.applicant), domain_event);
        self.created_at.get_or_insert(recorded_at);
        self.updated_at = Some(recorded_at);
        let has_environment = actor.ip.is_some()
            || actor.user_agent.is_some()
            || actor.os.is_some()
            || actor.browser.is_some();
        if matches!(actor.kind, ActorKind::Applicant | ActorKind::Api) && has_environment {
            // Most events come from where the previous one came from: copy only a change.
            let same = self.device.as_ref().is_some_and(|d| {
                d.ip.as_deref() == actor.ip
                    && d.user_agent.as_deref() == actor.user_agent
                    && d.os.as_deref() == actor.os
                    && d.browser.as_deref() == actor.browser
            });
            if !same {
                let owned = |s: Option<&str>| s.map(str::to_string);
                self.device = Some(Device {
                    ip: owned(actor.ip),
                    user_agent: owned(actor.user_agent),
                    os: owned(actor.os),
                    browser: owned(actor.browser),
                });
            }
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
/// Prefix of an applicant's row: `view/<id>`.
const VIEW_PREFIX: &str = "view/";

fn view_key(id: &str) -> String {
    format!("{VIEW_PREFIX}{id}")
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

/// Key of the row holding a flow definition: `flow/<first 16 bytes of the SHA-256 of its
/// JSON, in hex>`. Content-addressed, so two flows never share a row and every applicant
/// pinned to the same flow definition shares one.
fn flow_key(flow_json: &[u8]) -> String {
    let digest = Sha256::digest(flow_json);
    format!("flow/{}", hex::encode(&digest[..16]))
}

/// The key and JSON of the row of `flow`. Most applicants of a log are pinned to one of a
/// few flows, so the last flow a thread encoded is kept and reused when the next is the same
/// (its JSON then is too: equal fields, float bits included).
fn flow_row_of(flow: &Flow) -> Result<(String, Vec<u8>), ProjectionError> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(Flow, String, Vec<u8>)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some((cached, key, json)) = last.as_ref() {
            if same_flow(cached, flow) {
                return Ok((key.clone(), json.clone()));
            }
        }
        let json = crate::rows::encode_json(flow)?;
        let key = flow_key(&json);
        *last = Some((flow.clone(), key.clone(), json.clone()));
        Ok((key, json))
    })
}

/// Whether two flows serialize to the same JSON: equal, and their floats equal bit for bit
/// (`==` takes `0.0` for `-0.0`, which JSON spells differently).
fn same_flow(a: &Flow, b: &Flow) -> bool {
    a == b
        && a.settings.face_match_threshold.to_bits() == b.settings.face_match_threshold.to_bits()
        && a.steps
            .iter()
            .zip(&b.steps)
            .all(|(x, y)| x.threshold.map(f64::to_bits) == y.threshold.map(f64::to_bits))
}

/// Layout tag of a view row.
const VIEW_TAG: u8 = 7;

/// The `view/<id>` row: the [`ApplicantFold`] without its flow, and the key of the `flow/`
/// row holding that flow. Every applicant of a flow embedded the same few hundred bytes (or
/// KB) of flow definition in its row; now the flow is written once. Layout: tag byte 7, the
/// flow row's key (optional string), then the fold without its flow (`crate::view_codec`),
/// all in the compact layout of `crate::codec`: about 40 % of the fold's JSON.
#[derive(Default)]
struct ViewRow {
    /// The fold; its flow is `None` but while an event that needs it is applied (it lives in
    /// its own row).
    fold: ApplicantFold,
    /// Key of the flow's row.
    flow_key: Option<String>,
}

impl RowCodec for ViewRow {
    const TAG: u8 = VIEW_TAG;
    const CAPACITY: usize = 1024;

    fn write(&self, w: &mut Writer<'_>) {
        w.opt_str(self.flow_key.as_deref());
        crate::view_codec::encode_fold(w, &self.fold);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ProjectionError> {
        let flow_key = r.opt_string()?;
        let fold = crate::view_codec::decode_fold(r)?;
        Ok(ViewRow { fold, flow_key })
    }
}

/// Reads flow row `flow_key` (as read from the tree) that view row `view_key` refers to: the
/// whole [`Flow`], or only the [`FlowRef`] a served view shows.
fn flow_row<T: serde::de::DeserializeOwned>(
    view_key: &str,
    flow_key: &str,
    row: Option<impl AsRef<[u8]>>,
) -> Result<T, ProjectionError> {
    let row = row.ok_or_else(|| ProjectionError::Decode {
        key: view_key.to_string(),
        reason: format!("its flow row {flow_key} is missing"),
    })?;
    crate::rows::decode_json(flow_key.as_bytes(), row.as_ref())
}

/// The applicant view projection: row `view/<id>` holds the [`ApplicantFold`] (see
/// [`ViewRow`]), rows `flow/<hash>` the flows the applicants are pinned to.
#[derive(Clone, Copy)]
pub struct ApplicantViewProjection;

impl ApplicantProjection for ApplicantViewProjection {
    fn name(&self) -> &'static str {
        APPLICANT_VIEW
    }

    // Nanoseconds per event, measured by `examples/rebuild_cost` (see docs/benchmarks.md).
    fn fold_cost(&self) -> u32 {
        300
    }

    /// 4: step data as canonical JSON text (3: step data in a binary form of its `Value`;
    /// 2: compact binary rows, step data as JSON text; 1: JSON rows).
    fn layout(&self) -> u32 {
        4
    }

    fn apply_applicant<S: RowStore>(
        &self,
        rows: &mut S,
        fact: &ApplicantFact<'_>,
    ) -> Result<(), ProjectionError> {
        // A flow the event pins the applicant to gets its row (the same bytes every time).
        let pinned = match fact.event {
            ApplicantEvent::ApplicantCreated { flow, .. }
            | ApplicantEvent::FlowChanged { flow, .. } => {
                let (flow_key, json) = flow_row_of(flow)?;
                rows.put(flow_key.clone().into_bytes(), json);
                Some(flow_key)
            }
            _ => None,
        };
        let apply = |row: &mut ViewRow, pinned: Option<String>| {
            row.fold.apply_fact(fact);
            if pinned.is_some() {
                row.flow_key = pinned;
            }
            // The flow stays in its own row: `evolve` reads it for two kinds of event only,
            // which load it (below). Rows in memory (a batch's, a rebuild's) stay small.
            row.fold.applicant.flow = None;
        };
        let needs_flow = matches!(
            fact.event,
            ApplicantEvent::StepReactivated { .. } | ApplicantEvent::FlowRestarted { .. }
        );
        let id = fact.applicant_id;
        let missing = rows.update_applicant_row::<ViewRow, _>(VIEW_PREFIX, id, |row| {
            let row = row.get_or_insert_with(ViewRow::default);
            match (&row.fold.applicant.flow, &row.flow_key) {
                (None, Some(flow_key)) if needs_flow => Some((flow_key.clone(), pinned.clone())),
                _ => {
                    apply(row, pinned.clone());
                    None
                }
            }
        })?;
        let Some((flow_key, pinned)) = missing else {
            return Ok(());
        };
        let key = view_key(id);
        let flow: Flow = flow_row(&key, &flow_key, rows.get(flow_key.as_bytes())?)?;
        rows.update_applicant_row::<ViewRow, _>(VIEW_PREFIX, id, |row| {
            let row = row.get_or_insert_with(ViewRow::default);
            row.fold.applicant.flow = Some(flow);
            apply(row, pinned);
        })
    }
}

impl ReadModels {
    /// The live view of applicant `id` of application `app`; `None` if unknown to that app.
    /// Of the pinned flow's row it reads only the name and version the view shows.
    pub fn get_view(
        &self,
        app: &str,
        id: &ApplicantId,
    ) -> Result<Option<ApplicantView>, ProjectionError> {
        let Some((tree, key, ViewRow { fold, flow_key })) = self.view_row(app, id)? else {
            return Ok(None);
        };
        let mut view = fold.view();
        if let (Some(view), Some(flow_key)) = (view.as_mut(), flow_key) {
            view.flow = Some(flow_row(&key, &flow_key, tree.get(flow_key.as_bytes())?)?);
        }
        Ok(view)
    }

    /// The stored fold of applicant `id` of application `app` (domain state and envelope facts).
    pub fn get_fold(
        &self,
        app: &str,
        id: &ApplicantId,
    ) -> Result<Option<ApplicantFold>, ProjectionError> {
        let Some((tree, key, ViewRow { mut fold, flow_key })) = self.view_row(app, id)? else {
            return Ok(None);
        };
        if let Some(flow_key) = flow_key {
            fold.applicant.flow = Some(flow_row(&key, &flow_key, tree.get(flow_key.as_bytes())?)?);
        }
        Ok(Some(fold))
    }

    /// The live tree, the key and the row of applicant `id`, if it belongs to `app`.
    fn view_row(
        &self,
        app: &str,
        id: &ApplicantId,
    ) -> Result<Option<(Table, String, ViewRow)>, ProjectionError> {
        let tree = self.live_table(APPLICANT_VIEW)?;
        let key = view_key(&id.to_string());
        let Some(bytes) = tree.get(key.as_bytes())? else {
            return Ok(None);
        };
        let row = ViewRow::decode_row(key.as_bytes(), &bytes)?;
        if row
            .fold
            .applicant
            .app_key
            .is_none_or(|k| k.to_string() != app)
        {
            return Ok(None);
        }
        Ok(Some((tree, key, row)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    #[test]
    fn a_flow_is_reused_only_when_its_json_would_be_the_same() {
        let flow = sample::kyc_basic();
        let (key, json) = flow_row_of(&flow).unwrap();
        assert_eq!(json, crate::rows::encode_json(&flow).unwrap());
        assert_eq!(flow_row_of(&flow.clone()).unwrap().0, key);
        let mut negative_zero = flow.clone();
        negative_zero.settings.face_match_threshold = -0.0;
        let mut zero = negative_zero.clone();
        zero.settings.face_match_threshold = 0.0;
        assert!(zero == negative_zero && !same_flow(&zero, &negative_zero));
        for f in [&zero, &negative_zero, &zero] {
            let (key, json) = flow_row_of(f).unwrap();
            assert_eq!(json, crate::rows::encode_json(f).unwrap());
            assert_eq!(key, flow_key(&json));
        }
        let mut step = flow.clone();
        step.steps[2].threshold = Some(-0.0);
        let mut other = flow.clone();
        other.steps[2].threshold = Some(0.0);
        assert!(!same_flow(&step, &other));
    }

    #[test]
    fn payloads_decode_in_place_and_from_their_text_exactly_as_serde_reads_their_tagged_form() {
        let events = sample::recorded_lives(5, AppKey(uuid::Uuid::from_u128(9)), 40, 2);
        let mut types = std::collections::BTreeSet::new();
        for e in &events {
            // The oracle: serde's plain reading of the enum's own (externally tagged) form,
            // the payload copied under its type.
            let tagged = serde_json::json!({ e.event_type.as_str(): e.payload.clone() });
            let slow: ApplicantEvent = serde_json::from_value(tagged).unwrap();
            let fast = decode(e).unwrap();
            assert_eq!(fast, slow);
            // The payload's stored text reads the same.
            let text = serde_json::to_string(&e.payload).unwrap();
            assert_eq!(
                ApplicantEvent::from_payload_json(&e.event_type, e.schema_version, &text),
                Ok(slow)
            );
            types.insert(e.event_type.as_str());
        }
        assert!(types.len() >= 10, "{types:?}");
    }
}
