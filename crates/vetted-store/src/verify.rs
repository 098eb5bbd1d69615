//! `vetted audit verify`: recompute every stream's hash chain from the log and name the first
//! event that does not match.
use std::collections::HashMap;
use std::fmt;

use uuid::Uuid;

use crate::{chain, EventStore, RecordedEvent, StoreError};

/// Events read per page while verifying.
const PAGE: usize = 1024;

/// What an audit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Streams seen.
    pub streams: u64,
    /// Events seen.
    pub events: u64,
    /// The first event (in global order) that breaks its chain; `None` means the log is intact.
    pub first_mismatch: Option<Mismatch>,
}

impl VerifyReport {
    /// True when every chain checked out.
    pub fn is_intact(&self) -> bool {
        self.first_mismatch.is_none()
    }
}

/// The first event that does not match its chain, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub stream_id: String,
    pub stream_version: u64,
    /// The global position the event carries.
    pub global_position: u64,
    pub event_id: Uuid,
    pub reason: MismatchReason,
    /// What the chain says this event's hash (or, for [`MismatchReason::PrevHashMismatch`],
    /// its `prev_hash`) should be.
    pub expected_hash: String,
    /// What is stored.
    pub stored_hash: String,
}

/// Why an event does not match its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MismatchReason {
    /// The log skips or repeats a position here: an event was deleted or moved.
    PositionOutOfOrder { expected: u64 },
    /// The stream skips or repeats a version here: an event was deleted or moved.
    VersionOutOfOrder { expected: u64 },
    /// `prev_hash` is not the previous event's hash.
    PrevHashMismatch,
    /// The stored hash is not the hash of the stored content: the event was edited.
    HashMismatch,
}

impl fmt::Display for MismatchReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MismatchReason::PositionOutOfOrder { expected } => {
                write!(
                    f,
                    "expected global position {expected} here: an event was deleted or moved"
                )
            }
            MismatchReason::VersionOutOfOrder { expected } => {
                write!(
                    f,
                    "expected stream version {expected} here: an event was deleted or moved"
                )
            }
            MismatchReason::PrevHashMismatch => {
                write!(f, "prev_hash is not the previous event's hash")
            }
            MismatchReason::HashMismatch => write!(
                f,
                "stored hash does not match the event's content: it was edited"
            ),
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event {} ({} version {}, global position {}): {}; expected hash {}, stored {}",
            self.event_id,
            self.stream_id,
            self.stream_version,
            self.global_position,
            self.reason,
            self.expected_hash,
            self.stored_hash
        )
    }
}

/// Walks events in order, keeping each stream's chain, and remembers the first break.
#[derive(Default)]
struct Audit {
    /// Per stream: the next expected version and the last hash.
    chains: HashMap<String, (u64, String)>,
    events: u64,
    last_position: Option<u64>,
    first_mismatch: Option<Mismatch>,
}

impl Audit {
    fn check(&mut self, event: &RecordedEvent, contiguous_positions: bool) {
        self.events += 1;
        let (next_version, prev_hash) = self
            .chains
            .get(&event.stream_id)
            .cloned()
            .unwrap_or_else(|| (0, chain::GENESIS.to_string()));
        let expected_hash = chain::compute_hash(&prev_hash, event);
        let expected_position = self.last_position.map_or(1, |p| p + 1);
        let position_ok = if contiguous_positions {
            event.global_position == expected_position
        } else {
            self.last_position.is_none_or(|p| event.global_position > p)
        };
        let reason = if !position_ok {
            Some(MismatchReason::PositionOutOfOrder {
                expected: expected_position,
            })
        } else if event.stream_version != next_version {
            Some(MismatchReason::VersionOutOfOrder {
                expected: next_version,
            })
        } else if event.prev_hash != prev_hash {
            Some(MismatchReason::PrevHashMismatch)
        } else if event.hash != expected_hash {
            Some(MismatchReason::HashMismatch)
        } else {
            None
        };
        if let (Some(reason), None) = (reason, &self.first_mismatch) {
            let (expected_hash, stored_hash) = match reason {
                MismatchReason::PrevHashMismatch => (prev_hash, event.prev_hash.clone()),
                _ => (expected_hash, event.hash.clone()),
            };
            self.first_mismatch = Some(Mismatch {
                stream_id: event.stream_id.clone(),
                stream_version: event.stream_version,
                global_position: event.global_position,
                event_id: event.event_id,
                reason,
                expected_hash,
                stored_hash,
            });
        }
        // Continue from what is stored, so one bad event is reported once, not for its whole stream.
        self.chains.insert(
            event.stream_id.clone(),
            (event.stream_version + 1, event.hash.clone()),
        );
        self.last_position = Some(
            self.last_position
                .map_or(event.global_position, |p| p.max(event.global_position)),
        );
    }

    fn report(self) -> VerifyReport {
        VerifyReport {
            streams: self.chains.len() as u64,
            events: self.events,
            first_mismatch: self.first_mismatch,
        }
    }
}

/// Reads the whole log in global order and recomputes every stream's chain.
pub async fn verify(store: &dyn EventStore) -> Result<VerifyReport, StoreError> {
    let mut audit = Audit::default();
    let mut from = 1;
    loop {
        let page = store.read_all(from, PAGE).await?;
        let Some(last) = page.last() else { break };
        from = from.max(last.global_position + 1);
        for event in &page {
            audit.check(event, true);
        }
    }
    Ok(audit.report())
}

/// Recomputes one stream's chain (an unknown stream is intact and empty).
pub async fn verify_stream(
    store: &dyn EventStore,
    stream: &str,
) -> Result<VerifyReport, StoreError> {
    let mut audit = Audit::default();
    let mut from_version = 0;
    loop {
        let page = store.read_stream(stream, from_version, PAGE).await?;
        let Some(last) = page.last() else { break };
        from_version = from_version.max(last.stream_version + 1);
        for event in &page {
            // A stream's positions only have to increase: other streams sit in between.
            audit.check(event, false);
        }
        if page.len() < PAGE {
            break;
        }
    }
    Ok(audit.report())
}
