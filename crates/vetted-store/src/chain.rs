//! The per-stream hash chain: `hash = SHA-256(prev_hash || canonical bytes of this event)`.
//!
//! The canonical bytes are a JSON object with keys sorted at every depth and no whitespace,
//! holding every envelope field except `globalPosition` (assigned by the log, and by JetStream
//! only after the publish) and the two hashes. `recordedAt` is RFC 3339 with microseconds, so
//! stores must truncate timestamps to microseconds before hashing ([`truncate_to_micros`]).
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::RecordedEvent;

/// The `prev_hash` of a stream's first event: 32 zero bytes, hex.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Drops sub-microsecond precision so a timestamp survives a text round trip unchanged.
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let micros = t.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(t)
}

/// The canonical bytes of `event` that the chain hashes.
pub fn canonical_bytes(event: &RecordedEvent) -> Vec<u8> {
    let mut doc = serde_json::Map::new();
    doc.insert(
        "actor".into(),
        serde_json::to_value(&event.actor).unwrap_or(Value::Null),
    );
    doc.insert(
        "causationId".into(),
        event
            .causation_id
            .map(|c| Value::String(c.to_string()))
            .unwrap_or(Value::Null),
    );
    doc.insert(
        "correlationId".into(),
        Value::String(event.correlation_id.to_string()),
    );
    doc.insert("eventId".into(), Value::String(event.event_id.to_string()));
    doc.insert("eventType".into(), Value::String(event.event_type.clone()));
    doc.insert("payload".into(), event.payload.clone());
    doc.insert(
        "recordedAt".into(),
        Value::String(
            event
                .recorded_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        ),
    );
    doc.insert("schemaVersion".into(), Value::from(event.schema_version));
    doc.insert("streamId".into(), Value::String(event.stream_id.clone()));
    doc.insert("streamVersion".into(), Value::from(event.stream_version));
    doc.insert("tenant".into(), Value::String(event.tenant.clone()));
    let mut out = Vec::with_capacity(256);
    write_canonical(&Value::Object(doc), &mut out);
    out
}

/// `SHA-256(prev_hash || canonical_bytes(event))` as lowercase hex. `prev_hash` is hex.
pub fn compute_hash(prev_hash: &str, event: &RecordedEvent) -> String {
    let mut h = Sha256::new();
    match hex::decode(prev_hash) {
        Ok(bytes) => h.update(bytes),
        // A damaged prev_hash still hashes deterministically, so verification reports it.
        Err(_) => h.update(prev_hash.as_bytes()),
    }
    h.update(canonical_bytes(event));
    hex::encode(h.finalize())
}

/// Fills `event.prev_hash` and `event.hash` given the previous event's hash.
pub fn seal(event: &mut RecordedEvent, prev_hash: &str) {
    event.prev_hash = prev_hash.to_string();
    event.hash = compute_hash(prev_hash, event);
}

/// Writes `v` as JSON with object keys sorted at every depth (independent of whether
/// serde_json's `preserve_order` feature is on somewhere in the build).
fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String((*k).clone()).to_string().as_bytes());
                out.push(b':');
                write_canonical(&map[k.as_str()], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Actor, RecordedEvent};
    use uuid::Uuid;

    fn event(payload: Value) -> RecordedEvent {
        RecordedEvent {
            global_position: 7,
            stream_id: "applicant-1".into(),
            stream_version: 0,
            event_id: Uuid::nil(),
            event_type: "ApplicantCreated".into(),
            schema_version: 1,
            recorded_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            tenant: "app".into(),
            actor: Actor::system(),
            correlation_id: Uuid::nil(),
            causation_id: None,
            payload,
            prev_hash: GENESIS.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn key_order_does_not_change_the_hash() {
        let a = event(serde_json::json!({"b": 1, "a": {"y": 2, "x": [3, {"k": 1, "j": 2}]}}));
        let b =
            event(serde_json::from_str(r#"{"a":{"x":[3,{"j":2,"k":1}],"y":2},"b":1}"#).unwrap());
        assert_eq!(compute_hash(GENESIS, &a), compute_hash(GENESIS, &b));
    }

    #[test]
    fn global_position_is_not_hashed_but_every_other_field_is() {
        let a = event(serde_json::json!({"n": 1}));
        let mut moved = a.clone();
        moved.global_position = 99;
        assert_eq!(compute_hash(GENESIS, &a), compute_hash(GENESIS, &moved));
        let mut edited = a.clone();
        edited.payload = serde_json::json!({"n": 2});
        assert_ne!(compute_hash(GENESIS, &a), compute_hash(GENESIS, &edited));
        let mut retyped = a.clone();
        retyped.stream_version = 1;
        assert_ne!(compute_hash(GENESIS, &a), compute_hash(GENESIS, &retyped));
    }

    #[test]
    fn the_previous_hash_is_part_of_the_hash() {
        let a = event(serde_json::json!({}));
        let other_prev = "11".repeat(32);
        assert_ne!(compute_hash(GENESIS, &a), compute_hash(&other_prev, &a));
    }

    #[test]
    fn canonical_bytes_are_stable() {
        let a = event(serde_json::json!({"z": "é", "a": null}));
        let text = String::from_utf8(canonical_bytes(&a)).unwrap();
        assert!(
            text.starts_with(r#"{"actor":{"kind":"system"},"causationId":null,"#),
            "{text}"
        );
        assert!(text.contains(r#""payload":{"a":null,"z":"é"}"#), "{text}");
        assert!(
            text.contains(r#""recordedAt":"2023-11-14T22:13:20.123456Z""#),
            "{text}"
        );
    }
}
