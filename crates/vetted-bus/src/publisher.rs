//! The NATS publisher projection: copies every applicant event of the log, in global order,
//! onto the `VETTED_EVENTS` stream as `vetted.events.<appKey>.<applicantId>.<eventType>`.
//!
//! Delivery rules:
//! - the checkpoint (sled tree `checkpoints`, key `nats_publisher`, big-endian u64) advances
//!   only after JetStream acknowledged every event of a window;
//! - `Nats-Msg-Id` is the event id, so re-publishing a window after a failure stores nothing twice;
//! - each message expects the previous one's id (`Nats-Expected-Last-Msg-Id`), so if one message
//!   of a window is lost in a reconnect the later ones are refused rather than stored ahead of it;
//! - on start and after any failure the publisher reads the stream's last message and skips
//!   events whose `Vetted-Global-Position` is already there (a lost checkpoint write, or another
//!   Vetted node publishing the same log), so it resumes exactly where the stream stopped.
//!
//! While NATS is down it keeps retrying the same window with backoff; nothing is lost or reordered.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use async_nats::HeaderMap;
use futures::{FutureExt, StreamExt};
use vetted_store::{EventStore, RecordedEvent};

use crate::subjects::{
    self, HEADER_GLOBAL_POSITION, HEADER_HASH, HEADER_SCHEMA_VERSION, HEADER_STREAM_VERSION,
};
use crate::BusError;

/// Name of the sled tree holding side-effecting projectors' checkpoints.
pub const CHECKPOINTS_TREE: &str = "checkpoints";
/// Key of this publisher's checkpoint in [`CHECKPOINTS_TREE`].
pub const CHECKPOINT_KEY: &str = "nats_publisher";

/// Where the publisher writes and how the fan-out stream is created if missing.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Stream name (default `VETTED_EVENTS`).
    pub stream: String,
    /// Subject prefix (default `vetted.events`); the stream captures `<prefix>.>`.
    pub subject_prefix: String,
    /// Replicas of the fan-out stream (3 in a cluster).
    pub replicas: usize,
    /// Retention: drop messages older than this (zero keeps them forever).
    pub max_age: Duration,
    /// Retention: keep at most this many bytes (-1: no limit).
    pub max_bytes: i64,
    /// Events published before acks are awaited and the checkpoint is written.
    pub window: usize,
    /// Server-side dedup window for `Nats-Msg-Id`.
    pub duplicate_window: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            stream: subjects::EVENTS_STREAM.into(),
            subject_prefix: subjects::EVENTS_PREFIX.into(),
            replicas: 1,
            max_age: Duration::ZERO,
            max_bytes: -1,
            window: 256,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// The publisher projection; see the module docs.
pub struct NatsPublisher {
    js: jetstream::Context,
    store: Arc<dyn EventStore>,
    checkpoints: sled::Tree,
    config: PublisherConfig,
}

/// The fan-out stream's last message, as far as the publisher is concerned.
struct StreamTail {
    /// Global position of the last event already on the stream (0: none).
    position: u64,
    /// Its `Nats-Msg-Id`, which the next publish expects.
    message_id: Option<String>,
}

impl NatsPublisher {
    /// A publisher reading `store` and keeping its checkpoint in `db`'s `checkpoints` tree.
    pub fn new(
        client: async_nats::Client,
        store: Arc<dyn EventStore>,
        db: &sled::Db,
        config: PublisherConfig,
    ) -> Result<Self, BusError> {
        let checkpoints = db.open_tree(CHECKPOINTS_TREE)?;
        let js = jetstream::new(client);
        Ok(NatsPublisher {
            js,
            store,
            checkpoints,
            config,
        })
    }

    /// Global position of the last event known to be on the stream (0: nothing yet).
    pub fn checkpoint(&self) -> Result<u64, BusError> {
        Ok(match self.checkpoints.get(CHECKPOINT_KEY)? {
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(0),
            None => 0,
        })
    }

    fn save_checkpoint(&self, position: u64) -> Result<(), BusError> {
        self.checkpoints
            .insert(CHECKPOINT_KEY, &position.to_be_bytes())?;
        Ok(())
    }

    /// Creates the fan-out stream if it does not exist.
    pub async fn ensure_stream(&self) -> Result<(), BusError> {
        let config = stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![format!("{}.>", self.config.subject_prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: self.config.replicas,
            max_age: self.config.max_age,
            max_bytes: self.config.max_bytes,
            duplicate_window: self.config.duplicate_window,
            ..Default::default()
        };
        self.js.get_or_create_stream(config).await.map_err(|e| {
            BusError::Unavailable(format!(
                "cannot open JetStream stream {}: {e}",
                self.config.stream
            ))
        })?;
        Ok(())
    }

    /// Reads the stream's last message: how far the stream already is.
    async fn stream_tail(&self) -> Result<StreamTail, BusError> {
        let unavailable = |e: String| {
            BusError::Unavailable(format!("reading stream {}: {e}", self.config.stream))
        };
        let stream = self
            .js
            .get_stream_no_info(&self.config.stream)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let info = stream
            .get_info()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if info.state.last_sequence == 0 {
            return Ok(StreamTail {
                position: 0,
                message_id: None,
            });
        }
        match stream.get_raw_message(info.state.last_sequence).await {
            Ok(m) => Ok(StreamTail {
                position: m
                    .headers
                    .get(HEADER_GLOBAL_POSITION)
                    .and_then(|v| v.as_str().parse().ok())
                    .unwrap_or(0),
                message_id: m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string()),
            }),
            // Retention removed it: nothing to chain to, the checkpoint alone says where we are.
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                Ok(StreamTail {
                    position: 0,
                    message_id: None,
                })
            }
            Err(e) => Err(unavailable(e.to_string())),
        }
    }

    /// Publishes `events` (already in global order) and waits for every ack.
    ///
    /// Events at or below `tail.position` are already on the stream and are skipped.
    async fn publish_window(
        &self,
        events: &[RecordedEvent],
        tail: &mut StreamTail,
    ) -> Result<(), BusError> {
        let mut acks = Vec::with_capacity(events.len());
        let mut previous_id = tail.message_id.clone();
        for event in events {
            if event.global_position <= tail.position {
                continue;
            }
            let Some(subject) = subjects::event_subject(&self.config.subject_prefix, event) else {
                continue; // not an applicant stream: nothing to fan out
            };
            let body = serde_json::to_vec(event).map_err(|e| BusError::JetStream(e.to_string()))?;
            let mut headers = HeaderMap::new();
            headers.insert(
                HEADER_GLOBAL_POSITION,
                event.global_position.to_string().as_str(),
            );
            headers.insert(
                HEADER_STREAM_VERSION,
                event.stream_version.to_string().as_str(),
            );
            headers.insert(
                HEADER_SCHEMA_VERSION,
                event.schema_version.to_string().as_str(),
            );
            headers.insert(HEADER_HASH, event.hash.as_str());
            let id = event.event_id.to_string();
            let mut message = jetstream::message::PublishMessage::build()
                .payload(body.into())
                .headers(headers)
                .message_id(&id);
            if let Some(previous) = &previous_id {
                message = message.expected_last_message_id(previous);
            }
            let ack = self
                .js
                .send_publish(subject, message)
                .await
                .map_err(|e| BusError::Unavailable(format!("publishing event {id}: {e}")))?;
            acks.push((event.global_position, id.clone(), ack));
            previous_id = Some(id);
        }
        for (position, id, ack) in acks {
            match ack.await {
                Ok(_) => {
                    tail.position = position;
                    tail.message_id = Some(id);
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastMessageId => {
                    return Err(BusError::JetStream(format!(
                        "event {id} (position {position}) refused: the stream does not end where this \
                         publisher expected; resynchronising"
                    )))
                }
                Err(e) => return Err(BusError::Unavailable(format!("event {id} not acknowledged: {e}"))),
            }
        }
        Ok(())
    }

    /// Runs until `shutdown` resolves: catch up from the checkpoint, then follow the log live.
    ///
    /// NATS being down is not an error: the publisher waits and resumes. It returns an error
    /// only if the checkpoint cannot be stored.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), BusError> {
        let mut shutdown = std::pin::pin!(shutdown.fuse());
        let mut failures: u32 = 0;
        'resync: loop {
            let from = self.checkpoint()? + 1;
            let mut feed = self.store.subscribe_all(from);
            let mut tail = loop {
                let attempt = async {
                    self.ensure_stream().await?;
                    self.stream_tail().await
                };
                match attempt.await {
                    Ok(t) => break t,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, "NATS publisher waiting for JetStream");
                        futures::select! {
                            _ = tokio::time::sleep(backoff(failures)).fuse() => continue,
                            _ = shutdown => return Ok(()),
                        }
                    }
                }
            };
            loop {
                let first = futures::select! {
                    next = feed.next().fuse() => next,
                    _ = shutdown => return Ok(()),
                };
                let mut window = match first {
                    Some(Ok(event)) => vec![event],
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "NATS publisher cannot read the log; resubscribing");
                        failures += 1;
                        tokio::time::sleep(backoff(failures)).await;
                        continue 'resync;
                    }
                    None => continue 'resync,
                };
                // Take whatever else is ready now, up to the window size, without waiting. A
                // read error ends the window: the events before it are published, then the
                // feed is reopened after them (never past the event that could not be read).
                let mut unreadable = None;
                while window.len() < self.config.window.max(1) {
                    match feed.next().now_or_never() {
                        Some(Some(Ok(event))) => window.push(event),
                        Some(Some(Err(e))) => {
                            unreadable = Some(e);
                            break;
                        }
                        _ => break,
                    }
                }
                let last = window.last().map(|e| e.global_position).unwrap_or(0);
                loop {
                    match self.publish_window(&window, &mut tail).await {
                        Ok(()) => {
                            failures = 0;
                            self.save_checkpoint(last)?;
                            if let Some(e) = unreadable.take() {
                                tracing::warn!(error = %e, after = last, "NATS publisher cannot read the log; resubscribing");
                                failures += 1;
                                tokio::time::sleep(backoff(failures)).await;
                                continue 'resync;
                            }
                            break;
                        }
                        Err(e) => {
                            failures += 1;
                            tracing::warn!(error = %e, "NATS publisher window failed; retrying");
                            futures::select! {
                                _ = tokio::time::sleep(backoff(failures)).fuse() => {},
                                _ = shutdown => return Ok(()),
                            }
                            match self.stream_tail().await {
                                Ok(t) => tail = t,
                                Err(e) => tracing::debug!(error = %e, "stream tail unavailable"),
                            }
                        }
                    }
                }
            }
        }
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << failures.min(5)))
}
