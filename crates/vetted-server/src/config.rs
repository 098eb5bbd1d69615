//! Configuration: environment variables with matching CLI flags (see `vetted serve --help`).
use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Which event store backend holds the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// Embedded sled database in the data directory (the default; no server needed).
    Sled,
    /// A NATS JetStream stream (single server or cluster) at `VETTED_NATS_URL`.
    Jetstream,
}

/// Settings shared by `vetted serve` and the offline commands. Its `Debug` hides the admin
/// token and any credentials in the NATS URL.
#[derive(Clone, Args)]
pub struct Config {
    /// Directory for the sled database (events on the sled backend, read models and checkpoints always).
    #[arg(long, env = "VETTED_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Address the HTTP API listens on.
    #[arg(long, env = "VETTED_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Event store backend.
    #[arg(long, env = "VETTED_STORE", value_enum, default_value = "sled")]
    pub store: StoreKind,
    /// NATS server URL: enables the JetStream event publisher, and is the log for `--store jetstream`.
    #[arg(long, env = "VETTED_NATS_URL")]
    pub nats_url: Option<String>,
    /// Replicas of the JetStream streams Vetted creates (3 in a cluster).
    #[arg(long, env = "VETTED_NATS_REPLICAS", default_value_t = 1)]
    pub nats_replicas: usize,
    /// Operator token for admin endpoints (`POST /v1/applications`, `/v1/projections`). Unset: admin endpoints refuse.
    #[arg(long, env = "VETTED_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Webhook retry schedule: seconds before each retry (comma separated; jittered ±20%).
    /// 9 waits = 10 attempts, then a dead letter. Default: 30 s doubling.
    #[arg(
        long,
        env = "VETTED_WEBHOOK_RETRY_SCHEDULE",
        value_delimiter = ',',
        default_value = "30,60,120,240,480,960,1920,3840,7680"
    )]
    pub webhook_retry_schedule: Vec<f64>,
    /// Webhook request timeout in seconds.
    #[arg(long, env = "VETTED_WEBHOOK_TIMEOUT", default_value_t = 15.0)]
    pub webhook_timeout: f64,
    /// Memory (MiB) a read-model rebuild may fold in: about 1 KiB per event of the log. A
    /// larger log is rebuilt a batch at a time, in bounded memory and more slowly.
    #[arg(long, env = "VETTED_REBUILD_MEMORY_MIB", default_value_t = 8192)]
    pub rebuild_memory_mib: u64,
}

impl Config {
    /// A configuration for tests and the demo: everything default but the data directory.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            listen: "127.0.0.1:0".into(),
            store: StoreKind::Sled,
            nats_url: None,
            nats_replicas: 1,
            admin_token: None,
            webhook_retry_schedule: vec![
                30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3840.0, 7680.0,
            ],
            webhook_timeout: 15.0,
            rebuild_memory_mib: 8192,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("store", &self.store)
            .field(
                "nats_url",
                &self.nats_url.as_deref().map(vetted_bus::redacted_urls),
            )
            .field("nats_replicas", &self.nats_replicas)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "…"))
            .field("webhook_retry_schedule", &self.webhook_retry_schedule)
            .field("webhook_timeout", &self.webhook_timeout)
            .field("rebuild_memory_mib", &self.rebuild_memory_mib)
            .finish()
    }
}
