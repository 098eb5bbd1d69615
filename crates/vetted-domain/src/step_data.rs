//! A step result's provider data (`{"score": 92.5, "country": "DE"}`): any JSON value, held as
//! one piece of canonical JSON text.
//!
//! The engine never looks inside provider data but for a field or two (the document's
//! `country`, the face match's `score`). It records it, folds it into the applicant's steps,
//! writes it to read models and serves it back. A `serde_json::Value` tree does all of that
//! through one allocation per key, string and container (each object a B-tree of ~640-byte
//! nodes); [`StepData`] is one allocation of text that is copied, written and served as is.
//!
//! **Canonical** text is what `serde_json` writes for the value parsed into a `Value`: no
//! whitespace, object keys once each and in byte order, numbers and string escapes as
//! `serde_json` prints them. Two step data are equal exactly when their `Value`s are, and the
//! same value always gives the same bytes in a read model, a digest or a replay. Text already
//! canonical (everything this engine writes) is checked in one pass and kept; anything else
//! goes through a `Value` once, on the way in.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// Nesting step data may have: what parsing a stored payload (one level above its data)
/// into a `serde_json::Value` accepts.
pub const MAX_STEP_DATA_DEPTH: usize = 126;

/// A step result's provider data: any JSON value, as canonical JSON text (see the module docs).
/// `null` (the default) holds nothing.
#[derive(Clone, Default)]
pub struct StepData(Option<Box<RawValue>>);

/// Why text or a value cannot be step data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepDataError {
    #[error("step data is not JSON: {0}")]
    NotJson(String),
    #[error("step data is nested deeper than {MAX_STEP_DATA_DEPTH} levels")]
    TooDeep,
}

impl StepData {
    /// `null`: no data.
    pub const fn null() -> Self {
        StepData(None)
    }

    pub fn is_null(&self) -> bool {
        self.0.is_none()
    }

    /// The data of `value`.
    pub fn from_value(value: &Value) -> Result<Self, StepDataError> {
        if value.is_null() {
            return Ok(StepData::null());
        }
        let text = value.to_string();
        if depth_exceeds(text.as_bytes(), MAX_STEP_DATA_DEPTH) {
            return Err(StepDataError::TooDeep);
        }
        RawValue::from_string(text)
            .map(|raw| StepData(Some(raw)))
            .map_err(|e| StepDataError::NotJson(e.to_string()))
    }

    /// The data in JSON `text` (any JSON: surrounding whitespace, key order and number
    /// spelling do not matter).
    pub fn from_json(text: &str) -> Result<Self, StepDataError> {
        let raw = serde_json::from_str::<Box<RawValue>>(text)
            .map_err(|e| StepDataError::NotJson(e.to_string()))?;
        Self::from_raw(raw)
    }

    /// The data in `raw`, valid JSON syntax (checked no further by serde_json's scan: nesting,
    /// lone surrogates and numbers out of range are checked here).
    fn from_raw(raw: Box<RawValue>) -> Result<Self, StepDataError> {
        match check(raw.get().as_bytes()) {
            Check::Canonical if raw.get() == "null" => Ok(StepData::null()),
            Check::Canonical => Ok(StepData(Some(raw))),
            Check::TooDeep => Err(StepDataError::TooDeep),
            Check::Rewrite => match serde_json::from_str::<Value>(raw.get()) {
                Ok(value) => Self::from_value(&value),
                Err(e) => Err(StepDataError::NotJson(e.to_string())),
            },
        }
    }

    /// The canonical JSON text (`null` for no data).
    pub fn as_json(&self) -> &str {
        self.0.as_deref().map_or("null", RawValue::get)
    }

    /// The data as a `serde_json::Value`.
    pub fn to_value(&self) -> Value {
        // Canonical text always parses (it was checked on the way in).
        serde_json::from_str(self.as_json()).unwrap_or(Value::Null)
    }

    /// The text of the top-level object's field `key`, when the data is an object with a
    /// string there (`data.get(key)?.as_str()` on the `Value`).
    pub fn str_field(&self, key: &str) -> Option<Cow<'_, str>> {
        let raw = self.field(key)?;
        let mut text = serde_json::Deserializer::from_str(raw.get());
        text.deserialize_str(StrOf).ok()
    }

    /// The number in the top-level object's field `key`, when the data is an object with a
    /// number there (`data.get(key)?.as_f64()` on the `Value`).
    pub fn f64_field(&self, key: &str) -> Option<f64> {
        let raw = self.field(key)?;
        if !raw
            .get()
            .starts_with(|c: char| c == '-' || c.is_ascii_digit())
        {
            return None;
        }
        serde_json::from_str::<f64>(raw.get()).ok()
    }

    /// The raw value of the top-level object's field `key`.
    fn field(&self, key: &str) -> Option<&RawValue> {
        let text = self.0.as_deref()?.get();
        if !text.starts_with('{') {
            return None;
        }
        serde_json::Deserializer::from_str(text)
            .deserialize_map(FieldOf(key))
            .ok()
            .flatten()
    }
}

impl PartialEq for StepData {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

impl Eq for StepData {}

impl fmt::Debug for StepData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_json())
    }
}

impl fmt::Display for StepData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_json())
    }
}

impl TryFrom<Value> for StepData {
    type Error = StepDataError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Self::from_value(&value)
    }
}

impl Serialize for StepData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            None => serializer.serialize_unit(),
            Some(raw) => raw.serialize(serializer),
        }
    }
}

/// Reads any JSON value, from serde_json's text or `Value` deserializers.
impl<'de> Deserialize<'de> for StepData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Self::from_raw(raw).map_err(de::Error::custom)
    }
}

/// Finds one key's raw value in an object (the last one, as a `Value` keeps).
struct FieldOf<'k>(&'k str);

impl<'de> Visitor<'de> for FieldOf<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_key) = map.next_key_seed(KeyIs(self.0))? {
            if is_key {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Whether a key is the one looked for, without allocating it.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// A string, borrowed when its text has no escape.
struct StrOf;

impl<'de> Visitor<'de> for StrOf {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
}

/// What [`check`] found.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// Exactly what serde_json writes for the value.
    Canonical,
    /// Valid syntax, but not (or not surely) canonical: parse it into a `Value` and write it.
    Rewrite,
    /// Nested deeper than [`MAX_STEP_DATA_DEPTH`].
    TooDeep,
}

/// Whether `text` is canonical. It is valid JSON syntax (serde_json scanned it); what that
/// scan lets through and a `Value` refuses (lone surrogates only come as `\u` escapes, which
/// are `Rewrite` here; numbers out of range are `Rewrite`) is left to the `Value`. Depth is
/// checked to the end even once the text is known not to be canonical.
fn check(text: &[u8]) -> Check {
    // Per open container up to `TRACKED` deep: the last key's range when it is an object
    // (`usize::MAX` before its first key), or `None` for an array. Key order deeper down is
    // not followed: such text is rewritten (a `Value` checks it).
    const TRACKED: usize = 16;
    let mut open: [Option<(usize, usize)>; TRACKED] = [None; TRACKED];
    let mut depth = 0usize;
    let mut canonical = true;
    // In an object, the next string is a key.
    let mut key_next = false;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'{' | b'[' => {
                if depth == MAX_STEP_DATA_DEPTH {
                    return Check::TooDeep;
                }
                let object = text[i] == b'{';
                match open.get_mut(depth) {
                    Some(slot) => *slot = object.then_some((usize::MAX, usize::MAX)),
                    None => canonical = false,
                }
                depth += 1;
                key_next = object;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                key_next = false;
                i += 1;
            }
            b',' => {
                key_next = depth > 0 && open.get(depth - 1).is_some_and(Option::is_some);
                i += 1;
            }
            b':' => {
                key_next = false;
                i += 1;
            }
            b'"' => {
                let start = i + 1;
                let Some((end, escaped)) = string_end(text, start) else {
                    return Check::Rewrite;
                };
                if key_next {
                    // Keys are compared as written: one with an escape is rewritten.
                    let last = depth.checked_sub(1).and_then(|d| open.get_mut(d));
                    match last {
                        Some(Some(last)) if !escaped => {
                            if last.0 != usize::MAX && text[last.0..last.1] >= text[start..end] {
                                canonical = false;
                            }
                            *last = (start, end);
                        }
                        _ => canonical = false,
                    }
                    key_next = false;
                } else if escaped && !canonical_escapes(&text[start..end]) {
                    canonical = false;
                }
                i = end + 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < text.len()
                    && matches!(text[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                if !canonical_number(&text[start..i]) {
                    canonical = false;
                }
            }
            b't' | b'f' | b'n' => {
                while i < text.len() && text[i].is_ascii_lowercase() {
                    i += 1;
                }
            }
            // Whitespace, which serde_json does not write.
            _ => {
                canonical = false;
                i += 1;
            }
        }
    }
    if canonical {
        Check::Canonical
    } else {
        Check::Rewrite
    }
}

/// The index of the closing quote of the string whose text starts at `start`, and whether
/// the text has an escape.
fn string_end(text: &[u8], start: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    let mut i = start;
    while i < text.len() {
        match text[i] {
            b'"' => return Some((i, escaped)),
            b'\\' => {
                escaped = true;
                i += 2;
            }
            _ => i += 1,
        }
    }
    None
}

/// Whether every escape in a string's text is the one serde_json writes: `\"`, `\\`, the
/// short forms `\b \f \n \r \t`, and `\u00xx` (lower-case hex) for the other control
/// characters. Everything else is written unescaped.
fn canonical_escapes(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            i += 1;
            continue;
        }
        match s.get(i + 1) {
            Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
            Some(b'u') => {
                let Some(hex) = s.get(i + 2..i + 6) else {
                    return false;
                };
                let control = hex[0] == b'0' && hex[1] == b'0' && matches!(hex[2], b'0' | b'1');
                let lower = hex[3].is_ascii_digit() || (b'a'..=b'f').contains(&hex[3]);
                let short = matches!(&hex[2..], b"08" | b"09" | b"0a" | b"0c" | b"0d");
                if !control || !lower || short {
                    return false;
                }
                i += 6;
            }
            _ => return false,
        }
    }
    true
}

/// Whether a number token is spelled as serde_json writes the number it parses to.
fn canonical_number(token: &[u8]) -> bool {
    let integer = token.iter().all(|b| b.is_ascii_digit() || *b == b'-');
    if integer {
        // An integer within u64 (i64 when negative) is written back digit for digit (JSON has
        // no leading zeros); beyond, it parses to a float; `-0` parses to a float.
        let digits = token.len() - usize::from(token.first() == Some(&b'-'));
        if digits <= 18 {
            return token != b"-0";
        }
        let Ok(text) = std::str::from_utf8(token) else {
            return false;
        };
        return text.parse::<u64>().is_ok() || text.parse::<i64>().is_ok();
    }
    let Ok(text) = std::str::from_utf8(token) else {
        return false;
    };
    // Parsed as serde_json parses it (out of range is an error), written as it writes it.
    let Ok(number) = serde_json::from_str::<f64>(text) else {
        return false;
    };
    let mut buffer = [0u8; 32];
    let mut out: &mut [u8] = &mut buffer;
    if serde_json::to_writer(&mut out, &number).is_err() {
        return false;
    }
    let written = 32 - out.len();
    buffer[..written] == *token
}

/// Whether `text` (canonical JSON, whose strings may hold brackets) nests deeper than `max`.
fn depth_exceeds(text: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'"' => match string_end(text, i + 1) {
                Some((end, _)) => i = end + 1,
                None => return false,
            },
            _ => i += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The `Value` way: what the data is, by definition.
    fn by_value(text: &str) -> Result<String, ()> {
        let value: Value = serde_json::from_str(text).map_err(|_| ())?;
        Ok(value.to_string())
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1000i32..1000, 0u32..4)
                .prop_map(|(m, e)| Value::from(f64::from(m) / 10f64.powi(e as i32))),
            "\\PC{0,8}|[a\"\\\\\u{0}-\u{1f}\u{7f}é/]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-c\"\\\\é]{0,3}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Spellings of the same value serde_json does not write: whitespace, escapes it does not
    /// use, another key order, exponents.
    fn respelled(value: &Value) -> String {
        match value {
            Value::Object(map) => {
                let fields: Vec<String> = map
                    .iter()
                    .rev()
                    .map(|(k, v)| format!(" {} : {} ", escape_all(k), respelled(v)))
                    .collect();
                format!("{{ {} }}", fields.join(","))
            }
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(respelled).collect();
                format!("[ {} ]", items.join(" , "))
            }
            Value::String(s) => escape_all(s),
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() => format!("{f:e}"),
                _ => n.to_string(),
            },
            other => other.to_string(),
        }
    }

    /// A string literal with every character as a `\u` escape (surrogate pairs above the BMP).
    fn escape_all(s: &str) -> String {
        let mut out = String::from("\"");
        for unit in s.encode_utf16() {
            out.push_str(&format!("\\u{unit:04X}"));
        }
        out.push('"');
        out
    }

    /// Whether some object key is written with an escape.
    fn has_escaped_key(value: &Value) -> bool {
        match value {
            Value::Object(map) => map.iter().any(|(k, v)| {
                k.contains(|c: char| c == '"' || c == '\\' || c < ' ') || has_escaped_key(v)
            }),
            Value::Array(items) => items.iter().any(has_escaped_key),
            _ => false,
        }
    }

    proptest! {
        /// Canonical text reads as itself, and is kept without a rewrite unless a key has an
        /// escape (keys are ordered as written, so those go through a `Value`).
        #[test]
        fn canonical_text_is_kept(value in json_value()) {
            let text = value.to_string();
            if !has_escaped_key(&value) {
                prop_assert_eq!(check(text.as_bytes()), Check::Canonical);
            }
            let data = StepData::from_json(&text).unwrap();
            prop_assert_eq!(data.as_json(), text.as_str());
            prop_assert_eq!(data.to_value(), value);
        }

        /// Any other spelling of a value reads as its canonical text.
        #[test]
        fn other_spellings_read_as_the_canonical_text(value in json_value()) {
            let text = respelled(&value);
            let data = StepData::from_json(&text).unwrap();
            prop_assert_eq!(data.as_json(), by_value(&text).unwrap());
        }

        /// Any float reads as the `Value` way reads it, however it is spelled, and a float's
        /// text reads back to the same float (serde_json's `float_roundtrip`: without it a
        /// stored score could read back one unit in the last place off).
        #[test]
        fn floats_read_as_the_value_way_reads_them(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            let data = StepData::from_value(&Value::from(f)).unwrap();
            prop_assert_eq!(StepData::from_json(data.as_json()).unwrap(), data.clone());
            prop_assert_eq!(data.f64_field("x"), None);
            let object = StepData::from_value(&serde_json::json!({ "x": f })).unwrap();
            prop_assert_eq!(object.f64_field("x"), Some(f));
            for text in [serde_json::to_string(&f).unwrap(), format!("{f:e}"), format!("{f}")] {
                let data = StepData::from_json(&text).unwrap();
                prop_assert_eq!(data.as_json(), by_value(&text).unwrap());
            }
        }

        /// Whatever the text, the answer is the `Value` way's: the same canonical text, or
        /// an error for what it refuses.
        #[test]
        fn any_text_reads_as_the_value_way_reads_it(text in "[\\[\\]{}\",:0-9.eE+\\-a-z\\\\ ]{0,24}") {
            let ours = StepData::from_json(&text).map(|d| d.as_json().to_string());
            match by_value(&text) {
                Ok(expected) => prop_assert_eq!(ours.unwrap(), expected),
                Err(()) => prop_assert!(ours.is_err()),
            }
        }

        /// Fields are read as `Value::get` reads them.
        #[test]
        fn fields_read_as_the_value_reads_them(value in json_value(), key in "[a-c\"\\\\é]{0,3}") {
            let data = StepData::from_value(&value).unwrap();
            let field = value.get(&key);
            let text = data.str_field(&key);
            prop_assert_eq!(text.as_deref(), field.and_then(Value::as_str));
            prop_assert_eq!(data.f64_field(&key), field.and_then(Value::as_f64));
        }
    }

    #[test]
    fn what_a_value_refuses_is_refused() {
        for text in [
            "\"\\ud800\"",
            "[\"\\udc00x\"]",
            "1e400",
            "-1e999",
            "{\"a\":1,}",
            "",
            "nul",
        ] {
            assert!(by_value(text).is_err(), "{text}");
            assert!(StepData::from_json(text).is_err(), "{text}");
        }
    }

    #[test]
    fn duplicate_keys_keep_the_last_as_a_value_does() {
        let data = StepData::from_json(r#"{"b":1,"a":2,"b":3}"#).unwrap();
        assert_eq!(data.as_json(), r#"{"a":2,"b":3}"#);
        assert_eq!(data.f64_field("b"), Some(3.0));
    }

    #[test]
    fn numbers_read_as_serde_json_writes_them() {
        for (text, canonical) in [
            ("100", "100"),
            ("-0", "-0.0"),
            ("1e2", "100.0"),
            ("0.97", "0.97"),
            ("1.50", "1.5"),
            ("123456789012345678901", "1.2345678901234568e+20"),
            ("-9223372036854775808", "-9223372036854775808"),
            ("18446744073709551615", "18446744073709551615"),
        ] {
            assert_eq!(by_value(text).unwrap(), canonical, "{text}");
            assert_eq!(
                StepData::from_json(text).unwrap().as_json(),
                canonical,
                "{text}"
            );
        }
    }

    #[test]
    fn nesting_is_limited_as_a_stored_payload_limits_it() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let deepest = nested(MAX_STEP_DATA_DEPTH);
        assert_eq!(StepData::from_json(&deepest).unwrap().as_json(), deepest);
        // A payload holding it (one level more) still parses into a `Value`...
        assert!(serde_json::from_str::<Value>(&format!("{{\"data\":{deepest}}}")).is_ok());
        let deeper = nested(MAX_STEP_DATA_DEPTH + 1);
        assert_eq!(StepData::from_json(&deeper), Err(StepDataError::TooDeep));
        // ...and one holding deeper data does not.
        assert!(serde_json::from_str::<Value>(&format!("{{\"data\":{deeper}}}")).is_err());
        let value: Value = serde_json::from_str(&deeper).unwrap();
        assert_eq!(StepData::from_value(&value), Err(StepDataError::TooDeep));
        // Brackets inside strings are not nesting.
        let text = format!("\"{}\"", "[".repeat(300));
        assert_eq!(StepData::from_json(&text).unwrap().as_json(), text);
    }

    #[test]
    fn null_holds_nothing_and_is_the_default() {
        assert!(StepData::from_json(" null ").unwrap().is_null());
        assert!(StepData::from_value(&Value::Null).unwrap().is_null());
        assert_eq!(StepData::default(), StepData::null());
        assert_eq!(StepData::null().as_json(), "null");
        assert_eq!(serde_json::to_string(&StepData::null()).unwrap(), "null");
    }

    #[test]
    fn serializes_as_its_json_into_text_and_values() {
        let data = StepData::from_json(r#"{ "score": 92.5, "country": "DE" }"#).unwrap();
        assert_eq!(data.as_json(), r#"{"country":"DE","score":92.5}"#);
        let wrapped = json!({"data": data});
        assert_eq!(wrapped, json!({"data": {"country": "DE", "score": 92.5}}));
        assert_eq!(
            serde_json::to_string(&wrapped).unwrap(),
            r#"{"data":{"country":"DE","score":92.5}}"#
        );
        let back: StepData = serde_json::from_value(wrapped["data"].clone()).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn fields_of_what_is_not_an_object_are_absent() {
        for text in ["null", "[1]", "\"score\"", "3"] {
            let data = StepData::from_json(text).unwrap();
            assert_eq!(data.str_field("score"), None);
            assert_eq!(data.f64_field("score"), None);
        }
        let data = StepData::from_json(r#"{"country":"D\u00c9","score":"92"}"#).unwrap();
        assert_eq!(data.str_field("country").as_deref(), Some("DÉ"));
        assert_eq!(data.f64_field("score"), None);
    }
}
