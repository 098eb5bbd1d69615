//! [`JetStreamStore`]: the event log kept in a JetStream stream.
//!
//! - One subject per log stream: `vetted.log.<stream id>`; the JetStream sequence is the
//!   global position, so `head()` is the stream's last sequence. Messages are never deleted
//!   (the stream denies delete and purge), so positions have no gaps.
//! - One writer task per store owns publishing (see [`writer`]): it takes the appends that are
//!   waiting, checks their expected versions against the subjects' last messages, and publishes
//!   all their events pipelined, each message guarded by `Nats-Expected-Last-Sequence` and
//!   (after the first) `Nats-Expected-Last-Msg-Id`, so a message is stored only directly after
//!   the one the writer planned before it. Optimistic concurrency per applicant stream follows:
//!   the expected version is checked against the subject's last message read after the
//!   stream's last sequence was known, and the publish fails if anything was written since. A
//!   multi-event append therefore gets contiguous positions, and concurrent appends share
//!   round trips (group commit).
//! - `Nats-Msg-Id` is the event id, so re-publishing after a lost ack is deduplicated by the
//!   server instead of stored twice.
//! - JetStream 2.9 has no atomic batch publish: if the server or connection fails mid-group, or
//!   another process writes to the log between two events of one append, the writer finishes
//!   the append event by event (per-subject expectations, dedup by event id). A crash of the
//!   writer itself can leave a prefix of a multi-event append stored. Every stored event is
//!   still a valid link of its stream (contiguous versions, intact hash chain) and carries
//!   `Vetted-Batch-Index`/`Vetted-Batch-Size`, so readers see a well-formed, shorter stream and
//!   can tell an append was cut short.
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use async_nats::HeaderMap;
use async_trait::async_trait;
use futures::StreamExt;
use tokio::time::Instant;
use vetted_store::{
    chain, AppendResult, EventBatch, EventFeed, EventStore, ExpectedVersion, JsonEvents, NewEvent,
    RecordedEvent, StoreError,
};

mod writer;

use crate::subjects::{
    self, HEADER_BATCH_INDEX, HEADER_BATCH_SIZE, HEADER_HASH, HEADER_STREAM_VERSION,
};

/// A read that gets no message for this long while more are known to exist gives up.
const READ_STALL: Duration = Duration::from_secs(10);

/// Where and how the log is kept in JetStream.
#[derive(Debug, Clone)]
pub struct JetStreamStoreConfig {
    /// JetStream stream name (default `VETTED_LOG`).
    pub stream: String,
    /// Subject prefix; the stream captures `<prefix>.>` (default `vetted.log`).
    pub subject_prefix: String,
    /// Replicas: 1 on a single node, 3 in a cluster (an ack then means a quorum has it on disk).
    pub replicas: usize,
    /// How long an append keeps re-publishing an event whose ack did not come back
    /// (leader election, node restart) before reporting the store unavailable.
    pub publish_retry_for: Duration,
    /// Server-side dedup window for `Nats-Msg-Id`.
    pub duplicate_window: Duration,
}

impl Default for JetStreamStoreConfig {
    fn default() -> Self {
        JetStreamStoreConfig {
            stream: subjects::LOG_STREAM.into(),
            subject_prefix: subjects::LOG_PREFIX.into(),
            replicas: 1,
            publish_retry_for: Duration::from_secs(20),
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// The log in a JetStream stream; see the module docs for how it maps onto JetStream.
///
/// Clones share one connection; when the last clone is dropped, open feeds deliver what was
/// durable at that moment and then end.
#[derive(Clone)]
pub struct JetStreamStore {
    inner: Arc<Inner>,
    open: Arc<Open>,
}

/// Held by every clone of the store: dropping the last one stops the writer and ends feeds.
struct Open {
    appends: tokio::sync::mpsc::Sender<writer::AppendRequest>,
    _closed: tokio::sync::watch::Sender<()>,
}

struct Inner {
    js: jetstream::Context,
    config: JetStreamStoreConfig,
    /// Resolves (with an error) once every [`JetStreamStore`] clone is gone.
    closed: tokio::sync::watch::Receiver<()>,
}

/// What the subject's last message says about the stream.
struct Tail {
    sequence: u64,
    version: u64,
    hash: String,
}

impl JetStreamStore {
    /// Connects to `urls` (comma-separated) and opens (creating if missing) the log stream.
    pub async fn connect(urls: &str, config: JetStreamStoreConfig) -> Result<Self, StoreError> {
        let client = crate::connect(urls)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Self::open(client, config).await
    }

    /// Opens (creating if missing) the log stream over an existing connection.
    pub async fn open(
        client: async_nats::Client,
        config: JetStreamStoreConfig,
    ) -> Result<Self, StoreError> {
        let js = jetstream::new(client);
        let stream_config = stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.>", config.subject_prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: config.replicas,
            duplicate_window: config.duplicate_window,
            // The log is append-only: refusing deletes and purges keeps positions gap-free.
            deny_delete: true,
            deny_purge: true,
            allow_direct: true,
            ..Default::default()
        };
        // A fresh cluster may still be electing its meta leader, and a replicated stream takes
        // publishes only once its own group has a leader: retry for a bounded time. Each try
        // is one request (the stream's info comes with it).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let why = match js.get_or_create_stream(stream_config.clone()).await {
                Ok(stream)
                    if config.replicas <= 1
                        || stream
                            .cached_info()
                            .cluster
                            .as_ref()
                            .is_some_and(|c| c.leader.is_some()) =>
                {
                    break
                }
                Ok(_) => format!(
                    "JetStream stream {} has no leader; is a majority of the cluster up?",
                    config.stream
                ),
                Err(e) => format!(
                    "cannot open JetStream stream {}: {e}; is JetStream enabled (-js) and the cluster up?",
                    config.stream
                ),
            };
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable(why));
            }
            tracing::debug!("log stream not ready yet ({why}); retrying");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (open, closed) = tokio::sync::watch::channel(());
        let inner = Arc::new(Inner { js, config, closed });
        let (appends, queue) = tokio::sync::mpsc::channel(4096);
        tokio::spawn(writer::run(inner.clone(), queue));
        Ok(JetStreamStore {
            inner,
            open: Arc::new(Open {
                appends,
                _closed: open,
            }),
        })
    }

    /// The JetStream context this store uses (for tests and tooling).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &JetStreamStoreConfig {
        &self.inner.config
    }
}

impl Inner {
    fn subject(&self, stream_id: &str) -> String {
        subjects::log_subject(&self.config.subject_prefix, stream_id)
    }

    async fn stream(&self) -> Result<stream::Stream<()>, StoreError> {
        self.js
            .get_stream_no_info(&self.config.stream)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("JetStream stream {}: {e}", self.config.stream))
            })
    }

    /// The last message on `subject`, or `None` if the stream has no events.
    async fn tail(&self, subject: &str) -> Result<Option<Tail>, StoreError> {
        let stream = self.stream().await?;
        let message = match stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => m,
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                return Ok(None)
            }
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "reading the head of {subject}: {e}"
                )))
            }
        };
        let version = header_u64(&message.headers, HEADER_STREAM_VERSION);
        let hash = message
            .headers
            .get(HEADER_HASH)
            .map(|v| v.as_str().to_string());
        match (version, hash) {
            (Some(version), Some(hash)) => Ok(Some(Tail {
                sequence: message.sequence,
                version,
                hash,
            })),
            // Headers are a copy of the body: fall back to the body if they are missing.
            _ => {
                let event = decode(&message.subject, message.sequence, &message.payload)?;
                Ok(Some(Tail {
                    sequence: message.sequence,
                    version: event.stream_version,
                    hash: event.hash,
                }))
            }
        }
    }

    /// Publishes `event` directly after `predecessor` (the subject's last sequence it was
    /// planned on; 0: none) and returns its sequence. Returns [`PublishFailure::Conflict`] if
    /// the subject moved on without it.
    ///
    /// The guard is the stream's last sequence, read before the subject's tail: a write in
    /// between makes the server refuse, and the two reads are re-done. (Per-subject
    /// expectations are not enough on 2.9 clusters: the leader checks them only against
    /// messages already applied, so two in-flight writers can both pass.) Re-publishing after
    /// a lost ack is harmless: the same `Nats-Msg-Id` is deduplicated.
    async fn publish_after(
        &self,
        subject: &str,
        event: &RecordedEvent,
        predecessor: u64,
        batch: (usize, usize),
    ) -> Result<u64, PublishFailure> {
        let body = serde_json::to_vec(event).map_err(|e| PublishFailure::Other(e.to_string()))?;
        let body = bytes::Bytes::from(body);
        let headers = log_headers(event, batch);
        let deadline = Instant::now() + self.config.publish_retry_for;
        let mut pause = Duration::from_millis(20);
        loop {
            let attempt = async {
                let last = self.last_sequence().await.map_err(|e| e.to_string())?;
                let tail = self.tail(subject).await.map_err(|e| e.to_string())?;
                let tail_sequence = tail.as_ref().map_or(0, |t| t.sequence);
                if tail_sequence != predecessor {
                    return Ok(Err(self.stored_after(subject, predecessor, event).await));
                }
                let message = jetstream::message::PublishMessage::build()
                    .payload(body.clone())
                    .headers(headers.clone())
                    .message_id(event.event_id.to_string())
                    .expected_last_sequence(last);
                let ack = self
                    .js
                    .send_publish(subject.to_string(), message)
                    .await
                    .map_err(|e| e.to_string())?;
                match ack.await {
                    Ok(ack) => Ok(Ok(ack.sequence)),
                    // The log moved between our reads and the publish: read again.
                    Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(String::new()),
                    Err(e) => Err(e.to_string()),
                }
            };
            match attempt.await {
                Ok(Ok(sequence)) => return Ok(sequence),
                Ok(Err(Some(sequence))) => return Ok(sequence),
                Ok(Err(None)) => return Err(PublishFailure::Conflict),
                Err(e) if e.is_empty() => continue,
                Err(e) if Instant::now() >= deadline => return Err(PublishFailure::Unavailable(e)),
                Err(e) => {
                    tracing::debug!(error = %e, %subject, "publish not acknowledged; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Whether `event` is the subject's message right after `predecessor` (an earlier attempt
    /// was stored but its ack was lost); its sequence if so.
    async fn stored_after(
        &self,
        subject: &str,
        predecessor: u64,
        event: &RecordedEvent,
    ) -> Option<u64> {
        let stream = self.stream().await.ok()?;
        let next = stream
            .get_first_raw_message_by_subject(subject, predecessor + 1)
            .await
            .ok()?;
        let hash = next.headers.get(HEADER_HASH)?;
        (hash.as_str() == event.hash).then_some(next.sequence)
    }

    /// Appends event by event, each expecting the previous one's subject sequence: the path
    /// for appends whose planned group publish could not be used (another writer got in).
    async fn append_one(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, StoreError> {
        if events.is_empty() {
            return Err(StoreError::EmptyAppend);
        }
        let inner = self;
        let subject = inner.subject(stream_id);
        'attempt: loop {
            let tail = inner.tail(&subject).await?;
            let actual = tail.as_ref().map(|t| t.version);
            let matches = match expected {
                ExpectedVersion::Any => true,
                ExpectedVersion::NoStream => actual.is_none(),
                ExpectedVersion::Exact(v) => actual == Some(v),
            };
            if !matches {
                return Err(StoreError::WrongExpectedVersion {
                    stream: stream_id.to_string(),
                    expected,
                    actual,
                });
            }
            let (mut expected_sequence, mut prev_hash, first_version) = match &tail {
                None => (0, chain::GENESIS.to_string(), 0),
                Some(t) => (t.sequence, t.hash.clone(), t.version + 1),
            };
            let recorded_at = chain::truncate_to_micros(chrono::Utc::now());
            let total = events.len();
            let mut first_position = 0;
            for (i, new) in events.iter().enumerate() {
                let event = record(
                    stream_id,
                    first_version + i as u64,
                    new,
                    recorded_at,
                    &prev_hash,
                );
                match inner
                    .publish_after(&subject, &event, expected_sequence, (i, total))
                    .await
                {
                    Ok(sequence) => {
                        if i == 0 {
                            first_position = sequence;
                        }
                        expected_sequence = sequence;
                        prev_hash = event.hash;
                    }
                    Err(PublishFailure::Conflict) if i == 0 => {
                        // Another writer appended between our read and our publish: decide
                        // again on the new tail (Any appends, the expectation is re-checked).
                        continue 'attempt;
                    }
                    Err(failure) => {
                        let why = match failure {
                            PublishFailure::Conflict => {
                                "another writer appended to the stream".to_string()
                            }
                            PublishFailure::Unavailable(e) => e,
                            PublishFailure::Other(e) => e,
                        };
                        let written = if i == 0 {
                            String::new()
                        } else {
                            format!(" after {i} of {total} events were stored (re-read the stream before deciding again)")
                        };
                        return Err(StoreError::Unavailable(format!(
                            "append to {stream_id} failed{written}: {why}"
                        )));
                    }
                }
            }
            return Ok(AppendResult {
                first_position,
                last_position: expected_sequence,
                stream_version: first_version + total as u64 - 1,
            });
        }
    }

    /// Reads up to `max` messages matching `filter` with sequences in `start..=last`, in order.
    async fn read_range(
        &self,
        filter: String,
        start: u64,
        last: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut out = Vec::new();
        self.for_each_message(filter, start, last, max, |sequence, subject, body| {
            out.push(decode(subject, sequence, body)?);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// [`Inner::read_range`] as the stored JSON of each event, not decoded.
    async fn read_range_json(
        &self,
        filter: String,
        start: u64,
        last: u64,
        max: usize,
    ) -> Result<JsonEvents, StoreError> {
        let mut out = JsonEvents::new();
        self.for_each_message(filter, start, last, max, |sequence, subject, body| {
            push_frame(&mut out, sequence, subject, body)
        })
        .await?;
        Ok(out)
    }

    /// Calls `f` with the sequence, subject and body of up to `max` messages matching `filter`
    /// with sequences in `start..=last`, in order.
    ///
    /// `last` is read before the consumer is created (the subject's or the stream's last
    /// sequence), so the read ends at a known point instead of trusting the consumer's
    /// pending count.
    async fn for_each_message(
        &self,
        filter: String,
        start: u64,
        last: u64,
        max: usize,
        mut f: impl FnMut(u64, &str, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let start = start.max(1);
        if max == 0 || start > last {
            return Ok(());
        }
        let unavailable =
            |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("reading {filter}: {e}"));
        let stream = self.stream().await?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter.clone(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))?;
        let name = consumer.cached_info().name.clone();
        let mut taken = 0usize;
        let mut messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
        loop {
            let next = tokio::time::timeout(READ_STALL, messages.next())
                .await
                .map_err(|_| {
                    unavailable(&format!(
                        "no message for {READ_STALL:?} before sequence {last}"
                    ))
                })?;
            let Some(message) = next else { break };
            let message = message.map_err(|e| unavailable(&e))?;
            let sequence = message
                .info()
                .map_err(|e| StoreError::Backend(e.to_string()))?
                .stream_sequence;
            if sequence > last {
                break;
            }
            f(sequence, &message.subject, &message.payload)?;
            taken += 1;
            if taken >= max || sequence == last {
                break;
            }
        }
        drop(messages);
        // Ordered consumers expire on their own; deleting now just frees the server sooner.
        tokio::spawn(async move {
            let _ = stream.delete_consumer(&name).await;
        });
        Ok(())
    }

    /// The stream's last sequence: the log's head.
    async fn last_sequence(&self) -> Result<u64, StoreError> {
        let stream = self.stream().await?;
        let info = stream.get_info().await.map_err(|e| {
            StoreError::Unavailable(format!("JetStream stream {} info: {e}", self.config.stream))
        })?;
        Ok(info.state.last_sequence)
    }
}

enum PublishFailure {
    Conflict,
    Unavailable(String),
    Other(String),
}

/// The stored form of `new` at `version`, sealed onto `prev_hash`; its position is the
/// JetStream sequence, known only after the ack, so it is stored as 0.
fn record(
    stream_id: &str,
    version: u64,
    new: &NewEvent,
    recorded_at: chrono::DateTime<chrono::Utc>,
    prev_hash: &str,
) -> RecordedEvent {
    let mut event = RecordedEvent {
        global_position: 0,
        stream_id: stream_id.to_string(),
        stream_version: version,
        event_id: new.event_id,
        event_type: new.event_type.clone(),
        schema_version: new.schema_version,
        recorded_at,
        tenant: new.tenant.clone(),
        actor: new.actor.clone(),
        correlation_id: new.correlation_id,
        causation_id: new.causation_id,
        payload: new.payload.clone(),
        prev_hash: String::new(),
        hash: String::new(),
    };
    chain::seal(&mut event, prev_hash);
    event
}

/// The headers every log message carries (copies of body fields, readable without decoding).
fn log_headers(event: &RecordedEvent, batch: (usize, usize)) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        HEADER_STREAM_VERSION,
        event.stream_version.to_string().as_str(),
    );
    headers.insert(HEADER_HASH, event.hash.as_str());
    headers.insert(HEADER_BATCH_INDEX, batch.0.to_string().as_str());
    headers.insert(HEADER_BATCH_SIZE, batch.1.to_string().as_str());
    headers
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name).and_then(|v| v.as_str().parse().ok())
}

/// How a message body starts as this store writes it: a `RecordedEvent` encoded with
/// `globalPosition` 0, its first field (the position is the JetStream sequence, known only
/// after the publish, see [`record`]).
const BODY_START: &[u8] = b"{\"globalPosition\":0,";

/// Adds a stored message to `out` as a frame holding its event's JSON with its sequence as the
/// `globalPosition`: spliced into the body as stored, without decoding it, when the body starts
/// as this store writes it; otherwise decoded, given its position and encoded again.
fn push_frame(
    out: &mut JsonEvents,
    sequence: u64,
    subject: &str,
    body: &[u8],
) -> Result<(), StoreError> {
    let encode_error = |e: &dyn std::fmt::Display| StoreError::Corrupt {
        location: format!("JetStream message {sequence} on {subject}"),
        reason: format!("could not encode its event again: {e}"),
    };
    match body.strip_prefix(BODY_START) {
        Some(rest) => out
            .push_with(sequence, |frame| {
                frame.extend_from_slice(b"{\"globalPosition\":");
                write!(frame, "{sequence},")?;
                frame.extend_from_slice(rest);
                Ok(())
            })
            .map_err(|e: std::io::Error| encode_error(&e)),
        None => {
            let event = decode(subject, sequence, body)?;
            out.push_with(sequence, |frame| serde_json::to_writer(frame, &event))
                .map_err(|e| encode_error(&e))
        }
    }
}

/// Decodes a stored message; its JetStream sequence is the global position.
fn decode(subject: &str, sequence: u64, payload: &[u8]) -> Result<RecordedEvent, StoreError> {
    let mut event: RecordedEvent =
        serde_json::from_slice(payload).map_err(|e| StoreError::Corrupt {
            location: format!("JetStream message {sequence} on {subject}"),
            reason: e.to_string(),
        })?;
    event.global_position = sequence;
    Ok(event)
}

#[async_trait]
impl EventStore for JetStreamStore {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        if events.is_empty() {
            return Err(StoreError::EmptyAppend);
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = writer::AppendRequest {
            stream_id: stream_id.to_string(),
            expected,
            events,
            reply,
        };
        self.open
            .appends
            .send(request)
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let subject = self.inner.subject(stream_id);
        let Some(tail) = self.inner.tail(&subject).await? else {
            return Ok(Vec::new());
        };
        if from_version > tail.version {
            return Ok(Vec::new());
        }
        // Versions on a subject are contiguous from 0, so skip to `from_version` by counting;
        // applicant streams are short, and each message's version is in its body.
        let skip = usize::try_from(from_version).unwrap_or(usize::MAX);
        let want = max.saturating_add(skip);
        let events = self
            .inner
            .read_range(subject, 1, tail.sequence, want)
            .await?;
        Ok(events
            .into_iter()
            .filter(|e| e.stream_version >= from_version)
            .take(max)
            .collect())
    }

    async fn read_all(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let filter = format!("{}.>", self.inner.config.subject_prefix);
        let head = self.inner.last_sequence().await?;
        self.inner
            .read_range(filter, from_position, head, max)
            .await
    }

    /// The stored bodies, each with its sequence spliced in as the position
    /// ([`EventBatch::Json`], not decoded).
    async fn read_all_batch(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<EventBatch, StoreError> {
        let filter = format!("{}.>", self.inner.config.subject_prefix);
        let head = self.inner.last_sequence().await?;
        self.inner
            .read_range_json(filter, from_position, head, max)
            .await
            .map(EventBatch::Json)
    }

    async fn stream_version(&self, stream_id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .inner
            .tail(&self.inner.subject(stream_id))
            .await?
            .map(|t| t.version))
    }

    async fn head(&self) -> Result<u64, StoreError> {
        self.inner.last_sequence().await
    }

    fn subscribe_all(&self, from_position: u64) -> EventFeed {
        live_feed(self.inner.clone(), from_position.max(1))
    }
}

/// Catch-up then live feed: an ordered consumer from `start`, recreated from the next
/// position if it breaks (node restart, leader change), so nothing is skipped or repeated.
/// When the store closes, the feed delivers up to the head at that moment and ends.
fn live_feed(inner: Arc<Inner>, start: u64) -> EventFeed {
    struct State {
        closed: tokio::sync::watch::Receiver<()>,
        inner: Arc<Inner>,
        next: u64,
        /// Set once the store closed: the last position this feed still delivers.
        end: Option<u64>,
        messages: Option<consumer::pull::Ordered>,
        failures: u32,
    }
    let closed = inner.closed.clone();
    let state = State {
        closed,
        inner,
        next: start,
        end: None,
        messages: None,
        failures: 0,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if state.end.is_some_and(|end| state.next > end) {
                return None;
            }
            if state.messages.is_none() {
                match open_ordered(&state.inner, state.next).await {
                    Ok(m) => state.messages = Some(m),
                    Err(e) => {
                        state.failures += 1;
                        if state.end.is_some() && state.failures > 5 {
                            return None; // closed and unreachable: nothing more will come
                        }
                        tracing::warn!(error = %e, next = state.next, "event feed cannot reach JetStream; retrying");
                        tokio::time::sleep(backoff(state.failures)).await;
                        continue;
                    }
                }
            }
            let messages = state.messages.as_mut()?;
            let watching_close = state.end.is_none();
            let next = tokio::select! {
                next = messages.next() => next,
                _ = state.closed.changed(), if watching_close => {
                    // The store closed: finish with what is durable now.
                    state.end = Some(state.inner.last_sequence().await.unwrap_or(0));
                    continue;
                }
            };
            match next {
                Some(Ok(message)) => {
                    let sequence = match message.info() {
                        Ok(info) => info.stream_sequence,
                        Err(e) => return Some((Err(StoreError::Backend(e.to_string())), state)),
                    };
                    if sequence < state.next {
                        continue; // already delivered before a consumer restart
                    }
                    if state.end.is_some_and(|end| sequence > end) {
                        return None;
                    }
                    state.failures = 0;
                    state.next = sequence + 1;
                    let event = decode(&message.subject, sequence, &message.payload);
                    return Some((event, state));
                }
                Some(Err(e)) => {
                    state.failures += 1;
                    tracing::warn!(error = %e, next = state.next, "event feed interrupted; resuming");
                    state.messages = None;
                    tokio::time::sleep(backoff(state.failures)).await;
                }
                None => state.messages = None,
            }
        }
    })
    .boxed()
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << failures.min(5)))
}

async fn open_ordered(inner: &Inner, start: u64) -> Result<consumer::pull::Ordered, StoreError> {
    let stream = inner.stream().await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: format!("{}.>", inner.config.subject_prefix),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("subscribing to the log: {e}")))?;
    consumer
        .messages()
        .await
        .map_err(|e| StoreError::Unavailable(format!("subscribing to the log: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vetted_store::{Actor, NewEvent};

    fn stored_event() -> RecordedEvent {
        let new = NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: "StepPassed".into(),
            schema_version: 1,
            tenant: "app".into(),
            actor: Actor::system(),
            correlation_id: uuid::Uuid::now_v7(),
            causation_id: None,
            payload: serde_json::json!({"step": "aml", "attempt": 1, "data": {"n": [1, 2]}}),
        };
        record("applicant-1", 3, &new, chrono::Utc::now(), chain::GENESIS)
    }

    #[test]
    fn a_body_as_the_writer_stores_it_gets_its_sequence_spliced_in_and_is_otherwise_kept() {
        let event = stored_event();
        let body = serde_json::to_vec(&event).unwrap();
        assert!(body.starts_with(BODY_START), "the writer's shape");
        let mut frames = JsonEvents::new();
        push_frame(&mut frames, 1234567, "vetted.log.applicant-1", &body).unwrap();
        let (position, frame) = frames.get(0).unwrap();
        assert_eq!(position, 1234567);
        let read: RecordedEvent = serde_json::from_slice(frame).unwrap();
        assert_eq!(
            read,
            RecordedEvent {
                global_position: 1234567,
                ..event
            }
        );
        assert!(
            frame.starts_with(b"{\"globalPosition\":1234567,")
                && frame.ends_with(&body[BODY_START.len()..]),
            "everything after the position is the body's own bytes"
        );
    }

    #[test]
    fn a_body_of_another_shape_is_decoded_and_given_its_sequence() {
        let event = stored_event();
        let body = serde_json::to_vec_pretty(&event).unwrap();
        let mut frames = JsonEvents::new();
        push_frame(&mut frames, 9, "vetted.log.applicant-1", &body).unwrap();
        let read: RecordedEvent = serde_json::from_slice(frames.get(0).unwrap().1).unwrap();
        assert_eq!(
            read,
            RecordedEvent {
                global_position: 9,
                ..event
            }
        );
        assert!(matches!(
            push_frame(&mut frames, 10, "vetted.log.x", b"{\"globalPosition\":1,"),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(
            frames.len(),
            1,
            "nothing added for a body that does not decode"
        );
    }
}
