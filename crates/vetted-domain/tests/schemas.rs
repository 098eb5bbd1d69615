//! Every event payload Vetted writes matches its JSON Schema in `schemas/events/`, and the
//! schema files and the event types are the same set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{json, Value};
use uuid::Uuid;
use vetted_domain::testing::*;
use vetted_domain::{fold, AppKey, ApplicantEvent, ApplicationEvent, FlowEvent, Mode};

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/events")
}

/// Every schema file, by event type (file stem).
fn schemas() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(schema_dir()).expect("schemas/events exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 file name")
            .to_string();
        let text = std::fs::read_to_string(&path).expect("readable schema");
        let schema: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}.json is not JSON: {e}"));
        out.insert(name, schema);
    }
    out
}

fn validator(name: &str, schema: &Value) -> jsonschema::Validator {
    jsonschema::draft202012::meta::validate(schema)
        .unwrap_or_else(|e| panic!("{name}.json is not a valid 2020-12 schema: {e}"));
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("{name}.json does not compile: {e}"))
}

/// (type, schema version, payload) of every event the scenario and the tenant side write.
fn written_payloads() -> Vec<(&'static str, u32, Value)> {
    let mut out: Vec<(&'static str, u32, Value)> = every_event_life()
        .iter()
        .map(|e| (e.event_type(), e.schema_version(), e.to_payload()))
        .collect();
    let mut live = sample_application();
    live.mode = Mode::Live;
    live.redirect_url = Some("https://example.com/done".into());
    for e in [
        ApplicationEvent::ApplicationCreated(sample_application()),
        ApplicationEvent::ApplicationUpdated(live),
    ] {
        out.push((e.event_type(), e.schema_version(), e.to_payload()));
    }
    let flow_event = FlowEvent::FlowVersionCreated {
        app_key: AppKey(Uuid::from_u128(42)),
        flow: kyc_basic(),
    };
    out.push((
        flow_event.event_type(),
        flow_event.schema_version(),
        flow_event.to_payload(),
    ));
    out
}

#[test]
fn every_payload_written_matches_its_schema() {
    let schemas = schemas();
    let mut seen = BTreeSet::new();
    for (event_type, version, payload) in written_payloads() {
        let schema = schemas
            .get(event_type)
            .unwrap_or_else(|| panic!("no schemas/events/{event_type}.json"));
        assert_eq!(
            schema["x-vetted-schema-version"],
            json!(version),
            "{event_type}: schema version differs"
        );
        let errors: Vec<String> = validator(event_type, schema)
            .iter_errors(&payload)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{event_type} payload {payload} breaks its schema: {errors:?}"
        );
        seen.insert(event_type);
    }
    let all: BTreeSet<&str> = all_event_types().into_iter().collect();
    assert_eq!(
        seen, all,
        "the scenario must write every event type at least once"
    );
}

#[test]
fn the_scenario_reads_back_from_its_payloads() {
    for event in every_event_life() {
        let back = ApplicantEvent::from_payload(
            event.event_type(),
            event.schema_version(),
            &event.to_payload(),
        );
        assert_eq!(back.as_ref(), Ok(&event));
    }
    let ends = fold(&every_event_life());
    assert_eq!(
        ends.status, APPROVED,
        "the scenario ends auto-approved on flow v2"
    );
    assert_eq!(ends.flow.map(|f| f.version), Some(2));
}

#[test]
fn every_schema_file_has_an_event_type_and_every_event_type_a_schema_file() {
    let files: BTreeSet<String> = schemas().into_keys().collect();
    let types: BTreeSet<String> = all_event_types().into_iter().map(String::from).collect();
    assert_eq!(files, types);
}

#[test]
fn the_schemas_reject_payloads_that_break_the_contract() {
    let schemas = schemas();
    let step_passed = validator("StepPassed", &schemas["StepPassed"]);
    assert!(
        !step_passed.is_valid(&json!({"step": "document_check", "data": {}})),
        "attempt is required"
    );
    assert!(
        !step_passed.is_valid(&json!({"step": "selfie", "attempt": 1, "data": {}})),
        "unknown step"
    );
    let status = validator("StatusChanged", &schemas["StatusChanged"]);
    assert!(
        !status.is_valid(&json!({"from": "INIT", "to": "PENDING", "reason": "x"})),
        "unknown status"
    );
    let approved = validator("ApplicantApproved", &schemas["ApplicantApproved"]);
    assert!(
        !approved.is_valid(&json!({"automatic": true, "reasons": [], "decidedAt": "yesterday"})),
        "decidedAt must be a date-time"
    );
}

fn all_event_types() -> Vec<&'static str> {
    let mut types: Vec<&'static str> = ApplicantEvent::TYPES.to_vec();
    types.extend(ApplicationEvent::TYPES);
    types.extend(FlowEvent::TYPES);
    types
}
