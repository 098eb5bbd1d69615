//! The HTTP API over real HTTP, against a real sled data directory.
mod common;

use common::{TestServer, ADMIN};
use serde_json::{json, Value};

fn status_of(v: &Value) -> &str {
    v["status"].as_str().unwrap_or("?")
}

#[tokio::test]
async fn an_applicant_who_passes_every_step_is_approved_automatically() {
    let s = TestServer::start().await;
    let (key, app_key) = s.application().await;
    let (status, created) = s
        .post(&key, "/v1/applicants", json!({"externalUserId": "user-42", "flow": "kyc-basic", "email": "a@example.com", "phone": "+15550100", "lang": "en"}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(created["status"], "INIT");
    assert_eq!(created["version"], 0);
    assert_eq!(created["appKey"], app_key.as_str());
    assert_eq!(created["externalUserId"], "user-42");
    assert_eq!(created["flow"]["name"], "kyc-basic");
    assert_eq!(created["flow"]["version"], 1);
    assert_eq!(created["steps"][0]["type"], "document_check");
    assert_eq!(created["steps"][0]["status"], "pending");
    assert_eq!(created["steps"][0]["attempts"], 0);
    assert!(created["reviewer"].is_null());
    let id = created["id"].as_str().unwrap();

    let (st, v) = s
        .step(
            &key,
            id,
            "document_check",
            "passed",
            json!({"documentNumber": "L898902C3", "country": "UTO"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(status_of(&v), "INCOMPLETE");
    s.step(&key, id, "liveness", "passed", json!({})).await;
    let (_, v) = s
        .step(&key, id, "face_match", "passed", json!({"score": 92.5}))
        .await;
    assert_eq!(status_of(&v), "IN_PROGRESS");
    let (_, v) = s.step(&key, id, "aml", "passed", json!({})).await;
    assert_eq!(status_of(&v), "APPROVED");

    let (st, live) = s.get(&key, &format!("/v1/applicants/{id}")).await;
    assert_eq!(st, 200);
    assert_eq!(live, v, "the read model shows what the command answered");

    let (_, timeline) = s.get(&key, &format!("/v1/applicants/{id}/timeline")).await;
    let items = timeline["items"].as_array().unwrap();
    assert_eq!(items[0]["action"], "ApplicantCreated");
    assert!(items
        .iter()
        .any(|i| i["action"] == "StepPassed" && i["ip"] == "127.0.0.1"));
    assert_eq!(items.last().unwrap()["version"], v["version"]);

    let (_, events) = s.get(&key, &format!("/v1/applicants/{id}/events")).await;
    let events = events["items"].as_array().unwrap();
    assert_eq!(events.len() as u64, v["version"].as_u64().unwrap() + 1);
    for pair in events.windows(2) {
        assert_eq!(
            pair[1]["prevHash"], pair[0]["hash"],
            "each event chains to the previous one"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn a_low_face_match_waits_for_a_reviewer_who_declines() {
    let s = TestServer::start().await;
    let (key, _) = s.application().await;
    let id = s.applicant(&key, "bob").await;
    for step in ["document_check", "liveness"] {
        s.step(&key, &id, step, "passed", json!({})).await;
    }
    s.step(&key, &id, "face_match", "passed", json!({"score": 70}))
        .await;
    let (_, v) = s.step(&key, &id, "aml", "passed", json!({})).await;
    assert_eq!(status_of(&v), "COMPLETED");

    let (st, err) = s
        .post(
            &key,
            &format!("/v1/applicants/{id}/decision"),
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(st, 409, "a decision needs an assigned reviewer: {err}");
    assert!(err["error"]["code"].is_string() && err["error"]["message"].is_string());

    let (st, v) = s
        .post(
            &key,
            &format!("/v1/applicants/{id}/reviewer"),
            json!({"reviewerId": "rev-1"}),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(v["reviewer"], "rev-1");
    let (_, queue) = s.get(&key, "/v1/reviewers/rev-1/queue").await;
    assert_eq!(
        queue["items"].as_array().map(|a| a.len()),
        Some(1),
        "{queue}"
    );

    let (st, v) = s
        .post(
            &key,
            &format!("/v1/applicants/{id}/decision"),
            json!({"decision": "decline", "reasons": ["FACE_MISMATCH"], "comment": "no match"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(status_of(&v), "DECLINED");
    let (st, err) = s
        .post(
            &key,
            &format!("/v1/applicants/{id}/decision"),
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(st, 409);
    assert!(
        err["error"]["message"].as_str().unwrap().contains("rev-1"),
        "names who decided: {err}"
    );
    s.stop().await;
}

#[tokio::test]
async fn an_unresolved_warning_holds_the_applicant_until_resolved() {
    let s = TestServer::start().await;
    let (key, _) = s.application().await;
    let id = s.applicant(&key, "carol").await;
    s.step(&key, &id, "document_check", "passed", json!({}))
        .await;
    let (st, w) = s
        .post(
            &key,
            &format!("/v1/applicants/{id}/warnings"),
            json!({"code": "DOCUMENT_EXPIRED", "message": "expired"}),
        )
        .await;
    assert_eq!(st, 201, "{w}");
    let wid = w["id"].as_str().unwrap().to_string();
    assert_eq!(w["applicant"]["status"], "ON_HOLD");
    for step in ["liveness", "aml"] {
        s.step(&key, &id, step, "passed", json!({})).await;
    }
    let (_, v) = s
        .step(&key, &id, "face_match", "passed", json!({"score": 99}))
        .await;
    assert_eq!(
        status_of(&v),
        "ON_HOLD",
        "every step passed but the warning holds it"
    );
    let (st, v) = s
        .post(
            &key,
            &format!("/v1/applicants/{id}/warnings/{wid}/resolve"),
            json!({"comment": "renewed"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(status_of(&v), "APPROVED");
    s.stop().await;
}

#[tokio::test]
async fn if_match_guards_against_lost_updates() {
    let s = TestServer::start().await;
    let (key, _) = s.application().await;
    let id = s.applicant(&key, "dave").await;
    let r = s
        .http
        .get(s.url(&format!("/v1/applicants/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["etag"], "\"0\"");
    let r = s
        .http
        .post(s.url(&format!("/v1/applicants/{id}/comments")))
        .bearer_auth(&key)
        .header("If-Match", "\"0\"")
        .json(&json!({"text": "first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let r = s
        .http
        .post(s.url(&format!("/v1/applicants/{id}/comments")))
        .bearer_auth(&key)
        .header("If-Match", "0")
        .json(&json!({"text": "stale"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "version_conflict");
    assert_eq!(body["error"]["currentVersion"], 1);
    s.stop().await;
}

#[tokio::test]
async fn another_applications_applicant_is_not_found() {
    let s = TestServer::start().await;
    let (key_a, _) = s.application().await;
    let (key_b, _) = s.application().await;
    let id = s.applicant(&key_a, "erin").await;
    let (st, body) = s.get(&key_b, &format!("/v1/applicants/{id}")).await;
    assert_eq!(st, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (st, _) = s
        .step(&key_b, &id, "document_check", "passed", json!({}))
        .await;
    assert_eq!(st, 404, "commands are scoped too");
    let (st, _) = s.get(&key_b, &format!("/v1/applicants/{id}/events")).await;
    assert_eq!(st, 404);
    let (st, _) = s.get("prv_wrong", &format!("/v1/applicants/{id}")).await;
    assert_eq!(st, 401);
    let (_, list) = s.get(&key_b, "/v1/applicants").await;
    assert_eq!(list["items"].as_array().map(|a| a.len()), Some(0));
    s.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_loses_nothing() {
    let s = TestServer::start().await;
    let (key, _) = s.application().await;
    let id = s.applicant(&key, "frank").await;
    let post_raw = |body: Vec<u8>| {
        s.http
            .post(s.url(&format!("/v1/applicants/{id}/steps/document_check")))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post_raw(b"{\"outcome\": ".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "malformed_json"
    );
    let r = post_raw(b"{\"outcome\": \"maybe\"}".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let mut big = b"{\"outcome\":\"passed\",\"data\":{\"blob\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'a', 1024 * 1024 + 10));
    big.extend(b"\"}}");
    let r = post_raw(big).await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "payload_too_large"
    );
    let (st, body) = s
        .step(&key, &id, "selfie_with_document", "passed", json!({}))
        .await;
    assert!(
        st == 409 || st == 422,
        "a step the flow does not have is refused: {st} {body}"
    );
    // Step data nested deeper than a stored payload may hold (126 levels) is refused.
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let r = post_raw(format!("{{\"outcome\":\"passed\",\"data\":{}}}", nested(127)).into_bytes())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "malformed_json"
    );
    let (st, _) = s.step(&key, &id, "warp_drive", "passed", json!({})).await;
    assert_eq!(st, 404);
    let (st, _) = s.get(&key, "/v1/applicants/not-a-uuid").await;
    assert_eq!(st, 404);
    let (st, _) = s
        .get(&key, &format!("/v1/applicants/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(st, 404);
    let (st, body) = s
        .post(
            &key,
            "/v1/applicants",
            json!({"externalUserId": "x", "flow": "nope"}),
        )
        .await;
    assert_eq!(st, 422, "{body}");
    let (_, v) = s.get(&key, &format!("/v1/applicants/{id}")).await;
    assert_eq!(
        v["version"], 0,
        "nothing was appended by the refused requests"
    );
    s.stop().await;
}

impl TestServer {
    async fn patch_application(&self, app_key: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .patch(self.url(&format!("/v1/applications/{app_key}")))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_application_changes_never_undo_each_other() {
    let s = TestServer::start().await;
    let (mut key, app_key) = s.application().await;
    for round in 0..5 {
        let redirect = format!("https://example.com/done/{round}");
        let (rotated, redirected) = tokio::join!(
            s.patch_application(&app_key, json!({"rotatePrivateKey": true})),
            s.patch_application(&app_key, json!({"redirectUrl": redirect})),
        );
        assert_eq!(rotated.0, 200, "{}", rotated.1);
        assert_eq!(redirected.0, 200, "{}", redirected.1);
        let new_key = rotated.1["privateKey"].as_str().unwrap().to_string();
        let (st, app) = s.get(&new_key, "/v1/application").await;
        assert_eq!(st, 200, "round {round}: the key just issued works: {app}");
        assert_eq!(app["redirectUrl"], json!(redirect), "round {round}");
        let (st, _) = s.get(&key, "/v1/application").await;
        assert_eq!(st, 401, "round {round}: the rotated-out key stays out");
        key = new_key;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_saves_of_one_flow_get_distinct_versions() {
    let s = TestServer::start().await;
    let (key, _) = s.application().await;
    let save = |n: u32| {
        s.post(
            &key,
            "/v1/flows",
            json!({"name": "raced", "steps": [{"type": "document_check", "maxAttempts": n}]}),
        )
    };
    let saved = futures::future::join_all((1..=4).map(save)).await;
    let mut versions: Vec<u64> = saved
        .iter()
        .map(|(st, body)| {
            assert_eq!(*st, 201, "{body}");
            body["version"].as_u64().unwrap()
        })
        .collect();
    versions.sort();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    // Each version resolves to the steps its caller was shown.
    for (_, body) in &saved {
        let (st, flow) = s
            .post(
                &key,
                "/v1/applicants",
                json!({"externalUserId": format!("v{}", body["version"]), "flow": "raced", "flowVersion": body["version"]}),
            )
            .await;
        assert_eq!(st, 201, "{flow}");
        assert_eq!(flow["flow"]["version"], body["version"], "{flow}");
        assert_eq!(
            flow["steps"][0]["maxAttempts"], body["steps"][0]["maxAttempts"],
            "{flow}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn settings_and_ids_the_engine_could_not_use_are_refused() {
    let s = TestServer::start().await;
    let (key, app_key) = s.application().await;
    let create = |body: Value| s.post(ADMIN, "/v1/applications", body);
    for (body, why) in [
        (
            json!({"name": "a", "webhookUrl": "https://h.example/", "webhookHeaders": {"content-type": "x"}}),
            "a header Vetted sets",
        ),
        (
            json!({"name": "a", "webhookUrl": "http://"}),
            "a URL without host",
        ),
        (
            json!({"name": "a", "webhookHeaders": {"bad header": "x"}}),
            "an invalid header name",
        ),
    ] {
        let (st, body) = create(body).await;
        assert_eq!(st, 422, "{why}: {body}");
        assert_eq!(body["error"]["code"], "validation", "{why}");
    }
    for (body, why) in [
        (json!({"name": ""}), "an empty name"),
        (
            json!({"webhookHeaders": {"bad header": "x"}}),
            "an invalid header name",
        ),
        (json!({"webhookUrl": "ftp://h.example/"}), "a non-http URL"),
    ] {
        let (st, body) = s.patch_application(&app_key, body).await;
        assert_eq!(st, 422, "{why}: {body}");
    }
    let (st, app) = s.get(&key, "/v1/application").await;
    assert_eq!(st, 200);
    assert_eq!(app["name"], "Demo", "refused changes changed nothing");

    // A misspelt flow setting or step field is refused, not dropped.
    for body in [
        json!({"name": "typo", "autoApprovall": true, "steps": [{"type": "aml"}]}),
        json!({"name": "typo", "steps": [{"type": "face_match", "treshold": 5}]}),
    ] {
        let (st, err) = s.post(&key, "/v1/flows", body).await;
        assert_eq!(st, 422, "{err}");
    }
    let (st, _) = s.get(&key, "/v1/flows/typo").await;
    assert_eq!(st, 404);

    // Ids with control characters would corrupt the list's and the queue's indexes.
    let (st, err) = s
        .post(&key, "/v1/applicants", json!({"externalUserId": "a\u{0}b"}))
        .await;
    assert_eq!(st, 422, "{err}");
    let id = s.applicant(&key, "ctl").await;
    let (st, err) = s
        .post(
            &key,
            &format!("/v1/applicants/{id}/reviewer"),
            json!({"reviewerId": "r\n1"}),
        )
        .await;
    assert_eq!(st, 422, "{err}");
    // flowVersion alone does not silently restart the current flow.
    let (st, err) = s
        .post(
            &key,
            &format!("/v1/applicants/{id}/flow"),
            json!({"flowVersion": 2}),
        )
        .await;
    assert_eq!(st, 422, "{err}");
    s.stop().await;
}

#[tokio::test]
async fn query_and_path_errors_have_the_json_error_body() {
    let s = TestServer::start().await;
    let (key, _) = s.application().await;
    for path in [
        "/v1/applicants?limit=abc",
        "/v1/webhooks/deliveries?limit=-1",
        "/v1/applicants/%FF",
    ] {
        let r = s
            .http
            .get(s.url(path))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!((400..500).contains(&status), "{path}: {status}");
        let body: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{path}: not JSON: {e}"));
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
    }
    s.stop().await;
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_token() {
    let s = TestServer::start().await;
    let (key, _) = s.application().await;
    let (st, body) = s.post(&key, "/v1/applications", json!({"name": "x"})).await;
    assert_eq!(st, 403, "{body}");
    let (st, _) = s.get(&key, "/v1/projections").await;
    assert_eq!(st, 403);
    let (st, p) = s.get(ADMIN, "/v1/projections").await;
    assert_eq!(st, 200);
    assert!(
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "applicant_view"),
        "{p}"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_timeline_as_of_a_moment_shows_only_what_had_happened() {
    let s = TestServer::start().await;
    let (key, _) = s.application().await;
    let id = s.applicant(&key, "gina").await;
    let (_, after_doc) = s
        .step(&key, &id, "document_check", "passed", json!({}))
        .await;
    let moment = chrono::Utc::now();
    s.step(&key, &id, "liveness", "passed", json!({})).await;
    let at = moment.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (st, then) = s
        .get(
            &key,
            &format!("/v1/applicants/{id}?asOf={}", at.replace('+', "%2B")),
        )
        .await;
    assert_eq!(st, 200, "{then}");
    assert_eq!(
        then, after_doc,
        "the replay equals what the live view showed then"
    );
    let (_, tl) = s
        .get(&key, &format!("/v1/applicants/{id}/timeline?asOf={at}"))
        .await;
    assert_eq!(
        tl["items"].as_array().unwrap().len() as u64,
        after_doc["version"].as_u64().unwrap() + 1
    );
    let (st, _) = s
        .get(&key, &format!("/v1/applicants/{id}?asOf=yesterday"))
        .await;
    assert_eq!(st, 400);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_rebuilds_every_projection_online_while_clients_keep_writing() {
    let s = TestServer::start().await;
    let (key, _) = s.application().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = s.applicant(&key, &format!("before-{n}")).await;
        s.step(
            &key,
            &id,
            "document_check",
            "passed",
            json!({"country": "UTO"}),
        )
        .await;
        ids.push(id);
    }
    let writer = {
        let (base, key, http) = (s.base.clone(), key.clone(), s.http.clone());
        tokio::spawn(async move {
            for n in 0..20 {
                let r = http
                    .post(format!("{base}/v1/applicants"))
                    .bearer_auth(&key)
                    .json(&json!({"externalUserId": format!("during-{n}"), "flow": "kyc-basic"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        })
    };
    let (st, report) = s
        .post(ADMIN, "/v1/projections/all/rebuild", json!({}))
        .await;
    assert_eq!(st, 200, "{report}");
    writer.await.unwrap();
    let (_, status) = s.get(ADMIN, "/v1/projections").await;
    for p in status["items"].as_array().unwrap() {
        assert_eq!(
            p["generation"], 1,
            "every projection switched to its new generation: {p}"
        );
        assert!(
            p.get("rebuildProgress").is_none(),
            "no rebuild is running any more: {p}"
        );
    }
    let (st, verified) = s.post(ADMIN, "/v1/projections/all/verify", json!({})).await;
    assert_eq!(st, 200);
    assert!(
        verified["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["matches"] == true),
        "{verified}"
    );
    let (_, list) = s.get(&key, "/v1/applicants?limit=500").await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        25,
        "nothing written during the rebuild is missing"
    );
    for id in ids {
        let (st, v) = s.get(&key, &format!("/v1/applicants/{id}")).await;
        assert_eq!(st, 200);
        assert_eq!(v["status"], "INCOMPLETE");
    }
    let (st, _) = s
        .post(ADMIN, "/v1/projections/nope/rebuild", json!({}))
        .await;
    assert_eq!(st, 404);
    s.stop().await;
}
