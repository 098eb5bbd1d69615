//! Reading the fields projections need from a stored envelope's JSON, for a rebuild.
//!
//! Every store writes an event as `serde_json` writes a `RecordedEvent`: fields in declaration
//! order, no whitespace, absent options left out, the two hashes last. [`read`] first tries
//! that exact shape with a plain scan ([`canonical`]): it finds the payload's extent from the
//! fixed-size hashes at the end instead of tokenizing it, and takes every other field as it
//! comes. Parsing the envelope with `serde_json` was most of a rebuild's cost per event (it
//! tokenizes every byte, the payload's twice); the scan reads each byte once. Anything else —
//! an escape in a string, whitespace, another field order, a null, an unknown actor kind —
//! makes the scan decline, and `serde_json` reads the envelope as before ([`general`]), so
//! both read every envelope the same way; tests check it on generated and mangled envelopes.
use std::borrow::Cow;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use vetted_domain::written;
use vetted_store::ActorKind;

/// The fields of a stored envelope a projection reads, strings borrowed where possible.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lean<'a> {
    pub global_position: u64,
    pub stream_id: Cow<'a, str>,
    pub stream_version: u64,
    pub event_id: Uuid,
    pub event_type: Cow<'a, str>,
    pub schema_version: u32,
    pub recorded_at: DateTime<Utc>,
    pub tenant: Cow<'a, str>,
    pub actor: LeanActor<'a>,
    /// The payload's JSON text.
    pub payload: &'a str,
}

/// The actor of a stored envelope.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LeanActor<'a> {
    pub kind: ActorKind,
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub ip: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub user_agent: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub os: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub browser: Option<Cow<'a, str>>,
}

/// Reads a stored envelope: the exact shape stores write by a scan, anything else by
/// `serde_json`. `decodes` tells whether the scan's payload is usable: when it is not (the
/// scan cut a payload `serde_json` would have ended elsewhere), the envelope is read again the
/// general way, which gives the payload's true extent or the canonical error.
pub(crate) fn read<'a, T>(
    text: &'a str,
    decodes: impl Fn(&Lean<'a>) -> Option<T>,
) -> Result<(Lean<'a>, Option<T>), serde_json::Error> {
    if let Some(lean) = canonical(text) {
        if let Some(decoded) = decodes(&lean) {
            return Ok((lean, Some(decoded)));
        }
    }
    general(text).map(|lean| (lean, None))
}

/// Reads a stored envelope with `serde_json`.
pub(crate) fn general(text: &str) -> Result<Lean<'_>, serde_json::Error> {
    let e: SerdeLean<'_> = serde_json::from_str(text)?;
    Ok(Lean {
        global_position: e.global_position,
        stream_id: e.stream_id,
        stream_version: e.stream_version,
        event_id: e.event_id,
        event_type: e.event_type,
        schema_version: e.schema_version,
        recorded_at: e.recorded_at.0,
        tenant: e.tenant,
        actor: e.actor,
        payload: e.payload.get(),
    })
}

/// The envelope as `serde_json` reads it (unknown fields — the correlation ids and hashes —
/// are read past).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SerdeLean<'a> {
    global_position: u64,
    #[serde(borrow)]
    stream_id: Cow<'a, str>,
    stream_version: u64,
    event_id: Uuid,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    schema_version: u32,
    recorded_at: RecordedAt,
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    #[serde(borrow)]
    actor: LeanActor<'a>,
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
}

/// A recorded-at time. Stores write RFC 3339, which `parse_from_rfc3339` reads in a sixth of
/// the time chrono's general `FromStr` (what `DateTime`'s serde form uses) takes; anything
/// else falls back to that general parser, so both read exactly the same texts.
struct RecordedAt(DateTime<Utc>);

impl<'de> serde::Deserialize<'de> for RecordedAt {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <Cow<'de, str>>::deserialize(deserializer)?;
        parse_time(&text)
            .map(RecordedAt)
            .ok_or_else(|| serde::de::Error::custom(format!("{text} is not a time")))
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Some(t) = utc_time(text.as_bytes()) {
        return Some(t);
    }
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => text.parse::<DateTime<Utc>>().ok(),
    }
}

/// A time in the one shape stores write (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`, what chrono
/// writes for a UTC time), read digit by digit; `None` for anything else (a leap second, an
/// offset), which chrono's parser reads.
fn utc_time(b: &[u8]) -> Option<DateTime<Utc>> {
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if b.len() < 20 || !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':'))
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let nanos = match b[19] {
        b'Z' if b.len() == 20 => 0,
        b'.' if b.len() >= 22 && b.len() <= 30 && b[b.len() - 1] == b'Z' => {
            let fraction = &b[20..b.len() - 1];
            let n = digits(20..b.len() - 1)?;
            n * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    if second > 59 {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    Some(
        date.and_hms_nano_opt(hour, minute, second, nanos)?
            .and_utc(),
    )
}

/// Bytes of one hash as stores write it: SHA-256 in lowercase hex.
const HASH_HEX: usize = 64;
/// What follows the payload: `,"prevHash":"<hex>","hash":"<hex>"}`.
const PREV_HASH: &str = ",\"prevHash\":\"";
const HASH: &str = "\",\"hash\":\"";
const SUFFIX: usize = PREV_HASH.len() + HASH_HEX + HASH.len() + HASH_HEX + 2;

/// Reads `text` if it has exactly the shape stores write; `None` otherwise.
pub(crate) fn canonical(text: &str) -> Option<Lean<'_>> {
    let mut s = Scan { text, at: 0 };
    let end = text.len().checked_sub(SUFFIX)?;
    let suffix = &text[end..];
    // The hashes are plain strings of their length (what they hold is not read here); the
    // payload is what comes before them.
    let plain = |s: &str| written::string_end(s.as_bytes()).is_none();
    let hashes_ok = suffix.starts_with(PREV_HASH)
        && plain(&suffix[PREV_HASH.len()..PREV_HASH.len() + HASH_HEX])
        && suffix[PREV_HASH.len() + HASH_HEX..].starts_with(HASH)
        && plain(&suffix[SUFFIX - 2 - HASH_HEX..SUFFIX - 2])
        && suffix.ends_with("\"}");
    if !hashes_ok {
        return None;
    }
    s.lit("{\"globalPosition\":")?;
    let global_position = s.uint()?;
    s.lit(",\"streamId\":")?;
    let stream_id = s.string()?;
    s.lit(",\"streamVersion\":")?;
    let stream_version = s.uint()?;
    s.lit(",\"eventId\":")?;
    let event_id = Uuid::parse_str(s.string()?).ok()?;
    s.lit(",\"eventType\":")?;
    let event_type = s.string()?;
    s.lit(",\"schemaVersion\":")?;
    let schema_version = u32::try_from(s.uint()?).ok()?;
    s.lit(",\"recordedAt\":")?;
    let recorded_at = parse_time(s.string()?)?;
    s.lit(",\"tenant\":")?;
    let tenant = s.string()?;
    s.lit(",\"actor\":{\"kind\":")?;
    let kind = match s.string()? {
        "system" => ActorKind::System,
        "applicant" => ActorKind::Applicant,
        "reviewer" => ActorKind::Reviewer,
        "api" => ActorKind::Api,
        "admin" => ActorKind::Admin,
        _ => return None,
    };
    let actor = LeanActor {
        kind,
        id: s.optional(",\"id\":")?,
        ip: s.optional(",\"ip\":")?,
        user_agent: s.optional(",\"userAgent\":")?,
        os: s.optional(",\"os\":")?,
        browser: s.optional(",\"browser\":")?,
    };
    s.lit("},\"correlationId\":")?;
    s.string()?;
    s.optional(",\"causationId\":")?;
    s.lit(",\"payload\":")?;
    let payload = text.get(s.at..end)?;
    if payload.is_empty() {
        return None;
    }
    Some(Lean {
        global_position,
        stream_id: Cow::Borrowed(stream_id),
        stream_version,
        event_id,
        event_type: Cow::Borrowed(event_type),
        schema_version,
        recorded_at,
        tenant: Cow::Borrowed(tenant),
        actor,
        payload,
    })
}

/// Whether `a` and `b` are equal, compared a word at a time: the keys compared here are short,
/// and a call to `memcmp` costs more than comparing them. The last word overlaps the one
/// before it rather than leaving a few bytes to compare one by one.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |c: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&c[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let half = |c: &[u8], at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&c[at..at + 4]);
        u32::from_le_bytes(w)
    };
    match n {
        0..4 => a == b,
        4..8 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => {
            (0..n / 8).all(|i| word(a, i * 8) == word(b, i * 8)) && word(a, n - 8) == word(b, n - 8)
        }
    }
}

/// A cursor over the envelope's text.
struct Scan<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scan<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.text.as_bytes()[self.at..]
    }

    /// Steps over `literal`.
    fn lit(&mut self, literal: &str) -> Option<()> {
        let literal = literal.as_bytes();
        let same = self
            .rest()
            .get(..literal.len())
            .is_some_and(|rest| same_bytes(rest, literal));
        same.then(|| self.at += literal.len())
    }

    /// A non-negative integer as JSON writes it (no sign, no leading zero, no fraction).
    fn uint(&mut self) -> Option<u64> {
        let mut rest = self.text.get(self.at..)?;
        let n = written::uint(&mut rest)?;
        // What may follow a number here is `,` or `}`: a fraction or exponent is not ours.
        if !matches!(rest.as_bytes().first(), Some(b',' | b'}')) {
            return None;
        }
        self.at = self.text.len() - rest.len();
        Some(n)
    }

    /// A string without escapes or control characters (anything else: `None`).
    fn string(&mut self) -> Option<&'a str> {
        // A control character must be escaped in JSON: serde refuses it raw, so does this.
        let mut rest = self.text.get(self.at..)?.strip_prefix('"')?;
        let s = written::plain_string(&mut rest)?;
        self.at = self.text.len() - rest.len();
        Some(s)
    }

    /// `key` and its string if the text goes on with `key` (`Some(None)` if it does not).
    fn optional(&mut self, key: &str) -> Option<Option<Cow<'a, str>>> {
        if self.lit(key).is_none() {
            return Some(None);
        }
        self.string().map(|s| Some(Cow::Borrowed(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;
    use proptest::prelude::*;
    use vetted_store::{Actor, RecordedEvent};

    fn events() -> Vec<RecordedEvent> {
        sample::recorded_lives(77, vetted_domain::AppKey(Uuid::from_u128(3)), 40, 2)
    }

    #[test]
    fn every_stored_envelope_reads_by_the_scan_as_serde_reads_it() {
        let mut events = events();
        // Follow-on events of a command name their cause.
        for (i, event) in events.iter_mut().enumerate().filter(|(i, _)| i % 3 == 0) {
            event.causation_id = Some(Uuid::from_u128(i as u128));
        }
        let mut causations = 0;
        for event in &events {
            let text = serde_json::to_string(event).unwrap();
            let scanned = canonical(&text).expect("the shape stores write");
            assert_eq!(scanned, general(&text).unwrap(), "{text}");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(scanned.payload).unwrap(),
                event.payload
            );
            causations += event.causation_id.is_some() as usize;
        }
        assert!(causations > 0 && causations < events.len());
    }

    proptest! {
        /// A time stores write reads as chrono reads it, whatever its fraction's length.
        #[test]
        fn a_written_time_reads_as_chrono_reads_it(
            secs in 0i64..4_102_444_800,
            nanos in 0u32..1_000_000_000,
            digits in prop_oneof![Just(0u32), Just(3), Just(6), Just(9), 1u32..10],
        ) {
            let nanos = nanos - nanos % 10u32.pow(9 - digits.min(9));
            let t = chrono::DateTime::from_timestamp(secs, nanos).unwrap();
            let text = match digits {
                0 => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                d => format!("{}.{:09}Z", t.format("%Y-%m-%dT%H:%M:%S"), nanos)[..20 + d as usize].to_string() + "Z",
            };
            let chrono = chrono::DateTime::parse_from_rfc3339(&text).unwrap().with_timezone(&Utc);
            prop_assert_eq!(utc_time(text.as_bytes()), Some(chrono), "{}", text);
            prop_assert_eq!(parse_time(&text), Some(chrono));
        }

        /// Mangled times never read as something chrono reads differently.
        #[test]
        fn a_mangled_time_reads_as_chrono_reads_it_or_not_at_all(text in "[0-9T:.Z+ -]{18,32}") {
            if let Some(fast) = utc_time(text.as_bytes()) {
                let chrono = chrono::DateTime::parse_from_rfc3339(&text).ok().map(|t| t.with_timezone(&Utc));
                prop_assert_eq!(Some(fast), chrono, "{}", text);
            }
        }

        /// The word-at-a-time compare says what `==` says, whatever the lengths.
        #[test]
        fn same_bytes_is_equality(
            a in proptest::collection::vec(0u8..2, 0..30),
            b in proptest::collection::vec(0u8..2, 0..30),
        ) {
            prop_assert_eq!(same_bytes(&a, &b), a == b);
            prop_assert!(same_bytes(&a, &a.clone()));
        }
    }

    #[test]
    fn the_scan_declines_whatever_is_not_the_written_shape() {
        let event = events().remove(5);
        let text = serde_json::to_string(&event).unwrap();
        let declined = [
            text.replacen("{\"globalPosition\"", "{ \"globalPosition\"", 1),
            text.replacen("\"streamVersion\":", "\"streamVersion\":0", 1),
            text.replacen(",\"tenant\":\"", ",\"tenant\":\"\\u0041", 1),
            text.replacen("\"kind\":\"", "\"kind\":\"robot-", 1),
            text.replacen("\"hash\":\"", "\"hash\":\"x", 1),
            format!("{text} "),
            text.replacen(",\"eventType\"", ",\"extra\":1,\"eventType\"", 1),
            text.replacen("\"schemaVersion\":1", "\"schemaVersion\":1.0", 1),
            text.replacen("\"actor\":{", "\"actor\":{\"id\":null,", 1),
        ];
        for mangled in declined {
            assert!(canonical(&mangled).is_none(), "{mangled}");
        }
    }

    fn actor_strategy() -> impl Strategy<Value = Actor> {
        let text = || proptest::option::of("\\PC{0,12}|[\"\\\\\u{1}é]{0,3}");
        (0..5usize, text(), text(), text(), text(), text()).prop_map(
            |(kind, id, ip, user_agent, os, browser)| Actor {
                kind: [
                    ActorKind::System,
                    ActorKind::Applicant,
                    ActorKind::Reviewer,
                    ActorKind::Api,
                    ActorKind::Admin,
                ][kind],
                id,
                ip,
                user_agent,
                os,
                browser,
            },
        )
    }

    proptest! {
        /// Whatever the strings hold, the scan reads what serde reads or declines.
        #[test]
        fn the_scan_agrees_with_serde_or_declines(
            actor in actor_strategy(),
            tenant in "\\PC{0,10}|[\"\\\\]{1,2}",
            stream in "\\PC{0,10}",
            position in 0u64..u64::MAX,
            version in 0u64..1000,
            causation in proptest::bool::ANY,
            cut in 0usize..40,
        ) {
            let mut event = events().remove(3);
            event.actor = actor;
            event.tenant = tenant;
            event.stream_id = format!("applicant-{stream}");
            event.global_position = position;
            event.stream_version = version;
            if !causation {
                event.causation_id = None;
            }
            let text = serde_json::to_string(&event).unwrap();
            let general = general(&text).unwrap();
            if let Some(scanned) = canonical(&text) {
                prop_assert_eq!(scanned, general);
            }
            // A cut envelope is never read by the scan as something serde would not read.
            let cut_text = &text[..text.len().saturating_sub(cut + 1)];
            if let Some(scanned) = canonical(cut_text) {
                prop_assert_eq!(Some(scanned), super::general(cut_text).ok());
            }
        }
    }
}

#[cfg(test)]
mod store_frames {
    use super::*;
    use crate::sample;
    use vetted_store::{EventBatch, EventStore, ExpectedVersion, SledStore};

    #[tokio::test]
    async fn the_embedded_log_writes_every_envelope_in_the_shape_the_scan_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut rng = sample::Rng::new(8);
        let app = vetted_domain::AppKey(Uuid::from_u128(4));
        for append in sample::population(9, app, 20, Utc::now(), 1) {
            let _ = &mut rng;
            store
                .append(&append.stream, ExpectedVersion::Any, append.events)
                .await
                .unwrap();
        }
        let EventBatch::Json(frames) = store.read_all_batch(1, 10_000).await.unwrap() else {
            panic!("the embedded log hands out its JSON");
        };
        assert!(frames.len() > 100);
        for (position, frame) in frames.iter() {
            let text = std::str::from_utf8(frame).unwrap();
            let scanned = canonical(text).unwrap_or_else(|| panic!("{position}: {text}"));
            assert_eq!(scanned, general(text).unwrap());
        }
    }
}
