//! The dashboard: counters per application per UTC day, summed over a range at query time.
//!
//! Two kinds of figures share a day row `d/<app>/<YYYY-MM-DD>`:
//! - what happened that day: applicants created, approvals, rejections, step results
//!   (successful vs failed verifications, failures per step, per-service results, document
//!   countries);
//! - cohorts: the applicants created that day by their *current* status and whether they are
//!   in review now, and the warnings raised that day and how many of them are resolved now.
//!
//! A per-applicant row `ap/<id>` remembers what the cohort counters need (creation day,
//! current status, reviewer, warnings' raise days).
use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::codec::{Reader, Writer};
use crate::rows::{RowCodec, RowStore};
use crate::{ApplicantFact, ApplicantProjection, ProjectionError, ReadModels};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use vetted_domain::{ApplicantEvent, ApplicantStatus, StepData, StepType};

/// Name of the dashboard projection.
pub const DASHBOARD: &str = "dashboard";

/// Longest range a dashboard query may span, in days.
pub const MAX_RANGE_DAYS: i64 = 3660;

/// How many countries `topCountries` lists.
const TOP_COUNTRIES: usize = 10;

/// Results of one verification service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcomes {
    /// Checks that passed.
    pub passed: u64,
    /// Checks that failed.
    pub failed: u64,
}

/// The counters of one application on one UTC day.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DayStats {
    /// Applicants created that day.
    pub created: u64,
    /// Applicants that became APPROVED that day.
    pub approved: u64,
    /// Applicants that became DECLINED that day.
    pub rejected: u64,
    /// Step results that day, passed vs failed.
    pub checks: Outcomes,
    /// Failed step results that day, by step.
    pub failures_per_step: BTreeMap<String, u64>,
    /// Step results that day, by service.
    pub services: BTreeMap<String, Outcomes>,
    /// Document checks that day, by document country.
    pub countries: BTreeMap<String, u64>,
    /// Applicants created that day, by current status.
    pub cohort_status: BTreeMap<String, u64>,
    /// Applicants created that day with a reviewer and no decision now.
    pub cohort_in_review: u64,
    /// Warnings raised that day.
    pub warnings_raised: u64,
    /// Warnings raised that day that are resolved now.
    pub warnings_resolved: u64,
}

/// What the dashboard remembers per applicant, in the compact layout of `crate::codec`
/// (tag 2): app, creation day, status, whether a reviewer is assigned, and each warning's id
/// and raise day.
#[derive(Debug, Clone, Default, PartialEq)]
struct Tracked {
    app: String,
    created_day: String,
    status: ApplicantStatus,
    has_reviewer: bool,
    /// Warning id → the day it was raised.
    warnings: BTreeMap<String, String>,
}

impl Tracked {
    fn in_review(&self) -> bool {
        self.has_reviewer && !self.status.is_decided()
    }
}

/// Layout tag of a `Tracked` row.
const TRACKED_TAG: u8 = 2;

impl RowCodec for Tracked {
    const TAG: u8 = TRACKED_TAG;

    fn write(&self, w: &mut Writer<'_>) {
        w.str(&self.app)
            .str(&self.created_day)
            .status(self.status)
            .bool(self.has_reviewer)
            .varint(self.warnings.len() as u64);
        for (id, day) in &self.warnings {
            w.str(id).str(day);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, ProjectionError> {
        let mut tracked = Tracked {
            app: r.string()?,
            created_day: r.string()?,
            status: r.status()?,
            has_reviewer: r.bool()?,
            warnings: BTreeMap::new(),
        };
        for _ in 0..r.varint()? {
            let id = r.string()?;
            tracked.warnings.insert(id, r.string()?);
        }
        Ok(tracked)
    }
}

/// The UTC day of `t` as `YYYY-MM-DD` (what chrono's `%Y-%m-%d` prints, without its
/// formatting machinery for the years 0..=9999).
fn day_of(t: DateTime<Utc>) -> String {
    thread_local! {
        /// The last day printed, by its number since 1970: events come in time order, so
        /// nearly every event falls on the day of the one before it.
        static LAST: std::cell::RefCell<(i64, String)> =
            const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let number = t.timestamp().div_euclid(86_400);
    LAST.with_borrow_mut(|(last, text)| {
        if *last != number {
            *text = print_day(t);
            *last = number;
        }
        text.clone()
    })
}

fn print_day(t: DateTime<Utc>) -> String {
    use chrono::Datelike;
    let date = t.date_naive();
    match date.year() {
        year @ 0..=9999 => format!("{year:04}-{:02}-{:02}", date.month(), date.day()),
        _ => date.format("%Y-%m-%d").to_string(),
    }
}

/// Prefix of an applicant's tracked row: `ap/<id>`.
const TRACKED_PREFIX: &str = "ap/";

fn day_key(app: &str, day: &str) -> String {
    let mut key = String::with_capacity(app.len() + day.len() + 3);
    key.push_str("d/");
    key.push_str(app);
    key.push('/');
    key.push_str(day);
    key
}

/// The dashboard projection.
#[derive(Clone, Copy)]
pub struct DashboardProjection;

impl DashboardProjection {
    fn bump<S: RowStore>(
        rows: &mut S,
        app: &str,
        day: &str,
        f: impl FnOnce(&mut DayStats),
    ) -> Result<(), ProjectionError> {
        thread_local! {
            /// The day row's key, spelled in a kept buffer.
            static KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        KEY.with_borrow_mut(|key| {
            key.clear();
            key.extend_from_slice(b"d/");
            key.extend_from_slice(app.as_bytes());
            key.push(b'/');
            key.extend_from_slice(day.as_bytes());
            rows.update_json::<DayStats, _>(key, |stats| {
                f(stats.get_or_insert_with(Default::default))
            })
        })
    }
}

impl ApplicantProjection for DashboardProjection {
    fn name(&self) -> &'static str {
        DASHBOARD
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
        let app = fact.tenant;
        let today = day_of(fact.recorded_at);
        let id = fact.applicant_id;
        let domain_event = fact.event;

        if let ApplicantEvent::ApplicantCreated { .. } = domain_event {
            let tracked = Tracked {
                app: app.to_string(),
                created_day: today.clone(),
                status: ApplicantStatus::Init,
                has_reviewer: false,
                warnings: BTreeMap::new(),
            };
            Self::bump(rows, app, &today, |d| {
                d.created += 1;
                count(&mut d.cohort_status, tracked.status.as_str(), |n| *n += 1);
            })?;
            return rows.update_applicant_row::<Tracked, _>(TRACKED_PREFIX, id, |row| {
                *row = Some(tracked)
            });
        }

        // Cohort changes are computed on the tracked row, then applied to the day rows.
        enum Cohort {
            Status {
                day: String,
                from: ApplicantStatus,
                to: ApplicantStatus,
                review: i64,
            },
            Review {
                day: String,
                delta: i64,
            },
            WarningResolved {
                day: String,
            },
        }
        let known = rows.update_applicant_row::<Tracked, _>(TRACKED_PREFIX, id, |row| {
            // Events of an applicant whose creation this projection never saw change nothing.
            let t = row.as_mut()?;
            let was_in_review = t.in_review();
            let delta = |t: &Tracked| t.in_review() as i64 - was_in_review as i64;
            Some(match domain_event {
                ApplicantEvent::StatusChanged { to, .. } => {
                    let from = std::mem::replace(&mut t.status, *to);
                    Some(Cohort::Status {
                        day: t.created_day.clone(),
                        from,
                        to: *to,
                        review: delta(t),
                    })
                }
                ApplicantEvent::ReviewerAssigned { .. }
                | ApplicantEvent::ReviewerUnassigned { .. } => {
                    t.has_reviewer =
                        matches!(domain_event, ApplicantEvent::ReviewerAssigned { .. });
                    Some(Cohort::Review {
                        day: t.created_day.clone(),
                        delta: delta(t),
                    })
                }
                ApplicantEvent::WarningRaised { warning_id, .. } => {
                    t.warnings.insert(warning_id.to_string(), today.clone());
                    None
                }
                ApplicantEvent::WarningResolved { warning_id, .. } => t
                    .warnings
                    .get(&warning_id.to_string())
                    .map(|day| Cohort::WarningResolved { day: day.clone() }),
                _ => None,
            })
        })?;
        // Only known applicants count.
        let Some(cohort) = known else { return Ok(()) };
        match cohort {
            Some(Cohort::Status {
                day,
                from,
                to,
                review,
            }) => Self::bump(rows, app, &day, |d| {
                if let Some(n) = d.cohort_status.get_mut(from.as_str()) {
                    *n = n.saturating_sub(1);
                }
                count(&mut d.cohort_status, to.as_str(), |n| *n += 1);
                d.cohort_in_review = d.cohort_in_review.saturating_add_signed(review);
            })?,
            Some(Cohort::Review { day, delta }) => Self::bump(rows, app, &day, |d| {
                d.cohort_in_review = d.cohort_in_review.saturating_add_signed(delta)
            })?,
            Some(Cohort::WarningResolved { day }) => {
                Self::bump(rows, app, &day, |d| d.warnings_resolved += 1)?
            }
            None => {}
        }

        match domain_event {
            ApplicantEvent::StatusChanged {
                to: ApplicantStatus::Approved,
                ..
            } => Self::bump(rows, app, &today, |d| d.approved += 1)?,
            ApplicantEvent::StatusChanged {
                to: ApplicantStatus::Declined,
                ..
            } => Self::bump(rows, app, &today, |d| d.rejected += 1)?,
            ApplicantEvent::StepPassed { step, data, .. } => {
                Self::bump(rows, app, &today, |d| record_check(d, *step, data, true))?
            }
            ApplicantEvent::StepFailed { step, data, .. } => {
                Self::bump(rows, app, &today, |d| record_check(d, *step, data, false))?
            }
            ApplicantEvent::WarningRaised { .. } => {
                Self::bump(rows, app, &today, |d| d.warnings_raised += 1)?
            }
            _ => {}
        }
        Ok(())
    }
}

/// The document country of a step result, if it is a document check that names one.
pub fn document_country(step: StepType, data: &StepData) -> Option<Cow<'_, str>> {
    (step == StepType::DocumentCheck)
        .then(|| data.str_field("country"))
        .flatten()
}

fn record_check(d: &mut DayStats, step: StepType, data: &StepData, passed: bool) {
    if passed {
        d.checks.passed += 1;
        count(&mut d.services, step.service(), |s| s.passed += 1);
    } else {
        d.checks.failed += 1;
        count(&mut d.services, step.service(), |s| s.failed += 1);
        count(&mut d.failures_per_step, step.as_str(), |n| *n += 1);
    }
    if let Some(country) = document_country(step, data) {
        count(&mut d.countries, &country, |n| *n += 1);
    }
}

/// Applies `f` to the counter of `name` (created at its default); the name is copied only
/// when the counter is new, not on every count.
fn count<T: Default>(counters: &mut BTreeMap<String, T>, name: &str, f: impl FnOnce(&mut T)) {
    match counters.get_mut(name) {
        Some(counter) => f(counter),
        None => {
            let mut counter = T::default();
            f(&mut counter);
            counters.insert(name.to_string(), counter);
        }
    }
}

/// The period a dashboard covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DashboardPeriod {
    /// The current UTC day.
    Today,
    /// Today and the 6 days before.
    Last7Days,
    /// Today and the 27 days before.
    Last28Days,
    /// From `from` to `to`, both included.
    Custom {
        /// First day.
        from: NaiveDate,
        /// Last day.
        to: NaiveDate,
    },
}

impl DashboardPeriod {
    /// The first and last day of the period, given today's UTC date.
    pub fn days(&self, today: NaiveDate) -> (NaiveDate, NaiveDate) {
        match *self {
            DashboardPeriod::Today => (today, today),
            DashboardPeriod::Last7Days => (today - Duration::days(6), today),
            DashboardPeriod::Last28Days => (today - Duration::days(27), today),
            DashboardPeriod::Custom { from, to } => (from, to),
        }
    }
}

/// Applicants created on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DayCount {
    /// The UTC day.
    pub day: NaiveDate,
    /// How many.
    pub count: u64,
}

/// Step results on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DayOutcomes {
    /// The UTC day.
    pub day: NaiveDate,
    /// Successful verifications (step results passed).
    pub passed: u64,
    /// Failed verifications (step results failed).
    pub failed: u64,
}

/// Warnings raised in the period, by whether they are resolved now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarningCounts {
    /// Resolved since.
    pub resolved: u64,
    /// Still open.
    pub unresolved: u64,
}

/// Document checks per country.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CountryCount {
    /// Country code as the document check reported it.
    pub country: String,
    /// Document checks with that country.
    pub count: u64,
}

/// Results of one service and its success rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRate {
    /// Service name (`document`, `liveness`, `face_match`, `aml`, `phone`, ...).
    pub service: String,
    /// Checks that passed.
    pub passed: u64,
    /// Checks that failed.
    pub failed: u64,
    /// `passed / (passed + failed)`, 0 when there were none.
    pub success_rate: f64,
}

/// The dashboard of one application over a range of days (`GET /v1/dashboard`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dashboard {
    /// First day.
    pub from: NaiveDate,
    /// Last day.
    pub to: NaiveDate,
    /// Applicants created per day (every day of the range, zeros included).
    pub created_per_day: Vec<DayCount>,
    /// Applicants created in the range, by current status (every status listed).
    pub status_counts: BTreeMap<String, u64>,
    /// Applicants created in the range with a reviewer and no decision now.
    pub in_review: u64,
    /// Applicants approved in the range.
    pub approved: u64,
    /// Applicants declined in the range.
    pub rejected: u64,
    /// Successful vs failed verifications (step results) per day.
    pub verifications_per_day: Vec<DayOutcomes>,
    /// Failed step results in the range, by step.
    pub failures_per_step: BTreeMap<String, u64>,
    /// Warnings raised in the range, resolved vs unresolved now.
    pub warnings: WarningCounts,
    /// Document countries, most frequent first (ties by name).
    pub top_countries: Vec<CountryCount>,
    /// Success rate per service, by service name.
    pub services: Vec<ServiceRate>,
}

impl ReadModels {
    /// The dashboard of application `app` from day `from` to day `to` (both included, UTC).
    pub fn dashboard(
        &self,
        app: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Dashboard, ProjectionError> {
        let span = (to - from).num_days();
        if !(0..MAX_RANGE_DAYS).contains(&span) {
            return Err(ProjectionError::Other(format!(
                "dashboard range {from}..{to} must run forwards and span at most {MAX_RANGE_DAYS} days"
            )));
        }
        let tree = self.live_table(DASHBOARD)?;
        let low = day_key(app, &from.format("%Y-%m-%d").to_string());
        let high = day_key(app, &to.format("%Y-%m-%d").to_string());
        let mut days = BTreeMap::new();
        for row in tree.range(low.as_bytes()..=high.as_bytes()) {
            let (key, value) = row?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let day = key
                .rsplit('/')
                .next()
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
            let Some(day) = day else { continue };
            let stats: DayStats =
                serde_json::from_slice(&value).map_err(|e| ProjectionError::Decode {
                    key,
                    reason: e.to_string(),
                })?;
            days.insert(day, stats);
        }
        Ok(summarize(from, to, &days))
    }
}

/// Sums day rows into the dashboard; days without a row count as zero.
pub(crate) fn summarize(
    from: NaiveDate,
    to: NaiveDate,
    days: &BTreeMap<NaiveDate, DayStats>,
) -> Dashboard {
    let mut status_counts: BTreeMap<String, u64> = ApplicantStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), 0))
        .collect();
    let (mut created_per_day, mut verifications_per_day) = (Vec::new(), Vec::new());
    let (mut in_review, mut approved, mut rejected) = (0, 0, 0);
    let mut failures_per_step = BTreeMap::new();
    let mut warnings = WarningCounts::default();
    let mut countries: BTreeMap<String, u64> = BTreeMap::new();
    let mut services: BTreeMap<String, Outcomes> = BTreeMap::new();
    let empty = DayStats::default();
    for day in from.iter_days().take_while(|d| *d <= to) {
        let d = days.get(&day).unwrap_or(&empty);
        created_per_day.push(DayCount {
            day,
            count: d.created,
        });
        verifications_per_day.push(DayOutcomes {
            day,
            passed: d.checks.passed,
            failed: d.checks.failed,
        });
        for (status, n) in &d.cohort_status {
            *status_counts.entry(status.clone()).or_default() += n;
        }
        in_review += d.cohort_in_review;
        approved += d.approved;
        rejected += d.rejected;
        for (step, n) in &d.failures_per_step {
            *failures_per_step.entry(step.clone()).or_default() += n;
        }
        warnings.resolved += d.warnings_resolved;
        warnings.unresolved += d.warnings_raised.saturating_sub(d.warnings_resolved);
        for (country, n) in &d.countries {
            *countries.entry(country.clone()).or_default() += n;
        }
        for (service, o) in &d.services {
            let total = services.entry(service.clone()).or_default();
            total.passed += o.passed;
            total.failed += o.failed;
        }
    }
    let mut top_countries: Vec<CountryCount> = countries
        .into_iter()
        .map(|(country, count)| CountryCount { country, count })
        .collect();
    top_countries.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.country.cmp(&b.country))
    });
    top_countries.truncate(TOP_COUNTRIES);
    let services = services
        .into_iter()
        .map(|(service, o)| {
            let total = o.passed + o.failed;
            let success_rate = if total == 0 {
                0.0
            } else {
                o.passed as f64 / total as f64
            };
            ServiceRate {
                service,
                passed: o.passed,
                failed: o.failed,
                success_rate,
            }
        })
        .collect();
    Dashboard {
        from,
        to,
        created_per_day,
        status_counts,
        in_review,
        approved,
        rejected,
        verifications_per_day,
        failures_per_step,
        warnings,
        top_countries,
        services,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_print_as_chrono_prints_them() {
        for (secs, day) in [
            (0, "1970-01-01"),
            (1_764_000_000, "2025-11-24"),
            (-62_135_596_800, "0001-01-01"),
            (-62_198_755_200, "-0001-01-01"),
            (253_402_300_800, "+10000-01-01"),
        ] {
            let t = DateTime::from_timestamp(secs, 0).unwrap();
            assert_eq!(day_of(t), day);
            assert_eq!(day_of(t), t.date_naive().format("%Y-%m-%d").to_string());
        }
    }

    #[test]
    fn the_tracked_row_reads_back_and_a_json_row_asks_for_a_rebuild() {
        let tracked = Tracked {
            app: "app-1".into(),
            created_day: "2026-11-22".into(),
            status: ApplicantStatus::Approved,
            has_reviewer: true,
            warnings: [("w-1".to_string(), "2026-11-23".to_string())].into(),
        };
        let bytes = tracked.encode_row();
        assert_eq!(Tracked::decode_row(b"ap/x", &bytes).unwrap(), tracked);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Tracked::decode_row(b"ap/x", &longer).is_err());
        let old = br#"{"app":"a","createdDay":"2026-11-22","status":"INIT","hasReviewer":false,"warnings":{}}"#;
        let err = Tracked::decode_row(b"ap/x", old).unwrap_err().to_string();
        assert!(err.contains("rebuild"), "{err}");
    }
}
