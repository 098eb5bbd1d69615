//! Shared pieces of the bus tests: event builders and bounded polling.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;
use vetted_store::{Actor, NewEvent};

/// A minimal applicant event of `event_type` for `tenant`.
pub fn event(tenant: &str, event_type: &str, n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: 1,
        tenant: tenant.into(),
        actor: Actor::system(),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        payload: serde_json::json!({ "n": n }),
    }
}

/// Polls `check` until it returns `Some`, failing the test after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
