//! The webhook projector: folds applicant events into a small per-applicant row and writes one
//! outbox row per webhook, in the same `Rows` commit as its checkpoint, so a notification is
//! neither lost nor duplicated by a crash.
//!
//! Outbox rows are keyed by the event's global position (`outbox/<BE u64>`): a position has at
//! most one webhook, the key is deterministic (a rebuilt generation has identical rows), and the
//! delivery worker can follow the outbox with a plain position cursor.
//!
//! Outbox rows are written even in a muted (rebuild) batch: the worker takes in only positions
//! above its cursor, so history is never sent twice, and a rebuilt generation keeps exactly the
//! rows of the live one (its digest matches, and nothing the worker had not yet taken in is lost
//! when the generations switch).

use serde_json::Value;
use vetted_projections::{Projection, ProjectionError, Rows};
use vetted_store::RecordedEvent;

use crate::notification::{ApplicantRow, Notification, WebhookType};

/// Name of the projection (and of its trees, `proj/webhooks/g<n>`).
pub const PROJECTION_NAME: &str = "webhooks";
/// Key prefix of outbox rows in the projector's tree.
pub const OUTBOX_PREFIX: &[u8] = b"outbox/";
/// Key prefix of per-applicant rows in the projector's tree.
pub const APPLICANT_PREFIX: &[u8] = b"applicant/";
/// Stream prefix of applicant streams; other streams carry no webhooks.
const APPLICANT_STREAM: &str = "applicant-";

/// The outbox row key of the notification caused by the event at `position`.
pub fn outbox_key(position: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(OUTBOX_PREFIX.len() + 8);
    key.extend_from_slice(OUTBOX_PREFIX);
    key.extend_from_slice(&position.to_be_bytes());
    key
}

/// The position encoded in an outbox row key, if it is one.
pub fn position_of_outbox_key(key: &[u8]) -> Option<u64> {
    let bytes = key.strip_prefix(OUTBOX_PREFIX)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn applicant_key(applicant_id: &str) -> Vec<u8> {
    [APPLICANT_PREFIX, applicant_id.as_bytes()].concat()
}

/// The projection named `webhooks` (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct WebhookProjector;

fn text<'a>(
    event: &RecordedEvent,
    payload: &'a Value,
    field: &str,
) -> Result<&'a str, ProjectionError> {
    payload
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| ProjectionError::Decode {
            key: format!("{}@{}", event.stream_id, event.stream_version),
            reason: format!("{} payload has no string field {field:?}", event.event_type),
        })
}

impl WebhookProjector {
    /// The notification (if any) an event produces, given the applicant row before the event;
    /// updates the row. Pure: the projection and tests share it.
    pub fn fold(
        row: Option<ApplicantRow>,
        applicant_id: &str,
        event: &RecordedEvent,
    ) -> Result<(Option<ApplicantRow>, Option<Notification>), ProjectionError> {
        let payload = &event.payload;
        let missing_row = || ProjectionError::Decode {
            key: format!("{}@{}", event.stream_id, event.stream_version),
            reason: format!(
                "{} arrived before ApplicantCreated: the stream is incomplete",
                event.event_type
            ),
        };
        let (row, webhook, step) = match event.event_type.as_str() {
            "ApplicantCreated" => {
                let app_key = payload
                    .get("appKey")
                    .and_then(Value::as_str)
                    .unwrap_or(&event.tenant);
                let row = ApplicantRow {
                    external_user_id: text(event, payload, "externalUserId")?.to_owned(),
                    app_key: app_key.to_owned(),
                    status: "INIT".to_owned(),
                    warnings: Default::default(),
                };
                (row, Some(WebhookType::ApplicantCreated), None)
            }
            "StatusChanged" => {
                let mut row = row.ok_or_else(missing_row)?;
                let to = text(event, payload, "to")?;
                row.status = to.to_owned();
                (row, WebhookType::for_status(to), None)
            }
            "WarningRaised" => {
                let mut row = row.ok_or_else(missing_row)?;
                let id = text(event, payload, "warningId")?;
                row.warnings
                    .insert(id.to_owned(), text(event, payload, "code")?.to_owned());
                (row, None, None)
            }
            "WarningResolved" => {
                let mut row = row.ok_or_else(missing_row)?;
                row.warnings.remove(text(event, payload, "warningId")?);
                (row, None, None)
            }
            "ReviewerAssigned" => (
                row.ok_or_else(missing_row)?,
                Some(WebhookType::ApplicantInReview),
                None,
            ),
            "StepPassed" => {
                let step = text(event, payload, "step")?.to_owned();
                (
                    row.ok_or_else(missing_row)?,
                    Some(WebhookType::ApplicantStepPassed),
                    Some(step),
                )
            }
            _ => return Ok((row, None)),
        };
        let notification = webhook.map(|webhook_type| Notification {
            id: applicant_id.to_owned(),
            external_user_id: row.external_user_id.clone(),
            app_key: row.app_key.clone(),
            webhook_type,
            status: row.status.clone(),
            warnings: row.warning_codes(),
            step_name: step,
            event_id: event.event_id,
            sequence: event.stream_version,
            occurred_at: event.recorded_at,
        });
        Ok((Some(row), notification))
    }
}

impl Projection for WebhookProjector {
    fn name(&self) -> &'static str {
        PROJECTION_NAME
    }

    fn apply(&self, rows: &mut Rows<'_>, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let Some(applicant_id) = event.stream_id.strip_prefix(APPLICANT_STREAM) else {
            return Ok(());
        };
        let key = applicant_key(applicant_id);
        let row: Option<ApplicantRow> = rows.get_json(&key)?;
        let before = row.clone();
        let (row, notification) = match Self::fold(row, applicant_id, event) {
            Ok(folded) => folded,
            Err(error) => {
                // The log is immutable: failing here would stop every application's webhooks
                // forever over one malformed stream. Skip the event loudly instead.
                tracing::error!(%error, position = event.global_position, "webhook projector skipped an event");
                return Ok(());
            }
        };
        if row != before {
            if let Some(row) = &row {
                rows.put_json(key, row)?;
            }
        }
        if let Some(notification) = notification {
            rows.put_json(outbox_key(event.global_position), &notification)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;
    use vetted_store::Actor;

    fn event(
        position: u64,
        stream: &str,
        version: u64,
        event_type: &str,
        payload: Value,
    ) -> RecordedEvent {
        RecordedEvent {
            global_position: position,
            stream_id: stream.to_owned(),
            stream_version: version,
            event_id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            schema_version: 1,
            recorded_at: Utc::now(),
            tenant: "app-1".to_owned(),
            actor: Actor::system(),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            payload,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn outbox(tree: &sled::Tree) -> Vec<Notification> {
        tree.scan_prefix(OUTBOX_PREFIX)
            .map(|r| serde_json::from_slice(&r.unwrap().1).unwrap())
            .collect()
    }

    #[test]
    fn a_raised_warning_shows_in_later_payloads_until_resolved() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("proj/webhooks/g0").unwrap();
        let a = "applicant-7f3a";
        let events = [
            event(
                1,
                a,
                0,
                "ApplicantCreated",
                json!({"appKey": "app-1", "externalUserId": "user-42"}),
            ),
            event(
                2,
                a,
                1,
                "WarningRaised",
                json!({"warningId": "w1", "code": "DOCUMENT_EXPIRED", "message": "m"}),
            ),
            event(
                3,
                a,
                2,
                "StatusChanged",
                json!({"from": "INIT", "to": "ON_HOLD", "reason": "r"}),
            ),
            event(4, a, 3, "WarningResolved", json!({"warningId": "w1"})),
            event(
                5,
                a,
                4,
                "StepPassed",
                json!({"step": "liveness", "attempt": 1, "data": {}}),
            ),
            event(6, "application-app-1", 0, "ApplicationUpdated", json!({})),
        ];
        let mut rows = Rows::new(&tree);
        for e in &events {
            WebhookProjector.apply(&mut rows, e).unwrap();
        }
        rows.commit(6).unwrap();
        let sent = outbox(&tree);
        let types: Vec<WebhookType> = sent.iter().map(|n| n.webhook_type).collect();
        assert_eq!(
            types,
            [
                WebhookType::ApplicantCreated,
                WebhookType::ApplicantOnHold,
                WebhookType::ApplicantStepPassed
            ]
        );
        assert_eq!(sent[1].warnings, ["DOCUMENT_EXPIRED"]);
        assert_eq!(sent[1].status, "ON_HOLD");
        assert!(sent[2].warnings.is_empty());
        assert_eq!(sent[2].step_name.as_deref(), Some("liveness"));
        assert_eq!(sent[2].sequence, 4);
        assert_eq!(sent[0].id, "7f3a");
    }

    #[test]
    fn a_malformed_stream_is_skipped_without_stopping_other_applicants_webhooks() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("proj/webhooks/g0").unwrap();
        let mut rows = Rows::new(&tree);
        let orphan = event(
            1,
            "applicant-orphan",
            3,
            "StatusChanged",
            json!({"to": "APPROVED"}),
        );
        WebhookProjector.apply(&mut rows, &orphan).unwrap();
        let ok = event(
            2,
            "applicant-b",
            0,
            "ApplicantCreated",
            json!({"appKey": "app-1", "externalUserId": "u"}),
        );
        WebhookProjector.apply(&mut rows, &ok).unwrap();
        rows.commit(2).unwrap();
        assert_eq!(outbox(&tree).len(), 1);
        assert_eq!(position_of_outbox_key(&outbox_key(2)), Some(2));
    }
}
