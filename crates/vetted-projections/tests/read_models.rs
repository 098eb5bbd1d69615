//! The read models over real domain events: wire shape, as-of replay, timeline, list,
//! dashboard and reviewer queue, each checked against a brute-force reading of the log.
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use common::HistoricalLog;
use uuid::Uuid;
use vetted_domain::{fold, AppKey, Applicant, ApplicantEvent, ApplicantId, ApplicantStatus};
use vetted_projections::replay::{timeline_as_of, view_as_of};
use vetted_projections::sample::{self, Append, Rng};
use vetted_projections::{
    digest_tree, rebuild, verify, DashboardPeriod, ListFilter, Page, ReadModels, Runner,
};
use vetted_store::{EventStore, ExpectedVersion, MemoryStore, RecordedEvent, SledStore};

const WAIT: Duration = Duration::from_secs(10);

fn app() -> AppKey {
    AppKey(Uuid::from_u128(0x0a99_0000_0000_4000_8000_0000_0000_0001))
}

fn temp_db() -> sled::Db {
    sled::Config::new().temporary(true).open().unwrap()
}

async fn append(store: &dyn EventStore, a: &Append) -> u64 {
    store
        .append(&a.stream, ExpectedVersion::Any, a.events.clone())
        .await
        .unwrap()
        .last_position
}

fn applicant_of(a: &Append) -> ApplicantId {
    ApplicantId::from_stream(&a.stream).unwrap()
}

/// A lifecycle long enough to hit every kind of event, found by trying seeds.
fn rich_lifecycle(extra_comments: usize) -> Vec<Append> {
    for seed in 1.. {
        let mut rng = Rng::new(seed);
        let life = sample::lifecycle(
            &mut rng,
            app(),
            &sample::kyc_basic(),
            Utc::now(),
            extra_comments,
        );
        let types: Vec<&str> = life
            .iter()
            .flat_map(|a| a.events.iter().map(|e| e.event_type.as_str()))
            .collect();
        if [
            "StepFailed",
            "WarningRaised",
            "ReviewerAssigned",
            "StatusChanged",
        ]
        .iter()
        .all(|t| types.contains(t))
        {
            return life;
        }
    }
    unreachable!("some seed gives a rich lifecycle")
}

#[tokio::test]
async fn a_created_applicant_reads_back_in_the_wire_shape_of_the_api() {
    let store = Arc::new(MemoryStore::new());
    let read_models = Arc::new(ReadModels::open(temp_db()).unwrap());
    let runner = Runner::start(read_models.clone(), store.clone());
    let life = rich_lifecycle(0);
    let id = applicant_of(&life[0]);
    let head = append(store.as_ref(), &life[0]).await;
    runner.wait_for(head, WAIT).await.unwrap();

    let view = read_models
        .get_view(&app().to_string(), &id)
        .unwrap()
        .expect("the applicant is visible");
    let wire = serde_json::to_value(&view).unwrap();
    assert_eq!(wire["id"], id.to_string());
    assert_eq!(wire["appKey"], app().to_string());
    assert_eq!(wire["status"], "INIT");
    assert_eq!(wire["version"], 0);
    assert_eq!(
        wire["flow"],
        serde_json::json!({"name": "kyc-basic", "version": 1})
    );
    assert_eq!(wire["steps"][0]["type"], "document_check");
    assert_eq!(wire["steps"][0]["status"], "pending");
    assert_eq!(wire["steps"][0]["attempts"], 0);
    assert_eq!(wire["warnings"], serde_json::json!([]));
    assert_eq!(wire["reviewer"], serde_json::Value::Null);
    assert_eq!(wire["createdAt"], wire["updatedAt"]);
    assert!(wire["externalUserId"]
        .as_str()
        .unwrap()
        .starts_with("user-"));
    assert_eq!(
        wire["device"]["ip"], "10.0.0.7",
        "the API call's environment"
    );

    let other_app = AppKey(Uuid::from_u128(7)).to_string();
    assert_eq!(
        read_models.get_view(&other_app, &id).unwrap(),
        None,
        "another application cannot see it"
    );
    assert!(read_models
        .timeline(&other_app, &id)
        .unwrap()
        .items
        .is_empty());
    runner.stop().await;
}

#[tokio::test]
async fn an_auditor_replay_as_of_any_moment_shows_the_same_bytes_the_live_view_showed() {
    replay_shows_what_the_live_view_showed(Arc::new(MemoryStore::new())).await;
}

/// The same on the embedded log, whose replays read the stored JSON (`read_stream_batch`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_replay_from_the_embedded_log_shows_the_same_bytes_the_live_view_showed() {
    let dir = tempfile::tempdir().unwrap();
    replay_shows_what_the_live_view_showed(Arc::new(SledStore::open(dir.path()).unwrap())).await;
}

async fn replay_shows_what_the_live_view_showed<S: EventStore>(store: Arc<S>) {
    let read_models = Arc::new(ReadModels::open(temp_db()).unwrap());
    let runner = Runner::start(read_models.clone(), store.clone());
    let life = rich_lifecycle(5);
    let id = applicant_of(&life[0]);
    let app = app().to_string();

    // Record what the live read models showed after each append, and when.
    let mut moments: Vec<(DateTime<Utc>, Vec<u8>, Vec<u8>)> = Vec::new();
    for a in &life {
        let head = append(store.as_ref(), a).await;
        runner.wait_for(head, WAIT).await.unwrap();
        let at = store.read_all(head, 1).await.unwrap()[0].recorded_at;
        let view = serde_json::to_vec(&read_models.get_view(&app, &id).unwrap()).unwrap();
        let timeline = serde_json::to_vec(&read_models.timeline(&app, &id).unwrap()).unwrap();
        moments.push((at, view, timeline));
    }
    // Two appends within one microsecond share a moment: only the later state is "as of" it.
    let distinct: Vec<_> = moments
        .windows(2)
        .filter(|w| w[0].0 < w[1].0)
        .map(|w| &w[0])
        .chain(moments.last())
        .collect();
    assert!(
        distinct.len() >= life.len() / 2,
        "most moments are distinct"
    );

    for (at, live_view, live_timeline) in distinct {
        let replayed = serde_json::to_vec(
            &view_as_of(store.as_ref(), &app, &id, Some(*at))
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(&replayed, live_view, "view as of {at}");
        let replayed = serde_json::to_vec(
            &timeline_as_of(store.as_ref(), &app, &id, Some(*at))
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(&replayed, live_timeline, "timeline as of {at}");
    }
    let before = moments[0].0 - chrono::Duration::seconds(1);
    assert_eq!(
        view_as_of(store.as_ref(), &app, &id, Some(before))
            .await
            .unwrap(),
        None,
        "nothing before creation"
    );
    runner.stop().await;
}

#[tokio::test]
async fn the_timeline_shows_every_event_with_who_did_it_and_from_where() {
    let store = Arc::new(MemoryStore::new());
    let read_models = Arc::new(ReadModels::open(temp_db()).unwrap());
    let runner = Runner::start(read_models.clone(), store.clone());
    let life = rich_lifecycle(0);
    let id = applicant_of(&life[0]);
    let mut head = 0;
    for a in &life {
        head = append(store.as_ref(), a).await;
    }
    runner.wait_for(head, WAIT).await.unwrap();

    let timeline = read_models.timeline(&app().to_string(), &id).unwrap();
    let events = store.read_stream(&id.stream(), 0, 1000).await.unwrap();
    assert_eq!(timeline.items.len(), events.len());
    for (entry, event) in timeline.items.iter().zip(&events) {
        assert_eq!(
            (entry.version, &entry.action, entry.at),
            (event.stream_version, &event.event_type, event.recorded_at)
        );
        assert_eq!(entry.actor.kind, event.actor.kind);
        assert_eq!(entry.actor.id, event.actor.id);
        assert_eq!(
            (&entry.ip, &entry.os, &entry.browser),
            (&event.actor.ip, &event.actor.os, &event.actor.browser)
        );
    }
    let started = timeline
        .items
        .iter()
        .find(|e| e.action == "VerificationStarted")
        .unwrap();
    assert_eq!(started.actor.kind, vetted_store::ActorKind::Applicant);
    assert!(
        started.ip.as_deref().unwrap().starts_with("203.0.113."),
        "the applicant's own IP"
    );
    assert!(started.browser.is_some() && started.os.is_some() && started.user_agent.is_some());
    let failed = timeline
        .items
        .iter()
        .find(|e| e.action == "StepFailed")
        .unwrap();
    assert!(
        failed.summary.contains("failed (attempt"),
        "{}",
        failed.summary
    );
    let wire = serde_json::to_value(&timeline).unwrap();
    assert!(wire["items"][0]["userAgent"].is_string());
    runner.stop().await;
}

/// Six weeks of traffic from two applications, recorded at their own times.
fn six_weeks() -> (Vec<RecordedEvent>, NaiveDate) {
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut appends = sample::population(42, app(), 400, start, 42);
    appends.extend(sample::population(
        43,
        AppKey(Uuid::from_u128(99)),
        50,
        start,
        42,
    ));
    appends.sort_by_key(|a| a.at);
    let events = sample::record(&appends);
    let last_day = events.last().unwrap().recorded_at.date_naive();
    (events, last_day)
}

fn per_applicant(
    events: &[RecordedEvent],
) -> BTreeMap<String, Vec<(RecordedEvent, ApplicantEvent)>> {
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for e in events {
        let d = ApplicantEvent::from_payload(&e.event_type, e.schema_version, &e.payload).unwrap();
        out.entry(e.stream_id.clone())
            .or_default()
            .push((e.clone(), d));
    }
    out
}

fn final_state(history: &[(RecordedEvent, ApplicantEvent)]) -> Applicant {
    fold(history.iter().map(|(_, d)| d))
}

#[tokio::test]
async fn dashboard_figures_equal_a_brute_force_count_over_the_log() {
    let (events, today) = six_weeks();
    let log = HistoricalLog {
        events: events.clone(),
    };
    let read_models = ReadModels::open(temp_db()).unwrap();
    rebuild(&read_models, &log, &["dashboard"], &mut |_| {})
        .await
        .unwrap();
    let app = app().to_string();
    let histories = per_applicant(&events);
    let in_range =
        |t: DateTime<Utc>, from: NaiveDate, to: NaiveDate| (from..=to).contains(&t.date_naive());

    let periods = [
        DashboardPeriod::Today,
        DashboardPeriod::Last7Days,
        DashboardPeriod::Last28Days,
        DashboardPeriod::Custom {
            from: NaiveDate::from_ymd_opt(2025, 12, 1).unwrap(),
            to: today,
        },
        DashboardPeriod::Custom {
            from: NaiveDate::from_ymd_opt(2026, 1, 10).unwrap(),
            to: NaiveDate::from_ymd_opt(2026, 1, 10).unwrap(),
        },
    ];
    for period in periods {
        let (from, to) = period.days(today);
        let got = read_models.dashboard(&app, from, to).unwrap();

        let mut status_counts: BTreeMap<String, u64> = ApplicantStatus::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), 0))
            .collect();
        let (mut in_review, mut approved, mut rejected) = (0, 0, 0);
        let mut created: BTreeMap<NaiveDate, u64> = BTreeMap::new();
        let mut checks: BTreeMap<NaiveDate, (u64, u64)> = BTreeMap::new();
        let mut failures: BTreeMap<String, u64> = BTreeMap::new();
        let (mut resolved, mut unresolved) = (0, 0);
        let mut countries: HashMap<String, u64> = HashMap::new();
        let mut services: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for history in histories.values().filter(|h| h[0].0.tenant == app) {
            let state = final_state(history);
            let created_at = history[0].0.recorded_at;
            if in_range(created_at, from, to) {
                *created.entry(created_at.date_naive()).or_default() += 1;
                *status_counts.get_mut(state.status.as_str()).unwrap() += 1;
                if state.reviewer.is_some() && !state.status.is_decided() {
                    in_review += 1;
                }
            }
            for (e, d) in history
                .iter()
                .filter(|(e, _)| in_range(e.recorded_at, from, to))
            {
                let day = e.recorded_at.date_naive();
                match d {
                    ApplicantEvent::StatusChanged {
                        to: ApplicantStatus::Approved,
                        ..
                    } => approved += 1,
                    ApplicantEvent::StatusChanged {
                        to: ApplicantStatus::Declined,
                        ..
                    } => rejected += 1,
                    ApplicantEvent::StepPassed { step, data, .. }
                    | ApplicantEvent::StepFailed { step, data, .. } => {
                        let passed = matches!(d, ApplicantEvent::StepPassed { .. });
                        let c = checks.entry(day).or_default();
                        let s = services.entry(step.service().to_string()).or_default();
                        if passed {
                            c.0 += 1;
                            s.0 += 1;
                        } else {
                            c.1 += 1;
                            s.1 += 1;
                            *failures.entry(step.as_str().to_string()).or_default() += 1;
                        }
                        let data = data.to_value();
                        if let Some(country) = data.get("country").and_then(|c| c.as_str()) {
                            *countries.entry(country.to_string()).or_default() += 1;
                        }
                    }
                    ApplicantEvent::WarningRaised { warning_id, .. } => {
                        if state.warning(*warning_id).unwrap().resolved {
                            resolved += 1;
                        } else {
                            unresolved += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
        let days: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
        assert_eq!(
            got.created_per_day
                .iter()
                .map(|d| (d.day, d.count))
                .collect::<Vec<_>>(),
            days.iter()
                .map(|d| (*d, created.get(d).copied().unwrap_or(0)))
                .collect::<Vec<_>>(),
            "{period:?}: created per day"
        );
        assert_eq!(
            got.status_counts, status_counts,
            "{period:?}: status counts"
        );
        assert_eq!(
            (got.in_review, got.approved, got.rejected),
            (in_review, approved, rejected),
            "{period:?}"
        );
        assert_eq!(
            got.verifications_per_day
                .iter()
                .map(|d| (d.day, d.passed, d.failed))
                .collect::<Vec<_>>(),
            days.iter()
                .map(|d| {
                    let c = checks.get(d).copied().unwrap_or((0, 0));
                    (*d, c.0, c.1)
                })
                .collect::<Vec<_>>(),
            "{period:?}: verifications per day"
        );
        assert_eq!(
            got.failures_per_step, failures,
            "{period:?}: failures per step"
        );
        assert_eq!(
            (got.warnings.resolved, got.warnings.unresolved),
            (resolved, unresolved),
            "{period:?}: warnings"
        );
        let mut top: Vec<(String, u64)> = countries.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(10);
        assert_eq!(
            got.top_countries
                .iter()
                .map(|c| (c.country.clone(), c.count))
                .collect::<Vec<_>>(),
            top
        );
        assert_eq!(
            got.services
                .iter()
                .map(|s| (s.service.clone(), (s.passed, s.failed)))
                .collect::<BTreeMap<_, _>>(),
            services,
            "{period:?}: services"
        );
        for s in &got.services {
            assert!(
                (s.success_rate - s.passed as f64 / (s.passed + s.failed) as f64).abs() < 1e-12
            );
        }
    }
    let month = read_models
        .dashboard(&app, NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), today)
        .unwrap();
    assert!(
        month.approved > 0 && month.rejected > 0 && month.in_review > 0,
        "the sample covers every figure: {month:?}"
    );
    assert!(month.warnings.resolved > 0 && month.warnings.unresolved > 0);
}

#[tokio::test]
async fn the_applicant_list_filters_and_pages_newest_first_like_a_scan_of_the_log() {
    let (events, _) = six_weeks();
    let log = HistoricalLog {
        events: events.clone(),
    };
    let read_models = ReadModels::open(temp_db()).unwrap();
    rebuild(&read_models, &log, &["applicant_list"], &mut |_| {})
        .await
        .unwrap();
    let app = app().to_string();
    let mut everyone: Vec<(DateTime<Utc>, ApplicantId, Applicant)> = per_applicant(&events)
        .values()
        .filter(|h| h[0].0.tenant == app)
        .map(|h| {
            (
                h[0].0.recorded_at,
                ApplicantId::from_stream(&h[0].0.stream_id).unwrap(),
                final_state(h),
            )
        })
        .collect();
    everyone.sort_by_key(|(at, id, _)| std::cmp::Reverse((*at, *id)));
    let jan_10 = Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap();
    let jan_20 = Utc.with_ymd_and_hms(2026, 1, 20, 0, 0, 0).unwrap();
    let some_user = everyone[17].2.external_user_id.clone();
    let filters = [
        ListFilter::default(),
        ListFilter {
            status: Some(ApplicantStatus::Approved),
            ..Default::default()
        },
        ListFilter {
            status: Some(ApplicantStatus::Completed),
            created_from: Some(jan_10),
            ..Default::default()
        },
        ListFilter {
            created_from: Some(jan_10),
            created_to: Some(jan_20),
            ..Default::default()
        },
        ListFilter {
            external_user_id: Some(some_user),
            ..Default::default()
        },
    ];
    for filter in filters {
        let expected: Vec<ApplicantId> = everyone
            .iter()
            .filter(|(at, _, a)| {
                filter.status.is_none_or(|s| a.status == s)
                    && filter
                        .external_user_id
                        .as_ref()
                        .is_none_or(|x| &a.external_user_id == x)
                    && filter.created_from.is_none_or(|f| *at >= f)
                    && filter.created_to.is_none_or(|t| *at <= t)
            })
            .map(|(_, id, _)| *id)
            .collect();
        let mut got = Vec::new();
        let mut page = Page {
            limit: 7,
            cursor: None,
        };
        loop {
            let result = read_models.list(&app, &filter, &page).unwrap();
            assert!(result.items.len() <= 7);
            for entry in &result.items {
                let a = &everyone
                    .iter()
                    .find(|(_, id, _)| *id == entry.id)
                    .unwrap()
                    .2;
                assert_eq!(
                    (entry.status, &entry.external_user_id),
                    (a.status, &a.external_user_id)
                );
                assert_eq!(entry.reviewer, a.reviewer);
            }
            got.extend(result.items.iter().map(|e| e.id));
            match result.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => break,
            }
        }
        assert!(!expected.is_empty(), "{filter:?} matches someone");
        assert_eq!(got, expected, "{filter:?}");
    }
    let bad = read_models.list(
        &app,
        &ListFilter::default(),
        &Page {
            limit: 5,
            cursor: Some("zz".into()),
        },
    );
    assert!(
        bad.is_err(),
        "a cursor the list did not hand out is refused"
    );
}

#[tokio::test]
async fn the_reviewer_queue_holds_assigned_undecided_applicants_oldest_assignment_first() {
    let (events, _) = six_weeks();
    let log = HistoricalLog {
        events: events.clone(),
    };
    let read_models = ReadModels::open(temp_db()).unwrap();
    rebuild(&read_models, &log, &["reviewer_queue"], &mut |_| {})
        .await
        .unwrap();
    let app = app().to_string();
    let mut expected: BTreeMap<String, Vec<(DateTime<Utc>, ApplicantId)>> = BTreeMap::new();
    for history in per_applicant(&events)
        .values()
        .filter(|h| h[0].0.tenant == app)
    {
        let state = final_state(history);
        let Some(reviewer) = state.reviewer.clone() else {
            continue;
        };
        if state.status.is_decided() {
            continue;
        }
        let assigned = history
            .iter()
            .rev()
            .find(|(_, d)| matches!(d, ApplicantEvent::ReviewerAssigned { .. }))
            .unwrap();
        expected
            .entry(reviewer)
            .or_default()
            .push((assigned.0.recorded_at, state.id.unwrap()));
    }
    for list in expected.values_mut() {
        list.sort();
    }
    assert!(
        !expected.is_empty(),
        "the sample leaves some applicants waiting"
    );
    let queues = read_models.reviewer_queues(&app).unwrap();
    let got: BTreeMap<String, Vec<(DateTime<Utc>, ApplicantId)>> = queues
        .iter()
        .map(|q| {
            (
                q.reviewer.clone(),
                q.items.iter().map(|e| (e.waiting_since, e.id)).collect(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    let (reviewer, list) = expected.iter().next().unwrap();
    let one = read_models.reviewer_queue(&app, reviewer).unwrap();
    assert_eq!(
        one.iter().map(|e| e.id).collect::<Vec<_>>(),
        list.iter().map(|(_, id)| *id).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_model_rebuilt_online_under_appends_equals_an_offline_rebuild_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let read_models = Arc::new(ReadModels::open(store.db().clone()).unwrap());
    let appends = sample::population(7, app(), 120, Utc::now(), 1);
    let (before, during) = appends.split_at(appends.len() / 2);
    for a in before {
        append(store.as_ref(), a).await;
    }
    let runner = Runner::start(read_models.clone(), store.clone());
    let writer = {
        let (store, during) = (store.clone(), during.to_vec());
        tokio::spawn(async move {
            let mut head = 0;
            for a in &during {
                head = append(store.as_ref(), a).await;
            }
            head
        })
    };
    let names = read_models.names();
    let reports = rebuild(&read_models, store.as_ref(), &names, &mut |_| {})
        .await
        .unwrap();
    assert!(reports.iter().all(|r| r.generation == 1));
    let head = writer.await.unwrap();
    runner.wait_for(head, WAIT).await.unwrap();

    let offline = ReadModels::open(temp_db()).unwrap();
    rebuild(&offline, store.as_ref(), &names, &mut |_| {})
        .await
        .unwrap();
    for name in &names {
        let live = digest_tree(&read_models.live_tree(name).unwrap(), |_| true).unwrap();
        let fresh = digest_tree(&offline.live_tree(name).unwrap(), |_| true).unwrap();
        assert_eq!(live, fresh, "{name}");
        assert!(live.rows > 0, "{name} has rows");
        assert!(
            verify(&read_models, store.as_ref(), name)
                .await
                .unwrap()
                .matches,
            "{name}"
        );
    }
    let status = read_models.status(store.as_ref()).await.unwrap();
    assert!(
        status
            .iter()
            .all(|s| s.lag == 0 && s.generation == 1 && s.error.is_none()),
        "{status:?}"
    );
    runner.stop().await;
}

#[tokio::test]
async fn a_long_timeline_spread_over_many_rows_reads_in_stream_order_live_and_rebuilt_alike() {
    let store = Arc::new(MemoryStore::new());
    let read_models = Arc::new(ReadModels::open(temp_db()).unwrap());
    let runner = Runner::start(read_models.clone(), store.clone());
    // Over 100 events: several timeline rows, appended one command at a time so the live
    // runner sees batches of every size.
    let life = rich_lifecycle(100);
    let id = applicant_of(&life[0]);
    let mut head = 0;
    for a in &life {
        head = append(store.as_ref(), a).await;
    }
    runner.wait_for(head, WAIT).await.unwrap();

    let events = store.read_stream(&id.stream(), 0, 1000).await.unwrap();
    assert!(events.len() > 100, "{} events", events.len());
    let live = read_models.timeline(&app().to_string(), &id).unwrap();
    let versions: Vec<u64> = live.items.iter().map(|e| e.version).collect();
    assert_eq!(versions, (0..events.len() as u64).collect::<Vec<_>>());

    let offline = ReadModels::open(temp_db()).unwrap();
    rebuild(&offline, store.as_ref(), &["timeline"], &mut |_| {})
        .await
        .unwrap();
    assert_eq!(offline.timeline(&app().to_string(), &id).unwrap(), live);
    assert!(
        verify(&read_models, store.as_ref(), "timeline")
            .await
            .unwrap()
            .matches
    );
    runner.stop().await;
}

#[tokio::test]
async fn flows_are_stored_once_and_every_view_reads_back_its_own_flow_live_and_rebuilt() {
    let store = Arc::new(MemoryStore::new());
    let read_models = Arc::new(ReadModels::open(temp_db()).unwrap());
    let runner = Runner::start(read_models.clone(), store.clone());
    let mut rng = Rng::new(99);
    let flow = sample::kyc_basic();
    let mut lives: Vec<Vec<Append>> = (0..8)
        .map(|_| sample::lifecycle(&mut rng, app(), &flow, Utc::now(), 0))
        .collect();
    // The first applicant moves to a second version of the flow, then restarts on it (the
    // restart folds against the flow read back from its row).
    let mut v2 = flow.clone();
    v2.version = 2;
    v2.id = Uuid::from_u128(0xf10e_0000_0000_4000_8000_0000_0000_0002);
    v2.steps.truncate(2);
    let stream = lives[0][0].stream.clone();
    for event in [
        ApplicantEvent::FlowChanged {
            flow: Box::new(v2.clone()),
            kept_steps: vec![],
        },
        ApplicantEvent::FlowRestarted { kept_steps: vec![] },
    ] {
        lives[0].push(Append {
            stream: stream.clone(),
            events: vec![sample::to_new_event(
                &event,
                &app(),
                vetted_store::Actor::system(),
                Uuid::from_u128(1),
                rng.uuid(),
            )],
            at: Utc::now(),
        });
    }
    // One append per batch: every event after the first reads its view row back from sled.
    for life in &lives {
        for a in life {
            let head = append(store.as_ref(), a).await;
            runner.wait_for(head, WAIT).await.unwrap();
        }
    }
    let app = app().to_string();
    for life in &lives {
        let id = applicant_of(&life[0]);
        let events = store
            .read_stream(&id.stream(), 0, usize::MAX)
            .await
            .unwrap();
        let mut expected = vetted_projections::ApplicantFold::default();
        for e in &events {
            expected.apply(e).unwrap();
        }
        assert!(expected.applicant.flow.is_some());
        let fold = read_models.get_fold(&app, &id).unwrap().unwrap();
        assert_eq!(fold, expected);
        assert_eq!(
            read_models.get_view(&app, &id).unwrap(),
            vetted_projections::ApplicantView::fold(&events).unwrap()
        );
    }
    let first = read_models
        .get_fold(&app, &applicant_of(&lives[0][0]))
        .unwrap()
        .unwrap();
    assert_eq!(first.applicant.flow.as_ref(), Some(&v2));
    assert_eq!(first.applicant.steps.len(), 2);
    assert!(read_models
        .get_fold("another-app", &applicant_of(&lives[0][0]))
        .unwrap()
        .is_none());

    // Two flows, two flow rows; no view row carries a flow definition.
    let tree = read_models.live_tree("applicant_view").unwrap();
    let flows = tree.scan_prefix(b"flow/").count();
    assert_eq!(flows, 2);
    for row in tree.scan_prefix(b"view/") {
        let (_, value) = row.unwrap();
        let text = String::from_utf8_lossy(&value);
        assert!(!text.contains("faceMatchThreshold"), "{text}");
    }
    runner.stop().await;

    let offline = ReadModels::open(temp_db()).unwrap();
    rebuild(&offline, store.as_ref(), &["applicant_view"], &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        digest_tree(&tree, |_| true).unwrap(),
        digest_tree(&offline.live_tree("applicant_view").unwrap(), |_| true).unwrap()
    );
}

#[tokio::test]
async fn read_models_written_in_an_older_row_layout_are_found_stale_and_rebuilt() {
    let store = MemoryStore::new();
    let life = rich_lifecycle(0);
    for a in &life {
        append(&store, a).await;
    }
    let id = applicant_of(&life[0]);
    let db = temp_db();
    {
        // What an earlier version left: JSON rows in generation 0, no layout recorded.
        let generations = vetted_projections::Generations::open(&db).unwrap();
        for name in ["applicant_view", "timeline"] {
            let tree = generations.tree(name, 0).unwrap();
            tree.insert(b"v/old-row", br#"{"old":"json"}"#.to_vec())
                .unwrap();
        }
    }
    let read_models = ReadModels::open(db.clone()).unwrap();
    let mut stale = read_models.stale_layouts().unwrap();
    stale.sort_unstable();
    assert_eq!(
        stale,
        vec!["applicant_view", "timeline"],
        "only the read models with rows in the old layout (empty ones start in the new one)"
    );

    rebuild(&read_models, &store, &stale, &mut |_| {})
        .await
        .unwrap();
    assert!(read_models.stale_layouts().unwrap().is_empty());
    let view = read_models
        .get_view(&app().to_string(), &id)
        .unwrap()
        .expect("the rebuilt view serves the applicant");
    assert_eq!(view.id, id);
    assert!(
        !read_models
            .timeline(&app().to_string(), &id)
            .unwrap()
            .items
            .is_empty(),
        "the rebuilt timeline serves it too"
    );
    // A reopen (the next start) finds nothing stale.
    drop(read_models);
    let reopened = ReadModels::open(db).unwrap();
    assert!(reopened.stale_layouts().unwrap().is_empty());
}

/// A replay reads a long stream a page (1,000 events) at a time: across pages, from either
/// kind of store, at moments before, inside and after it, it folds exactly what the events
/// `events_as_of` returns fold to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_across_pages_folds_what_the_recorded_events_fold_to() {
    use vetted_projections::replay::events_as_of;
    use vetted_projections::{ApplicantView, Timeline};

    let dir = tempfile::tempdir().unwrap();
    let sled: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).unwrap());
    let memory: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let life = rich_lifecycle(2_300);
    let id = applicant_of(&life[0]);
    let app = app().to_string();
    for store in [&sled, &memory] {
        for a in &life {
            append(store.as_ref(), a).await;
        }
    }
    let recorded = sled.read_stream(&id.stream(), 0, usize::MAX).await.unwrap();
    assert!(recorded.len() > 2_300, "the stream spans three pages");
    let first = recorded[0].recorded_at;
    let moments = [
        first - chrono::Duration::seconds(1),
        first,
        recorded[999].recorded_at,
        recorded[1000].recorded_at,
        recorded[recorded.len() / 2].recorded_at,
        recorded[recorded.len() - 1].recorded_at,
    ];
    for store in [&sled, &memory] {
        for at in moments.iter().copied().map(Some).chain([None]) {
            let events = events_as_of(store.as_ref(), &app, &id, at).await.unwrap();
            assert_eq!(
                view_as_of(store.as_ref(), &app, &id, at).await.unwrap(),
                ApplicantView::fold(&events).unwrap(),
                "view as of {at:?}"
            );
            assert_eq!(
                timeline_as_of(store.as_ref(), &app, &id, at).await.unwrap(),
                Timeline::fold(&events).unwrap(),
                "timeline as of {at:?}"
            );
        }
        // Another application's auditor sees nothing.
        assert_eq!(
            view_as_of(store.as_ref(), "another-app", &id, None)
                .await
                .unwrap(),
            None
        );
        assert!(timeline_as_of(store.as_ref(), "another-app", &id, None)
            .await
            .unwrap()
            .items
            .is_empty());
    }
}

/// An event this engine cannot read (a payload version from a newer engine) recorded after the
/// moment asked for does not stop the replay of that moment, from either kind of store; asked
/// for now, the replay says which event it cannot read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_event_after_the_moment_does_not_stop_its_replay() {
    use vetted_projections::replay::events_as_of;
    use vetted_projections::ApplicantView;

    let dir = tempfile::tempdir().unwrap();
    let sled: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).unwrap());
    let memory: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let life = rich_lifecycle(0);
    let id = applicant_of(&life[0]);
    let app = app().to_string();
    let mut future = life.last().unwrap().events[0].clone();
    future.event_id = Uuid::now_v7();
    future.schema_version = 99;
    for store in [&sled, &memory] {
        for a in &life {
            append(store.as_ref(), a).await;
        }
        let last = store
            .read_stream(&id.stream(), 0, usize::MAX)
            .await
            .unwrap()
            .last()
            .unwrap()
            .recorded_at;
        // Recorded strictly later than `last` (the store stamps appends with the clock).
        while Utc::now() <= last {
            tokio::task::yield_now().await;
        }
        store
            .append(&id.stream(), ExpectedVersion::Any, vec![future.clone()])
            .await
            .unwrap();
        let events = events_as_of(store.as_ref(), &app, &id, Some(last))
            .await
            .unwrap();
        assert_eq!(
            view_as_of(store.as_ref(), &app, &id, Some(last))
                .await
                .unwrap(),
            ApplicantView::fold(&events).unwrap()
        );
        assert!(view_as_of(store.as_ref(), &app, &id, Some(last))
            .await
            .unwrap()
            .is_some());
        let now = view_as_of(store.as_ref(), &app, &id, None).await;
        let error = now.expect_err("the newer event cannot be read").to_string();
        assert!(error.contains("99"), "{error}");
    }
}
