//! End to end: the real `vetted` binary on a real data directory. An applicant goes from
//! creation to approval; the server is killed with SIGKILL; after a restart every acknowledged
//! event is there and the applicant view is the same.
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ADMIN: &str = "e2e-admin";

struct Server {
    child: Child,
    base: String,
    /// Lines printed at start-up (the default application's keys on a fresh directory).
    banner: Vec<String>,
}

impl Server {
    fn start(data_dir: &std::path::Path) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_vetted"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("VETTED_ADMIN_TOKEN", ADMIN)
            .env("VETTED_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the vetted binary starts");
        let mut server = Server {
            child,
            base: String::new(),
            banner: Vec::new(),
        };
        let stdout = server.child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("vetted prints its address within 60 s");
            if let Some(addr) = line.strip_prefix("vetted listening on ") {
                server.base = addr.trim().to_string();
                return server;
            }
            server.banner.push(line);
        }
    }

    /// SIGKILL: no graceful shutdown, no flush beyond what was acknowledged.
    fn kill9(self) {
        drop(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn banner_value(banner: &[String], name: &str) -> String {
    banner
        .iter()
        .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("{name} in the start-up banner: {banner:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill_and_the_view_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let key = banner_value(&server.banner, "privateKey");
    assert!(key.starts_with("prv_"));
    let http = reqwest::Client::new();
    let base = server.base.clone();

    let post = {
        let (http, key, base) = (http.clone(), key.clone(), base.clone());
        move |path: String, body: Value| {
            let http = http.clone();
            let key = key.clone();
            let url = format!("{base}{path}");
            async move {
                let r = http
                    .post(url)
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap())
            }
        }
    };

    // The default flow (kyc-basic, auto-approval) is there on a fresh data directory.
    let (st, created) = post(
        "/v1/applicants".into(),
        json!({"externalUserId": "user-42", "flow": "kyc-basic"}),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    for (step, data) in [
        (
            "document_check",
            json!({"documentNumber": "L898902C3", "country": "UTO"}),
        ),
        ("liveness", json!({})),
        ("face_match", json!({"score": 92.5})),
        ("aml", json!({})),
    ] {
        let (st, v) = post(
            format!("/v1/applicants/{id}/steps/{step}"),
            json!({"outcome": "passed", "data": data}),
        )
        .await;
        assert_eq!(st, 200, "{v}");
    }

    // More acknowledged writes from concurrent clients, right up to the kill.
    let mut acked = Vec::new();
    let mut tasks = Vec::new();
    for n in 0..16 {
        let post = post.clone();
        tasks.push(tokio::spawn(async move {
            let (st, v) = post(
                "/v1/applicants".into(),
                json!({"externalUserId": format!("load-{n}"), "flow": "kyc-basic"}),
            )
            .await;
            assert_eq!(st, 201);
            let id = v["id"].as_str().unwrap().to_string();
            let (st, v) = post(
                format!("/v1/applicants/{id}/steps/document_check"),
                json!({"outcome": "passed", "data": {}}),
            )
            .await;
            assert_eq!(st, 200);
            (id, v["version"].as_u64().unwrap())
        }));
    }
    for t in tasks {
        acked.push(t.await.unwrap());
    }

    let view_before: Value = http
        .get(format!("{base}/v1/applicants/{id}"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view_before["status"], "APPROVED");
    let events_before: Value = http
        .get(format!("{base}/v1/applicants/{id}/events"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    server.kill9();

    let server = Server::start(dir.path());
    assert!(
        server.banner.iter().all(|l| !l.contains("privateKey")),
        "keys are printed only on a fresh data directory"
    );
    let base = server.base.clone();
    let view_after: Value = http
        .get(format!("{base}/v1/applicants/{id}"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        view_after, view_before,
        "the same applicant view after SIGKILL and restart"
    );
    let events_after: Value = http
        .get(format!("{base}/v1/applicants/{id}/events"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        events_after, events_before,
        "every acknowledged event, byte for byte, hashes included"
    );
    for (other, version) in acked {
        let v: Value = http
            .get(format!("{base}/v1/applicants/{other}/events"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let n = v["items"].as_array().map(|a| a.len() as u64).unwrap_or(0);
        assert!(
            n > version,
            "applicant {other}: acknowledged version {version}, found {n} events"
        );
    }
    server.kill9();

    // And the log's hash chains are intact.
    let out = Command::new(env!("CARGO_BIN_EXE_vetted"))
        .args(["audit", "verify", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "audit verify: {text}");
    assert!(text.starts_with("ok:"), "{text}");
}

#[test]
fn demo_drives_the_approve_decline_and_hold_paths() {
    let out = Command::new(env!("CARGO_BIN_EXE_vetted"))
        .arg("demo")
        .env("VETTED_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("-> APPROVED"), "{text}");
    assert!(text.contains("-> DECLINED"), "{text}");
    assert!(text.contains("-> ON_HOLD"), "{text}");
    assert!(text.contains("chains intact"), "{text}");
}

fn vetted(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vetted"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("VETTED_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn operators_list_rebuild_verify_replay_and_audit_a_data_directory_offline() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vetted"))
        .args(["demo", "--data-dir"])
        .arg(dir.path())
        .env("VETTED_LOG", "warn")
        .output()
        .unwrap();
    let demo = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{demo}");
    let alice = demo
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("alice: created ")
                .and_then(|r| r.split_whitespace().next())
        })
        .expect("the demo names alice's id")
        .to_string();
    let app = demo
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("default application ")
                .and_then(|r| r.split_whitespace().next())
        })
        .expect("the demo names the application")
        .to_string();

    let (ok, list) = vetted(&["projections", "list"], dir.path());
    assert!(ok, "{list}");
    assert!(
        list.contains("applicant_view") && list.contains("registry") && list.contains("webhooks"),
        "{list}"
    );

    let (ok, rebuilt) = vetted(&["projections", "rebuild", "--all"], dir.path());
    assert!(ok, "{rebuilt}");
    assert!(
        rebuilt.contains("rebuilt applicant_view: generation 0 -> 1"),
        "{rebuilt}"
    );

    let (ok, verified) = vetted(&["projections", "verify", "all"], dir.path());
    assert!(ok, "{verified}");
    assert!(
        verified.contains("MATCH") && !verified.contains("MISMATCH"),
        "{verified}"
    );

    let now = chrono_now();
    let (ok, table) = vetted(
        &["replay", &alice, "--as-of", &now, "--format", "table"],
        dir.path(),
    );
    assert!(ok, "{table}");
    assert!(
        table.contains("APPROVED") && table.contains("StepPassed"),
        "{table}"
    );
    let (ok, early) = vetted(
        &["replay", &alice, "--as-of", "2000-01-01T00:00:00Z"],
        dir.path(),
    );
    assert!(!ok, "alice did not exist in 2000: {early}");

    let (ok, events) = vetted(&["events", &alice], dir.path());
    assert!(ok, "{events}");
    let lines: Vec<serde_json::Value> = events
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() > 5);
    assert_eq!(lines[0]["eventType"], "ApplicantCreated");

    let (ok, deliveries) = vetted(&["webhooks", "list", "--app", &app], dir.path());
    assert!(ok, "{deliveries}");
    assert!(deliveries.contains("applicantCreated"), "{deliveries}");

    let (ok, audit) = vetted(&["audit", "verify"], dir.path());
    assert!(ok && audit.starts_with("ok:"), "{audit}");
}

fn chrono_now() -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[test]
fn operators_rebuild_and_verify_a_running_server_through_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let online = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_vetted"))
            .args(args)
            .args(["--server", &server.base])
            .env("VETTED_ADMIN_TOKEN", ADMIN)
            .env("VETTED_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, list) = online(&["projections", "list"]);
    assert!(ok && list.contains("registry"), "{list}");
    let (ok, rebuilt) = online(&["projections", "rebuild", "applicant_view"]);
    assert!(ok, "{rebuilt}");
    assert!(
        rebuilt.contains("rebuilt applicant_view: generation 0 -> 1"),
        "{rebuilt}"
    );
    let (ok, verified) = online(&["projections", "verify", "all"]);
    assert!(
        ok && verified.contains("MATCH") && !verified.contains("MISMATCH"),
        "{verified}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_vetted"))
        .args(["projections", "list", "--server", &server.base])
        .env("VETTED_ADMIN_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success(), "a wrong admin token is refused");
}
