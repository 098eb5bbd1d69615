//! Vetted's outgoing webhooks: which applicant events become which webhook (the `webhooks`
//! projection, writing outbox rows atomically with its checkpoint), how a payload is sealed
//! (AES-256-CBC, Allpass wire format) and signed (Standard Webhooks), and the delivery worker
//! that retries on a configurable schedule into dead letters an operator can redeliver.
#![forbid(unsafe_code)]

pub mod endpoint;
pub mod notification;
pub mod outbox;
pub mod projector;
pub mod schedule;
pub mod seal;
pub mod signature;
pub mod worker;

pub use endpoint::{Endpoint, EndpointDirectory, EndpointError, EndpointUpdate, MemoryEndpoints};
pub use notification::{ApplicantRow, Notification, WebhookType};
pub use outbox::{
    Attempt, Delivery, DeliveryState, DisabledEndpoint, Outbox, OutboxError, OutboxSource, Settled,
};
pub use projector::WebhookProjector;
pub use schedule::DeliveryConfig;
pub use seal::{open, parse_key, seal, SealError};
pub use signature::{signature_header, SignatureError, SigningSecret};
pub use worker::{DeliveryWorker, WorkerError, WorkerHandle};
