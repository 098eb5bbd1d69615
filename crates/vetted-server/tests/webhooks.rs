//! Webhooks end to end through the server: an application with a webhook URL pointing at a real
//! local receiver gets every notification of an applicant's life, sealed with its crypto key and
//! signed with its signing secret; the deliveries API lists them.
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use common::{TestServer, ADMIN};
use serde_json::{json, Value};

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(HeaderMap, String)>>>);

async fn receiver() -> (String, Received, tokio::task::JoinHandle<()>) {
    let received = Received::default();
    let state = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let state = state.clone();
            async move {
                state.0.lock().unwrap().push((headers, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, received, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_notification_of_an_applicants_life_arrives_sealed_and_signed() {
    let (hook, received, receiver_task) = receiver().await;
    let s = TestServer::start().await;
    let (st, app) = s
        .post(
            ADMIN,
            "/v1/applications",
            json!({"name": "Hooked", "webhookUrl": hook, "webhookHeaders": {"x-tenant": "acme"}}),
        )
        .await;
    assert_eq!(st, 201, "{app}");
    let key = app["privateKey"].as_str().unwrap().to_string();
    let crypto_key: [u8; 32] = hex::decode(app["cryptoKey"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let secret =
        vetted_webhooks::SigningSecret::parse(app["signingSecret"].as_str().unwrap()).unwrap();
    let (st, _) = s
        .post(&key, "/v1/flows", json!({"name": "kyc-basic", "autoApproval": true, "steps": [{"type": "document_check"}, {"type": "face_match"}]}))
        .await;
    assert_eq!(st, 201);
    let id = s.applicant(&key, "hooked-1").await;
    s.step(&key, &id, "document_check", "passed", json!({}))
        .await;
    let (_, v) = s
        .step(&key, &id, "face_match", "passed", json!({"score": 99}))
        .await;
    assert_eq!(v["status"], "APPROVED");

    let expected = [
        "applicantCreated",
        "applicantIncomplete",
        "applicantStepPassed",
        "applicantInProgress",
        "applicantStepPassed",
        "applicantCompleted",
        "applicantApproved",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while received.0.lock().unwrap().len() < expected.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "webhooks did not all arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut payloads: Vec<Value> = Vec::new();
    for (headers, body) in received.0.lock().unwrap().iter() {
        assert_eq!(headers["x-tenant"], "acme", "custom headers are sent");
        let id = headers["webhook-id"].to_str().unwrap();
        let ts: i64 = headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let sig = headers["webhook-signature"].to_str().unwrap();
        assert!(
            sig.split(' ')
                .any(|s| s == secret.sign(id, ts, body.as_bytes())),
            "signed with the application's secret"
        );
        let wire: Value = serde_json::from_str(body).unwrap();
        let plain = vetted_webhooks::open(&crypto_key, wire["data"].as_str().unwrap()).unwrap();
        payloads.push(serde_json::from_slice(&plain).unwrap());
    }
    payloads.sort_by_key(|p| p["sequence"].as_u64());
    let types: Vec<&str> = payloads
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, expected);
    assert!(payloads
        .iter()
        .all(|p| p["id"] == id.as_str() && p["externalUserId"] == "hooked-1"));
    assert_eq!(payloads.last().unwrap()["status"], "APPROVED");

    // A delivery is marked delivered once the receiver's answer is back, which may be just
    // after the receiver has the body: wait for it, with a deadline.
    let (st, list) = loop {
        let (st, list) = s.get(&key, "/v1/webhooks/deliveries?state=delivered").await;
        let marked = list["items"].as_array().map_or(0, Vec::len);
        if st != 200 || marked >= expected.len() || tokio::time::Instant::now() >= deadline {
            break (st, list);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(st, 200);
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        expected.len(),
        "{list}"
    );
    let (st, _) = s.get(&key, "/v1/webhooks/deliveries?state=bogus").await;
    assert_eq!(st, 400);
    let (st, _) = s
        .post(&key, "/v1/webhooks/deliveries/999999/redeliver", json!({}))
        .await;
    assert_eq!(st, 404);
    s.stop().await;
    receiver_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_signing_secret_signs_beside_the_new_one_and_a_new_url_is_used() {
    let (first_hook, first, first_task) = receiver().await;
    let (second_hook, second, second_task) = receiver().await;
    let s = TestServer::start().await;
    let (_, app) = s
        .post(
            ADMIN,
            "/v1/applications",
            json!({"name": "Rotating", "webhookUrl": first_hook}),
        )
        .await;
    let key = app["privateKey"].as_str().unwrap().to_string();
    let app_key = app["appKey"].as_str().unwrap().to_string();
    let old =
        vetted_webhooks::SigningSecret::parse(app["signingSecret"].as_str().unwrap()).unwrap();
    s.post(
        &key,
        "/v1/flows",
        json!({"name": "kyc-basic", "steps": [{"type": "document_check"}]}),
    )
    .await;
    s.applicant(&key, "before-rotation").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while first.0.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "first webhook did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let r = s
        .http
        .patch(s.url(&format!("/v1/applications/{app_key}")))
        .bearer_auth(ADMIN)
        .json(&json!({"webhookUrl": second_hook, "rotateSigningSecret": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let changed: Value = r.json().await.unwrap();
    let new =
        vetted_webhooks::SigningSecret::parse(changed["signingSecret"].as_str().unwrap()).unwrap();
    assert_ne!(new.as_str(), old.as_str());

    s.applicant(&key, "after-rotation").await;
    while second.0.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "webhook to the new URL did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (headers, body) = second.0.lock().unwrap()[0].clone();
    let id = headers["webhook-id"].to_str().unwrap();
    let ts: i64 = headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let sigs: Vec<&str> = headers["webhook-signature"]
        .to_str()
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!(
        sigs,
        vec![
            new.sign(id, ts, body.as_bytes()),
            old.sign(id, ts, body.as_bytes())
        ],
        "new signature first, then the old"
    );
    s.stop().await;
    first_task.abort();
    second_task.abort();
}
