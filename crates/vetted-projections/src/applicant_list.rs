//! The applicant list: one small entry per applicant plus secondary indexes by creation time,
//! status and external user id, for `GET /v1/applicants?status=&externalUserId=` with
//! creation-range filters and cursor pagination (newest first).
//!
//! Rows: `i/<id>` → [`ApplicantListEntry`] in the compact layout of `crate::codec` (tag 4);
//! index rows (empty values) `s/<app>/<STATUS>/<created>` and
//! `x/<app>/<externalUserId>\0<created>`, where `<created>` is the creation time in
//! big-endian microseconds followed by the 16 id bytes, so every index sorts by creation
//! time. Each applicant is in exactly one status index, so the unfiltered list merges the
//! status indexes (newest first) rather than keeping a third index row per applicant.
use crate::codec::{Reader, Writer};
use crate::rows::{RowCodec, RowStore};
use crate::{ApplicantFact, ApplicantProjection, ProjectionError, ReadModels, TableIter};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vetted_domain::{ApplicantEvent, ApplicantId, ApplicantStatus};

/// Name of the applicant list projection.
pub const APPLICANT_LIST: &str = "applicant_list";

/// Most entries one page returns.
pub const MAX_PAGE: usize = 500;

/// One applicant in the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicantListEntry {
    /// Applicant id.
    pub id: ApplicantId,
    /// The application (tenant).
    pub app_key: String,
    /// The client's own id for this user.
    pub external_user_id: String,
    /// Current status.
    pub status: ApplicantStatus,
    /// The reviewer in charge.
    pub reviewer: Option<String>,
    /// When the applicant was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Stream version of the last event.
    pub version: u64,
}

/// Which applicants to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only applicants in this status.
    pub status: Option<ApplicantStatus>,
    /// Only applicants with this external user id.
    pub external_user_id: Option<String>,
    /// Only applicants created at or after this moment.
    pub created_from: Option<DateTime<Utc>>,
    /// Only applicants created at or before this moment.
    pub created_to: Option<DateTime<Utc>>,
}

/// Which page to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Entries per page (1..=500).
    pub limit: usize,
    /// `nextCursor` of the previous page; `None` for the first page.
    pub cursor: Option<String>,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: 50,
            cursor: None,
        }
    }
}

/// One page of the list; on the wire `{"items":[...],"nextCursor":"..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicantPage {
    /// Entries, newest first.
    pub items: Vec<ApplicantListEntry>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Layout tag of an entry row.
const ENTRY_TAG: u8 = 4;

impl RowCodec for ApplicantListEntry {
    const TAG: u8 = ENTRY_TAG;

    fn write(&self, w: &mut Writer<'_>) {
        w.uuid(&self.id.0)
            .str(&self.app_key)
            .str(&self.external_user_id)
            .status(self.status)
            .opt_str(self.reviewer.as_deref())
            .time(&self.created_at)
            .time(&self.updated_at)
            .varint(self.version);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ProjectionError> {
        Ok(ApplicantListEntry {
            id: ApplicantId(r.uuid()?),
            app_key: r.string()?,
            external_user_id: r.string()?,
            status: r.status()?,
            reviewer: r.opt_string()?,
            created_at: r.time()?,
            updated_at: r.time()?,
            version: r.varint()?,
        })
    }
}

/// Bytes of the sort suffix that ends every index key (see [`created_suffix`]).
const SUFFIX_LEN: usize = 24;

/// The sort suffix of index key `key`.
fn suffix_of(key: &[u8]) -> &[u8] {
    &key[key.len().saturating_sub(SUFFIX_LEN)..]
}

/// Creation time (BE micros) then id bytes: the sort suffix of every index key.
fn created_suffix(created_at: DateTime<Utc>, id: &ApplicantId) -> Vec<u8> {
    let mut out = Vec::with_capacity(SUFFIX_LEN);
    out.extend_from_slice(&(created_at.timestamp_micros().max(0) as u64).to_be_bytes());
    out.extend_from_slice(id.0.as_bytes());
    out
}

fn status_prefix(app: &str, status: ApplicantStatus) -> Vec<u8> {
    key([
        b"s/",
        app.as_bytes(),
        b"/",
        status.as_str().as_bytes(),
        b"/",
    ])
}

fn external_prefix(app: &str, external_user_id: &str) -> Vec<u8> {
    key([
        b"x/",
        app.as_bytes(),
        b"/",
        external_user_id.as_bytes(),
        b"\0",
    ])
}

/// The parts one after the other, with room for the sort suffix.
fn key<const N: usize>(parts: [&[u8]; N]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + SUFFIX_LEN);
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

/// Prefix of an applicant's entry row: `i/<id>`.
const ENTRY_PREFIX: &str = "i/";

fn entry_key(id: &str) -> String {
    format!("{ENTRY_PREFIX}{id}")
}

fn with_suffix(mut prefix: Vec<u8>, suffix: &[u8]) -> Vec<u8> {
    prefix.extend_from_slice(suffix);
    prefix
}

/// The applicant list projection.
#[derive(Clone, Copy)]
pub struct ApplicantListProjection;

impl ApplicantProjection for ApplicantListProjection {
    fn name(&self) -> &'static str {
        APPLICANT_LIST
    }

    // Nanoseconds per event, measured by `examples/rebuild_cost` (see docs/benchmarks.md).
    fn fold_cost(&self) -> u32 {
        230
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
        let id = fact.applicant_id;
        if let ApplicantEvent::ApplicantCreated {
            applicant_id,
            external_user_id,
            ..
        } = fact.event
        {
            let entry = ApplicantListEntry {
                id: *applicant_id,
                app_key: fact.tenant.to_string(),
                external_user_id: external_user_id.clone(),
                status: ApplicantStatus::Init,
                reviewer: None,
                created_at: fact.recorded_at,
                updated_at: fact.recorded_at,
                version: fact.stream_version,
            };
            let suffix = created_suffix(entry.created_at, &entry.id);
            let app = &entry.app_key;
            rows.put(
                with_suffix(status_prefix(app, entry.status), &suffix),
                Vec::new(),
            );
            rows.put(
                with_suffix(external_prefix(app, &entry.external_user_id), &suffix),
                Vec::new(),
            );
            rows.update_applicant_row::<ApplicantListEntry, _>(ENTRY_PREFIX, id, |row| {
                *row = Some(entry)
            })?;
            return Ok(());
        }
        // A status change moves the entry from one status index to the other: (from, to).
        let mut moved: Option<(Vec<u8>, Vec<u8>)> = None;
        rows.update_applicant_row::<ApplicantListEntry, _>(ENTRY_PREFIX, id, |row| {
            // Events of an applicant whose creation this projection never saw change nothing.
            let Some(entry) = row.as_mut() else { return };
            entry.updated_at = fact.recorded_at;
            entry.version = fact.stream_version;
            match fact.event {
                ApplicantEvent::StatusChanged { to, .. } if *to != entry.status => {
                    let suffix = created_suffix(entry.created_at, &entry.id);
                    let from = with_suffix(status_prefix(&entry.app_key, entry.status), &suffix);
                    entry.status = *to;
                    let to = with_suffix(status_prefix(&entry.app_key, entry.status), &suffix);
                    moved = Some((from, to));
                }
                ApplicantEvent::ReviewerAssigned { reviewer_id } => {
                    entry.reviewer = Some(reviewer_id.clone())
                }
                ApplicantEvent::ReviewerUnassigned { .. } => entry.reviewer = None,
                _ => {}
            }
        })?;
        if let Some((from, to)) = moved {
            rows.remove(from);
            rows.put(to, Vec::new());
        }
        Ok(())
    }
}

impl ReadModels {
    /// Applicants of application `app` matching `filter`, newest first, one page at a time.
    pub fn list(
        &self,
        app: &str,
        filter: &ListFilter,
        page: &Page,
    ) -> Result<ApplicantPage, ProjectionError> {
        let tree = self.live_table(APPLICANT_LIST)?;
        // Scan the most selective index; check the other conditions on the entry. Without a
        // filter, merge the status indexes: every applicant is in exactly one of them.
        let prefixes: Vec<Vec<u8>> = match (&filter.external_user_id, filter.status) {
            (Some(external), _) => vec![external_prefix(app, external)],
            (None, Some(status)) => vec![status_prefix(app, status)],
            (None, None) => ApplicantStatus::ALL
                .iter()
                .map(|s| status_prefix(app, *s))
                .collect(),
        };
        let cursor = match &page.cursor {
            Some(cursor) => Some(hex::decode(cursor).ok().filter(|s| s.len() == SUFFIX_LEN).ok_or_else(|| {
                ProjectionError::Other(format!("cursor {cursor} is not a cursor this list returned; start from the first page"))
            })?),
            None => None,
        };
        let micros = |t: DateTime<Utc>| t.timestamp_micros().max(0) as u64;
        // Each scan with its next key, newest first; the newest of those goes next.
        let mut scans = prefixes
            .into_iter()
            .map(|prefix| {
                let low = with_suffix(
                    prefix.clone(),
                    &filter.created_from.map_or(0, micros).to_be_bytes(),
                );
                let mut high = match filter.created_to {
                    Some(to) => {
                        with_suffix(prefix.clone(), &micros(to).saturating_add(1).to_be_bytes())
                    }
                    None => prefix_end(&prefix),
                };
                if let Some(suffix) = &cursor {
                    high = high.min(with_suffix(prefix.clone(), suffix));
                }
                let mut scan = tree.range(low..high);
                let head = scan.next_back().transpose()?.map(|(k, _)| k);
                Ok((scan, head))
            })
            .collect::<Result<Vec<(TableIter, Option<sled::IVec>)>, ProjectionError>>()?;
        let limit = page.limit.clamp(1, MAX_PAGE);
        let mut items = Vec::new();
        let mut next_cursor = None;
        loop {
            let newest = scans.iter_mut().max_by(|a, b| {
                a.1.as_deref()
                    .map(suffix_of)
                    .cmp(&b.1.as_deref().map(suffix_of))
            });
            let Some((scan, head)) = newest else { break };
            let Some(key) = head.take() else { break };
            *head = scan.next_back().transpose()?.map(|(k, _)| k);
            let suffix = suffix_of(&key);
            let Some(id) = suffix
                .get(8..24)
                .and_then(|b| uuid::Uuid::from_slice(b).ok())
            else {
                continue;
            };
            let entry_key = entry_key(&id.to_string());
            let Some(bytes) = tree.get(entry_key.as_bytes())? else {
                continue;
            };
            let entry = ApplicantListEntry::decode_row(entry_key.as_bytes(), &bytes)?;
            if filter.status.is_some_and(|s| s != entry.status) {
                continue;
            }
            if items.len() == limit {
                next_cursor = Some(hex::encode(last_suffix(&items)));
                break;
            }
            items.push(entry);
        }
        Ok(ApplicantPage { items, next_cursor })
    }
}

fn last_suffix(items: &[ApplicantListEntry]) -> Vec<u8> {
    items
        .last()
        .map(|e| created_suffix(e.created_at, &e.id))
        .unwrap_or_default()
}

/// The smallest key above every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_row_reads_back_exactly() {
        let mut entry = ApplicantListEntry {
            id: ApplicantId(uuid::Uuid::from_u128(42)),
            app_key: "app-1".into(),
            external_user_id: "user-1".into(),
            status: ApplicantStatus::Declined,
            reviewer: Some("rev-2".into()),
            created_at: DateTime::from_timestamp(1_764_000_000, 123_456_789).unwrap(),
            updated_at: DateTime::from_timestamp(1_764_000_900, 1_000).unwrap(),
            version: 300,
        };
        let bytes = entry.encode_row();
        assert_eq!(
            ApplicantListEntry::decode_row(b"i/x", &bytes).unwrap(),
            entry
        );
        entry.reviewer = None;
        let bytes = entry.encode_row();
        assert_eq!(
            ApplicantListEntry::decode_row(b"i/x", &bytes).unwrap(),
            entry
        );
        assert!(ApplicantListEntry::decode_row(b"i/x", &bytes[..bytes.len() - 1]).is_err());
    }
}
