/// What can go wrong in the event store; each variant is something a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Optimistic concurrency conflict: re-read the stream and decide again.
    #[error("stream {stream} is at version {actual:?}, expected {expected:?}")]
    WrongExpectedVersion {
        stream: String,
        expected: crate::ExpectedVersion,
        /// The stream's actual current version (`None`: the stream does not exist).
        actual: Option<u64>,
    },
    /// An append with no events.
    #[error("an append needs at least one event")]
    EmptyAppend,
    /// The backend could not be reached (network, server down): retry later.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes could not be decoded: the store is damaged (run `vetted audit verify`).
    #[error("corrupt stored event at {location}: {reason}")]
    Corrupt { location: String, reason: String },
    /// An append too large for the store to keep (an event, or all events of one append):
    /// split it, or store large documents elsewhere and append a reference.
    #[error("{what} of {bytes} bytes is larger than the event store's limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        bytes: usize,
        limit: usize,
    },
    /// The store is shutting down or its writer has stopped.
    #[error("event store is closed")]
    Closed,
    /// Anything else from the backend.
    #[error("event store backend error: {0}")]
    Backend(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}
