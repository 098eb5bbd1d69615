//! The reviewer queue: per reviewer, the applicants assigned to them that await a decision,
//! oldest assignment first.
//!
//! Rows: `rq/<id>` → what the queue knows of the applicant; `q/<app>/<reviewer>\0<assigned
//! BE micros><id bytes>` → [`QueueEntry`] while the applicant has that reviewer and no decision.
use crate::codec::{Reader, Writer};
use crate::rows::{RowCodec, RowStore};
use crate::{ApplicantFact, ApplicantProjection, ProjectionError, ReadModels, Table};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vetted_domain::{ApplicantEvent, ApplicantId, ApplicantStatus};

/// Name of the reviewer queue projection.
pub const REVIEWER_QUEUE: &str = "reviewer_queue";

/// An applicant waiting for a reviewer's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueEntry {
    /// Applicant id.
    pub id: ApplicantId,
    /// The client's own id for this user.
    pub external_user_id: String,
    /// Current status.
    pub status: ApplicantStatus,
    /// The reviewer.
    pub reviewer: String,
    /// When the reviewer was assigned (the queue's order).
    pub waiting_since: DateTime<Utc>,
    /// Unresolved warnings.
    pub open_warnings: u32,
}

/// One reviewer's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewerQueue {
    /// The reviewer.
    pub reviewer: String,
    /// Applicants awaiting their decision, oldest first.
    pub items: Vec<QueueEntry>,
}

/// What the queue knows of an applicant, in the compact layout of `crate::codec` (tag 3).
#[derive(Debug, Clone, PartialEq)]
struct Tracked {
    app: String,
    id: ApplicantId,
    external_user_id: String,
    status: ApplicantStatus,
    reviewer: Option<String>,
    assigned_at: Option<DateTime<Utc>>,
    open_warnings: u32,
}

/// Layout tag of a `Tracked` row.
const TRACKED_TAG: u8 = 3;

impl RowCodec for Tracked {
    const TAG: u8 = TRACKED_TAG;

    fn write(&self, w: &mut Writer<'_>) {
        w.str(&self.app)
            .uuid(&self.id.0)
            .str(&self.external_user_id)
            .status(self.status)
            .opt_str(self.reviewer.as_deref())
            .opt_time(self.assigned_at.as_ref())
            .varint(u64::from(self.open_warnings));
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ProjectionError> {
        Ok(Tracked {
            app: r.string()?,
            id: ApplicantId(r.uuid()?),
            external_user_id: r.string()?,
            status: r.status()?,
            reviewer: r.opt_string()?,
            assigned_at: r.opt_time()?,
            open_warnings: r.u32()?,
        })
    }
}

impl Tracked {
    /// The queue row this applicant should have now, if any.
    fn queue_row(&self) -> Option<(Vec<u8>, QueueEntry)> {
        let reviewer = self.reviewer.as_ref()?;
        let since = self.assigned_at?;
        if self.status.is_decided() {
            return None;
        }
        let mut key = reviewer_prefix(&self.app, reviewer);
        key.extend_from_slice(&(since.timestamp_micros().max(0) as u64).to_be_bytes());
        key.extend_from_slice(self.id.0.as_bytes());
        let entry = QueueEntry {
            id: self.id,
            external_user_id: self.external_user_id.clone(),
            status: self.status,
            reviewer: reviewer.clone(),
            waiting_since: since,
            open_warnings: self.open_warnings,
        };
        Some((key, entry))
    }
}

/// Prefix of an applicant's tracked row: `rq/<id>`.
const TRACKED_PREFIX: &str = "rq/";

fn reviewer_prefix(app: &str, reviewer: &str) -> Vec<u8> {
    format!("q/{app}/{reviewer}\0").into_bytes()
}

/// The reviewer queue projection.
#[derive(Clone, Copy)]
pub struct ReviewerQueueProjection;

impl ApplicantProjection for ReviewerQueueProjection {
    fn name(&self) -> &'static str {
        REVIEWER_QUEUE
    }

    // Nanoseconds per event, measured by `examples/rebuild_cost` (see docs/benchmarks.md).
    fn fold_cost(&self) -> u32 {
        190
    }

    /// 2: compact binary rows (1: JSON rows).
    fn layout(&self) -> u32 {
        2
    }

    fn apply_applicant<S: RowStore>(
        &self,
        rows: &mut S,
        fact: &ApplicantFact<'_>,
    ) -> Result<(), ProjectionError> {
        // Only these events can move an applicant in or out of a queue; others leave its
        // row as it is, so it is not even read.
        if !matches!(
            fact.event,
            ApplicantEvent::ApplicantCreated { .. }
                | ApplicantEvent::StatusChanged { .. }
                | ApplicantEvent::ReviewerAssigned { .. }
                | ApplicantEvent::ReviewerUnassigned { .. }
                | ApplicantEvent::WarningRaised { .. }
                | ApplicantEvent::WarningResolved { .. }
        ) {
            return Ok(());
        }
        let change =
            rows.update_applicant_row::<Tracked, _>(TRACKED_PREFIX, fact.applicant_id, |row| {
                if let ApplicantEvent::ApplicantCreated {
                    applicant_id,
                    external_user_id,
                    ..
                } = fact.event
                {
                    *row = Some(Tracked {
                        app: fact.tenant.to_string(),
                        id: *applicant_id,
                        external_user_id: external_user_id.clone(),
                        status: ApplicantStatus::Init,
                        reviewer: None,
                        assigned_at: None,
                        open_warnings: 0,
                    });
                    return None;
                }
                let t = row.as_mut()?;
                let before = t.queue_row();
                match fact.event {
                    ApplicantEvent::StatusChanged { to, .. } => t.status = *to,
                    ApplicantEvent::ReviewerAssigned { reviewer_id } => {
                        t.reviewer = Some(reviewer_id.clone());
                        t.assigned_at = Some(fact.recorded_at);
                    }
                    ApplicantEvent::ReviewerUnassigned { .. } => {
                        t.reviewer = None;
                        t.assigned_at = None;
                    }
                    ApplicantEvent::WarningRaised { .. } => t.open_warnings += 1,
                    ApplicantEvent::WarningResolved { .. } => {
                        t.open_warnings = t.open_warnings.saturating_sub(1)
                    }
                    _ => return None,
                }
                Some((before, t.queue_row()))
            })?;
        if let Some((before, after)) = change {
            if before != after {
                if let Some((old_key, _)) = before {
                    rows.remove(old_key);
                }
                if let Some((new_key, entry)) = after {
                    rows.put_json(new_key, &entry)?;
                }
            }
        }
        Ok(())
    }
}

impl ReadModels {
    /// Applicants of application `app` awaiting `reviewer`'s decision, oldest first.
    pub fn reviewer_queue(
        &self,
        app: &str,
        reviewer: &str,
    ) -> Result<Vec<QueueEntry>, ProjectionError> {
        let tree = self.live_table(REVIEWER_QUEUE)?;
        scan_entries(&tree, &reviewer_prefix(app, reviewer))
    }

    /// Every reviewer's queue in application `app`, by reviewer id.
    pub fn reviewer_queues(&self, app: &str) -> Result<Vec<ReviewerQueue>, ProjectionError> {
        let tree = self.live_table(REVIEWER_QUEUE)?;
        let mut queues: Vec<ReviewerQueue> = Vec::new();
        for entry in scan_entries(&tree, format!("q/{app}/").as_bytes())? {
            match queues.last_mut() {
                Some(q) if q.reviewer == entry.reviewer => q.items.push(entry),
                _ => queues.push(ReviewerQueue {
                    reviewer: entry.reviewer.clone(),
                    items: vec![entry],
                }),
            }
        }
        Ok(queues)
    }
}

fn scan_entries(tree: &Table, prefix: &[u8]) -> Result<Vec<QueueEntry>, ProjectionError> {
    let mut out = Vec::new();
    for row in tree.scan_prefix(prefix) {
        let (key, value) = row?;
        out.push(
            serde_json::from_slice(&value).map_err(|e| ProjectionError::Decode {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason: e.to_string(),
            })?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracked_row_reads_back_exactly() {
        let mut tracked = Tracked {
            app: "app-1".into(),
            id: ApplicantId(uuid::Uuid::from_u128(42)),
            external_user_id: "user-1".into(),
            status: ApplicantStatus::OnHold,
            reviewer: Some("rev-1".into()),
            assigned_at: DateTime::from_timestamp(1_764_000_000, 123_456_000),
            open_warnings: 2,
        };
        let bytes = tracked.encode_row();
        assert_eq!(Tracked::decode_row(b"rq/x", &bytes).unwrap(), tracked);
        tracked.reviewer = None;
        tracked.assigned_at = None;
        let bytes = tracked.encode_row();
        assert_eq!(Tracked::decode_row(b"rq/x", &bytes).unwrap(), tracked);
        assert!(Tracked::decode_row(b"rq/x", &bytes[..bytes.len() - 1]).is_err());
    }
}
