//! Delivery state: the worker takes new outbox rows from the projector's tree into its own tree,
//! `webhook_deliveries`, and records every attempt there.
//!
//! The projector only ever inserts `outbox/<position>` rows into its tree; this side only reads
//! them (following a position cursor) and writes its own tree, so a projector commit and a
//! delivery update never touch the same key. Within `webhook_deliveries`, changes to a delivery
//! and its due-queue entry go through one sled transaction, so the worker and an operator's
//! redelivery cannot lose each other's writes.
//!
//! Keys (big-endian u64 throughout, so they sort numerically):
//! - `\x00intake` → the last outbox position taken in;
//! - `d/<id>` → [`Delivery`] JSON, `id` = the event's global position;
//! - `q/<due ms><id>` → empty, present while the delivery is pending (the due queue);
//! - `e/<app key>` → [`DisabledEndpoint`] JSON after a 410 Gone.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::notification::Notification;
use crate::projector::{outbox_key, position_of_outbox_key};

/// Name of the delivery state tree.
pub const DELIVERIES_TREE: &str = "webhook_deliveries";
const INTAKE_KEY: &[u8] = b"\x00intake";
const DELIVERY_PREFIX: &[u8] = b"d/";
const QUEUE_PREFIX: &[u8] = b"q/";
const DISABLED_PREFIX: &[u8] = b"e/";

/// What can go wrong reading or changing delivery state.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The embedded database failed (disk full, I/O error): retry, then check the data directory.
    #[error("delivery storage: {0}")]
    Storage(#[from] sled::Error),
    /// A stored row does not decode: the data directory is damaged or from a newer version.
    #[error("delivery row {key} could not be decoded: {reason}")]
    Decode { key: String, reason: String },
    /// The projector's outbox tree could not be found (projection not registered?).
    #[error(
        "webhook outbox could not be read: {0}; register WebhookProjector with the read models"
    )]
    Source(String),
    /// No delivery with this id for this application.
    #[error("no webhook delivery {id} for application {app_key}")]
    NotFound { app_key: String, id: u64 },
    /// Redelivery asked for a delivery that is still being retried.
    #[error("webhook delivery {id} is still pending (attempt {attempts} done); wait for it to be delivered or dead")]
    StillPending { id: u64, attempts: usize },
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// A 2xx was received.
    Delivered,
    /// Attempts exhausted, or the endpoint answered 410 Gone: a dead letter, redeliverable.
    Dead,
}

impl std::str::FromStr for DeliveryState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "dead" => Ok(DeliveryState::Dead),
            other => Err(format!(
                "unknown delivery state {other:?}: use pending, delivered or dead"
            )),
        }
    }
}

/// One HTTP attempt (or one refusal to attempt, with `error` saying why).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// When the request was sent.
    pub at: DateTime<Utc>,
    /// The response status, if a response came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Time from sending to the response headers (or the error).
    pub latency_ms: u64,
    /// Transport error, timeout, or why no request was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One notification's delivery to its application, with every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The global position of the event that caused the notification.
    pub id: u64,
    /// The application it goes to.
    pub app_key: String,
    /// The `webhook-id` header (stable across retries and redeliveries).
    pub webhook_id: String,
    /// What is delivered (sealed at each attempt, under the key current then).
    pub notification: Notification,
    /// Where it stands.
    pub state: DeliveryState,
    /// Every attempt, oldest first.
    pub attempts: Vec<Attempt>,
    /// Index in `attempts` where the current round began (a redelivery starts a new round
    /// with a fresh attempt budget).
    #[serde(default)]
    pub round_start: usize,
    /// When the next attempt is due (pending only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the worker took it from the outbox.
    pub created_at: DateTime<Utc>,
}

impl Delivery {
    /// Attempts made in the current round.
    pub fn attempts_in_round(&self) -> usize {
        self.attempts.len().saturating_sub(self.round_start)
    }
}

/// Why an application's endpoint stopped receiving webhooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisabledEndpoint {
    /// When it was disabled.
    pub at: DateTime<Utc>,
    /// Why (e.g. "410 Gone from https://…").
    pub reason: String,
}

/// What the worker decided after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Delivered: done.
    Delivered,
    /// Try again at this moment.
    RetryAt(DateTime<Utc>),
    /// Give up: dead letter.
    Dead,
}

/// Where the projector's outbox rows are (its tree changes when a rebuild flips generation).
#[derive(Clone)]
pub enum OutboxSource {
    /// A fixed tree.
    Tree(sled::Tree),
    /// Resolved at every intake, e.g. the live generation of the `webhooks` projection.
    Resolve(Arc<dyn Fn() -> Result<sled::Tree, String> + Send + Sync>),
}

impl OutboxSource {
    /// The live generation of the `webhooks` projection in `read_models`.
    ///
    /// A rebuilt generation holds the same outbox rows under the same keys (the projector
    /// writes them even when muted, see [`crate::projector`]), so following the flip loses
    /// and repeats nothing: the intake cursor is a position.
    pub fn live_projection(read_models: Arc<vetted_projections::ReadModels>) -> Self {
        OutboxSource::Resolve(Arc::new(move || {
            read_models
                .live_tree(crate::projector::PROJECTION_NAME)
                .map_err(|e| e.to_string())
        }))
    }
}

impl From<sled::Tree> for OutboxSource {
    fn from(tree: sled::Tree) -> Self {
        OutboxSource::Tree(tree)
    }
}

/// Delivery state over the `webhook_deliveries` tree (see the module docs).
#[derive(Clone)]
pub struct Outbox {
    tree: sled::Tree,
    source: OutboxSource,
    wake: Arc<tokio::sync::Notify>,
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn delivery_key(id: u64) -> Vec<u8> {
    [DELIVERY_PREFIX, &be(id)].concat()
}

fn queue_key(due: DateTime<Utc>, id: u64) -> Vec<u8> {
    // Round up to the next millisecond so a delivery is never picked before it is due
    // (the scan in `due` rounds `now` down).
    let partial = i64::from(due.timestamp_subsec_nanos() % 1_000_000 != 0);
    queue_key_ms(due.timestamp_millis().saturating_add(partial), id)
}

fn queue_key_ms(ms: i64, id: u64) -> Vec<u8> {
    // Times before 1970 do not occur; clamp rather than wrap.
    let ms = u64::try_from(ms).unwrap_or(0);
    [QUEUE_PREFIX, &be(ms), &be(id)].concat()
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, OutboxError> {
    serde_json::from_slice(bytes).map_err(|e| OutboxError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our own plain structs always serialize.
    serde_json::to_vec(value).expect("delivery rows serialize")
}

fn flatten<T>(r: Result<T, TransactionError<OutboxError>>) -> Result<T, OutboxError> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => OutboxError::Storage(e),
    })
}

fn abort<T>(e: OutboxError) -> Result<T, ConflictableTransactionError<OutboxError>> {
    Err(ConflictableTransactionError::Abort(e))
}

impl Outbox {
    /// Opens the delivery state in `db`, reading outbox rows from `source`.
    pub fn open(db: &sled::Db, source: impl Into<OutboxSource>) -> Result<Self, OutboxError> {
        Ok(Outbox {
            tree: db.open_tree(DELIVERIES_TREE)?,
            source: source.into(),
            wake: Arc::default(),
        })
    }

    /// Wakes the worker now (after an intake-worthy commit or an operator action).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn wake_handle(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    /// The last outbox position taken in.
    pub fn intake_cursor(&self) -> Result<u64, OutboxError> {
        Ok(match self.tree.get(INTAKE_KEY)? {
            Some(v) => {
                u64::from_be_bytes(v.as_ref().try_into().map_err(|_| OutboxError::Decode {
                    key: "intake cursor".into(),
                    reason: format!("{} bytes, expected 8", v.len()),
                })?)
            }
            None => 0,
        })
    }

    /// Takes up to `max` new outbox rows in as pending deliveries, due now. Returns how many.
    /// Deliveries and the cursor move in one atomic batch, so a crash repeats or skips nothing.
    pub fn intake(&self, max: usize) -> Result<usize, OutboxError> {
        let source = match &self.source {
            OutboxSource::Tree(t) => t.clone(),
            OutboxSource::Resolve(f) => f().map_err(OutboxError::Source)?,
        };
        let cursor = self.intake_cursor()?;
        let start = outbox_key(cursor.saturating_add(1));
        let now = Utc::now();
        let mut batch = sled::Batch::default();
        let mut last = cursor;
        let mut taken = 0;
        for row in source.range(start..).take(max) {
            let (key, value) = row?;
            let Some(position) = position_of_outbox_key(&key) else {
                break;
            };
            let notification: Notification = decode(&key, &value)?;
            let delivery = Delivery {
                id: position,
                app_key: notification.app_key.clone(),
                webhook_id: notification.webhook_id(),
                notification,
                state: DeliveryState::Pending,
                attempts: Vec::new(),
                round_start: 0,
                next_attempt_at: Some(now),
                created_at: now,
            };
            batch.insert(delivery_key(position), encode(&delivery));
            batch.insert(queue_key(now, position), &[] as &[u8]);
            last = position;
            taken += 1;
        }
        if taken > 0 {
            batch.insert(INTAKE_KEY, &be(last));
            self.tree.apply_batch(batch)?;
        }
        Ok(taken)
    }

    /// Up to `limit` pending delivery ids due at or before `now`, earliest first, skipping `busy`.
    pub fn due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        busy: &HashSet<u64>,
    ) -> Result<Vec<u64>, OutboxError> {
        let end = queue_key_ms(now.timestamp_millis(), u64::MAX);
        let mut out = Vec::new();
        for row in self.tree.range(QUEUE_PREFIX.to_vec()..=end) {
            if out.len() >= limit {
                break;
            }
            let (key, _) = row?;
            let id_bytes = key
                .get(QUEUE_PREFIX.len() + 8..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok());
            let Some(id) = id_bytes.map(u64::from_be_bytes) else {
                return Err(OutboxError::Decode {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: "bad queue key".into(),
                });
            };
            if !busy.contains(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// The earliest moment a pending delivery is due, if any.
    pub fn next_due(&self) -> Result<Option<DateTime<Utc>>, OutboxError> {
        let Some((key, _)) = self.tree.scan_prefix(QUEUE_PREFIX).next().transpose()? else {
            return Ok(None);
        };
        let ms = key
            .get(QUEUE_PREFIX.len()..QUEUE_PREFIX.len() + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok());
        Ok(ms.and_then(|b| {
            DateTime::from_timestamp_millis(
                i64::try_from(u64::from_be_bytes(b)).unwrap_or(i64::MAX),
            )
        }))
    }

    /// One delivery by id, whatever its application (the worker's view).
    pub fn get(&self, id: u64) -> Result<Option<Delivery>, OutboxError> {
        let key = delivery_key(id);
        self.tree.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    /// One delivery of `app_key` (the API's view: other applications' deliveries are not found).
    pub fn delivery(&self, app_key: &str, id: u64) -> Result<Delivery, OutboxError> {
        match self.get(id)? {
            Some(d) if d.app_key == app_key => Ok(d),
            _ => Err(OutboxError::NotFound {
                app_key: app_key.to_owned(),
                id,
            }),
        }
    }

    /// Deliveries of `app_key`, optionally in one `state`, with id greater than `after`, oldest first,
    /// at most `limit` (page with the last id returned).
    pub fn list(
        &self,
        app_key: &str,
        state: Option<DeliveryState>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Delivery>, OutboxError> {
        let start = delivery_key(after.map_or(0, |a| a.saturating_add(1)));
        let mut out = Vec::new();
        for row in self.tree.range(start..) {
            let (key, value) = row?;
            if !key.starts_with(DELIVERY_PREFIX) || out.len() >= limit {
                break;
            }
            let delivery: Delivery = decode(&key, &value)?;
            if delivery.app_key == app_key && state.is_none_or(|s| s == delivery.state) {
                out.push(delivery);
            }
        }
        Ok(out)
    }

    /// Read-modify-write of one delivery and its queue entry in one transaction.
    fn update<T>(
        &self,
        id: u64,
        change: impl Fn(&mut Delivery) -> Result<T, OutboxError>,
    ) -> Result<(Delivery, T), OutboxError> {
        let key = delivery_key(id);
        flatten(self.tree.transaction(|tx: &TransactionalTree| {
            let Some(bytes) = tx.get(&key)? else {
                return abort(OutboxError::NotFound {
                    app_key: String::new(),
                    id,
                });
            };
            let mut delivery: Delivery = match decode(&key, &bytes) {
                Ok(d) => d,
                Err(e) => return abort(e),
            };
            let old_queue = delivery.next_attempt_at.map(|t| queue_key(t, id));
            let out = match change(&mut delivery) {
                Ok(out) => out,
                Err(e) => return abort(e),
            };
            if delivery.state != DeliveryState::Pending {
                delivery.next_attempt_at = None;
            }
            let new_queue = delivery.next_attempt_at.map(|t| queue_key(t, id));
            if old_queue != new_queue {
                if let Some(q) = old_queue {
                    tx.remove(q)?;
                }
                if let Some(q) = &new_queue {
                    tx.insert(q.as_slice(), &[] as &[u8])?;
                }
            }
            tx.insert(key.as_slice(), encode(&delivery))?;
            Ok((delivery, out))
        }))
    }

    /// Records an attempt and what follows it. Ignored (returns the delivery unchanged) if the
    /// delivery is no longer pending, e.g. an operator acted meanwhile.
    pub fn record_attempt(
        &self,
        id: u64,
        attempt: Attempt,
        next: Next,
    ) -> Result<Delivery, OutboxError> {
        Ok(self
            .update(id, |d| {
                if d.state != DeliveryState::Pending {
                    return Ok(());
                }
                d.attempts.push(attempt.clone());
                match next {
                    Next::Delivered => d.state = DeliveryState::Delivered,
                    Next::Dead => d.state = DeliveryState::Dead,
                    Next::RetryAt(at) => d.next_attempt_at = Some(at),
                }
                Ok(())
            })?
            .0)
    }

    /// Puts a dead (or delivered) delivery of `app_key` back in the queue, due now, with a fresh
    /// attempt budget and the same `webhook-id`.
    pub fn redeliver(&self, app_key: &str, id: u64) -> Result<Delivery, OutboxError> {
        let now = Utc::now();
        let (delivery, ()) = self.update(id, |d| {
            if d.app_key != app_key {
                return Err(OutboxError::NotFound {
                    app_key: app_key.to_owned(),
                    id,
                });
            }
            if d.state == DeliveryState::Pending {
                return Err(OutboxError::StillPending {
                    id,
                    attempts: d.attempts_in_round(),
                });
            }
            d.state = DeliveryState::Pending;
            d.round_start = d.attempts.len();
            d.next_attempt_at = Some(now);
            Ok(())
        })?;
        self.wake();
        Ok(delivery)
    }

    /// Redelivers every dead delivery of `app_key`; returns how many.
    pub fn redeliver_dead(&self, app_key: &str) -> Result<usize, OutboxError> {
        let mut count = 0;
        let mut after = None;
        loop {
            let page = self.list(app_key, Some(DeliveryState::Dead), after, 1000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for d in &page {
                match self.redeliver(app_key, d.id) {
                    Ok(_) => count += 1,
                    // Someone redelivered it meanwhile: fine.
                    Err(OutboxError::StillPending { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(count)
    }

    /// Marks `app_key`'s endpoint disabled (after 410 Gone); its deliveries then die without a request.
    pub fn disable_endpoint(&self, app_key: &str, reason: &str) -> Result<(), OutboxError> {
        let row = DisabledEndpoint {
            at: Utc::now(),
            reason: reason.to_owned(),
        };
        self.tree
            .insert([DISABLED_PREFIX, app_key.as_bytes()].concat(), encode(&row))?;
        Ok(())
    }

    /// Why `app_key`'s endpoint is disabled, if it is.
    pub fn endpoint_disabled(
        &self,
        app_key: &str,
    ) -> Result<Option<DisabledEndpoint>, OutboxError> {
        let key = [DISABLED_PREFIX, app_key.as_bytes()].concat();
        self.tree.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    /// Re-enables `app_key`'s endpoint; call after the application's webhook URL is updated.
    pub fn enable_endpoint(&self, app_key: &str) -> Result<(), OutboxError> {
        self.tree
            .remove([DISABLED_PREFIX, app_key.as_bytes()].concat())?;
        Ok(())
    }

    /// Flushes delivery state to disk (on shutdown).
    pub async fn flush(&self) -> Result<(), OutboxError> {
        self.tree.flush_async().await?;
        Ok(())
    }
}
