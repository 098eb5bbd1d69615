//! Vetted with NATS JetStream: every applicant event is published for other services, and
//! several Vetted nodes can share one JetStream log and converge to the same read models.
//! Each test starts its own nats-server processes on free loopback ports.
mod common;

use std::time::Duration;

use common::{TestServer, ADMIN};
use serde_json::{json, Value};
use vetted_bus::testing::{NatsCluster, NatsServer};
use vetted_bus::{EventSubscriber, SubscriberConfig};
use vetted_server::config::StoreKind;

async fn drive_to_approval(s: &TestServer, key: &str, who: &str) -> String {
    let id = s.applicant(key, who).await;
    for (step, data) in [
        ("document_check", json!({"country": "UTO"})),
        ("liveness", json!({})),
        ("face_match", json!({"score": 91})),
        ("aml", json!({})),
    ] {
        let (st, v) = s.step(key, &id, step, "passed", data).await;
        assert_eq!(st, 200, "{v}");
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_applicant_event_reaches_a_nats_subscriber_in_order() {
    let nats = NatsServer::start().expect("nats-server starts");
    let url = nats.url();
    let s = TestServer::start_with(|c| c.nats_url = Some(url.clone())).await;
    let (key, app_key) = s.application().await;
    let id = drive_to_approval(&s, &key, "user-1").await;
    let (_, events) = s.get(&key, &format!("/v1/applicants/{id}/events")).await;
    let expected: Vec<Value> = events["items"].as_array().unwrap().clone();

    let client = vetted_bus::connect(&url).await.unwrap();
    let config = SubscriberConfig {
        durable: "test".into(),
        filter_subject: vetted_bus::subjects::applicant_filter(&app_key, &id),
        ..Default::default()
    };
    // The publisher creates the stream; the subscriber may have to wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let subscriber = loop {
        match EventSubscriber::new(client.clone(), config.clone()).await {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no fan-out stream: {e}"),
        }
    };
    let mut received = Vec::new();
    while received.len() < expected.len() && tokio::time::Instant::now() < deadline {
        for d in subscriber
            .fetch(100, Duration::from_millis(500))
            .await
            .unwrap()
        {
            received.push(d.event.clone());
            d.ack().await.unwrap();
        }
    }
    assert_eq!(
        received.len(),
        expected.len(),
        "every event of the applicant, once"
    );
    for (got, want) in received.iter().zip(&expected) {
        assert_eq!(got.event_id.to_string(), want["eventId"].as_str().unwrap());
        assert_eq!(got.stream_version, want["streamVersion"].as_u64().unwrap());
        assert_eq!(got.hash, want["hash"].as_str().unwrap());
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vetted_nodes_on_one_jetstream_cluster_converge_to_identical_read_models() {
    let cluster = NatsCluster::start(3).expect("a 3-node cluster starts");
    let (url_a, url_b) = (cluster.url(0), cluster.url(1));
    let a = TestServer::start_with(|c| {
        c.store = StoreKind::Jetstream;
        c.nats_url = Some(url_a.clone());
        c.nats_replicas = 3;
    })
    .await;
    let b = TestServer::start_with(|c| {
        c.store = StoreKind::Jetstream;
        c.nats_url = Some(url_b.clone());
        c.nats_replicas = 3;
    })
    .await;
    let (key, _) = a.application().await;

    // Node B learns the tenant from the shared log.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while b.get(&key, "/v1/flows").await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node B never saw the application"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Writes on both nodes, to the same applicants and to their own.
    let shared = drive_to_approval(&a, &key, "on-a").await;
    let (st, _) = b
        .post(
            &key,
            &format!("/v1/applicants/{shared}/comments"),
            json!({"text": "seen from B"}),
        )
        .await;
    assert_eq!(st, 201);
    let own_b = b.applicant(&key, "on-b").await;
    let (st, _) = b
        .post(
            &key,
            &format!("/v1/applicants/{own_b}/warnings"),
            json!({"code": "IP_RISK", "message": "proxy"}),
        )
        .await;
    assert_eq!(st, 201);
    let (st, _) = a
        .step(
            &key,
            &own_b,
            "document_check",
            "passed",
            json!({"country": "FRA"}),
        )
        .await;
    assert_eq!(st, 200);

    let head = a.engine.store.head().await.unwrap();
    assert_eq!(head, b.engine.store.head().await.unwrap(), "one log");
    for node in [&a, &b] {
        node.engine
            .read_models
            .wait_for(head, Duration::from_secs(20))
            .await
            .unwrap();
    }
    for name in a.engine.read_models.names() {
        let digest = |node: &TestServer| {
            vetted_projections::digest_table(
                &node.engine.read_models.live_table(name).unwrap(),
                |_| true,
            )
            .unwrap()
        };
        let (da, db) = (digest(&a), digest(&b));
        assert_eq!(da, db, "projection {name} differs between the nodes");
    }
    let (_, va) = a.get(&key, &format!("/v1/applicants/{shared}")).await;
    let (_, vb) = b.get(&key, &format!("/v1/applicants/{shared}")).await;
    assert_eq!(va, vb);
    assert_eq!(va["comments"].as_array().map(|c| c.len()), Some(1));
    let (_, p) = a.get(ADMIN, "/v1/projections").await;
    assert!(
        p["items"].as_array().unwrap().iter().all(|p| p["lag"] == 0),
        "{p}"
    );
    // VETTED_NATS_REPLICAS applies to the log as well as to the fan-out stream.
    let client = vetted_bus::connect(&url_a).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    for stream in [
        vetted_bus::subjects::LOG_STREAM,
        vetted_bus::subjects::EVENTS_STREAM,
    ] {
        let mut stream = jetstream.get_stream(stream).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.num_replicas, 3, "{}", info.config.name);
    }
    a.stop().await;
    b.stop().await;
}
