//! `from_payload_json` (a payload's JSON text) answers exactly what `from_payload` answers for
//! the text parsed into a `Value`: the same event, or the same error, for every input.

use proptest::prelude::*;
use serde_json::{json, Value};
use uuid::Uuid;
use vetted_domain::testing::*;
use vetted_domain::{
    AppKey, ApplicantEvent, Application, ApplicationEvent, Command, DomainError, FlowEvent, Mode,
    StepType::*,
};

/// What `from_payload_json` must answer: the text parsed into a `Value`, then `from_payload`;
/// text that is not JSON is a bad payload.
fn through_a_value<T>(
    from_payload: impl Fn(&str, u32, &Value) -> Result<T, DomainError>,
    event_type: &str,
    version: u32,
    text: &str,
) -> Result<T, DomainError> {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => from_payload(event_type, version, &value),
        Err(e) => Err(DomainError::BadPayload {
            event_type: event_type.to_string(),
            reason: format!("the payload is not JSON: {e}"),
        }),
    }
}

/// Checks one input against all three event enums.
fn same_answer(event_type: &str, version: u32, text: &str) {
    assert_eq!(
        ApplicantEvent::from_payload_json(event_type, version, text),
        through_a_value(ApplicantEvent::from_payload, event_type, version, text),
        "ApplicantEvent {event_type} v{version} {text}"
    );
    assert_eq!(
        ApplicationEvent::from_payload_json(event_type, version, text),
        through_a_value(ApplicationEvent::from_payload, event_type, version, text),
        "ApplicationEvent {event_type} v{version} {text}"
    );
    assert_eq!(
        FlowEvent::from_payload_json(event_type, version, text),
        through_a_value(FlowEvent::from_payload, event_type, version, text),
        "FlowEvent {event_type} v{version} {text}"
    );
}

/// Lives decided by the domain's own rules: between them, every applicant event type.
fn decided_events() -> Vec<ApplicantEvent> {
    let mut events = every_event_life();
    // Auto-approval; a step failed for good, then approved by a reviewer.
    events.extend(after([
        create(kyc_basic()),
        Command::StartVerification,
        pass(DocumentCheck, json!({})),
        pass(Liveness, json!({})),
        pass(FaceMatch, json!({"score": 99})),
        pass(Aml, json!({})),
    ]));
    let mut failing = vec![create(kyc_basic()), Command::StartVerification];
    failing.extend((0..3).map(|_| fail(DocumentCheck, "expired")));
    failing.extend([
        pass(Liveness, json!({})),
        pass(FaceMatch, json!({"score": 60})),
        pass(Aml, json!({})),
        assign("rev-9"),
        approve(),
    ]);
    events.extend(after(failing));
    events
}

fn application() -> Application {
    Application {
        mode: Mode::Live,
        ..sample_application()
    }
}

/// (type, version, payload) of every event of [`decided_events`], plus tenant-side events.
fn written_payloads() -> Vec<(&'static str, u32, Value)> {
    let mut out: Vec<(&'static str, u32, Value)> = decided_events()
        .iter()
        .map(|e| (e.event_type(), e.schema_version(), e.to_payload()))
        .collect();
    for e in [
        ApplicationEvent::ApplicationCreated(application()),
        ApplicationEvent::ApplicationUpdated(application()),
    ] {
        out.push((e.event_type(), e.schema_version(), e.to_payload()));
    }
    let flow = FlowEvent::FlowVersionCreated {
        app_key: AppKey(Uuid::from_u128(42)),
        flow: kyc_basic(),
    };
    out.push((flow.event_type(), flow.schema_version(), flow.to_payload()));
    out
}

#[test]
fn every_event_a_decided_life_writes_reads_back_the_same_from_its_text_and_from_its_value() {
    let events = decided_events();
    let types: std::collections::BTreeSet<&str> = events.iter().map(|e| e.event_type()).collect();
    assert_eq!(
        types.len(),
        ApplicantEvent::TYPES.len(),
        "every applicant event type is written: {types:?}"
    );
    for event in events {
        let (event_type, version) = (event.event_type(), event.schema_version());
        let payload = event.to_payload();
        let text = payload.to_string();
        let pretty = serde_json::to_string_pretty(&payload).unwrap();
        assert_eq!(
            ApplicantEvent::from_payload(event_type, version, &payload).as_ref(),
            Ok(&event)
        );
        assert_eq!(
            ApplicantEvent::from_payload_json(event_type, version, &text).as_ref(),
            Ok(&event),
            "{text}"
        );
        assert_eq!(
            ApplicantEvent::from_payload_json(event_type, version, &pretty).as_ref(),
            Ok(&event)
        );
        // serde's own externally tagged reading agrees with the codec's.
        let tagged: ApplicantEvent = serde_json::from_value(json!({ event_type: payload }))
            .expect("the externally tagged form reads");
        assert_eq!(tagged, event);
    }
    for (event_type, version, payload) in written_payloads() {
        same_answer(event_type, version, &payload.to_string());
    }
    let app = application();
    assert_eq!(
        ApplicationEvent::from_payload_json(
            "ApplicationUpdated",
            1,
            &serde_json::to_string(&app).unwrap()
        ),
        Ok(ApplicationEvent::ApplicationUpdated(app))
    );
}

fn kind_of<T>(answer: Result<T, DomainError>) -> &'static str {
    match answer {
        Ok(_) => "ok",
        Err(DomainError::UnknownEvent { .. }) => "unknown",
        Err(DomainError::BadPayload { .. }) => "bad",
        Err(_) => "another error",
    }
}

#[test]
fn every_error_from_a_value_is_the_same_error_from_its_text() {
    let created = r#""applicantId":"6f1c1c1e-1111-4111-8111-111111111111","appKey":"6f1c1c1e-1111-4111-8111-111111111112","externalUserId":"u""#;
    // (type, version, payload text, expected answer: "ok", "unknown" or "bad")
    let cases: Vec<(&str, u32, String, &str)> = vec![
        // Unknown types and versions, whatever the payload.
        ("StepSkipped", 1, "{}".into(), "unknown"),
        ("StepSkipped", 1, "[1]".into(), "unknown"),
        ("StepPassed", 0, r#"{"step":"aml","attempt":1}"#.into(), "unknown"),
        ("StepPassed", 2, r#"{"step":"aml","attempt":1}"#.into(), "unknown"),
        ("stepPassed", 1, r#"{"step":"aml","attempt":1}"#.into(), "unknown"),
        ("", 1, "{}".into(), "unknown"),
        // Not an object, even one whose elements would fill the fields in order.
        ("StepPassed", 1, "[1]".into(), "bad"),
        ("StepPassed", 1, r#"["aml",1,{}]"#.into(), "bad"),
        ("StepPassed", 1, r#""x""#.into(), "bad"),
        ("StepPassed", 1, "null".into(), "bad"),
        ("StepPassed", 1, " 7 ".into(), "bad"),
        ("VerificationStarted", 1, "[]".into(), "bad"),
        // Objects that do not read as the type.
        ("StepPassed", 1, r#"{"step":"nope","attempt":1}"#.into(), "bad"),
        ("StepPassed", 1, r#"{"attempt":1}"#.into(), "bad"),
        ("StepPassed", 1, r#"{"step":"aml"}"#.into(), "bad"),
        ("StepPassed", 1, r#"{"step":"aml","attempt":"1"}"#.into(), "bad"),
        ("StepPassed", 1, r#"{"step":"aml","attempt":-1}"#.into(), "bad"),
        ("StepPassed", 1, r#"{"step":"aml","attempt":1.5}"#.into(), "bad"),
        ("StepPassed", 1, r#"{"step":"aml","attempt":-0}"#.into(), "bad"),
        ("StepPassed", 1, r#"{"step":"aml","attempt":4294967296}"#.into(), "bad"),
        ("StepFailed", 1, r#"{"step":"aml","attempt":1}"#.into(), "bad"),
        ("StatusChanged", 1, r#"{"from":"INIT","to":"BOGUS","reason":"x"}"#.into(), "bad"),
        ("ApplicantApproved", 1, r#"{"automatic":true,"decidedAt":"yesterday"}"#.into(), "bad"),
        ("ApplicantCreated", 1, r#"{"applicantId":"x"}"#.into(), "bad"),
        ("ApplicantCreated", 1, format!(r#"{{{created},"flow":["f",1]}}"#), "bad"),
        ("ApplicantCreated", 1, format!(r#"{{{created},"flow":{{"name":"f","steps":[{{"type":"aml"}}],"autoApproval":"yes"}}}}"#), "bad"),
        ("ApplicationCreated", 1, r#"{"appKey":5}"#.into(), "bad"),
        ("ApplicationCreated", 1, "{}".into(), "bad"),
        ("ApplicationCreated", 1, r#"["6f1c1c1e-1111-4111-8111-111111111112","n","h","c","s"]"#.into(), "bad"),
        ("FlowVersionCreated", 1, r#"{"appKey":"6f1c1c1e-1111-4111-8111-111111111112","flow":[1]}"#.into(), "bad"),
        // Text that is not one JSON value.
        ("StepPassed", 1, "".into(), "bad"),
        ("StepPassed", 1, "{".into(), "bad"),
        ("StepPassed", 1, r#"{"step":"aml","attempt":1} x"#.into(), "bad"),
        ("StepPassed", 1, r#"{"step":"aml","attempt":1}{}"#.into(), "bad"),
        ("StepPassed", 1, r#"{"step":"aml","attempt":1,}"#.into(), "bad"),
        ("StepPassed", 1, "{'step':'aml'}".into(), "bad"),
        // What serde_json skips unchecked but a `Value` refuses, in fields nobody reads.
        ("StepPassed", 1, r#"{"step":"aml","attempt":1,"junk":"\ud800"}"#.into(), "bad"),
        ("StepPassed", 1, r#"{"step":"aml","attempt":1,"junk":"\udc00x"}"#.into(), "bad"),
        ("StepPassed", 1, r#"{"step":"aml","attempt":1,"junk":1e400}"#.into(), "bad"),
        ("StepPassed", 1, format!(r#"{{"step":"aml","attempt":1,"junk":{}{}}}"#, "[".repeat(130), "]".repeat(130)), "bad"),
        ("StepPassed", 1, format!(r#"{{"step":"aml","attempt":1,"data":{}{}}}"#, "[".repeat(130), "]".repeat(130)), "bad"),
        ("ApplicantCreated", 1, format!(r#"{{{created},"flow":{{"name":"f","steps":[],"junk":1e999}}}}"#), "bad"),
        // A `type` key in the payload is not the type: the envelope's is.
        ("StepPassed", 1, r#"{"step":"aml","attempt":1,"type":"x"}"#.into(), "ok"),
        ("StepPassed", 1, r#"{"type":"StepFailed","step":"aml","attempt":1}"#.into(), "ok"),
        ("DeletionCancelled", 1, r#"{"type":"x"}"#.into(), "ok"),
        ("FlowVersionCreated", 1, r#"{"appKey":"6f1c1c1e-1111-4111-8111-111111111112","flow":{"name":"f","steps":[]},"type":3}"#.into(), "ok"),
        ("ApplicationCreated", 1, r#"{"appKey":"6f1c1c1e-1111-4111-8111-111111111112","name":"n","privateKeyHash":"h","cryptoKey":"c","signingSecret":"s","type":"ApplicationUpdated"}"#.into(), "ok"),
        // Unknown fields are ignored; keys given twice keep the last, as in a `Value`.
        ("StepPassed", 1, r#"{"step":"aml","attempt":1,"extra":[1,{"a":"\ud83d\ude00"}]}"#.into(), "ok"),
        ("VerificationStarted", 1, r#"{"x":1}"#.into(), "ok"),
        ("StepPassed", 1, r#"{"step":"nope","step":"aml","attempt":1}"#.into(), "ok"),
        ("StepPassed", 1, r#"{"step":"aml","attempt":"x","attempt":2}"#.into(), "ok"),
        ("StepPassed", 1, r#"{"step":"aml","attempt":1,"x":1,"x":[}"#.into(), "bad"),
        ("StepPassed", 1, r#"{"step":"aml","attempt":1,"data":{"a":1,"a":2}}"#.into(), "ok"),
        ("ApplicantCreated", 1, format!(r#"{{{created},"flow":{{"name":"f","name":"g","steps":[]}}}}"#), "ok"),
        ("StepFailed", 1, r#"{"step":"aml","attempt":1,"final":true,"maxAttempts":null}"#.into(), "ok"),
        ("StepPassed", 1, " \n\t{\"step\" : \"aml\" , \"attempt\" : 1 }\r\n".into(), "ok"),
    ];
    for (event_type, version, text, expected) in &cases {
        same_answer(event_type, *version, text);
        // The enum that owns the type answers (the others: unknown event).
        let kind = if ApplicationEvent::TYPES.contains(event_type) {
            kind_of(ApplicationEvent::from_payload_json(
                event_type, *version, text,
            ))
        } else if FlowEvent::TYPES.contains(event_type) {
            kind_of(FlowEvent::from_payload_json(event_type, *version, text))
        } else {
            kind_of(ApplicantEvent::from_payload_json(
                event_type, *version, text,
            ))
        };
        assert_eq!(kind, *expected, "{event_type} v{version} {text}");
    }
    // The messages read as they always have.
    assert_eq!(
        ApplicantEvent::from_payload_json("StepPassed", 1, r#"{"step":"aml","attempt":"1"}"#)
            .map_err(|e| e.to_string()),
        Err(
            "payload of StepPassed cannot be read: invalid type: string \"1\", expected u32".into()
        )
    );
    assert_eq!(
        ApplicantEvent::from_payload_json("StepPassed", 1, "[1]").map_err(|e| e.to_string()),
        Err("payload of StepPassed cannot be read: the payload is [1], not a JSON object".into())
    );
    assert_eq!(
        ApplicantEvent::from_payload_json("StepPassed", 2, "{}").map_err(|e| e.to_string()),
        Err("unknown event StepPassed v2: this build reads up to v1 of known types; upgrade Vetted or add an upcaster".into())
    );
    assert!(matches!(
        ApplicantEvent::from_payload_json("StepPassed", 1, "{"),
        Err(DomainError::BadPayload { reason, .. }) if reason.starts_with("the payload is not JSON: ")
    ));
}

/// Any JSON value, a few levels deep, with strings that are often field values the events use.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        (0u32..6).prop_map(Value::from),
        prop::sample::select(vec![
            "aml",
            "liveness",
            "document_check",
            "INIT",
            "APPROVED",
            "regular",
            "2026-01-15T12:00:00Z",
            "6f1c1c1e-1111-4111-8111-111111111111",
            "rev-1",
            "",
        ])
        .prop_map(Value::from),
        "\\PC{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(field_name(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Names of fields the events have, `type`, and others.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "type",
            "step",
            "attempt",
            "data",
            "final",
            "maxAttempts",
            "reason",
            "reviewerId",
            "automatic",
            "reasons",
            "decidedAt",
            "from",
            "to",
            "keptSteps",
            "flow",
            "name",
            "steps",
            "appKey",
            "warningId",
            "code",
            "message",
            "purgeAfter",
        ])
        .prop_map(String::from),
        "[a-zA-Z]{1,6}",
    ]
}

/// An event type the enums know (each enum knows some), or not.
fn event_type() -> impl Strategy<Value = String> {
    let mut known: Vec<&'static str> = ApplicantEvent::TYPES.to_vec();
    known.extend(ApplicationEvent::TYPES);
    known.extend(FlowEvent::TYPES);
    known.extend(["StepSkipped", "type", ""]);
    prop::sample::select(known).prop_map(String::from)
}

/// One change to a written payload.
#[derive(Debug, Clone)]
enum Change {
    Remove(usize),
    Set(String, Value),
    /// The same key written again before the object's own keys (text only: a `Value` cannot
    /// hold a key twice).
    Duplicate(String, Value),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        any::<usize>().prop_map(Change::Remove),
        (field_name(), any_json()).prop_map(|(k, v)| Change::Set(k, v)),
        (field_name(), any_json()).prop_map(|(k, v)| Change::Duplicate(k, v)),
    ]
}

/// A written payload changed by `changes`, as text.
fn changed(payload: &Value, changes: &[Change]) -> String {
    let mut object = payload.as_object().cloned().unwrap_or_default();
    let mut prefix = String::new();
    for change in changes {
        match change {
            Change::Remove(i) => {
                if let Some(key) = object.keys().nth(i % object.len().max(1)).cloned() {
                    object.remove(&key);
                }
            }
            Change::Set(key, value) => {
                object.insert(key.clone(), value.clone());
            }
            Change::Duplicate(key, value) => {
                prefix.push_str(&format!("{}:{value},", Value::from(key.as_str())));
            }
        }
    }
    let text = Value::Object(object).to_string();
    format!("{{{prefix}{}", &text[1..]).replace(",}", "}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_json_value_reads_from_its_text_as_from_the_value(
        event_type in event_type(),
        version in 0u32..3,
        payload in any_json(),
        pretty in any::<bool>(),
    ) {
        let text = if pretty {
            serde_json::to_string_pretty(&payload).unwrap()
        } else {
            payload.to_string()
        };
        same_answer(&event_type, version, &text);
    }

    #[test]
    fn a_written_payload_changed_reads_from_its_text_as_from_the_value(
        which in any::<prop::sample::Index>(),
        as_type in prop::option::weighted(0.2, event_type()),
        version in prop::sample::select(vec![1u32, 1, 1, 0, 2]),
        changes in prop::collection::vec(change(), 0..4),
    ) {
        let written = written_payloads();
        let (written_type, _, payload) = &written[which.index(written.len())];
        let event_type = as_type.unwrap_or_else(|| written_type.to_string());
        let text = changed(payload, &changes);
        same_answer(&event_type, version, &text);
    }

    #[test]
    fn any_text_of_json_tokens_reads_as_through_a_value(
        event_type in prop::sample::select(vec!["StepPassed", "VerificationStarted", "DeletionCancelled", "ApplicationCreated"]),
        tokens in prop::collection::vec(prop::sample::select(vec![
            "{", "}", "[", "]", ":", ",", " ", "\"step\"", "\"attempt\"", "\"data\"", "\"type\"",
            "\"aml\"", "\"x\"", "1", "-0", "1e400", "2.5", "null", "true", "\"\\ud800\"",
            "\"\\ud83d\\ude00\"", "\"\\n\"", "\"appKey\"",
        ]), 0..16),
    ) {
        let text: String = tokens.concat();
        same_answer(event_type, 1, &text);
        // Most token soups are not JSON; an object around them gets further.
        same_answer(event_type, 1, &format!("{{\"step\":\"aml\",\"attempt\":1,\"j\":{text}}}"));
    }
}
