//! Delivery state: the worker takes new outbox rows from the projector's tree into its own tree,
//! `webhook_deliveries`, and records every attempt there.
//!
//! The projector only ever inserts `outbox/<position>` rows into its tree; this side only reads
//! them (following a position cursor) and writes its own tree, so a projector commit and a
//! delivery update never touch the same key. Within `webhook_deliveries`, changes to a delivery
//! and its due-queue entry are written together (one sled transaction for an operator's
//! redelivery, one batch per loop turn for the worker's finished attempts), so the two cannot
//! lose each other's writes: the worker only ever writes deliveries that are pending and in its
//! hands, and an operator only ever changes deliveries that are not pending.
//!
//! Keys (big-endian u64 throughout, so they sort numerically):
//! - `\x00intake` → the last outbox position taken in;
//! - `d/<id>` → [`Delivery`] JSON, `id` = the event's global position;
//! - `p/<app key length, u32><app key><due ms><id>` → empty, present while the delivery is
//!   pending: each application's due queue, so the worker can take due deliveries of the
//!   applications whose endpoints have room without walking past another's backlog (the
//!   single `q/<due ms><id>` queue of earlier versions is converted on open);
//! - `e/<app key>` → [`DisabledEndpoint`] JSON after a 410 Gone;
//! - `a/<app key length, u32><app key><id>` → one state byte: the per-application index that
//!   `list` walks, written with its delivery row every time;
//! - `\x00index` → present once the per-application index covers every delivery.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::notification::Notification;
use crate::projector::{outbox_key, position_of_outbox_key};

/// Name of the delivery state tree.
pub const DELIVERIES_TREE: &str = "webhook_deliveries";
const INTAKE_KEY: &[u8] = b"\x00intake";
const DELIVERY_PREFIX: &[u8] = b"d/";
const QUEUE_PREFIX: &[u8] = b"p/";
/// The single due queue of earlier versions (`q/<due ms><id>`), converted on open.
const OLD_QUEUE_PREFIX: &[u8] = b"q/";
const DISABLED_PREFIX: &[u8] = b"e/";
const INDEX_PREFIX: &[u8] = b"a/";
const INDEX_MARKER: &[u8] = b"\x00index";

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

/// A finished attempt applied to its delivery, ready to be written with others in one batch
/// ([`Outbox::record_settled`]).
#[derive(Debug, Clone)]
pub struct Settled {
    /// The delivery as it will be stored.
    pub delivery: Delivery,
    /// Its due-queue key before the attempt, removed when the row is written.
    old_queue: Option<Vec<u8>>,
}

impl Settled {
    /// Applies `attempt` and `next` to `delivery` as it was read when the attempt began.
    pub fn new(mut delivery: Delivery, attempt: Attempt, next: Next) -> Self {
        let old_queue = delivery
            .next_attempt_at
            .map(|t| queue_key(&delivery.app_key, t, delivery.id));
        delivery.attempts.push(attempt);
        match next {
            Next::Delivered => delivery.state = DeliveryState::Delivered,
            Next::Dead => delivery.state = DeliveryState::Dead,
            Next::RetryAt(at) => delivery.next_attempt_at = Some(at),
        }
        if delivery.state != DeliveryState::Pending {
            delivery.next_attempt_at = None;
        }
        Settled {
            delivery,
            old_queue,
        }
    }
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
    /// The `e/` rows, kept in memory so an attempt does not read storage to learn that its
    /// endpoint is enabled; changed only together with the rows (this process owns the tree).
    disabled: Arc<RwLock<HashMap<String, DisabledEndpoint>>>,
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn delivery_key(id: u64) -> Vec<u8> {
    [DELIVERY_PREFIX, &be(id)].concat()
}

fn index_prefix(app_key: &str) -> Vec<u8> {
    // Length-prefixed, so one application's range never holds another's (no separator needed).
    let len = u32::try_from(app_key.len()).unwrap_or(u32::MAX);
    [INDEX_PREFIX, &len.to_be_bytes(), app_key.as_bytes()].concat()
}

fn index_key(app_key: &str, id: u64) -> Vec<u8> {
    [index_prefix(app_key).as_slice(), &be(id)].concat()
}

fn state_byte(state: DeliveryState) -> u8 {
    match state {
        DeliveryState::Pending => b'p',
        DeliveryState::Delivered => b'd',
        DeliveryState::Dead => b'x',
    }
}

fn queue_prefix(app_key: &str) -> Vec<u8> {
    // Length-prefixed like the index, so one application's queue never holds another's.
    let len = u32::try_from(app_key.len()).unwrap_or(u32::MAX);
    [QUEUE_PREFIX, &len.to_be_bytes(), app_key.as_bytes()].concat()
}

fn queue_key(app_key: &str, due: DateTime<Utc>, id: u64) -> Vec<u8> {
    // Round up to the next millisecond so a delivery is never picked before it is due
    // (the scan in `due` rounds `now` down).
    let partial = i64::from(due.timestamp_subsec_nanos() % 1_000_000 != 0);
    queue_key_ms(app_key, due.timestamp_millis().saturating_add(partial), id)
}

fn queue_key_ms(app_key: &str, ms: i64, id: u64) -> Vec<u8> {
    // Times before 1970 do not occur; clamp rather than wrap.
    let ms = u64::try_from(ms).unwrap_or(0);
    [queue_prefix(app_key).as_slice(), &be(ms), &be(id)].concat()
}

/// The application, due time (ms) and delivery id of a queue key.
fn parse_queue_key(key: &[u8]) -> Result<(String, u64, u64), OutboxError> {
    let bad = || OutboxError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: "bad queue key".into(),
    };
    let rest = key.strip_prefix(QUEUE_PREFIX).ok_or_else(bad)?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| bad())?;
    if rest.len() != len + 16 {
        return Err(bad());
    }
    let (app, rest) = rest.split_at(len);
    let app = std::str::from_utf8(app).map_err(|_| bad())?.to_owned();
    let (ms, id) = rest.split_at(8);
    let ms = u64::from_be_bytes(ms.try_into().map_err(|_| bad())?);
    let id = u64::from_be_bytes(id.try_into().map_err(|_| bad())?);
    Ok((app, ms, id))
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
        let tree = db.open_tree(DELIVERIES_TREE)?;
        let mut disabled = HashMap::new();
        for row in tree.scan_prefix(DISABLED_PREFIX) {
            let (key, value) = row?;
            let app_key = String::from_utf8_lossy(&key[DISABLED_PREFIX.len()..]).into_owned();
            disabled.insert(app_key, decode(&key, &value)?);
        }
        let outbox = Outbox {
            tree,
            source: source.into(),
            wake: Arc::default(),
            disabled: Arc::new(RwLock::new(disabled)),
        };
        outbox.build_index()?;
        outbox.convert_old_queue()?;
        Ok(outbox)
    }

    /// Moves the entries of the single due queue of earlier versions into their applications'
    /// queues (once; nothing to do afterwards).
    fn convert_old_queue(&self) -> Result<(), OutboxError> {
        let mut batch = sled::Batch::default();
        let mut moved = 0usize;
        for row in self.tree.scan_prefix(OLD_QUEUE_PREFIX) {
            let (key, _) = row?;
            let bad = || OutboxError::Decode {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason: "bad queue key".into(),
            };
            let rest = key.get(OLD_QUEUE_PREFIX.len()..).ok_or_else(bad)?;
            let (ms, id) = match (rest.get(..8), rest.get(8..)) {
                (Some(ms), Some(id)) if id.len() == 8 => (ms, id),
                _ => return Err(bad()),
            };
            let ms = i64::try_from(u64::from_be_bytes(ms.try_into().map_err(|_| bad())?))
                .unwrap_or(i64::MAX);
            let id = u64::from_be_bytes(id.try_into().map_err(|_| bad())?);
            if let Some(delivery) = self.get(id)? {
                batch.insert(queue_key_ms(&delivery.app_key, ms, id), &[] as &[u8]);
            }
            batch.remove(key);
            moved += 1;
        }
        if moved > 0 {
            self.tree.apply_batch(batch)?;
            tracing::info!(
                deliveries = moved,
                "webhook due queue converted to one queue per application"
            );
        }
        Ok(())
    }

    /// Builds the per-application index over deliveries written before it existed (once).
    fn build_index(&self) -> Result<(), OutboxError> {
        if self.tree.contains_key(INDEX_MARKER)? {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for row in self.tree.scan_prefix(DELIVERY_PREFIX) {
            let (key, value) = row?;
            let delivery: Delivery = decode(&key, &value)?;
            batch.insert(
                index_key(&delivery.app_key, delivery.id),
                &[state_byte(delivery.state)],
            );
        }
        batch.insert(INDEX_MARKER, &[] as &[u8]);
        self.tree.apply_batch(batch)?;
        Ok(())
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
        Ok(self.intake_rows(max)?.len())
    }

    /// [`Outbox::intake`], returning the deliveries taken in (the worker keeps them in hand).
    pub(crate) fn intake_rows(&self, max: usize) -> Result<Vec<Delivery>, OutboxError> {
        let source = match &self.source {
            OutboxSource::Tree(t) => t.clone(),
            OutboxSource::Resolve(f) => f().map_err(OutboxError::Source)?,
        };
        let cursor = self.intake_cursor()?;
        let start = outbox_key(cursor.saturating_add(1));
        let now = Utc::now();
        let mut batch = sled::Batch::default();
        let mut last = cursor;
        let mut taken = Vec::new();
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
            batch.insert(
                index_key(&delivery.app_key, position),
                &[state_byte(DeliveryState::Pending)],
            );
            batch.insert(delivery_key(position), encode(&delivery));
            batch.insert(queue_key(&delivery.app_key, now, position), &[] as &[u8]);
            last = position;
            taken.push(delivery);
        }
        if !taken.is_empty() {
            batch.insert(INTAKE_KEY, &be(last));
            self.tree.apply_batch(batch)?;
        }
        Ok(taken)
    }

    /// The applications that have pending deliveries, in key order (one seek each).
    fn queued_applications(&self) -> Result<Vec<String>, OutboxError> {
        let mut apps = Vec::new();
        let mut from = QUEUE_PREFIX.to_vec();
        while let Some((key, _)) = self.tree.range(from..).next().transpose()? {
            if !key.starts_with(QUEUE_PREFIX) {
                break;
            }
            let (app, _, _) = parse_queue_key(&key)?;
            // Past every key of this application: its prefix, then more than 16 bytes of 0xff.
            from = [queue_prefix(&app).as_slice(), &[0xff; 17]].concat();
            apps.push(app);
        }
        Ok(apps)
    }

    /// Pending deliveries due at or before `now`, as `(id, application)`, skipping `busy`:
    /// at most `room(app)` of each application (earliest first within it) and `limit` in all.
    /// Applications are visited in turn starting after `after` (the last one served), so
    /// when there is not room for all, each gets its turn.
    pub fn due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        busy: &HashSet<u64>,
        after: Option<&str>,
        mut room: impl FnMut(&str) -> usize,
    ) -> Result<Vec<(u64, String)>, OutboxError> {
        let mut apps = self.queued_applications()?;
        if let Some(after) = after {
            let start = apps.iter().position(|a| a.as_str() > after).unwrap_or(0);
            apps.rotate_left(start);
        }
        let now_ms = now.timestamp_millis();
        let mut out = Vec::new();
        for app in apps {
            let wanted = room(&app).min(limit.saturating_sub(out.len()));
            if wanted == 0 {
                continue;
            }
            let end = queue_key_ms(&app, now_ms, u64::MAX);
            let mut taken = 0;
            for row in self.tree.range(queue_prefix(&app)..=end) {
                if taken >= wanted {
                    break;
                }
                let (key, _) = row?;
                let (_, _, id) = parse_queue_key(&key)?;
                if !busy.contains(&id) {
                    out.push((id, app.clone()));
                    taken += 1;
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The earliest moment a pending delivery is due, if any.
    pub fn next_due(&self) -> Result<Option<DateTime<Utc>>, OutboxError> {
        let mut earliest: Option<u64> = None;
        for app in self.queued_applications()? {
            if let Some((key, _)) = self
                .tree
                .scan_prefix(queue_prefix(&app))
                .next()
                .transpose()?
            {
                let (_, ms, _) = parse_queue_key(&key)?;
                earliest = Some(earliest.map_or(ms, |e| e.min(ms)));
            }
        }
        Ok(earliest
            .and_then(|ms| DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))))
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
        // Walk this application's index only; its state byte filters without decoding rows.
        let prefix = index_prefix(app_key);
        let start = [
            prefix.as_slice(),
            &be(after.map_or(0, |a| a.saturating_add(1))),
        ]
        .concat();
        let wanted = state.map(state_byte);
        let mut out = Vec::new();
        for row in self.tree.range(start..) {
            if out.len() >= limit {
                break;
            }
            let (key, value) = row?;
            if !key.starts_with(&prefix) {
                break;
            }
            if wanted.is_some_and(|w| value.first() != Some(&w)) {
                continue;
            }
            let id = key
                .get(prefix.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            let Some(id) = id else {
                return Err(OutboxError::Decode {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: "bad index key".into(),
                });
            };
            // Index and row are written together, so the row is there and in that state.
            if let Some(delivery) = self.get(id)? {
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
            let old_queue = delivery
                .next_attempt_at
                .map(|t| queue_key(&delivery.app_key, t, id));
            let out = match change(&mut delivery) {
                Ok(out) => out,
                Err(e) => return abort(e),
            };
            if delivery.state != DeliveryState::Pending {
                delivery.next_attempt_at = None;
            }
            let new_queue = delivery
                .next_attempt_at
                .map(|t| queue_key(&delivery.app_key, t, id));
            if old_queue != new_queue {
                if let Some(q) = old_queue {
                    tx.remove(q)?;
                }
                if let Some(q) = &new_queue {
                    tx.insert(q.as_slice(), &[] as &[u8])?;
                }
            }
            tx.insert(
                index_key(&delivery.app_key, id),
                &[state_byte(delivery.state)],
            )?;
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

    /// Writes the worker's finished attempts in one batch: rows, index entries and queue keys.
    ///
    /// No transaction is needed: these deliveries were pending when their attempts began, and a
    /// pending delivery is changed only by the worker that holds it (an operator's redelivery
    /// refuses pending ones), so nothing can have changed them meanwhile.
    pub fn record_settled(&self, settled: &[Settled]) -> Result<(), OutboxError> {
        if settled.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for s in settled {
            let d = &s.delivery;
            let new_queue = d.next_attempt_at.map(|t| queue_key(&d.app_key, t, d.id));
            if s.old_queue != new_queue {
                if let Some(q) = &s.old_queue {
                    batch.remove(q.as_slice());
                }
                if let Some(q) = new_queue {
                    batch.insert(q, &[] as &[u8]);
                }
            }
            // A retry stays pending: its index entry already says so.
            if d.state != DeliveryState::Pending {
                batch.insert(index_key(&d.app_key, d.id), &[state_byte(d.state)]);
            }
            batch.insert(delivery_key(d.id), encode(d));
        }
        self.tree.apply_batch(batch)?;
        Ok(())
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
        let mut disabled = self.disabled.write().unwrap_or_else(|e| e.into_inner());
        self.tree
            .insert([DISABLED_PREFIX, app_key.as_bytes()].concat(), encode(&row))?;
        disabled.insert(app_key.to_owned(), row);
        Ok(())
    }

    /// Why `app_key`'s endpoint is disabled, if it is.
    pub fn endpoint_disabled(
        &self,
        app_key: &str,
    ) -> Result<Option<DisabledEndpoint>, OutboxError> {
        Ok(self
            .disabled
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(app_key)
            .cloned())
    }

    /// Re-enables `app_key`'s endpoint; call after the application's webhook URL is updated.
    pub fn enable_endpoint(&self, app_key: &str) -> Result<(), OutboxError> {
        let mut disabled = self.disabled.write().unwrap_or_else(|e| e.into_inner());
        self.tree
            .remove([DISABLED_PREFIX, app_key.as_bytes()].concat())?;
        disabled.remove(app_key);
        Ok(())
    }

    /// Flushes delivery state to disk (on shutdown).
    pub async fn flush(&self) -> Result<(), OutboxError> {
        self.tree.flush_async().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::WebhookType;

    fn notification(app_key: &str, position: u64) -> Notification {
        Notification {
            id: format!("applicant-{position}"),
            external_user_id: format!("user-{position}"),
            app_key: app_key.to_owned(),
            webhook_type: WebhookType::ApplicantCreated,
            status: "INIT".into(),
            warnings: Vec::new(),
            step_name: None,
            event_id: uuid::Uuid::new_v4(),
            sequence: 1,
            occurred_at: Utc::now(),
        }
    }

    /// An outbox with rows 1..=6 alternating between applications "a" and "b", taken in.
    fn outbox_with_two_applications(db: &sled::Db) -> Outbox {
        let source = db.open_tree("proj/webhooks/g0").unwrap();
        for position in 1..=6 {
            let app = if position % 2 == 1 { "a" } else { "b" };
            source
                .insert(outbox_key(position), encode(&notification(app, position)))
                .unwrap();
        }
        let outbox = Outbox::open(db, source).unwrap();
        assert_eq!(outbox.intake(100).unwrap(), 6);
        outbox
    }

    fn attempt(status: u16) -> Attempt {
        Attempt {
            at: Utc::now(),
            status_code: Some(status),
            latency_ms: 1,
            error: None,
        }
    }

    fn ids(deliveries: &[Delivery]) -> Vec<u64> {
        deliveries.iter().map(|d| d.id).collect()
    }

    #[test]
    fn one_application_lists_only_its_own_deliveries_by_state_and_page() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let outbox = outbox_with_two_applications(&db);
        let delivered = Settled::new(
            outbox.get(3).unwrap().unwrap(),
            attempt(204),
            Next::Delivered,
        );
        let dead = Settled::new(outbox.get(4).unwrap().unwrap(), attempt(410), Next::Dead);
        outbox.record_settled(&[delivered, dead]).unwrap();

        assert_eq!(
            ids(&outbox.list("a", None, None, 10).unwrap()),
            vec![1, 3, 5]
        );
        assert_eq!(ids(&outbox.list("a", None, Some(1), 1).unwrap()), vec![3]);
        assert_eq!(
            ids(&outbox
                .list("a", Some(DeliveryState::Pending), None, 10)
                .unwrap()),
            vec![1, 5]
        );
        assert_eq!(
            ids(&outbox
                .list("a", Some(DeliveryState::Delivered), None, 10)
                .unwrap()),
            vec![3]
        );
        assert_eq!(
            ids(&outbox
                .list("b", Some(DeliveryState::Dead), None, 10)
                .unwrap()),
            vec![4]
        );
        assert!(outbox.list("c", None, None, 10).unwrap().is_empty());
        // A settled delivery left the due queue; the others are still due. Queue times round up
        // to the next millisecond (never early), so look a little ahead of intake's clock.
        let soon = Utc::now() + chrono::Duration::milliseconds(2);
        let due = outbox
            .due(soon, 10, &HashSet::new(), None, |_| usize::MAX)
            .unwrap();
        let mut due_ids: Vec<u64> = due.iter().map(|(id, _)| *id).collect();
        due_ids.sort();
        assert_eq!(due_ids, vec![1, 2, 5, 6]);
        // Each application's queue in due order, at most its room, in turn after `after`.
        let due = outbox
            .due(soon, 10, &HashSet::new(), Some("a"), |app| {
                if app == "a" {
                    1
                } else {
                    5
                }
            })
            .unwrap();
        assert_eq!(
            due,
            vec![
                (2, "b".to_string()),
                (6, "b".to_string()),
                (1, "a".to_string())
            ]
        );
        assert_eq!(
            outbox
                .due(soon, 2, &HashSet::from([2]), None, |_| 5)
                .unwrap(),
            vec![(1, "a".to_string()), (5, "a".to_string())]
        );

        // Redelivery moves the index entry back to pending with the row.
        outbox.redeliver("b", 4).unwrap();
        assert_eq!(
            ids(&outbox
                .list("b", Some(DeliveryState::Pending), None, 10)
                .unwrap()),
            vec![2, 4, 6]
        );
    }

    #[test]
    fn deliveries_stored_before_the_index_existed_are_listed_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let outbox = outbox_with_two_applications(&db);
        let delivered = Settled::new(
            outbox.get(2).unwrap().unwrap(),
            attempt(200),
            Next::Delivered,
        );
        outbox.record_settled(&[delivered]).unwrap();
        // What an older version left behind: rows, no index.
        let tree = db.open_tree(DELIVERIES_TREE).unwrap();
        for key in tree.scan_prefix(INDEX_PREFIX).keys() {
            tree.remove(key.unwrap()).unwrap();
        }
        tree.remove(INDEX_MARKER).unwrap();
        drop(outbox);

        let source = db.open_tree("proj/webhooks/g0").unwrap();
        let outbox = Outbox::open(&db, source).unwrap();
        assert_eq!(
            ids(&outbox.list("b", None, None, 10).unwrap()),
            vec![2, 4, 6]
        );
        assert_eq!(
            ids(&outbox
                .list("b", Some(DeliveryState::Delivered), None, 10)
                .unwrap()),
            vec![2]
        );
    }

    #[test]
    fn the_single_due_queue_of_earlier_versions_is_converted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let outbox = outbox_with_two_applications(&db);
        let soon = Utc::now() + chrono::Duration::milliseconds(2);
        let before = outbox.due(soon, 10, &HashSet::new(), None, |_| 10).unwrap();
        // What an older version left behind: `q/<due ms><id>` keys.
        let tree = db.open_tree(DELIVERIES_TREE).unwrap();
        for key in tree.scan_prefix(QUEUE_PREFIX).keys() {
            let key = key.unwrap();
            let (_, ms, id) = parse_queue_key(&key).unwrap();
            tree.remove(&key).unwrap();
            tree.insert([OLD_QUEUE_PREFIX, &be(ms), &be(id)].concat(), &[] as &[u8])
                .unwrap();
        }
        drop(outbox);
        let outbox = Outbox::open(&db, db.open_tree("proj/webhooks/g0").unwrap()).unwrap();
        assert_eq!(tree.scan_prefix(OLD_QUEUE_PREFIX).count(), 0);
        assert_eq!(
            outbox.due(soon, 10, &HashSet::new(), None, |_| 10).unwrap(),
            before
        );
    }

    #[test]
    fn a_disabled_endpoint_is_remembered_across_a_reopen_until_enabled() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let outbox = outbox_with_two_applications(&db);
        outbox.disable_endpoint("a", "410 Gone").unwrap();
        drop(outbox);
        let outbox = Outbox::open(&db, db.open_tree("proj/webhooks/g0").unwrap()).unwrap();
        assert_eq!(
            outbox.endpoint_disabled("a").unwrap().unwrap().reason,
            "410 Gone"
        );
        outbox.enable_endpoint("a").unwrap();
        assert!(outbox.endpoint_disabled("a").unwrap().is_none());
        let outbox = Outbox::open(&db, db.open_tree("proj/webhooks/g0").unwrap()).unwrap();
        assert!(outbox.endpoint_disabled("a").unwrap().is_none());
    }
}
