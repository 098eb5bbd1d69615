//! What every backend does the same way when it accepts an append: check the expected
//! version, stamp the envelope and seal it into the stream's hash chain.
use chrono::{DateTime, Utc};

use crate::{chain, ExpectedVersion, NewEvent, RecordedEvent, StoreError};

/// Refuses the append unless the stream's `current` version matches `expected`.
pub(crate) fn check_expected(
    stream: &str,
    expected: ExpectedVersion,
    current: Option<u64>,
) -> Result<(), StoreError> {
    let ok = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => current.is_none(),
        ExpectedVersion::Exact(v) => current == Some(v),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::WrongExpectedVersion {
            stream: stream.to_string(),
            expected,
            actual: current,
        })
    }
}

/// Turns `new` into the stored envelope at `position`/`version` and seals it after `prev_hash`.
pub(crate) fn record(
    stream: &str,
    new: NewEvent,
    position: u64,
    version: u64,
    recorded_at: DateTime<Utc>,
    prev_hash: &str,
) -> RecordedEvent {
    let mut event = RecordedEvent {
        global_position: position,
        stream_id: stream.to_string(),
        stream_version: version,
        event_id: new.event_id,
        event_type: new.event_type,
        schema_version: new.schema_version,
        recorded_at,
        tenant: new.tenant,
        actor: new.actor,
        correlation_id: new.correlation_id,
        causation_id: new.causation_id,
        payload: new.payload,
        prev_hash: String::new(),
        hash: String::new(),
    };
    chain::seal(&mut event, prev_hash);
    event
}

/// Where a stream stands: its last version and that event's hash (the next `prev_hash`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamHead {
    pub version: u64,
    pub hash: String,
}

/// Seals `events` as the continuation of a stream whose head is `head`, from global
/// position `first_position`. Returns the stored envelopes and the stream's new head.
pub(crate) fn seal_append(
    stream: &str,
    head: Option<&StreamHead>,
    events: Vec<NewEvent>,
    first_position: u64,
    recorded_at: DateTime<Utc>,
) -> (Vec<RecordedEvent>, StreamHead) {
    let mut version = head.map_or(0, |h| h.version + 1);
    let mut prev = head.map_or_else(|| chain::GENESIS.to_string(), |h| h.hash.clone());
    let mut out = Vec::with_capacity(events.len());
    for (position, new) in (first_position..).zip(events) {
        let event = record(stream, new, position, version, recorded_at, &prev);
        prev.clone_from(&event.hash);
        out.push(event);
        version += 1;
    }
    let last_version = version.saturating_sub(1);
    (
        out,
        StreamHead {
            version: last_version,
            hash: prev,
        },
    )
}
