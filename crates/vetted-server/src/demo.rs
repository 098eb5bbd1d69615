//! `vetted demo`: three applicants through the approve, decline and on-hold paths, on a real
//! (temporary) sled data directory, printing what happened.
use std::process::ExitCode;

use serde_json::json;
use uuid::Uuid;
use vetted_domain::{
    AppKey, ApplicantId, Command, DecisionKind, StepData, StepOutcome, StepType, WarningId,
};
use vetted_store::{Actor, ActorKind};

use crate::cli::open_offline;
use crate::config::Config;
use crate::error::ApiError;
use crate::service::{Meta, NewApplicant};
use crate::Engine;

type CliResult = Result<ExitCode, Box<dyn std::error::Error + Send + Sync>>;

fn meta(kind: ActorKind, id: &str) -> Meta {
    Meta {
        actor: Actor {
            kind,
            id: Some(id.to_string()),
            ip: Some("198.51.100.7".into()),
            user_agent: Some("vetted-demo/1.0".into()),
            os: None,
            browser: None,
        },
        correlation_id: Uuid::now_v7(),
    }
}

async fn step(
    engine: &Engine,
    app: &AppKey,
    id: &ApplicantId,
    step: StepType,
    outcome: StepOutcome,
    data: serde_json::Value,
) -> Result<(), ApiError> {
    let command = Command::SubmitStepResult {
        step,
        outcome,
        data: StepData::from_value(&data).map_err(|e| ApiError::validation(e.to_string()))?,
        attempt: None,
        reason: None,
    };
    let out = engine
        .execute(app, id, None, &meta(ActorKind::Api, "provider"), command)
        .await?;
    println!(
        "    {:<15} {:?} -> {}",
        step.as_str(),
        outcome,
        out.view.status
    );
    Ok(())
}

async fn applicant(engine: &Engine, app: &AppKey, who: &str) -> Result<ApplicantId, ApiError> {
    let req = NewApplicant {
        external_user_id: who.into(),
        flow: "kyc-basic".into(),
        flow_version: None,
        email: Some(format!("{who}@example.com")),
        phone: None,
        lang: Some("en".into()),
    };
    let out = engine
        .create_applicant(app, req, &meta(ActorKind::Api, "client-backend"))
        .await?;
    let id = out.view.id;
    println!("  {who}: created {id} ({})", out.view.status);
    Ok(id)
}

/// Runs the demo.
pub async fn run(data_dir: Option<std::path::PathBuf>) -> CliResult {
    let temp = tempfile::tempdir()?;
    let dir = data_dir.unwrap_or_else(|| temp.path().to_path_buf());
    println!("Vetted demo on {}", dir.display());
    let engine = open_offline(Config::for_data_dir(&dir)).await?;
    engine.start().await?;
    let app = match engine.bootstrap().await? {
        Some((app, _, flow)) => {
            println!(
                "  default application {} with flow {} v{}",
                app.app_key, flow.name, flow.version
            );
            app
        }
        None => engine
            .registry
            .applications()?
            .into_iter()
            .next()
            .ok_or("no application")?,
    };
    let key = app.app_key;

    println!("\n1. alice passes every step with a 92% face match: auto-approved");
    let alice = applicant(&engine, &key, "alice").await?;
    step(
        &engine,
        &key,
        &alice,
        StepType::DocumentCheck,
        StepOutcome::Passed,
        json!({"documentNumber": "L898902C3", "country": "UTO"}),
    )
    .await?;
    step(
        &engine,
        &key,
        &alice,
        StepType::Liveness,
        StepOutcome::Passed,
        json!({"score": 0.98}),
    )
    .await?;
    step(
        &engine,
        &key,
        &alice,
        StepType::FaceMatch,
        StepOutcome::Passed,
        json!({"score": 92.5}),
    )
    .await?;
    step(
        &engine,
        &key,
        &alice,
        StepType::Aml,
        StepOutcome::Passed,
        json!({"hits": 0}),
    )
    .await?;

    println!("\n2. bob's face match is 70%: he waits for a reviewer, who declines");
    let bob = applicant(&engine, &key, "bob").await?;
    step(
        &engine,
        &key,
        &bob,
        StepType::DocumentCheck,
        StepOutcome::Passed,
        json!({"documentNumber": "X1234567", "country": "FRA"}),
    )
    .await?;
    step(
        &engine,
        &key,
        &bob,
        StepType::Liveness,
        StepOutcome::Passed,
        json!({"score": 0.91}),
    )
    .await?;
    step(
        &engine,
        &key,
        &bob,
        StepType::FaceMatch,
        StepOutcome::Passed,
        json!({"score": 70.0}),
    )
    .await?;
    step(
        &engine,
        &key,
        &bob,
        StepType::Aml,
        StepOutcome::Passed,
        json!({"hits": 0}),
    )
    .await?;
    let out = engine
        .execute(
            &key,
            &bob,
            None,
            &meta(ActorKind::Api, "compliance"),
            Command::AssignReviewer {
                reviewer_id: "rev-1".into(),
            },
        )
        .await?;
    println!("    reviewer rev-1 assigned -> {}", out.view.status);
    let decline = Command::Decide {
        decision: DecisionKind::Decline,
        reviewer_id: Some("rev-1".into()),
        reasons: vec!["FACE_MISMATCH".into()],
        comment: Some("selfie does not match the document photo".into()),
    };
    let out = engine
        .execute(
            &key,
            &bob,
            None,
            &meta(ActorKind::Reviewer, "rev-1"),
            decline,
        )
        .await?;
    println!("    rev-1 declines -> {}", out.view.status);

    println!("\n3. carol's document is expired: she is held");
    let carol = applicant(&engine, &key, "carol").await?;
    step(
        &engine,
        &key,
        &carol,
        StepType::DocumentCheck,
        StepOutcome::Passed,
        json!({"documentNumber": "D231458907", "country": "DEU"}),
    )
    .await?;
    let warn = Command::RaiseWarning {
        id: WarningId(Uuid::now_v7()),
        code: "DOCUMENT_EXPIRED".into(),
        message: "document expired on 2012-04-15".into(),
        step: Some(StepType::DocumentCheck),
    };
    let out = engine
        .execute(
            &key,
            &carol,
            None,
            &meta(ActorKind::System, "document-provider"),
            warn,
        )
        .await?;
    println!("    warning DOCUMENT_EXPIRED -> {}", out.view.status);

    println!("\nTimeline of bob:");
    for e in engine.timeline(&key, &bob).await? {
        println!("  v{:<3} {:<20} {}", e.version, e.action, e.summary);
    }
    let report = vetted_store::verify::verify(engine.store.as_ref()).await?;
    println!(
        "\nAudit: {} events in {} streams, chains {}",
        report.events,
        report.streams,
        if report.first_mismatch.is_none() {
            "intact"
        } else {
            "BROKEN"
        }
    );
    engine.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
