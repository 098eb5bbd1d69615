//! The payload codec shared by every event enum.
//!
//! On the wire (the store's `payload`) an event is a camelCase JSON object without a `type`
//! key: the type and schema version travel in the envelope. In Rust the enums have serde's
//! default, externally tagged form (`{"StepPassed": {...}}`), and the codec never builds that
//! form on the way in: it hands serde an enum whose variant is the envelope's event type and
//! whose content is the payload ([`Tagged`]), so the variant's fields are read straight from
//! the payload, a `serde_json::Value` or JSON text alike. (The enums were internally tagged by
//! `type` before; serde reads an internally tagged enum by first buffering every field of the
//! object into a private tree, which cost most of a payload's decode.) On the way out the
//! single key of the externally tagged form is dropped, which gives the same payload the
//! internally tagged form gave once its `type` was removed.
//!
//! What a payload decodes to is defined by [`from_tagged_payload`] on a `serde_json::Value`;
//! [`from_payload_json`] reads JSON text to exactly the same result, `Ok` or `Err`, as parsing
//! the text into a `Value` first would, only faster.

mod strict;

use serde::de::value::StrDeserializer;
use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, VariantAccess, Visitor,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::DomainError;
use crate::flow::Flow;

/// An event enum: externally tagged (serde's default), one variant per event type.
pub(crate) trait EventCodec: Serialize + DeserializeOwned {
    /// Every variant name.
    const TYPES: &'static [&'static str];
    /// The schema version written today (the same for every type of the enum).
    const SCHEMA_VERSION: u32;

    /// Today's payload of `event_type` read directly from its text, when it is in the exact
    /// shape this engine writes and the enum has a reader for it (for its commonest events);
    /// `None` otherwise, and [`from_payload_json`] reads it the general way. What it answers must
    /// be what the general way answers.
    fn read_as_written(_event_type: &str, _payload: &str) -> Option<Self> {
        None
    }
}

/// The payload methods every event enum has, the same for each: the codec's functions under
/// the enum's own name. Expands inside the enum's `impl` block.
macro_rules! payload_methods {
    () => {
        /// Every event type name of this enum.
        pub const TYPES: &'static [&'static str] = <Self as $crate::codec::EventCodec>::TYPES;

        /// The payload schema version written today.
        pub fn schema_version(&self) -> u32 {
            <Self as $crate::codec::EventCodec>::SCHEMA_VERSION
        }

        /// The payload: a camelCase object without a `type` key.
        pub fn to_payload(&self) -> serde_json::Value {
            $crate::codec::to_untagged_payload(self)
        }

        /// Reads a stored payload back, upcasting older schema versions to today's shape.
        pub fn from_payload(
            event_type: &str,
            schema_version: u32,
            payload: &serde_json::Value,
        ) -> Result<Self, $crate::DomainError> {
            $crate::codec::from_tagged_payload::<Self>(event_type, schema_version, payload)
        }

        /// Reads a stored payload back from its JSON text (e.g. a raw payload borrowed from a
        /// stored envelope, so no `Value` tree is built): the same result, `Ok` or `Err`, as
        /// `from_payload` on the text parsed into a `Value`; text that is not JSON is
        /// `DomainError::BadPayload`.
        pub fn from_payload_json(
            event_type: &str,
            schema_version: u32,
            payload: &str,
        ) -> Result<Self, $crate::DomainError> {
            $crate::codec::from_payload_json::<Self>(event_type, schema_version, payload)
        }
    };
}
pub(crate) use payload_methods;

/// The payload of `event`: its variant's content, without the variant name.
pub(crate) fn to_untagged_payload<T: EventCodec>(event: &T) -> Value {
    // Serializing these enums cannot fail: every key is a string and no field has a custom
    // serializer that errs; fall back to an empty object rather than panic all the same.
    match serde_json::to_value(event) {
        // Externally tagged: `{"<variant>": <content>}`.
        Ok(Value::Object(tagged)) if tagged.len() == 1 => tagged
            .into_iter()
            .next()
            .map_or_else(|| Value::Object(Map::new()), |(_, content)| content),
        _ => Value::Object(Map::new()),
    }
}

/// Reads a stored payload of `event_type` at `schema_version`, upcasting it to today's shape.
pub(crate) fn from_tagged_payload<T: EventCodec>(
    event_type: &str,
    schema_version: u32,
    payload: &Value,
) -> Result<T, DomainError> {
    let current = T::SCHEMA_VERSION;
    if !T::TYPES.contains(&event_type) || schema_version == 0 || schema_version > current {
        return Err(unknown::<T>(event_type, schema_version));
    }
    let Some(object) = payload.as_object() else {
        return Err(DomainError::BadPayload {
            event_type: event_type.to_string(),
            reason: format!("the payload is {payload}, not a JSON object"),
        });
    };
    let read = |object: &Value| {
        T::deserialize(Tagged {
            tag: event_type,
            content: object,
        })
        .map_err(|e| bad_payload(event_type, e))
    };
    if schema_version == current {
        // Today's shape, nothing to upcast: read the payload in place.
        read(payload)
    } else {
        read(&Value::Object(upcast(
            event_type,
            schema_version,
            object.clone(),
        )))
    }
}

/// Reads a stored payload given as JSON text: exactly what [`from_tagged_payload`] answers
/// for the text parsed into a `Value` (text that is not JSON is [`DomainError::BadPayload`]).
///
/// Today's version is read straight from the text. Anything that does not read so (an older
/// version, an unknown type, a payload that is not an object, or one that does not decode)
/// goes through the `Value`, whose answer is the canonical one, error message included.
pub(crate) fn from_payload_json<T: EventCodec>(
    event_type: &str,
    schema_version: u32,
    payload: &str,
) -> Result<T, DomainError> {
    if schema_version == T::SCHEMA_VERSION
        && T::TYPES.contains(&event_type)
        && payload
            .trim_start_matches([' ', '\n', '\r', '\t'])
            .starts_with('{')
    {
        if let Some(event) =
            T::read_as_written(event_type, payload).or_else(|| read_text::<T>(event_type, payload))
        {
            return Ok(event);
        }
    }
    match serde_json::from_str::<Value>(payload) {
        Ok(value) => from_tagged_payload(event_type, schema_version, &value),
        Err(e) => Err(DomainError::BadPayload {
            event_type: event_type.to_string(),
            reason: format!("the payload is not JSON: {e}"),
        }),
    }
}

/// The event in `payload` (a JSON object's text), if the text is one JSON value that reads as
/// `event_type`'s content; `None` when the `Value` way must decide.
///
/// A success here is always the `Value` way's answer too:
/// - the variant's fields are read by the same derived code from the same tokens;
/// - every value is checked as strictly as parsing it into a `Value` would: serde_json skips
///   unknown fields without checking what a `Value` refuses (lone surrogates, numbers out of
///   range, nesting over 128 levels), so [`strict`] has them parsed instead;
/// - nothing may follow the object but whitespace, as for `serde_json::from_str`;
/// - a key given twice, which a `Value` keeps the last of, fails here (serde's "duplicate
///   field") unless both are ignored or inside a `Value`/map field (last wins there too).
fn read_text<T: EventCodec>(event_type: &str, payload: &str) -> Option<T> {
    let mut text = serde_json::Deserializer::from_str(payload);
    let event = T::deserialize(Tagged {
        tag: event_type,
        content: strict::Strict::new(&mut text),
    })
    .ok()?;
    text.end().ok()?;
    Some(event)
}

fn unknown<T: EventCodec>(event_type: &str, schema_version: u32) -> DomainError {
    DomainError::UnknownEvent {
        event_type: event_type.to_string(),
        schema_version,
        known_version: T::SCHEMA_VERSION,
    }
}

fn bad_payload(event_type: &str, e: impl std::fmt::Display) -> DomainError {
    DomainError::BadPayload {
        event_type: event_type.to_string(),
        reason: e.to_string(),
    }
}

/// Reads the flow an `ApplicantCreated` or `FlowChanged` pins the applicant to.
///
/// Every applicant on a flow version carries the same flow, byte for byte, so each thread keeps
/// the flows it read last by their text ([`PINNED_FLOWS`] of them): a flow read again is a
/// copy of the one read before. (Reading a flow was the costliest part of any payload: a
/// third of a rebuild's payload decoding.) It is a memo of a pure function: the text decides
/// the flow, and a miss reads the text as it would have been read anyway.
///
/// A miss reads the flow strictly ([`strict`]) one level down (inside `[...]`), as it sits
/// one level down in its payload, so that what nests too deep for the payload is refused here
/// too.
pub(crate) fn pinned_flow<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Box<Flow>, D::Error> {
    use serde::de::Error;
    let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
    let text = raw.get();
    // A remembered flow whose text is all of this one's.
    if let Some((flow, _)) = pinned_flow_at(text).filter(|(_, len)| *len == text.len()) {
        return Ok(Box::new(flow));
    }
    let nested = format!("[{text}]");
    let mut json = serde_json::Deserializer::from_str(&nested);
    let (flow,) =
        <(Flow,)>::deserialize(strict::Strict::new(&mut json)).map_err(D::Error::custom)?;
    PINNED.with(|pinned| {
        let mut pinned = pinned.borrow_mut();
        if pinned.len() == PINNED_FLOWS {
            pinned.remove(0);
        }
        pinned.push((text.into(), flow.clone()));
    });
    Ok(Box::new(flow))
}

/// The flow this thread read last (by [`pinned_flow`]) whose text `text` starts with, and that
/// text's length. A JSON value ends where its text ends, so the flow at the start of `text`
/// is that one.
pub(crate) fn pinned_flow_at(text: &str) -> Option<(Flow, usize)> {
    PINNED.with(|pinned| {
        let pinned = pinned.borrow();
        pinned
            .iter()
            .rev()
            .find(|(t, _)| text.starts_with(&**t))
            .map(|(t, flow)| (flow.clone(), t.len()))
    })
}

/// How many flows (by text) each thread remembers, most recent last.
const PINNED_FLOWS: usize = 32;

thread_local! {
    static PINNED: std::cell::RefCell<Vec<(Box<str>, Flow)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Brings an old payload to today's shape. Every event type is still at version 1, so there is
/// nothing to do yet; when a payload changes, bump its version and add the step from the old
/// version here, so stored bytes never need rewriting.
fn upcast(
    _event_type: &str,
    _schema_version: u32,
    payload: Map<String, Value>,
) -> Map<String, Value> {
    payload
}

/// An externally tagged enum's input made of parts: the variant is `tag` (the envelope's event
/// type) and its content is read from `content` (the payload), with nothing built in between.
pub(crate) struct Tagged<'t, D> {
    pub(crate) tag: &'t str,
    pub(crate) content: D,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Tagged<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
        enum identifier ignored_any
    }
}

impl<'de, D: Deserializer<'de>> EnumAccess<'de> for Tagged<'_, D> {
    type Error = D::Error;
    type Variant = Content<D>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Content<D>), D::Error> {
        let variant = seed.deserialize(StrDeserializer::<D::Error>::new(self.tag))?;
        Ok((variant, Content(self.content)))
    }
}

/// The payload, read as the content of the variant [`Tagged`] named.
pub(crate) struct Content<D>(D);

impl<'de, D: Deserializer<'de>> VariantAccess<'de> for Content<D> {
    type Error = D::Error;

    fn unit_variant(self) -> Result<(), D::Error> {
        // No event is a unit variant today; if one is added, its payload (an object, maybe
        // with fields it no longer has) is read and ignored, as the internal tag read it.
        IgnoredAny::deserialize(self.0).map(|_| ())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, D::Error> {
        seed.deserialize(self.0)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct("", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use crate::{ApplicantEvent, Command, StepType};
    use serde_json::json;

    fn life() -> Vec<ApplicantEvent> {
        after([
            create(kyc_manual()),
            Command::StartVerification,
            fail(StepType::DocumentCheck, "glare"),
            pass(
                StepType::DocumentCheck,
                json!({"country": "UTO", "n": [1, 2.5]}),
            ),
            raise(1, "DOCUMENT_EXPIRED"),
            assign("rev-1"),
            decline("fraud"),
            Command::RestartFlow,
        ])
    }

    #[test]
    fn todays_payloads_are_read_straight_from_their_text_not_through_a_value() {
        for event in life() {
            let text = event.to_payload().to_string();
            assert_eq!(
                read_text::<ApplicantEvent>(event.event_type(), &text),
                Some(event.clone()),
                "{text}"
            );
            // Whitespace anywhere JSON allows it changes nothing.
            let pretty = format!(
                " \n{}\t",
                serde_json::to_string_pretty(&event.to_payload()).unwrap()
            );
            assert_eq!(
                read_text::<ApplicantEvent>(event.event_type(), &pretty),
                Some(event)
            );
        }
    }

    #[test]
    fn the_text_way_leaves_to_the_value_way_what_serde_json_would_skip_unchecked() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for junk in [r#""\ud800""#, "1e400", "-1e999", deep.as_str()] {
            let text = format!(r#"{{"step":"aml","attempt":1,"junk":{junk}}}"#);
            // Skipped unchecked, this would read as a StepPassed; a `Value` refuses it.
            assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
            assert_eq!(read_text::<ApplicantEvent>("StepPassed", &text), None);
            // Also inside a nested struct's unknown field.
            let mut created = created(kyc_basic()).to_payload();
            created["flow"]["junk"] = json!("placeholder");
            let text = created.to_string().replace(r#""placeholder""#, junk);
            assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
            assert_eq!(read_text::<ApplicantEvent>("ApplicantCreated", &text), None);
        }
        // Checked values that a `Value` takes are taken.
        let text = r#"{"step":"aml","attempt":1,"junk":["\ud83d\ude00",1e300,{"a":[null]}]}"#;
        assert_eq!(
            read_text::<ApplicantEvent>("StepPassed", text),
            Some(passed(StepType::Aml, 1, Value::Null))
        );
    }

    #[test]
    fn a_payload_is_its_variants_content_as_the_type_tagged_form_wrote_it() {
        // The payloads the internally tagged enums wrote, minus `type`, byte for byte.
        assert_eq!(
            to_untagged_payload(&ApplicantEvent::VerificationStarted {}).to_string(),
            "{}"
        );
        assert_eq!(
            to_untagged_payload(&failed(StepType::Liveness, 2, Some(2), true, "blurry"))
                .to_string(),
            r#"{"attempt":2,"data":null,"final":true,"maxAttempts":2,"reason":"blurry","step":"liveness"}"#
        );
        let app = crate::Application {
            app_key: app_key(),
            name: "Demo".into(),
            private_key_hash: "h".into(),
            crypto_key: "c".into(),
            signing_secret: "s".into(),
            webhook_url: None,
            webhook_headers: Default::default(),
            redirect_url: None,
            mode: crate::Mode::Live,
        };
        assert_eq!(
            to_untagged_payload(&crate::ApplicationEvent::ApplicationUpdated(app.clone())),
            serde_json::to_value(&app).unwrap(),
            "a newtype variant's payload is the application object"
        );
    }
}
