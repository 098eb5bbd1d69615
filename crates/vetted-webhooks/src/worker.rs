//! The delivery loop, in one file: take new outbox rows in, pick due deliveries, seal, sign and
//! POST them, record the attempt, schedule the next one with jitter (or honour `Retry-After`),
//! give up into a dead letter, and disable an endpoint that answers 410 Gone.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::endpoint::{Endpoint, EndpointDirectory};
use crate::outbox::{Attempt, Delivery, DeliveryState, Next, Outbox, OutboxError, Settled};
use crate::schedule::DeliveryConfig;
use crate::seal::seal;
use crate::signature::signature_header;

/// Why the worker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The HTTP client could not be built (TLS set-up).
    #[error("webhook HTTP client could not start: {0}")]
    Client(String),
    /// Delivery state could not be read or written.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// Delivers outbox entries to application endpoints.
pub struct DeliveryWorker {
    outbox: Outbox,
    directory: Arc<dyn EndpointDirectory>,
    config: DeliveryConfig,
    client: reqwest::Client,
    endpoint_limits: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A running worker; [`WorkerHandle::stop`] ends it and waits until no request is in flight.
pub struct WorkerHandle {
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), WorkerError>>,
}

impl WorkerHandle {
    /// Stops the loop, abandons in-flight requests (they stay pending and are retried after a
    /// restart, with the same `webhook-id`) and flushes delivery state.
    pub async fn stop(self) -> Result<(), WorkerError> {
        let _ = self.shutdown.send(true);
        self.task
            .await
            .map_err(|e| WorkerError::Client(format!("worker task failed: {e}")))?
    }
}

/// How many pending deliveries the loop keeps in hand between attempts (about 1 KiB each);
/// beyond that an attempt reads its row from storage.
const ROWS_IN_HAND: usize = 16_384;

/// Pending deliveries as last written by this worker, so an attempt need not read and decode
/// its row. Coherent because a pending delivery is changed only by the worker (an operator's
/// redelivery refuses pending ones); a delivery that leaves `Pending` leaves this map.
type InHand = HashMap<u64, Delivery>;

/// A finished task: the delivery it held and, if an attempt was made, its outcome to record.
type Finished = (u64, Option<Settled>);

/// The result of one HTTP exchange, before it becomes an [`Attempt`].
struct Exchange {
    status: Option<u16>,
    retry_after: Option<Duration>,
    error: Option<String>,
}

impl DeliveryWorker {
    /// A worker over `outbox`, finding endpoints in `directory`.
    pub fn new(
        outbox: Outbox,
        directory: Arc<dyn EndpointDirectory>,
        config: DeliveryConfig,
    ) -> Result<Self, WorkerError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .pool_max_idle_per_host(config.per_endpoint_concurrency.max(1))
            // A webhook receiver must answer itself; following redirects would post sealed data elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| WorkerError::Client(e.to_string()))?;
        Ok(DeliveryWorker {
            outbox,
            directory,
            config,
            client,
            endpoint_limits: Mutex::default(),
        })
    }

    /// Starts the loop on the current tokio runtime.
    pub fn spawn(self) -> WorkerHandle {
        let (shutdown, stopped) = watch::channel(false);
        let task = tokio::spawn(Arc::new(self).run(stopped));
        WorkerHandle { shutdown, task }
    }

    async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) -> Result<(), WorkerError> {
        let wake = self.outbox.wake_handle();
        let mut in_flight: HashSet<u64> = HashSet::new();
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        // The delivery each task holds, so a task that panicked still frees its delivery.
        let mut holding: HashMap<tokio::task::Id, u64> = HashMap::new();
        // The application whose delivery was started last: the next scan starts after it.
        let mut last_served: Option<String> = None;
        let mut finished: Vec<Finished> = Vec::new();
        let mut in_hand: InHand = HashMap::new();
        let poll = Duration::from_millis(self.config.poll_interval_ms.max(1));
        // Under load a request finishes every few hundred microseconds; rescanning the queue for
        // each would cost more than the requests, so a finished request triggers a scan only
        // once a quarter of the slots are free. A wake-up or the poll tick always scans.
        let refill_at = (self.config.max_in_flight / 4).max(1);
        // A sled batch has a fixed cost (a global write lock, a log manifest), so finished
        // attempts are written together: once `record_at` have finished, or the first of them
        // has waited a poll interval, or nothing else is in flight. Receipt is not delayed,
        // only the bookkeeping; until written, a delivery stays in flight and is not rescanned.
        let record_at = (self.config.max_in_flight / 8).max(1);
        let mut first_finished: Option<Instant> = None;
        let mut scan = true;
        // After a failed intake or queue scan (storage error, a generation switched under the
        // intake), the next try waits: 2 polls, doubling up to 5 s.
        let mut failures = 0u32;
        let mut retry_at: Option<Instant> = None;
        loop {
            if *stopped.borrow() {
                break;
            }
            while let Some(done) = tasks.try_join_next_with_id() {
                finished.push(settle(done, &mut holding));
            }
            if finished.is_empty() {
                first_finished = None;
            } else {
                let since = *first_finished.get_or_insert_with(Instant::now);
                if finished.len() >= record_at || tasks.is_empty() || since.elapsed() >= poll {
                    self.record(&mut finished, &mut in_flight, &mut in_hand);
                    first_finished = None;
                }
            }
            let free = self.config.max_in_flight.saturating_sub(in_flight.len());
            let waiting = retry_at.is_some_and(|at| Instant::now() < at);
            if (scan || free >= refill_at) && !waiting {
                match self.pick_up(
                    &mut in_flight,
                    &mut tasks,
                    &mut holding,
                    &mut in_hand,
                    &mut last_served,
                ) {
                    Ok(()) => (failures, retry_at) = (0, None),
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let pause = poll
                            .saturating_mul(2u32.saturating_pow(failures.min(16)))
                            .min(MAX_PAUSE);
                        tracing::error!(error = %e, failures, retry_in_ms = pause.as_millis() as u64, "webhook deliveries could not be taken in or scanned; retrying");
                        retry_at = Some(Instant::now() + pause);
                    }
                }
            }
            scan = false;
            tokio::select! {
                changed = stopped.changed() => {
                    // The handle was dropped without `stop`: stop as well.
                    if changed.is_err() {
                        break;
                    }
                }
                _ = wake.notified() => scan = true,
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    finished.push(settle(done, &mut holding));
                }
                _ = tokio::time::sleep(poll) => scan = true,
            }
        }
        // Record what has finished; abandoned requests stay pending in storage, so nothing is lost.
        while let Some(done) = tasks.try_join_next_with_id() {
            finished.push(settle(done, &mut holding));
        }
        self.record(&mut finished, &mut in_flight, &mut in_hand);
        tasks.shutdown().await;
        self.outbox.flush().await?;
        Ok(())
    }

    /// Writes finished attempts in one batch, then frees their deliveries for the next scan (not
    /// before: until the batch lands their old queue keys still say "due").
    fn record(
        &self,
        finished: &mut Vec<Finished>,
        in_flight: &mut HashSet<u64>,
        in_hand: &mut InHand,
    ) {
        if finished.is_empty() {
            return;
        }
        let settled: Vec<Settled> = finished.iter_mut().filter_map(|(_, s)| s.take()).collect();
        match self.outbox.record_settled(&settled) {
            Ok(()) => {
                for s in settled {
                    if s.delivery.state == DeliveryState::Pending && in_hand.len() < ROWS_IN_HAND {
                        in_hand.insert(s.delivery.id, s.delivery);
                    }
                }
            }
            // They stay pending in storage and are attempted again (at-least-once).
            Err(e) => {
                tracing::error!(deliveries = settled.len(), error = %e, "webhook delivery state could not be updated");
            }
        }
        for (id, _) in finished.drain(..) {
            in_flight.remove(&id);
        }
    }

    /// Takes new outbox rows in and starts a task for each due delivery, within the global limit.
    fn pick_up(
        self: &Arc<Self>,
        in_flight: &mut HashSet<u64>,
        tasks: &mut JoinSet<Finished>,
        holding: &mut HashMap<tokio::task::Id, u64>,
        in_hand: &mut InHand,
        last_served: &mut Option<String>,
    ) -> Result<(), WorkerError> {
        loop {
            let taken = self.outbox.intake_rows(1000)?;
            let more = taken.len() == 1000;
            for d in taken {
                if in_hand.len() < ROWS_IN_HAND {
                    in_hand.insert(d.id, d);
                }
            }
            if !more {
                break;
            }
        }
        let mut free = self.config.max_in_flight.saturating_sub(in_flight.len());
        if free == 0 {
            return Ok(());
        }
        // A delivery starts only with a slot of its endpoint in hand, and each application's
        // queue is read only as far as its endpoint has room, so a slow or saturated endpoint
        // neither holds global slots nor hides other applications' due deliveries. The
        // applications take turns (after the one served last) when slots are short.
        let endpoints: HashMap<String, Option<Arc<Endpoint>>> = HashMap::new();
        let endpoints = std::cell::RefCell::new(endpoints);
        let endpoint_of = |app: &str| -> Option<Arc<Endpoint>> {
            endpoints
                .borrow_mut()
                .entry(app.to_owned())
                .or_insert_with(|| self.directory.endpoint(app))
                .clone()
        };
        let room = |app: &str| match endpoint_of(app) {
            Some(_) => self.endpoint_limit(app).available_permits(),
            // No endpoint: the attempt fails at once ("no webhook URL"), no request is made.
            None => self.config.per_endpoint_concurrency.max(1),
        };
        let due = self
            .outbox
            .due(Utc::now(), free, in_flight, last_served.as_deref(), room)?;
        for (id, app) in due {
            if free == 0 {
                break;
            }
            let delivery = match in_hand.remove(&id) {
                Some(d) => d,
                None => match self.outbox.get(id)? {
                    Some(d) => d,
                    None => continue,
                },
            };
            let slot = match endpoint_of(&app) {
                None => None,
                Some(endpoint) => match self.endpoint_limit(&app).try_acquire_owned() {
                    Ok(permit) => Some((endpoint, permit)),
                    Err(_) => {
                        keep(in_hand, delivery);
                        continue;
                    }
                },
            };
            *last_served = Some(app);
            free -= 1;
            in_flight.insert(id);
            let worker = Arc::clone(self);
            let task = tasks.spawn(async move {
                match worker.deliver(delivery, slot).await {
                    Ok(settled) => (id, settled),
                    Err(e) => {
                        tracing::error!(delivery = id, error = %e, "webhook delivery could not be attempted");
                        (id, None)
                    }
                }
            });
            holding.insert(task.id(), id);
        }
        Ok(())
    }

    fn endpoint_limit(&self, app_key: &str) -> Arc<Semaphore> {
        let mut limits = self
            .endpoint_limits
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        limits
            .entry(app_key.to_owned())
            .or_insert_with(|| {
                Arc::new(Semaphore::new(self.config.per_endpoint_concurrency.max(1)))
            })
            .clone()
    }

    /// One attempt of one delivery, holding a slot of its endpoint (`None`: the application
    /// has no endpoint); its outcome is recorded by the loop, batched with others.
    async fn deliver(
        &self,
        delivery: Delivery,
        slot: Option<(Arc<Endpoint>, OwnedSemaphorePermit)>,
    ) -> Result<Option<Settled>, OutboxError> {
        if delivery.state != DeliveryState::Pending {
            return Ok(None);
        }
        let id = delivery.id;
        let app_key = delivery.app_key.clone();
        if let Some(disabled) = self.outbox.endpoint_disabled(&app_key)? {
            let error = format!(
                "endpoint disabled since {} ({}); update the webhook URL, re-enable it and redeliver",
                disabled.at, disabled.reason
            );
            let attempt = Attempt {
                at: Utc::now(),
                status_code: None,
                latency_ms: 0,
                error: Some(error),
            };
            return Ok(Some(Settled::new(delivery, attempt, Next::Dead)));
        }
        let started_at = Utc::now();
        let clock = Instant::now();
        let exchange = match slot {
            None => Exchange {
                status: None,
                retry_after: None,
                error: Some(format!(
                    "application {app_key} has no webhook URL; set one (retries continue)"
                )),
            },
            // The permit is released when the exchange ends.
            Some((endpoint, _permit)) => self.post(&delivery, &endpoint).await,
        };
        let latency_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        let status = exchange.status;
        let attempt = Attempt {
            at: started_at,
            status_code: status,
            latency_ms,
            error: exchange.error,
        };
        let next = match status {
            Some(code) if (200..300).contains(&code) => Next::Delivered,
            Some(410) => {
                let reason = format!("410 Gone from the endpoint of application {app_key}");
                self.outbox.disable_endpoint(&app_key, &reason)?;
                tracing::warn!(
                    app_key,
                    delivery = id,
                    "endpoint answered 410 Gone: disabled"
                );
                Next::Dead
            }
            _ => match self
                .config
                .next_delay(delivery.attempts_in_round() + 1, exchange.retry_after)
            {
                Some(delay) => Next::RetryAt(later(Utc::now(), delay)),
                None => Next::Dead,
            },
        };
        if next == Next::Dead {
            tracing::warn!(
                app_key,
                delivery = id,
                attempts = delivery.attempts_in_round() + 1,
                "webhook is a dead letter"
            );
        }
        Ok(Some(Settled::new(delivery, attempt, next)))
    }

    /// Seals, signs and POSTs one delivery; never fails, the outcome says what happened.
    async fn post(&self, delivery: &Delivery, endpoint: &Endpoint) -> Exchange {
        let failed = |error: String| Exchange {
            status: None,
            retry_after: None,
            error: Some(error),
        };
        let payload = match serde_json::to_vec(&delivery.notification) {
            Ok(p) => p,
            Err(e) => return failed(format!("payload could not be encoded: {e}")),
        };
        let data = match seal(&endpoint.crypto_key, &payload) {
            Ok(d) => d,
            Err(e) => return failed(e.to_string()),
        };
        // `data` is hex: nothing to escape, so the body is written directly.
        let body = format!("{{\"data\":\"{data}\"}}").into_bytes();
        let now = Utc::now();
        let timestamp = now.timestamp();
        let signature = signature_header(
            endpoint.signing_secrets(now),
            &delivery.webhook_id,
            timestamp,
            &body,
        );

        let mut headers = HeaderMap::new();
        // Custom headers first: Endpoint refuses reserved names, and ours are inserted after anyway.
        for (name, value) in &endpoint.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(n, v);
            }
        }
        let ours = [
            ("webhook-id", delivery.webhook_id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ];
        for (name, value) in ours {
            match HeaderValue::from_str(&value) {
                Ok(v) => {
                    headers.insert(name, v);
                }
                Err(e) => return failed(format!("header {name} is not valid: {e}")),
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));

        let request = self
            .client
            .post(endpoint.url.clone())
            .headers(headers)
            .timeout(Duration::from_millis(self.config.request_timeout_ms))
            .body(body);
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| parse_retry_after(v.to_str().ok()?));
                // Reading a small body lets the connection go back to the pool; a body past
                // MAX_RESPONSE_BODY is not read further (the connection is closed instead).
                let mut response = response;
                let mut read = 0usize;
                while let Ok(Some(chunk)) = response.chunk().await {
                    read += chunk.len();
                    if read > MAX_RESPONSE_BODY {
                        break;
                    }
                }
                let error =
                    (!(200..300).contains(&status)).then(|| format!("endpoint answered {status}"));
                Exchange {
                    status: Some(status),
                    retry_after,
                    error,
                }
            }
            Err(e) => failed(error_chain(&e)),
        }
    }
}

/// Puts a delivery not started back in hand (if there is room), so the next scan need not read it.
fn keep(in_hand: &mut InHand, delivery: Delivery) {
    if in_hand.len() < ROWS_IN_HAND {
        in_hand.insert(delivery.id, delivery);
    }
}

/// Most bytes of a receiver's answer read (and thrown away) per attempt.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Longest pause after failed intakes or queue scans.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// A finished task as the loop records it. A task that panicked made no attempt: its delivery
/// is freed, still pending, for the next scan.
fn settle(
    done: Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
    holding: &mut HashMap<tokio::task::Id, u64>,
) -> Finished {
    match done {
        Ok((task, finished)) => {
            holding.remove(&task);
            finished
        }
        Err(e) => {
            let id = holding.remove(&e.id()).unwrap_or_default();
            tracing::error!(delivery = id, error = %e, "webhook delivery task failed; the delivery stays pending");
            (id, None)
        }
    }
}

/// `now + delay`, saturating at the latest time chrono represents instead of overflowing (a
/// configured delay or a receiver's `Retry-After` may be absurdly large).
fn later(now: chrono::DateTime<Utc>, delay: Duration) -> chrono::DateTime<Utc> {
    chrono::TimeDelta::from_std(delay)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC)
}

/// `Retry-After` as delay-seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_delay_saturates_instead_of_panicking() {
        let now = Utc::now();
        assert_eq!(
            later(now, Duration::from_secs(90)),
            now + chrono::Duration::seconds(90)
        );
        assert_eq!(later(now, Duration::MAX), chrono::DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            later(now, Duration::from_secs(u64::MAX / 4)),
            chrono::DateTime::<Utc>::MAX_UTC
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        let later = (Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(80) && d <= Duration::from_secs(90),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
