//! Subject and header names on the wire (see `docs/nats.md`).
//!
//! Subject tokens cannot hold `.`, `*`, `>` or whitespace, so such characters in an app key,
//! stream id or event type are escaped as `%XX` (and `%` itself as `%25`); ordinary UUIDs and
//! event type names pass through unchanged.

/// Default name of the fan-out stream other services consume.
pub const EVENTS_STREAM: &str = "VETTED_EVENTS";
/// Subject prefix of the fan-out stream.
pub const EVENTS_PREFIX: &str = "vetted.events";
/// Default name of the stream that holds the log when JetStream is the event store.
pub const LOG_STREAM: &str = "VETTED_LOG";
/// Subject prefix of the log stream: one subject per applicant stream.
pub const LOG_PREFIX: &str = "vetted.log";
/// Stream id prefix of applicant streams; only these are fanned out.
pub const APPLICANT_STREAM_PREFIX: &str = "applicant-";

/// Global position of the event in the Vetted log.
pub const HEADER_GLOBAL_POSITION: &str = "Vetted-Global-Position";
/// Stream version (0-based) of the event in its applicant stream.
pub const HEADER_STREAM_VERSION: &str = "Vetted-Stream-Version";
/// Schema version of the payload.
pub const HEADER_SCHEMA_VERSION: &str = "Vetted-Schema-Version";
/// Hash-chain hash of the event (lowercase hex).
pub const HEADER_HASH: &str = "Vetted-Hash";
/// Number of events in the append this event belongs to (log stream only).
pub const HEADER_BATCH_SIZE: &str = "Vetted-Batch-Size";
/// 0-based index of the event within its append (log stream only).
pub const HEADER_BATCH_INDEX: &str = "Vetted-Batch-Index";

/// Escapes `raw` so it is exactly one subject token.
pub fn token(raw: &str) -> String {
    if raw.is_empty() {
        return "%00".into();
    }
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '.' | '*' | '>' | '%' => out.push_str(&format!("%{:02X}", c as u32)),
            c if c.is_whitespace() || c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The applicant id of an applicant stream (`applicant-<id>` → `<id>`), or `None` for other streams.
pub fn applicant_id(stream_id: &str) -> Option<&str> {
    stream_id
        .strip_prefix(APPLICANT_STREAM_PREFIX)
        .filter(|id| !id.is_empty())
}

/// `vetted.events.<appKey>.<applicantId>.<eventType>` for an event of an applicant stream.
pub fn event_subject(prefix: &str, event: &vetted_store::RecordedEvent) -> Option<String> {
    let applicant = applicant_id(&event.stream_id)?;
    Some(format!(
        "{prefix}.{}.{}.{}",
        token(&event.tenant),
        token(applicant),
        token(&event.event_type)
    ))
}

/// `vetted.log.<stream id>`: the subject holding one stream of the log.
pub fn log_subject(prefix: &str, stream_id: &str) -> String {
    format!("{prefix}.{}", token(stream_id))
}

/// Filter for every event of one application (tenant).
pub fn tenant_filter(app_key: &str) -> String {
    format!("{EVENTS_PREFIX}.{}.>", token(app_key))
}

/// Filter for every event of one applicant.
pub fn applicant_filter(app_key: &str, applicant_id: &str) -> String {
    format!(
        "{EVENTS_PREFIX}.{}.{}.*",
        token(app_key),
        token(applicant_id)
    )
}

/// Filter for one event type across every application and applicant.
pub fn event_type_filter(event_type: &str) -> String {
    format!("{EVENTS_PREFIX}.*.*.{}", token(event_type))
}

/// Filter for everything on the fan-out stream.
pub fn all_events_filter() -> String {
    format!("{EVENTS_PREFIX}.>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_and_event_types_pass_through_unescaped() {
        assert_eq!(
            token("0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b"),
            "0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b"
        );
        assert_eq!(token("StepPassed"), "StepPassed");
    }

    #[test]
    fn dots_wildcards_and_spaces_cannot_split_or_widen_a_subject() {
        assert_eq!(token("a.b*c>d e%"), "a%2Eb%2Ac%3Ed%20e%25");
        assert_eq!(token(""), "%00");
    }

    #[test]
    fn only_applicant_streams_have_an_applicant_id() {
        assert_eq!(applicant_id("applicant-42"), Some("42"));
        assert_eq!(applicant_id("flow-kyc"), None);
        assert_eq!(applicant_id("applicant-"), None);
    }

    #[test]
    fn log_subjects_are_one_token_per_stream() {
        assert_eq!(
            log_subject(LOG_PREFIX, "applicant-1"),
            "vetted.log.applicant-1"
        );
        assert_eq!(
            log_subject(LOG_PREFIX, "odd.stream"),
            "vetted.log.odd%2Estream"
        );
    }
}
