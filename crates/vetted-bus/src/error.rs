/// What can go wrong on the bus; each variant is something a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// NATS could not be reached or did not answer in time: retry later.
    #[error("NATS unavailable: {0}")]
    Unavailable(String),
    /// A setting is wrong (URL, stream name, subject): fix the configuration.
    #[error("NATS configuration: {0}")]
    Config(String),
    /// A message on the stream is not a Vetted event: it was published by someone else or damaged.
    #[error("message {sequence} on {subject} is not a Vetted event: {reason}")]
    Undecodable {
        subject: String,
        sequence: u64,
        reason: String,
    },
    /// The subscriber's handler refused an event; it stays unacknowledged and is redelivered.
    #[error("handler failed on event {event_id}: {reason}")]
    Handler {
        event_id: uuid::Uuid,
        reason: String,
    },
    /// The publisher's checkpoint could not be read or written.
    #[error("publisher checkpoint storage: {0}")]
    Checkpoint(#[from] sled::Error),
    /// Writing the printed events failed (closed pipe, full disk).
    #[error("writing events: {0}")]
    Output(#[from] std::io::Error),
    /// Reading the log to publish failed.
    #[error(transparent)]
    Store(#[from] vetted_store::StoreError),
    /// The JetStream server refused an operation.
    #[error("JetStream refused: {0}")]
    JetStream(String),
}
