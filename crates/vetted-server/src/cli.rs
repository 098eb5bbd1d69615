//! The `vetted` command line: serve, demo, audit, events, replay, projections, webhooks, subscribe.
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use uuid::Uuid;
use vetted_domain::ApplicantId;

use crate::config::Config;
use crate::engine::{Engine, EngineError};

/// Vetted: an event-sourced identity-verification engine.
#[derive(Debug, Parser)]
#[command(name = "vetted", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Commands,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run the HTTP API, the projections, the webhook worker and (with VETTED_NATS_URL) the NATS publisher.
    Serve(Config),
    /// Drive several applicants through the approve, decline and on-hold paths and print what happened.
    Demo {
        /// Data directory for the demo (default: a fresh temporary directory).
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
    },
    /// Audit the log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print an applicant's raw events (with hashes) as JSON lines.
    Events {
        /// The applicant id.
        applicant: String,
        #[command(flatten)]
        config: Config,
    },
    /// Replay an applicant's view or timeline as of a moment.
    Replay {
        /// The applicant id.
        applicant: String,
        /// RFC 3339 time, e.g. 2026-11-22T12:00:00Z.
        #[arg(long)]
        as_of: String,
        #[arg(long, value_enum, default_value = "json")]
        format: ReplayFormat,
        #[command(flatten)]
        config: Config,
    },
    /// List, rebuild or verify projections.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// List webhook deliveries or send dead ones again.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// Print events from NATS JetStream as JSON lines, resuming where the durable consumer stopped.
    Subscribe {
        /// NATS server URL(s), comma separated.
        #[arg(long, env = "VETTED_NATS_URL")]
        nats_url: String,
        /// One subject filter, e.g. `vetted.events.<appKey>.>` or `vetted.events.*.*.StatusChanged`.
        #[arg(long)]
        filter: Option<String>,
        /// Durable consumer name: the server remembers what it has acknowledged.
        #[arg(long, default_value = "vetted-cli")]
        durable: String,
        /// Stop after this many events (default: run until interrupted).
        #[arg(long)]
        limit: Option<u64>,
    },
}

/// `vetted audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every stream's hash chain and name the first event that does not match.
    Verify {
        #[command(flatten)]
        config: Config,
    },
}

/// Output of `vetted replay`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReplayFormat {
    Json,
    Table,
}

/// Where an operator command runs: against a running server (admin API) or a data directory.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// URL of a running server (online); without it the command opens the data directory (offline).
    #[arg(long, env = "VETTED_SERVER")]
    pub server: Option<String>,
    #[command(flatten)]
    pub config: Config,
}

/// Which application's deliveries: online with its private key, offline with its app key.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookTarget {
    /// URL of a running server (online, with --key); without it the data directory is opened.
    #[arg(long, env = "VETTED_SERVER")]
    pub server: Option<String>,
    /// The application's private key (online).
    #[arg(long, env = "VETTED_PRIVATE_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// The application's app key (offline).
    #[arg(long)]
    pub app: Option<String>,
    #[command(flatten)]
    pub config: Config,
}

/// `vetted webhooks ...`
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Deliveries with their attempts, optionally in one state (pending, delivered, dead).
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        target: WebhookTarget,
    },
    /// Send one delivery again (same webhook-id), or every dead one with --dead.
    Redeliver {
        /// Delivery id (see `list`).
        id: Option<String>,
        /// Every dead delivery of the application.
        #[arg(long)]
        dead: bool,
        #[command(flatten)]
        target: WebhookTarget,
    },
}

/// `vetted projections ...`
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Name, checkpoint, lag and generation of every projection.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Rebuild a projection (or all) into a new generation and switch to it.
    Rebuild {
        /// Projection name (see `list`).
        name: Option<String>,
        /// Rebuild every projection.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Rebuild into a scratch generation and compare its digest with the live one.
    Verify {
        /// Projection name, or `all`.
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Entry point of the `vetted` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VETTED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sled=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    match cli.command {
        Commands::Serve(config) => serve(config)
            .await
            .map(|_| ExitCode::SUCCESS)
            .map_err(Into::into),
        Commands::Demo { data_dir } => crate::demo::run(data_dir).await,
        Commands::Audit {
            command: AuditCommand::Verify { config },
        } => audit_verify(config).await,
        Commands::Events { applicant, config } => events(&applicant, config).await,
        Commands::Replay {
            applicant,
            as_of,
            format,
            config,
        } => replay(&applicant, &as_of, format, config).await,
        Commands::Projections { command } => crate::operator::projections(command).await,
        Commands::Webhooks { command } => crate::operator::webhooks(command).await,
        Commands::Subscribe {
            nats_url,
            filter,
            durable,
            limit,
        } => subscribe(&nats_url, filter, durable, limit).await,
    }
}

/// `vetted serve`: runs until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<(), EngineError> {
    let listen = config.listen.clone();
    let engine = Engine::open(config).await?;
    engine.start().await?;
    if let Some((app, secrets, flow)) = engine.bootstrap().await? {
        // Printed once, to stdout, never logged.
        println!("Created the default application and flow (keys are shown only now):");
        println!("  appKey        {}", app.app_key);
        println!("  privateKey    {}", secrets.private_key);
        println!("  cryptoKey     {}", secrets.crypto_key);
        println!("  signingSecret {}", secrets.signing_secret);
        println!("  flow          {} v{}", flow.name, flow.version);
    }
    let listener =
        tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| EngineError::Listen {
                addr: listen.clone(),
                reason: e.to_string(),
            })?;
    let addr = listener.local_addr().map_err(|e| EngineError::Listen {
        addr: listen.clone(),
        reason: e.to_string(),
    })?;
    println!("vetted listening on http://{addr}");
    tracing::info!(%addr, store = ?engine.config.store, "vetted serving");
    let app =
        crate::api::router(engine.state()).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| EngineError::Listen {
            addr: listen,
            reason: e.to_string(),
        })?;
    engine.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// Opens the engine on a data directory without serving (offline commands).
pub async fn open_offline(config: Config) -> Result<Arc<Engine>, EngineError> {
    Engine::open(config).await.map_err(|e| match e {
        EngineError::DataDir { dir, reason }
            if reason.contains("lock") || reason.contains("WouldBlock") =>
        {
            EngineError::DataDir {
                dir,
                reason: format!(
                    "{reason} (is `vetted serve` running on it? use --server for online commands)"
                ),
            }
        }
        other => other,
    })
}

async fn audit_verify(
    config: Config,
) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    let engine = open_offline(config).await?;
    let report = vetted_store::verify::verify(engine.store.as_ref()).await?;
    engine.shutdown().await;
    match &report.first_mismatch {
        None => {
            println!(
                "ok: {} events in {} streams, every hash chain verified",
                report.events, report.streams
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(m) => {
            println!("TAMPERED: {m}");
            println!(
                "checked {} events in {} streams before stopping",
                report.events, report.streams
            );
            Ok(ExitCode::from(2))
        }
    }
}

async fn subscribe(
    nats_url: &str,
    filter: Option<String>,
    durable: String,
    limit: Option<u64>,
) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    let client = vetted_bus::connect(nats_url).await?;
    let mut config = vetted_bus::SubscriberConfig {
        durable,
        ..Default::default()
    };
    if let Some(filter) = filter {
        config.filter_subject = filter;
    }
    let subscriber = vetted_bus::EventSubscriber::new(client, config).await?;
    let mut out = std::io::stdout().lock();
    let printed = vetted_bus::print_events(&subscriber, &mut out, limit, shutdown_signal()).await?;
    eprintln!("{printed} events");
    Ok(ExitCode::SUCCESS)
}

fn parse_applicant(raw: &str) -> Result<ApplicantId, String> {
    raw.parse::<Uuid>()
        .map(ApplicantId)
        .map_err(|_| format!("{raw:?} is not an applicant id (a UUID)"))
}

async fn events(
    applicant: &str,
    config: Config,
) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    let id = parse_applicant(applicant)?;
    let engine = open_offline(config).await?;
    let events = engine
        .store
        .read_stream(&id.stream(), 0, usize::MAX)
        .await?;
    engine.shutdown().await;
    if events.is_empty() {
        eprintln!("no events for applicant {id}");
        return Ok(ExitCode::from(1));
    }
    for e in events {
        println!("{}", serde_json::to_string(&e)?);
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay(
    applicant: &str,
    as_of: &str,
    format: ReplayFormat,
    config: Config,
) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    let id = parse_applicant(applicant)?;
    let t = chrono::DateTime::parse_from_rfc3339(as_of)
        .map_err(|e| format!("--as-of must be RFC 3339 (2026-11-22T12:00:00Z): {e}"))?
        .with_timezone(&chrono::Utc);
    let engine = open_offline(config).await?;
    let stored = engine.store.read_stream(&id.stream(), 0, 1).await?;
    let Some(app) = stored.first().map(|e| e.tenant.clone()) else {
        engine.shutdown().await;
        eprintln!("no applicant {id} in this log");
        return Ok(ExitCode::from(1));
    };
    let view =
        vetted_projections::replay::view_as_of(engine.store.as_ref(), &app, &id, Some(t)).await?;
    let timeline =
        vetted_projections::replay::timeline_as_of(engine.store.as_ref(), &app, &id, Some(t))
            .await?
            .items;
    engine.shutdown().await;
    let Some(view) = view else {
        eprintln!("applicant {id} did not exist at {t}");
        return Ok(ExitCode::from(1));
    };
    match format {
        ReplayFormat::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({ "asOf": t, "applicant": view, "timeline": timeline })
                )?
            );
        }
        ReplayFormat::Table => {
            println!(
                "applicant {} ({}) as of {t}: {} at version {}",
                view.id,
                view.external_user_id,
                serde_json::to_value(view.status)?.as_str().unwrap_or("?"),
                view.version
            );
            println!(
                "{:<27} {:>4}  {:<22} {:<18} summary",
                "at", "ver", "action", "actor"
            );
            for e in timeline {
                let actor = serde_json::to_value(&e.actor)?;
                let who = format!(
                    "{}{}",
                    actor["kind"].as_str().unwrap_or("?"),
                    actor["id"]
                        .as_str()
                        .map(|i| format!(":{i}"))
                        .unwrap_or_default()
                );
                println!(
                    "{:<27} {:>4}  {:<22} {:<18} {}",
                    e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    e.version,
                    e.action,
                    who,
                    e.summary
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls `probe` until it returns `Some`, or fails after `deadline`.
pub async fn wait_until<T, F, Fut>(deadline: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
