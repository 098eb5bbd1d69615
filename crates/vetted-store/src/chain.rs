//! The per-stream hash chain: `hash = SHA-256(prev_hash || canonical bytes of this event)`.
//!
//! The canonical bytes are a JSON object with keys sorted at every depth and no whitespace,
//! holding every envelope field except `globalPosition` (assigned by the log, and by JetStream
//! only after the publish) and the two hashes. `recordedAt` is RFC 3339 with microseconds, so
//! stores must truncate timestamps to microseconds before hashing ([`truncate_to_micros`]).
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{Actor, RecordedEvent};

/// The `prev_hash` of a stream's first event: 32 zero bytes, hex.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Drops sub-microsecond precision so a timestamp survives a text round trip unchanged.
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let micros = t.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(t)
}

/// The canonical bytes of `event` that the chain hashes.
///
/// Written straight into bytes (the writer hashes every event it appends, so this is on the
/// append path): the envelope's keys in sorted order, the payload through [`write_canonical`].
pub fn canonical_bytes(event: &RecordedEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(384);
    out.extend_from_slice(b"{\"actor\":");
    write_actor(&event.actor, &mut out);
    out.extend_from_slice(b",\"causationId\":");
    match event.causation_id {
        Some(id) => write_uuid(id, &mut out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"correlationId\":");
    write_uuid(event.correlation_id, &mut out);
    out.extend_from_slice(b",\"eventId\":");
    write_uuid(event.event_id, &mut out);
    out.extend_from_slice(b",\"eventType\":");
    write_str(&event.event_type, &mut out);
    out.extend_from_slice(b",\"payload\":");
    write_canonical(&event.payload, &mut out);
    out.extend_from_slice(b",\"recordedAt\":");
    write_str(
        &event
            .recorded_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
        &mut out,
    );
    out.extend_from_slice(b",\"schemaVersion\":");
    out.extend_from_slice(event.schema_version.to_string().as_bytes());
    out.extend_from_slice(b",\"streamId\":");
    write_str(&event.stream_id, &mut out);
    out.extend_from_slice(b",\"streamVersion\":");
    out.extend_from_slice(event.stream_version.to_string().as_bytes());
    out.extend_from_slice(b",\"tenant\":");
    write_str(&event.tenant, &mut out);
    out.push(b'}');
    out
}

/// The actor as its serde JSON with keys sorted (absent optional fields are skipped, as serde
/// skips them).
fn write_actor(actor: &Actor, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut first = true;
    let mut key = |name: &str, out: &mut Vec<u8>| {
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(name, out);
        out.push(b':');
    };
    for (name, value) in [
        ("browser", &actor.browser),
        ("id", &actor.id),
        ("ip", &actor.ip),
    ] {
        if let Some(value) = value {
            key(name, out);
            write_str(value, out);
        }
    }
    key("kind", out);
    write_json(&actor.kind, out);
    for (name, value) in [("os", &actor.os), ("userAgent", &actor.user_agent)] {
        if let Some(value) = value {
            key(name, out);
            write_str(value, out);
        }
    }
    out.push(b'}');
}

fn write_uuid(id: Uuid, out: &mut Vec<u8>) {
    let mut buf = Uuid::encode_buffer();
    write_str(id.hyphenated().encode_lower(&mut buf), out);
}

/// A JSON string, escaped exactly as `serde_json` escapes it.
fn write_str(s: &str, out: &mut Vec<u8>) {
    write_json(s, out);
}

/// Compact `serde_json` output of `value` appended to `out`.
fn write_json<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Writing strings, numbers, enums and JSON values into a Vec cannot fail (no I/O, no
    // non-string map keys), so there is no error to pass on.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// `SHA-256(prev_hash || canonical_bytes(event))` as lowercase hex. `prev_hash` is hex.
pub fn compute_hash(prev_hash: &str, event: &RecordedEvent) -> String {
    let mut h = Sha256::new();
    let mut prev = [0u8; 32];
    if hex::decode_to_slice(prev_hash, &mut prev).is_ok() {
        h.update(prev);
    } else {
        match hex::decode(prev_hash) {
            Ok(bytes) => h.update(bytes),
            // A damaged prev_hash still hashes deterministically, so verification reports it.
            Err(_) => h.update(prev_hash.as_bytes()),
        }
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
                write_str(k, out);
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
        other => write_json(other, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Actor, ActorKind, RecordedEvent};

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

    /// The canonical form as first written: the envelope built as a JSON object, then written
    /// with sorted keys. The direct writer must produce the same bytes, or old chains break.
    fn canonical_via_value(event: &RecordedEvent) -> Vec<u8> {
        let mut doc = serde_json::Map::new();
        doc.insert("actor".into(), serde_json::to_value(&event.actor).unwrap());
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
        let mut out = Vec::new();
        write_canonical(&Value::Object(doc), &mut out);
        out
    }

    #[test]
    fn hashes_of_events_sealed_before_the_direct_writer_still_verify() {
        let plain = event(serde_json::json!({"step": "face_match", "score": 92.5}));
        let mut reviewer = event(serde_json::json!({
            "note": "quote \" backslash \\ tab \t nul \u{0} é 😀",
            "nested": {"z": [1, -2, 3.25e10, true, null, {"b": "x", "a": []}], "a": {}},
            "big": u64::MAX,
        }));
        reviewer.actor = Actor {
            kind: ActorKind::Reviewer,
            id: Some("rev-\"7\"".into()),
            ip: Some("10.0.0.1".into()),
            user_agent: Some("Mozilla/5.0 (X11)".into()),
            os: Some("Linux".into()),
            browser: Some("Firefox".into()),
        };
        reviewer.causation_id = Some(Uuid::now_v7());
        reviewer.correlation_id = Uuid::now_v7();
        reviewer.event_id = Uuid::now_v7();
        reviewer.stream_id = "applicant-\u{1f}\u{7f}/ü".into();
        reviewer.tenant = "app\nline".into();
        reviewer.schema_version = u32::MAX;
        reviewer.stream_version = u64::MAX;
        let mut api = plain.clone();
        api.actor = Actor {
            kind: ActorKind::Api,
            id: Some("key-1".into()),
            ip: None,
            user_agent: None,
            os: Some("iOS".into()),
            browser: None,
        };
        api.payload = Value::String("just text".into());
        for e in [plain, reviewer, api] {
            assert_eq!(
                String::from_utf8(canonical_bytes(&e)).unwrap(),
                String::from_utf8(canonical_via_value(&e)).unwrap()
            );
        }
    }
}
