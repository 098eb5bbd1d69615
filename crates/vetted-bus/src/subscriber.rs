//! The subscriber other services use: a durable pull consumer on the fan-out stream,
//! filtered by one subject (a tenant, an applicant or an event type; see
//! [`crate::subjects`]), decoding each message into a [`RecordedEvent`] and acknowledging it
//! only after the handler succeeded, so a crash redelivers instead of losing events.
//!
//! One filter subject on purpose: nats-server 2.9 ignores the plural `filter_subjects` and would
//! deliver every subject.
use std::future::Future;
use std::io::Write;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use futures::{FutureExt, StreamExt};
use vetted_store::RecordedEvent;

use crate::{subjects, BusError};

/// Which stream, durable name and filter the subscriber uses.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    /// Fan-out stream name (default `VETTED_EVENTS`).
    pub stream: String,
    /// Durable consumer name: the server remembers what this name has acknowledged.
    pub durable: String,
    /// One filter subject, e.g. `vetted.events.<appKey>.>` (default: everything).
    pub filter_subject: String,
    /// How long an unacknowledged event waits before it is redelivered.
    pub ack_wait: Duration,
    /// Most events pulled per request.
    pub batch: usize,
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        SubscriberConfig {
            stream: subjects::EVENTS_STREAM.into(),
            durable: "vetted-subscriber".into(),
            filter_subject: subjects::all_events_filter(),
            ack_wait: Duration::from_secs(30),
            batch: 256,
        }
    }
}

/// A durable, filtered subscription to the fan-out stream.
pub struct EventSubscriber {
    consumer: consumer::Consumer<consumer::pull::Config>,
    config: SubscriberConfig,
}

/// One delivered event, acknowledged through [`Delivery::ack`].
pub struct Delivery {
    /// The event as Vetted recorded it (global position included).
    pub event: RecordedEvent,
    message: jetstream::Message,
}

impl Delivery {
    /// The payload as a domain event (older schema versions are upcast).
    pub fn applicant_event(
        &self,
    ) -> Result<vetted_domain::ApplicantEvent, vetted_domain::DomainError> {
        vetted_domain::ApplicantEvent::from_payload(
            &self.event.event_type,
            self.event.schema_version,
            &self.event.payload,
        )
    }

    /// Acknowledges the event and waits for the server to confirm it.
    pub async fn ack(&self) -> Result<(), BusError> {
        self.message
            .double_ack()
            .await
            .map_err(|e| BusError::Unavailable(format!("acknowledging: {e}")))
    }

    /// Asks for redelivery now (the handler failed).
    pub async fn nak(&self) -> Result<(), BusError> {
        self.message
            .ack_with(AckKind::Nak(None))
            .await
            .map_err(|e| BusError::Unavailable(format!("nak: {e}")))
    }
}

impl EventSubscriber {
    /// Creates (or reopens) the durable consumer on the fan-out stream.
    ///
    /// The stream must exist: it is created by the Vetted publisher.
    pub async fn new(
        client: async_nats::Client,
        config: SubscriberConfig,
    ) -> Result<Self, BusError> {
        if config.durable.is_empty() || config.durable.contains(['.', '*', '>', ' ']) {
            return Err(BusError::Config(format!(
                "durable name {:?} must be non-empty without '.', '*', '>' or spaces",
                config.durable
            )));
        }
        let js = jetstream::new(client);
        let stream = js.get_stream(&config.stream).await.map_err(|e| {
            BusError::Unavailable(format!(
                "stream {} not available ({e}); start Vetted with NATS publishing enabled first",
                config.stream
            ))
        })?;
        let consumer = stream
            .get_or_create_consumer(
                &config.durable,
                consumer::pull::Config {
                    durable_name: Some(config.durable.clone()),
                    filter_subject: config.filter_subject.clone(),
                    deliver_policy: consumer::DeliverPolicy::All,
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                BusError::JetStream(format!("creating durable consumer {}: {e}", config.durable))
            })?;
        let existing = &consumer.cached_info().config.filter_subject;
        if existing != &config.filter_subject {
            return Err(BusError::Config(format!(
                "durable {} already filters {existing:?}, not {:?}; pick another durable name",
                config.durable, config.filter_subject
            )));
        }
        Ok(EventSubscriber { consumer, config })
    }

    /// Pulls up to `max` events, waiting at most `wait` for the first one.
    ///
    /// Messages that are not Vetted events are terminated (never redelivered) and logged.
    pub async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let mut batch = self
            .consumer
            .batch()
            .max_messages(max.max(1))
            .expires(wait)
            .messages()
            .await
            .map_err(|e| {
                BusError::Unavailable(format!("pulling from {}: {e}", self.config.durable))
            })?;
        let mut out = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| {
                BusError::Unavailable(format!("pulling from {}: {e}", self.config.durable))
            })?;
            match serde_json::from_slice::<RecordedEvent>(&message.payload) {
                Ok(event) => out.push(Delivery { event, message }),
                Err(e) => {
                    let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
                    let error = BusError::Undecodable {
                        subject: message.subject.to_string(),
                        sequence,
                        reason: e.to_string(),
                    };
                    tracing::warn!(%error, "terminating a message that is not a Vetted event");
                    let _ = message.ack_with(AckKind::Term).await;
                }
            }
        }
        Ok(out)
    }

    /// Feeds every event to `handler` until `shutdown` resolves, acknowledging each one after
    /// the handler succeeded. A handler error naks the event (it is redelivered) and stops.
    pub async fn run<H, Fut, E>(
        &self,
        mut handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<u64, BusError>
    where
        H: FnMut(RecordedEvent) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut shutdown = std::pin::pin!(shutdown.fuse());
        let mut handled = 0;
        loop {
            let deliveries = futures::select! {
                d = self.fetch(self.config.batch, Duration::from_secs(1)).fuse() => d?,
                _ = shutdown => return Ok(handled),
            };
            for delivery in deliveries {
                let event_id = delivery.event.event_id;
                if let Err(e) = handler(delivery.event.clone()).await {
                    let _ = delivery.nak().await;
                    return Err(BusError::Handler {
                        event_id,
                        reason: e.to_string(),
                    });
                }
                delivery.ack().await?;
                handled += 1;
            }
        }
    }
}

/// What `vetted subscribe` does: prints each event as one JSON line to `out`, acknowledging it
/// once written, so the next run with the same durable resumes after the last printed event.
///
/// Stops after `limit` events (if given) or when `shutdown` resolves; returns how many it printed.
pub async fn print_events<W: Write>(
    subscriber: &EventSubscriber,
    out: &mut W,
    limit: Option<u64>,
    shutdown: impl Future<Output = ()>,
) -> Result<u64, BusError> {
    let mut shutdown = std::pin::pin!(shutdown.fuse());
    let mut printed = 0u64;
    while limit.is_none_or(|l| printed < l) {
        let want = limit.map_or(subscriber.config.batch, |l| {
            ((l - printed) as usize).min(subscriber.config.batch)
        });
        let deliveries = futures::select! {
            d = subscriber.fetch(want, Duration::from_secs(1)).fuse() => d?,
            _ = shutdown => break,
        };
        for delivery in deliveries {
            serde_json::to_writer(&mut *out, &delivery.event).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            out.flush()?;
            delivery.ack().await?;
            printed += 1;
        }
    }
    Ok(printed)
}
