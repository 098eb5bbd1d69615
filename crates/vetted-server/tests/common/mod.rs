//! A real Vetted server on a free loopback port over a temporary sled directory.
#![allow(dead_code)]
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};
use vetted_server::{Config, Engine};

pub const ADMIN: &str = "test-admin-token";

pub struct TestServer {
    pub base: String,
    pub engine: Arc<Engine>,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// A server whose configuration `adjust` may change (store, NATS URL...).
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::for_data_dir(dir.path());
        config.admin_token = Some(ADMIN.into());
        adjust(&mut config);
        let engine = Engine::open(config).await.expect("engine opens");
        engine.start().await.expect("engine starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = vetted_server::api::router(engine.state())
            .into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestServer {
            base: format!("http://{addr}"),
            engine,
            http: reqwest::Client::new(),
            _dir: dir,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Creates an application and the `kyc-basic` flow; returns (private key, app key).
    pub async fn application(&self) -> (String, String) {
        let r = self
            .http
            .post(self.url("/v1/applications"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": "Demo", "webhookHeaders": {"x-a": "1"}, "redirectUrl": "https://example.com/done", "mode": "test"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        let key = body["privateKey"].as_str().unwrap().to_string();
        let app_key = body["appKey"].as_str().unwrap().to_string();
        let r = self
            .http
            .post(self.url("/v1/flows"))
            .bearer_auth(&key)
            .json(
                &json!({"name": "kyc-basic", "autoApproval": true, "steps": [
                    {"type": "document_check", "maxAttempts": 3},
                    {"type": "liveness", "maxAttempts": 5},
                    {"type": "face_match", "threshold": 85, "sources": ["document", "liveness"]},
                    {"type": "aml"}
                ]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        (key, app_key)
    }

    pub async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn applicant(&self, key: &str, who: &str) -> String {
        let (status, body) = self
            .post(key, "/v1/applicants", json!({"externalUserId": who, "flow": "kyc-basic", "email": "a@example.com", "phone": "+15550100", "lang": "en"}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    pub async fn step(
        &self,
        key: &str,
        id: &str,
        step: &str,
        outcome: &str,
        data: Value,
    ) -> (u16, Value) {
        self.post(
            key,
            &format!("/v1/applicants/{id}/steps/{step}"),
            json!({"outcome": outcome, "data": data}),
        )
        .await
    }

    pub async fn stop(self) {
        self.task.abort();
        self.engine.shutdown().await;
    }
}
