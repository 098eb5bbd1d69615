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
//! canonical (everything this engine writes) is validated in one pass and kept; anything else
//! goes through a `Value` once, on the way in.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// Nesting step data may have: what parsing a stored payload (one level above its data)
/// into a `serde_json::Value` accepts.
pub const MAX_STEP_DATA_DEPTH: usize = 126;

/// A step result's provider data: any JSON value, as canonical JSON text (see the module docs).
/// `null` (the default) holds nothing.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StepData(Option<Box<str>>);

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
        Ok(StepData(Some(text.into_boxed_str())))
    }

    /// The data in JSON `text` (any JSON: surrounding whitespace, key order and number
    /// spelling do not matter).
    pub fn from_json(text: &str) -> Result<Self, StepDataError> {
        match Self::canonical(text) {
            Some(data) => Ok(data),
            None => Self::through_value(text),
        }
    }

    /// The data in `text` when it is exactly one JSON value in canonical form, validated in
    /// one pass; `None` for anything else (not JSON, not canonical, too deep), which
    /// [`StepData::from_json`] then reads through a `Value`.
    pub fn canonical(text: &str) -> Option<Self> {
        is_canonical(text).then(|| Self::kept(text))
    }

    /// Canonical `text`, kept as it is (`null` holds nothing).
    fn kept(text: impl AsRef<str> + Into<Box<str>>) -> Self {
        match text.as_ref() {
            "null" => StepData::null(),
            _ => StepData(Some(text.into())),
        }
    }

    /// The canonical JSON value `text` starts with, and its length: a JSON value ends where
    /// its text ends, so what follows it is left for the caller to read.
    pub fn canonical_prefix(text: &str) -> Option<(Self, usize)> {
        let end = value_end(text.as_bytes(), 0, 0)?;
        Some((Self::canonical(text.get(..end)?)?, end))
    }

    /// The data of JSON `text` parsed into a `Value`: the definition of what it is.
    fn through_value(text: &str) -> Result<Self, StepDataError> {
        match serde_json::from_str::<Value>(text) {
            Ok(value) => Self::from_value(&value),
            Err(e) => Err(StepDataError::NotJson(e.to_string())),
        }
    }

    /// The canonical JSON text (`null` for no data).
    pub fn as_json(&self) -> &str {
        self.0.as_deref().unwrap_or("null")
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
        let text = raw.strip_prefix('"')?.strip_suffix('"')?;
        if text.contains('\\') {
            serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(text))
        }
    }

    /// The number in the top-level object's field `key`, when the data is an object with a
    /// number there (`data.get(key)?.as_f64()` on the `Value`).
    pub fn f64_field(&self, key: &str) -> Option<f64> {
        let raw = self.field(key)?;
        if !raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            return None;
        }
        serde_json::from_str::<f64>(raw).ok()
    }

    /// The text of the top-level object's field `key` (canonical text has each key once).
    fn field(&self, key: &str) -> Option<&str> {
        let text = self.0.as_deref()?;
        let t = text.as_bytes();
        if t.first() != Some(&b'{') || t.get(1) == Some(&b'}') {
            return None;
        }
        let mut i = 1;
        loop {
            let key_end = string_end(t, i + 1)?;
            let value_start = key_end + 2;
            let value_stop = value_end(t, value_start, 1)?;
            if same_key(&t[i + 1..key_end], key) {
                return text.get(value_start..value_stop);
            }
            if t.get(value_stop) != Some(&b',') {
                return None;
            }
            i = value_stop + 1;
        }
    }
}

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

/// Writes the JSON value (as it is, into serde_json's text and `Value` serializers).
impl Serialize for StepData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_deref().map(serde_json::from_str::<&RawValue>) {
            Some(Ok(raw)) => raw.serialize(serializer),
            // Canonical text is always one JSON value.
            Some(Err(_)) | None => serializer.serialize_unit(),
        }
    }
}

/// Reads any JSON value, from serde_json's text or `Value` deserializers.
impl<'de> Deserialize<'de> for StepData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        // serde_json's scan of a raw value checks its syntax only: nesting, lone surrogates
        // and numbers out of range are for the validation or the `Value` to refuse.
        if is_canonical(raw.get()) {
            return Ok(Self::kept(Box::<str>::from(raw)));
        }
        Self::through_value(raw.get()).map_err(serde::de::Error::custom)
    }
}

/// Whether `text` is exactly one JSON value in canonical form, nested no deeper than
/// [`MAX_STEP_DATA_DEPTH`].
fn is_canonical(text: &str) -> bool {
    value_end(text.as_bytes(), 0, 0) == Some(text.len())
}

/// Whether a key's text as written (between its quotes) is `key`.
fn same_key(written: &[u8], key: &str) -> bool {
    if written.contains(&b'\\') {
        unescaped(written).is_some_and(|k| k == key)
    } else {
        written == key.as_bytes()
    }
}

/// The string whose text (between its quotes) is `written`.
fn unescaped(written: &[u8]) -> Option<String> {
    let mut quoted = Vec::with_capacity(written.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(written);
    quoted.push(b'"');
    serde_json::from_slice(&quoted).ok()
}

/// Where the canonical JSON value starting at `i` (inside `depth` open containers) ends;
/// `None` when the text there is not one, or nests deeper than [`MAX_STEP_DATA_DEPTH`].
///
/// Canonical is what serde_json writes: no whitespace; object keys strictly ascending (by
/// their text, as a `Value`'s map orders them); strings escaped as it escapes them; numbers
/// spelled as it spells the number they parse to.
fn value_end(t: &[u8], i: usize, depth: usize) -> Option<usize> {
    match *t.get(i)? {
        b'{' => {
            if depth == MAX_STEP_DATA_DEPTH {
                return None;
            }
            let mut i = i + 1;
            if t.get(i) == Some(&b'}') {
                return Some(i + 1);
            }
            let mut last: Option<&[u8]> = None;
            loop {
                if t.get(i) != Some(&b'"') {
                    return None;
                }
                let key_end = string_end(t, i + 1)?;
                let key = &t[i + 1..key_end];
                if let Some(last) = last {
                    if !ascending(last, key)? {
                        return None;
                    }
                }
                last = Some(key);
                if t.get(key_end + 1) != Some(&b':') {
                    return None;
                }
                i = value_end(t, key_end + 2, depth + 1)?;
                match t.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => return Some(i + 1),
                    _ => return None,
                }
            }
        }
        b'[' => {
            if depth == MAX_STEP_DATA_DEPTH {
                return None;
            }
            let mut i = i + 1;
            if t.get(i) == Some(&b']') {
                return Some(i + 1);
            }
            loop {
                i = value_end(t, i, depth + 1)?;
                match t.get(i) {
                    Some(b',') => i += 1,
                    Some(b']') => return Some(i + 1),
                    _ => return None,
                }
            }
        }
        b'"' => string_end(t, i + 1).map(|end| end + 1),
        b't' => t[i..].starts_with(b"true").then_some(i + 4),
        b'f' => t[i..].starts_with(b"false").then_some(i + 5),
        b'n' => t[i..].starts_with(b"null").then_some(i + 4),
        b'-' | b'0'..=b'9' => {
            let end = number_end(t, i)?;
            canonical_number(&t[i..end]).then_some(end)
        }
        _ => None,
    }
}

/// Whether key `a` comes strictly before key `b` (both as written between their quotes);
/// `None` if one cannot be read.
fn ascending(a: &[u8], b: &[u8]) -> Option<bool> {
    if a.contains(&b'\\') || b.contains(&b'\\') {
        Some(unescaped(a)? < unescaped(b)?)
    } else {
        Some(a < b)
    }
}

/// The index of the closing quote of the canonical string whose text starts at `i`: every
/// escape is one serde_json writes (`\"`, `\\`, `\b \f \n \r \t`, and `\u00xx` in lower-case
/// hex for the other control characters), and no control character is left raw.
fn string_end(t: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i += crate::written::string_end(t.get(i..)?)?;
        match t[i] {
            b'"' => return Some(i),
            b'\\' => match *t.get(i + 1)? {
                b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    let hex = t.get(i + 2..i + 6)?;
                    let control = hex[0] == b'0' && hex[1] == b'0' && matches!(hex[2], b'0' | b'1');
                    let lower = matches!(hex[3], b'0'..=b'9' | b'a'..=b'f');
                    let short = matches!(&hex[2..], b"08" | b"09" | b"0a" | b"0c" | b"0d");
                    if !control || !lower || short {
                        return None;
                    }
                    i += 6;
                }
                _ => return None,
            },
            // A control character left raw.
            _ => return None,
        }
    }
}

/// The end of the JSON number (by JSON's grammar) starting at `i`.
fn number_end(t: &[u8], mut i: usize) -> Option<usize> {
    let digits = |t: &[u8], mut i: usize| {
        let start = i;
        while t.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if t.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match t.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(t, i)?,
        _ => return None,
    };
    if t.get(i) == Some(&b'.') {
        i = digits(t, i + 1)?;
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(t.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(t, i)?;
    }
    Some(i)
}

/// Whether a number token (valid JSON) is spelled as serde_json writes the number it parses to.
fn canonical_number(token: &[u8]) -> bool {
    let integer = token.iter().all(|b| b.is_ascii_digit() || *b == b'-');
    let Ok(text) = std::str::from_utf8(token) else {
        return false;
    };
    if integer {
        // An integer within u64 (i64 when negative) is written back digit for digit; beyond,
        // it parses to a float; `-0` parses to a float.
        let digits = token.len() - usize::from(token.first() == Some(&b'-'));
        if digits <= 18 {
            return token != b"-0";
        }
        return text.parse::<u64>().is_ok() || text.parse::<i64>().is_ok();
    }
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
                Some(end) => i = end + 1,
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

    proptest! {
        /// Canonical text is validated and kept as it is, and it is serde_json's text of
        /// the value.
        #[test]
        fn canonical_text_is_kept(value in json_value()) {
            let text = value.to_string();
            prop_assert_eq!(StepData::canonical(&text).map(|d| d.as_json().to_string()), Some(text.clone()));
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

        /// Canonical text with one byte changed, dropped or added (mostly no longer JSON, or
        /// no longer canonical) reads as the `Value` way reads it: the validation accepts
        /// nothing that is not exactly serde_json's text of the value.
        #[test]
        fn edited_text_reads_as_the_value_way_reads_it(
            value in json_value(),
            at in any::<prop::sample::Index>(),
            edit in 0u8..3,
            byte in prop::sample::select(b"{}[]\",:0123456789.eE+-tfnul\\ /\x01".to_vec()),
        ) {
            let written = value.to_string();
            let Some(text) = crate::testing::edited(&written, at.index(written.len() + 1), edit, byte) else {
                return Ok(());
            };
            let ours = StepData::from_json(&text).map(|d| d.as_json().to_string());
            match by_value(&text) {
                Ok(expected) => prop_assert_eq!(ours.unwrap(), expected),
                Err(()) => prop_assert!(ours.is_err()),
            }
            if let Some(data) = StepData::canonical(&text) {
                prop_assert_eq!(data.as_json(), by_value(&text).unwrap());
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
