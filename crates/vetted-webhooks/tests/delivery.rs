//! Delivery against a real local HTTP receiver, through the real pipeline:
//! SledStore → projection runner → webhook projector (outbox) → delivery worker → axum receiver.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::*;
use vetted_domain::{AppKey, Applicant, ApplicantEvent};
use vetted_webhooks::{
    open, parse_key, DeliveryConfig, DeliveryState, EndpointUpdate, MemoryEndpoints, Notification,
    SigningSecret,
};

const WAIT: Duration = Duration::from_secs(30);

fn endpoints_for(app: AppKey, url: &str) -> Arc<MemoryEndpoints> {
    let endpoints = Arc::new(MemoryEndpoints::new());
    endpoints.insert(&app.to_string(), endpoint(url));
    endpoints
}

fn schemas() -> BTreeMap<String, jsonschema::Validator> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/webhooks");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        out.insert(name, jsonschema::validator_for(&schema).unwrap());
    }
    out
}

/// Opens a received body: `{"data": "<hex IV><hex ciphertext>"}` and nothing else.
fn decrypt(body: &[u8]) -> Notification {
    let wire: BTreeMap<String, String> = serde_json::from_slice(body).unwrap();
    assert_eq!(
        wire.keys().collect::<Vec<_>>(),
        vec!["data"],
        "the body carries only `data`"
    );
    let plaintext = open(&parse_key(CRYPTO_KEY).unwrap(), &wire["data"]).unwrap();
    serde_json::from_slice(&plaintext).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_notification_arrives_once_decrypts_verifies_and_matches_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|_| Reply::ok()).await;
    let app = AppKey(uuid::Uuid::new_v4());
    let pipeline =
        Pipeline::start(dir.path(), endpoints_for(app, &receiver.url), fast(10, 9)).await;
    pipeline.append_all(&lifecycles(7, app, 25)).await;
    let log = pipeline.log().await;
    let expected: BTreeMap<String, (&RecordedEventRef, &str)> = log
        .iter()
        .filter_map(|e| {
            expected_webhook(e).map(|t| (format!("msg_{}", e.event_id.simple()), (e, t)))
        })
        .collect();
    assert!(
        expected.len() > 100,
        "the generated lives produce plenty of webhooks ({})",
        expected.len()
    );
    eventually(WAIT, "every expected webhook delivered", || {
        receiver.delivered_ids().len() == expected.len()
    })
    .await;

    let schemas = schemas();
    let secret = SigningSecret::parse(SECRET).unwrap();
    let by_id = receiver.by_id();
    assert_eq!(
        by_id.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (webhook_id, requests) in &by_id {
        assert_eq!(
            requests.len(),
            1,
            "{webhook_id} sent once to a receiver that answers 200"
        );
        let request = &requests[0];
        let (event, webhook_type) = expected[webhook_id];
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(
            request.header("x-tenant"),
            "demo",
            "custom headers are sent"
        );
        let timestamp: i64 = request.header("webhook-timestamp").parse().unwrap();
        secret
            .verify(
                webhook_id,
                timestamp,
                &request.body,
                &request.header("webhook-signature"),
            )
            .unwrap();

        let notification = decrypt(&request.body);
        let payload = serde_json::to_value(&notification).unwrap();
        let errors: Vec<String> = schemas[webhook_type]
            .iter_errors(&payload)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{webhook_type} payload {payload} breaks its schema: {errors:?}"
        );
        assert_eq!(payload["type"], webhook_type);
        assert_eq!(notification.event_id, event.event_id);
        assert_eq!(notification.sequence, event.stream_version);
        assert_eq!(notification.occurred_at, event.recorded_at);
        assert_eq!(notification.app_key, app.to_string());
        assert_eq!(format!("applicant-{}", notification.id), event.stream_id);

        // Status and warnings must be what the domain's own fold says at that event.
        let state = applicant_as_of(&log, &event.stream_id, event.stream_version);
        assert_eq!(
            serde_json::to_value(state.status).unwrap(),
            Value::String(notification.status.clone())
        );
        assert_eq!(state.external_user_id, notification.external_user_id);
        let mut codes: Vec<String> = state
            .unresolved_warnings()
            .map(|w| w.code.clone())
            .collect();
        let mut got = notification.warnings.clone();
        codes.sort();
        got.sort();
        assert_eq!(got, codes, "unresolved warnings of {webhook_id}");
        if webhook_type == "applicantStepPassed" {
            assert_eq!(
                Some(event.payload["step"].as_str().unwrap()),
                notification.step_name.as_deref()
            );
        } else {
            assert_eq!(notification.step_name, None);
        }
    }
    // Every delivery is recorded as delivered with its one 200 attempt.
    let (outbox, app_key) = (pipeline.outbox.clone(), app.to_string());
    eventually(WAIT, "every delivery recorded delivered", || {
        outbox
            .list(&app_key, Some(DeliveryState::Delivered), None, usize::MAX)
            .unwrap()
            .len()
            == expected.len()
    })
    .await;
    let deliveries = outbox.list(&app_key, None, None, usize::MAX).unwrap();
    assert_eq!(deliveries.len(), expected.len());
    assert!(deliveries
        .iter()
        .all(|d| d.state == DeliveryState::Delivered && d.attempts.len() == 1));
    assert!(deliveries
        .iter()
        .all(|d| d.attempts[0].status_code == Some(200)));
    pipeline.stop().await;
}

type RecordedEventRef = vetted_store::RecordedEvent;

fn applicant_as_of(log: &[vetted_store::RecordedEvent], stream: &str, version: u64) -> Applicant {
    let events: Vec<ApplicantEvent> = log
        .iter()
        .filter(|e| e.stream_id == stream && e.stream_version <= version)
        .map(|e| ApplicantEvent::from_payload(&e.event_type, e.schema_version, &e.payload).unwrap())
        .collect();
    vetted_domain::fold(&events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openssl_command_line_decrypts_a_delivered_body() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|_| Reply::ok()).await;
    let app = AppKey(uuid::Uuid::new_v4());
    let pipeline =
        Pipeline::start(dir.path(), endpoints_for(app, &receiver.url), fast(10, 9)).await;
    pipeline.append_all(&lifecycles(3, app, 1)).await;
    eventually(WAIT, "a webhook", || !receiver.received().is_empty()).await;
    let request = receiver.received().remove(0);
    let wire: Value = serde_json::from_slice(&request.body).unwrap();
    let data = wire["data"].as_str().unwrap();
    let (iv, ciphertext) = data.split_at(32);

    let mut openssl = Command::new("openssl")
        .args(["enc", "-d", "-aes-256-cbc", "-K", CRYPTO_KEY, "-iv", iv])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(&hex::decode(ciphertext).unwrap())
        .unwrap();
    let output = openssl.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let payload: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(payload["appKey"], app.to_string());
    assert_eq!(
        payload["eventId"].as_str().unwrap().replace('-', ""),
        request.webhook_id()["msg_".len()..]
    );
    assert_eq!(
        serde_json::to_value(decrypt(&request.body)).unwrap(),
        payload
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_the_first_3_attempts_gets_it_on_the_4th_with_the_same_webhook_id() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|n| {
        if n < 3 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let app = AppKey(uuid::Uuid::new_v4());
    let pipeline =
        Pipeline::start(dir.path(), endpoints_for(app, &receiver.url), fast(20, 9)).await;
    pipeline.append_all(&lifecycles(11, app, 2)).await;
    let expected = pipeline
        .log()
        .await
        .iter()
        .filter(|e| expected_webhook(e).is_some())
        .count();
    eventually(WAIT, "every webhook delivered", || {
        receiver.delivered_ids().len() == expected
    })
    .await;

    for (webhook_id, requests) in receiver.by_id() {
        let answers: Vec<u16> = requests.iter().map(|r| r.answered).collect();
        assert_eq!(answers, vec![500, 500, 500, 200], "{webhook_id}");
        for pair in requests.windows(2) {
            let gap = pair[1].at - pair[0].at;
            assert!(
                gap >= Duration::from_millis(20),
                "retries wait for the schedule; waited {gap:?}"
            );
        }
    }
    let outbox = pipeline.outbox.clone();
    let app_key = app.to_string();
    eventually(WAIT, "every delivery recorded delivered", || {
        outbox
            .list(&app_key, Some(DeliveryState::Delivered), None, usize::MAX)
            .unwrap()
            .len()
            == expected
    })
    .await;
    for delivery in outbox.list(&app_key, None, None, usize::MAX).unwrap() {
        let codes: Vec<Option<u16>> = delivery.attempts.iter().map(|a| a.status_code).collect();
        assert_eq!(codes, vec![Some(500), Some(500), Some(500), Some(200)]);
        assert_eq!(
            delivery.attempts[0].error.as_deref(),
            Some("endpoint answered 500")
        );
    }
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_past_10_attempts_leaves_dead_letters_that_redelivery_clears() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|_| Reply::status(503)).await;
    let app = AppKey(uuid::Uuid::new_v4());
    let app_key = app.to_string();
    let pipeline = Pipeline::start(dir.path(), endpoints_for(app, &receiver.url), fast(5, 9)).await;
    pipeline.append_all(&lifecycles(5, app, 1)).await;
    let expected = pipeline
        .log()
        .await
        .iter()
        .filter(|e| expected_webhook(e).is_some())
        .count();
    let outbox = pipeline.outbox.clone();
    eventually(WAIT, "every webhook dead", || {
        outbox
            .list(&app_key, Some(DeliveryState::Dead), None, usize::MAX)
            .unwrap()
            .len()
            == expected
    })
    .await;
    for (webhook_id, requests) in receiver.by_id() {
        assert_eq!(
            requests.len(),
            10,
            "{webhook_id}: 10 attempts in all, then a dead letter"
        );
    }
    for dead in outbox
        .list(&app_key, Some(DeliveryState::Dead), None, usize::MAX)
        .unwrap()
    {
        assert_eq!(dead.attempts.len(), 10);
        assert!(dead.attempts.iter().all(|a| a.status_code == Some(503)));
    }

    receiver.set_behaviour(|_| Reply::ok());
    assert_eq!(outbox.redeliver_dead(&app_key).unwrap(), expected);
    eventually(WAIT, "every redelivered webhook delivered", || {
        receiver.delivered_ids().len() == expected
    })
    .await;
    eventually(WAIT, "delivery state updated", || {
        outbox
            .list(&app_key, Some(DeliveryState::Delivered), None, usize::MAX)
            .unwrap()
            .len()
            == expected
    })
    .await;
    assert!(outbox
        .list(&app_key, Some(DeliveryState::Dead), None, usize::MAX)
        .unwrap()
        .is_empty());
    for (webhook_id, requests) in receiver.by_id() {
        assert_eq!(
            requests.len(),
            11,
            "{webhook_id}: the redelivery keeps the webhook-id"
        );
    }
    let delivered = outbox
        .list(&app_key, Some(DeliveryState::Delivered), None, 1)
        .unwrap()
        .remove(0);
    assert_eq!(
        delivered.attempts.len(),
        11,
        "the history keeps the dead round"
    );
    assert_eq!(delivered.attempts_in_round(), 1);
    // Redelivering something pending is refused with a reason; other applications see nothing.
    assert!(outbox.redeliver("someone-else", delivered.id).is_err());
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_delivery_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Slow receiver and one request at a time: the restart lands while most are pending.
    let receiver = Receiver::start(|_| Reply {
        delay: Duration::from_millis(20),
        ..Reply::ok()
    })
    .await;
    let app = AppKey(uuid::Uuid::new_v4());
    let endpoints = endpoints_for(app, &receiver.url);
    let config = DeliveryConfig {
        per_endpoint_concurrency: 1,
        ..fast(10, 9)
    };
    let first = lifecycles(21, app, 6);
    let second = lifecycles(22, app, 3);

    let pipeline = Pipeline::start(dir.path(), endpoints.clone(), config.clone()).await;
    pipeline.append_all(&first).await;
    eventually(WAIT, "a few deliveries before the restart", || {
        receiver.delivered_ids().len() >= 3
    })
    .await;
    let before_restart = receiver.delivered_ids().len();
    pipeline.stop().await;

    // While the worker is down the log grows; nothing of it is delivered yet.
    {
        let store = vetted_store::SledStore::open(dir.path()).unwrap();
        append_all(&store, &second).await;
    }
    let pipeline = Pipeline::start(dir.path(), endpoints, config).await;
    let expected: std::collections::BTreeSet<String> = pipeline
        .log()
        .await
        .iter()
        .filter(|e| expected_webhook(e).is_some())
        .map(|e| format!("msg_{}", e.event_id.simple()))
        .collect();
    assert!(
        before_restart < expected.len(),
        "the restart happened mid-delivery"
    );
    eventually(WAIT, "every webhook delivered after the restart", || {
        receiver.delivered_ids() == expected
    })
    .await;
    let outbox = pipeline.outbox.clone();
    let app_key = app.to_string();
    eventually(WAIT, "all recorded delivered", || {
        outbox
            .list(&app_key, Some(DeliveryState::Delivered), None, usize::MAX)
            .unwrap()
            .len()
            == expected.len()
    })
    .await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_from_the_receiver_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|n| {
        if n == 0 {
            Reply {
                retry_after: Some(1),
                ..Reply::status(429)
            }
        } else {
            Reply::ok()
        }
    })
    .await;
    let app = AppKey(uuid::Uuid::new_v4());
    let pipeline = Pipeline::start(dir.path(), endpoints_for(app, &receiver.url), fast(5, 9)).await;
    pipeline.append_all(&lifecycles(31, app, 1)[..1]).await;
    eventually(WAIT, "delivered after the 429", || {
        receiver.delivered_ids().len() == 1
    })
    .await;
    let requests = receiver.received();
    assert_eq!(
        requests.iter().map(|r| r.answered).collect::<Vec<_>>(),
        vec![429, 200]
    );
    assert!(
        requests[1].at - requests[0].at >= Duration::from_millis(990),
        "waited the Retry-After second"
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_gone_disables_the_endpoint_until_it_is_re_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|_| Reply::status(410)).await;
    let app = AppKey(uuid::Uuid::new_v4());
    let app_key = app.to_string();
    let config = DeliveryConfig {
        per_endpoint_concurrency: 1,
        max_in_flight: 1,
        ..fast(5, 9)
    };
    let pipeline = Pipeline::start(dir.path(), endpoints_for(app, &receiver.url), config).await;
    pipeline.append_all(&lifecycles(41, app, 1)).await;
    let expected = pipeline
        .log()
        .await
        .iter()
        .filter(|e| expected_webhook(e).is_some())
        .count();
    let outbox = pipeline.outbox.clone();
    eventually(WAIT, "every delivery dead", || {
        outbox
            .list(&app_key, Some(DeliveryState::Dead), None, usize::MAX)
            .unwrap()
            .len()
            == expected
    })
    .await;
    assert_eq!(
        receiver.received().len(),
        1,
        "after the 410 no further request is made"
    );
    assert!(outbox
        .endpoint_disabled(&app_key)
        .unwrap()
        .unwrap()
        .reason
        .contains("410"));
    let later = outbox
        .list(&app_key, Some(DeliveryState::Dead), None, usize::MAX)
        .unwrap()
        .remove(1);
    assert!(later.attempts[0]
        .error
        .as_deref()
        .unwrap()
        .contains("endpoint disabled"));

    receiver.set_behaviour(|_| Reply::ok());
    outbox.enable_endpoint(&app_key).unwrap();
    outbox.redeliver_dead(&app_key).unwrap();
    eventually(WAIT, "redelivered after re-enabling", || {
        receiver.delivered_ids().len() == expected
    })
    .await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_secret_rotation_both_signatures_are_sent_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|_| Reply::ok()).await;
    let app = AppKey(uuid::Uuid::new_v4());
    let endpoints = endpoints_for(app, &receiver.url);
    let new = SigningSecret::generate().unwrap();
    let update = EndpointUpdate {
        signing_secret: Some(new.as_str().to_owned()),
        ..Default::default()
    };
    endpoints.update(&app.to_string(), update).unwrap();
    let pipeline = Pipeline::start(dir.path(), endpoints, fast(5, 9)).await;
    pipeline.append_all(&lifecycles(51, app, 1)[..1]).await;
    eventually(WAIT, "delivered", || receiver.delivered_ids().len() == 1).await;
    let request = receiver.received().remove(0);
    let (id, ts) = (
        request.webhook_id(),
        request.header("webhook-timestamp").parse::<i64>().unwrap(),
    );
    let header = request.header("webhook-signature");
    let signatures: Vec<&str> = header.split(' ').collect();
    let old = SigningSecret::parse(SECRET).unwrap();
    assert_eq!(
        signatures,
        vec![
            new.sign(&id, ts, &request.body),
            old.sign(&id, ts, &request.body)
        ]
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_endpoint_never_gets_more_concurrent_requests_than_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|_| Reply {
        delay: Duration::from_millis(15),
        ..Reply::ok()
    })
    .await;
    let app = AppKey(uuid::Uuid::new_v4());
    let config = DeliveryConfig {
        per_endpoint_concurrency: 3,
        ..fast(5, 9)
    };
    let pipeline = Pipeline::start(dir.path(), endpoints_for(app, &receiver.url), config).await;
    pipeline.append_all(&lifecycles(61, app, 4)).await;
    let expected = pipeline
        .log()
        .await
        .iter()
        .filter(|e| expected_webhook(e).is_some())
        .count();
    eventually(WAIT, "all delivered", || {
        receiver.delivered_ids().len() == expected
    })
    .await;
    let max = receiver.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 3, "at most 3 in flight, saw {max}");
    assert!(
        max >= 2,
        "requests do run concurrently up to the limit, saw {max}"
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_intakes_are_retried_and_delivery_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|_| Reply::ok()).await;
    let app = AppKey(uuid::Uuid::new_v4());
    let pipeline = Pipeline::start_failing_intakes(
        dir.path(),
        endpoints_for(app, &receiver.url),
        fast(5, 9),
        4,
    )
    .await;
    pipeline.append_all(&lifecycles(81, app, 2)).await;
    let expected = pipeline
        .log()
        .await
        .iter()
        .filter(|e| expected_webhook(e).is_some())
        .count();
    eventually(
        WAIT,
        "every webhook delivered after the failed intakes",
        || receiver.delivered_ids().len() == expected,
    )
    .await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_does_not_hold_back_other_applications_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    // Application A's receiver takes 2 s per request; B's answers at once.
    let slow = Receiver::start(|_| Reply {
        delay: Duration::from_secs(2),
        ..Reply::ok()
    })
    .await;
    let fast_receiver = Receiver::start(|_| Reply::ok()).await;
    let (a, b) = (AppKey(uuid::Uuid::new_v4()), AppKey(uuid::Uuid::new_v4()));
    let endpoints = Arc::new(MemoryEndpoints::new());
    endpoints.insert(&a.to_string(), endpoint(&slow.url));
    endpoints.insert(&b.to_string(), endpoint(&fast_receiver.url));
    // 8 slots in all, 2 per endpoint: A's backlog would fill every slot if a delivery took
    // one before its endpoint had room.
    let config = DeliveryConfig {
        per_endpoint_concurrency: 2,
        max_in_flight: 8,
        request_timeout_ms: 10_000,
        ..fast(5, 9)
    };
    let pipeline = Pipeline::start(dir.path(), endpoints, config).await;
    pipeline.append_all(&lifecycles(71, a, 6)).await;
    eventually(WAIT, "A's endpoint busy", || !slow.received().is_empty()).await;
    let started = std::time::Instant::now();
    pipeline.append_all(&lifecycles(72, b, 2)).await;
    let log = pipeline.log().await;
    let b_expected = log
        .iter()
        .filter(|e| e.tenant == b.to_string() && expected_webhook(e).is_some())
        .count();
    let a_expected = log
        .iter()
        .filter(|e| e.tenant == a.to_string() && expected_webhook(e).is_some())
        .count();
    assert!(a_expected > 20, "A has a backlog: {a_expected}");
    eventually(WAIT, "every webhook of B delivered", || {
        fast_receiver.delivered_ids().len() == b_expected
    })
    .await;
    // B's webhooks went past A's queue: A, at 2 requests per 2 s, is far from done.
    let a_done = slow.delivered_ids().len();
    assert!(
        a_done < a_expected / 2,
        "B was served only after most of A ({a_done} of {a_expected}) after {:?}",
        started.elapsed()
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_slower_than_the_timeout_counts_as_a_failed_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|n| {
        if n == 0 {
            Reply {
                delay: Duration::from_secs(3),
                ..Reply::ok()
            }
        } else {
            Reply::ok()
        }
    })
    .await;
    let app = AppKey(uuid::Uuid::new_v4());
    let config = DeliveryConfig {
        request_timeout_ms: 200,
        ..fast(5, 9)
    };
    let pipeline = Pipeline::start(dir.path(), endpoints_for(app, &receiver.url), config).await;
    pipeline.append_all(&lifecycles(71, app, 1)[..1]).await;
    let outbox = pipeline.outbox.clone();
    let app_key = app.to_string();
    eventually(WAIT, "delivered on the retry", || {
        outbox
            .list(&app_key, Some(DeliveryState::Delivered), None, usize::MAX)
            .unwrap()
            .len()
            == 1
    })
    .await;
    let delivery = outbox.list(&app_key, None, None, 1).unwrap().remove(0);
    assert_eq!(delivery.attempts.len(), 2);
    assert_eq!(delivery.attempts[0].status_code, None);
    assert!(
        delivery.attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("timed out"),
        "{:?}",
        delivery.attempts[0]
    );
    assert!(delivery.attempts[0].latency_ms >= 190 && delivery.attempts[0].latency_ms < 2000);
    assert_eq!(delivery.attempts[1].status_code, Some(200));
    pipeline.stop().await;
}

#[test]
fn every_webhook_type_has_a_schema_file_and_every_schema_file_a_type() {
    let names: Vec<String> = schemas().into_keys().collect();
    let mut types: Vec<String> = vetted_webhooks::WebhookType::ALL
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    types.sort();
    assert_eq!(names, types);
}
