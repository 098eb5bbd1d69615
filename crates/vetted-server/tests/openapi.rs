//! `schemas/openapi.yaml` stays true: every mounted route is documented, and every documented
//! operation is answered by the router (not the "no such endpoint" fallback).
mod common;

use std::collections::BTreeSet;

use common::TestServer;

fn documented_operations() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/openapi.yaml"
    ))
    .expect("openapi.yaml");
    let mut ops = BTreeSet::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in text.lines() {
        if line == "paths:" {
            in_paths = true;
            continue;
        }
        if in_paths && !line.starts_with(' ') && !line.is_empty() {
            break;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = Some(format!("/{p}"));
        } else if let Some(m) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')) {
            if ["get", "post", "put", "patch", "delete"].contains(&m) {
                ops.insert((m.to_string(), path.clone().expect("a method under a path")));
            }
        }
    }
    ops
}

#[test]
fn every_mounted_route_is_in_the_openapi_document_and_nothing_else() {
    let documented = documented_operations();
    let mounted: BTreeSet<(String, String)> = vetted_server::api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let undocumented: Vec<_> = mounted.difference(&documented).collect();
    let unmounted: Vec<_> = documented.difference(&mounted).collect();
    assert!(
        undocumented.is_empty(),
        "mounted but not in openapi.yaml: {undocumented:?}"
    );
    assert!(
        unmounted.is_empty(),
        "in openapi.yaml but not mounted: {unmounted:?}"
    );
}

#[tokio::test]
async fn every_documented_route_is_answered_by_the_router() {
    let s = TestServer::start().await;
    for (method, path) in documented_operations() {
        let concrete = path
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{appKey}", &uuid::Uuid::now_v7().to_string())
            .replace("{warningId}", &uuid::Uuid::now_v7().to_string())
            .replace("{step}", "document_check")
            .replace("{name}", "kyc-basic")
            .replace("{reviewerId}", "rev-1")
            .replace("{deliveryId}", "1");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = s
            .http
            .request(method.clone(), s.url(&concrete))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        assert_ne!(
            body["error"]["code"], "route_not_found",
            "{method} {path} is documented but not routed"
        );
        assert_ne!(
            status, 405,
            "{method} {path} is documented but the method is not routed"
        );
    }
    s.stop().await;
}
