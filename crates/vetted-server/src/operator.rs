//! Operator commands on projections, online (admin API of a running server) or offline (the
//! data directory, while no server holds it).
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::cli::{open_offline, ProjectionsCommand, Target, WebhookTarget, WebhooksCommand};

type CliResult = Result<ExitCode, Box<dyn std::error::Error + Send + Sync>>;

/// Runs `vetted projections ...`.
pub async fn projections(command: ProjectionsCommand) -> CliResult {
    match command {
        ProjectionsCommand::List { target } => {
            let status = match &target.server {
                Some(url) => admin(
                    &target,
                    reqwest::Method::GET,
                    &format!("{url}/v1/projections"),
                )
                .await?["items"]
                    .clone(),
                None => {
                    let engine = open_offline(target.config.clone()).await?;
                    let status = engine.projection_status().await?;
                    engine.shutdown().await;
                    status
                }
            };
            print_status(&status);
            Ok(ExitCode::SUCCESS)
        }
        ProjectionsCommand::Rebuild { name, all, target } => {
            let name = match (name, all) {
                (_, true) => "all".to_string(),
                (Some(n), false) => n,
                (None, false) => return Err("name a projection or pass --all".into()),
            };
            let reports = match &target.server {
                Some(url) => {
                    let bar = progress_bar(&name);
                    let request = {
                        let (target, url, name) = (target.clone(), url.clone(), name.clone());
                        tokio::spawn(async move {
                            admin(
                                &target,
                                reqwest::Method::POST,
                                &format!("{url}/v1/projections/{name}/rebuild"),
                            )
                            .await
                        })
                    };
                    // Draw the server's progress while the rebuild request runs.
                    while !request.is_finished() {
                        if let Ok(status) = admin(
                            &target,
                            reqwest::Method::GET,
                            &format!("{url}/v1/projections"),
                        )
                        .await
                        {
                            let progress = status["items"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .find_map(|s| {
                                    s.get("rebuildProgress").filter(|p| p.is_object()).cloned()
                                });
                            if let Some(p) = progress {
                                bar.set_length(p["total"].as_u64().unwrap_or(0));
                                bar.set_position(p["done"].as_u64().unwrap_or(0));
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    bar.finish_and_clear();
                    request.await??
                }
                None => {
                    let engine = open_offline(target.config.clone()).await?;
                    let bar = ProgressBar::new(0);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{msg} [{bar:40}] {pos}/{len} events  {per_sec}  ETA {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_message(format!("rebuilding {name}"));
                    let b = bar.clone();
                    let result = engine
                        .rebuild_projections(&name, &mut move |p| {
                            b.set_length(p.total);
                            b.set_position(p.done);
                        })
                        .await;
                    bar.finish_and_clear();
                    engine.shutdown().await;
                    result?
                }
            };
            for r in reports["items"].as_array().into_iter().flatten() {
                println!(
                    "rebuilt {}: generation {} -> {}, checkpoint {}, {} ms",
                    r["projection"].as_str().unwrap_or("?"),
                    r["oldGeneration"],
                    r["generation"],
                    r["checkpoint"],
                    r["elapsedMs"]
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ProjectionsCommand::Verify { name, target } => {
            let reports = match &target.server {
                Some(url) => {
                    admin(
                        &target,
                        reqwest::Method::POST,
                        &format!("{url}/v1/projections/{name}/verify"),
                    )
                    .await?
                }
                None => {
                    let engine = open_offline(target.config.clone()).await?;
                    let r = engine.verify_projection(&name).await;
                    engine.shutdown().await;
                    r?
                }
            };
            let mut all_match = true;
            for r in reports["items"].as_array().into_iter().flatten() {
                let matches = r["matches"].as_bool().unwrap_or(false);
                all_match &= matches;
                println!(
                    "{} {}: live {} vs rebuilt {} at checkpoint {}",
                    if matches { "MATCH   " } else { "MISMATCH" },
                    r["projection"].as_str().unwrap_or("?"),
                    r["live"]["sha256"].as_str().unwrap_or("?"),
                    r["rebuilt"]["sha256"].as_str().unwrap_or("?"),
                    r["checkpoint"]
                );
            }
            Ok(if all_match {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
    }
}

/// A bar with events/s and ETA, for rebuilds (online and offline).
fn progress_bar(name: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("rebuilding {name}"));
    bar
}

fn print_status(status: &Value) {
    println!(
        "{:<20} {:>12} {:>12} {:>10} {:>10}",
        "projection", "checkpoint", "head", "lag", "generation"
    );
    for s in status.as_array().into_iter().flatten() {
        println!(
            "{:<20} {:>12} {:>12} {:>10} {:>10}",
            s["name"].as_str().unwrap_or("?"),
            s["checkpoint"],
            s["head"],
            s["lag"],
            s["generation"]
        );
    }
}

async fn admin(
    target: &Target,
    method: reqwest::Method,
    url: &str,
) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    let token = target.config.admin_token.clone().ok_or(
        "online operator commands need the admin token (VETTED_ADMIN_TOKEN or --admin-token)",
    )?;
    let response = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(format!(
            "{url} answered {status}: {}",
            body["error"]["message"].as_str().unwrap_or("")
        )
        .into());
    }
    Ok(body)
}

/// What an offline webhook command does with the engine and the application.
type OfflineAction = Box<
    dyn FnOnce(&crate::Engine, &vetted_domain::AppKey) -> Result<Value, crate::ApiError> + Send,
>;

/// Runs `vetted webhooks ...`.
pub async fn webhooks(command: WebhooksCommand) -> CliResult {
    let (target, online_path, offline): (WebhookTarget, String, OfflineAction) = match command {
        WebhooksCommand::List {
            state,
            limit,
            target,
        } => {
            let query = state
                .as_ref()
                .map(|s| format!("&state={s}"))
                .unwrap_or_default();
            let path = format!("GET /v1/webhooks/deliveries?limit={limit}{query}");
            (
                target,
                path,
                Box::new(move |engine, app| {
                    engine
                        .list_deliveries(app, state.as_deref(), limit)
                        .map(|items| serde_json::json!({ "items": items }))
                }),
            )
        }
        WebhooksCommand::Redeliver { id, dead, target } => match (id, dead) {
            (_, true) => (
                target,
                "POST /v1/webhooks/deliveries/redeliver".to_string(),
                Box::new(|engine, app| {
                    engine
                        .redeliver_dead(app)
                        .map(|n| serde_json::json!({ "redelivered": n }))
                }),
            ),
            (Some(id), false) => (
                target,
                format!("POST /v1/webhooks/deliveries/{id}/redeliver"),
                Box::new(move |engine, app| engine.redeliver(app, &id)),
            ),
            (None, false) => return Err("name a delivery id or pass --dead".into()),
        },
    };
    let body = match &target.server {
        Some(url) => {
            let key = target.key.clone().ok_or("online webhook commands need the application's private key (--key or VETTED_PRIVATE_KEY)")?;
            let (method, path) = online_path.split_once(' ').unwrap_or(("GET", &online_path));
            let method = reqwest::Method::from_bytes(method.as_bytes())?;
            let response = reqwest::Client::new()
                .request(method, format!("{url}{path}"))
                .bearer_auth(key)
                .send()
                .await?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                return Err(format!(
                    "{url}{path} answered {status}: {}",
                    body["error"]["message"].as_str().unwrap_or("")
                )
                .into());
            }
            body
        }
        None => {
            let app: vetted_domain::AppKey = target
                .app
                .as_deref()
                .ok_or("offline webhook commands need --app <appKey> (or use --server and --key)")?
                .parse()
                .map_err(|_| "--app must be an app key (a UUID)")?;
            let engine = open_offline(target.config.clone()).await?;
            let result = offline(&engine, &app);
            engine.shutdown().await;
            result?
        }
    };
    match body["items"].as_array() {
        Some(items) => {
            println!(
                "{:>8} {:<10} {:<22} {:>8} {:>9}  last attempt",
                "id", "state", "type", "attempts", "sequence"
            );
            for d in items {
                let attempts = d["attempts"].as_array().map(Vec::len).unwrap_or(0);
                let last = d["attempts"].as_array().and_then(|a| a.last()).map(|a| {
                    format!(
                        "{} {}",
                        a["statusCode"]
                            .as_u64()
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| a["error"].as_str().unwrap_or("-").to_string()),
                        a["at"].as_str().unwrap_or("")
                    )
                });
                println!(
                    "{:>8} {:<10} {:<22} {:>8} {:>9}  {}",
                    d["id"],
                    d["state"].as_str().unwrap_or("?"),
                    d["notification"]["type"].as_str().unwrap_or("?"),
                    attempts,
                    d["notification"]["sequence"],
                    last.unwrap_or_default()
                );
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&body)?),
    }
    Ok(ExitCode::SUCCESS)
}
