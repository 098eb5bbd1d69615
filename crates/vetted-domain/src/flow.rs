//! Flows: named, versioned lists of verification steps with their settings. An applicant is
//! pinned to the flow version it started with; editing a flow creates a new version.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::DomainError;

/// Face-match score (0..=100) an applicant needs for auto-approval when nothing else is set.
pub const DEFAULT_FACE_MATCH_THRESHOLD: f64 = 85.0;

/// One kind of verification step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepType {
    Intro,
    DocumentCheck,
    Liveness,
    SelfieWithDocument,
    FaceMatch,
    Aml,
    Questionnaire,
    PhoneVerification,
    EmailVerification,
    IpCheck,
    ThankYou,
}

impl StepType {
    /// Every step type, in the order a typical flow uses them.
    pub const ALL: [StepType; 11] = [
        StepType::Intro,
        StepType::DocumentCheck,
        StepType::Liveness,
        StepType::SelfieWithDocument,
        StepType::FaceMatch,
        StepType::Aml,
        StepType::Questionnaire,
        StepType::PhoneVerification,
        StepType::EmailVerification,
        StepType::IpCheck,
        StepType::ThankYou,
    ];

    /// The wire name, e.g. `document_check`.
    pub fn as_str(&self) -> &'static str {
        match self {
            StepType::Intro => "intro",
            StepType::DocumentCheck => "document_check",
            StepType::Liveness => "liveness",
            StepType::SelfieWithDocument => "selfie_with_document",
            StepType::FaceMatch => "face_match",
            StepType::Aml => "aml",
            StepType::Questionnaire => "questionnaire",
            StepType::PhoneVerification => "phone_verification",
            StepType::EmailVerification => "email_verification",
            StepType::IpCheck => "ip_check",
            StepType::ThankYou => "thank_you",
        }
    }

    /// Background steps run without the applicant (face match, AML, IP check): once only they
    /// are outstanding the applicant is IN_PROGRESS rather than INCOMPLETE.
    pub fn is_background(&self) -> bool {
        matches!(
            self,
            StepType::FaceMatch | StepType::Aml | StepType::IpCheck
        )
    }

    /// The service name the dashboard groups step results by.
    pub fn service(&self) -> &'static str {
        match self {
            StepType::Intro => "intro",
            StepType::DocumentCheck => "document",
            StepType::Liveness => "liveness",
            StepType::SelfieWithDocument => "selfie",
            StepType::FaceMatch => "face_match",
            StepType::Aml => "aml",
            StepType::Questionnaire => "questionnaire",
            StepType::PhoneVerification => "phone",
            StepType::EmailVerification => "email",
            StepType::IpCheck => "ip",
            StepType::ThankYou => "thank_you",
        }
    }
}

impl fmt::Display for StepType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of the step type names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown step type {0:?}: use one of intro, document_check, liveness, selfie_with_document, face_match, aml, questionnaire, phone_verification, email_verification, ip_check, thank_you")]
pub struct UnknownStepType(pub String);

impl FromStr for StepType {
    type Err = UnknownStepType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StepType::ALL
            .into_iter()
            .find(|step| step.as_str() == s)
            .ok_or_else(|| UnknownStepType(s.to_string()))
    }
}

/// One step of a flow with its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepSpec {
    /// Which step this is.
    #[serde(rename = "type")]
    pub step_type: StepType,
    /// Failed attempts after which the step is failed for good; `None` = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Score threshold (0..=100), used by face match; overrides the flow's `faceMatchThreshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Sources the step compares or reads (e.g. `document`, `liveness` for face match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// Countries this step accepts (ISO codes); empty = the flow's settings apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub countries: Vec<String>,
}

impl StepSpec {
    /// A step with default settings.
    pub fn new(step_type: StepType) -> Self {
        StepSpec {
            step_type,
            max_attempts: None,
            threshold: None,
            sources: Vec::new(),
            countries: Vec::new(),
        }
    }

    /// The same step with a maximum number of attempts.
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// The same step with a score threshold.
    pub fn with_threshold(mut self, threshold: f64) -> Self {
        self.threshold = Some(threshold);
        self
    }
}

/// Whether applicants go through the flow as part of onboarding or when a client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum FlowKind {
    /// Onboarding flow.
    #[default]
    #[serde(rename = "regular")]
    Regular,
    /// Run on request (re-verification, step-up checks).
    #[serde(rename = "on-demand")]
    OnDemand,
}

/// Settings that apply to a whole flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FlowSettings {
    /// Approve automatically when every step passed, no warning is open and the face match
    /// score reaches its threshold.
    pub auto_approval: bool,
    /// Face-match score (0..=100) needed for auto-approval unless the step sets its own.
    pub face_match_threshold: f64,
    /// Countries accepted (ISO codes); empty = all.
    pub permitted_countries: Vec<String>,
    /// Countries refused (ISO codes).
    pub excluded_countries: Vec<String>,
    /// Regular or on-demand.
    pub kind: FlowKind,
}

impl Default for FlowSettings {
    fn default() -> Self {
        FlowSettings {
            auto_approval: false,
            face_match_threshold: DEFAULT_FACE_MATCH_THRESHOLD,
            permitted_countries: Vec::new(),
            excluded_countries: Vec::new(),
            kind: FlowKind::Regular,
        }
    }
}

/// A named, versioned flow definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Flow {
    /// Id of this flow version.
    #[serde(default)]
    pub id: Uuid,
    /// Name shared by all versions, e.g. `kyc-basic`.
    pub name: String,
    /// Version number, from 1.
    #[serde(default)]
    pub version: u32,
    /// Steps in order.
    pub steps: Vec<StepSpec>,
    /// Flow-wide settings, flattened into the flow object on the wire.
    #[serde(flatten)]
    pub settings: FlowSettings,
}

/// Reads a flow as `#[serde(flatten)]` on its settings would, without serde's flatten
/// machinery, which buffers every field of the object before reading any (the flow in each
/// `ApplicantCreated` made it the costliest payload to decode).
impl<'de> Deserialize<'de> for Flow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The flow object as it is on the wire: the flow's fields and its settings' side by
        /// side, the settings' defaults those of `FlowSettings::default`.
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            #[serde(default)]
            id: Uuid,
            name: String,
            #[serde(default)]
            version: u32,
            steps: Vec<StepSpec>,
            #[serde(default)]
            auto_approval: bool,
            #[serde(default = "default_face_match_threshold")]
            face_match_threshold: f64,
            #[serde(default)]
            permitted_countries: Vec<String>,
            #[serde(default)]
            excluded_countries: Vec<String>,
            #[serde(default)]
            kind: FlowKind,
        }
        fn default_face_match_threshold() -> f64 {
            FlowSettings::default().face_match_threshold
        }
        let wire = Wire::deserialize(deserializer)?;
        Ok(Flow {
            id: wire.id,
            name: wire.name,
            version: wire.version,
            steps: wire.steps,
            settings: FlowSettings {
                auto_approval: wire.auto_approval,
                face_match_threshold: wire.face_match_threshold,
                permitted_countries: wire.permitted_countries,
                excluded_countries: wire.excluded_countries,
                kind: wire.kind,
            },
        })
    }
}

impl Flow {
    /// Checks the definition: a name, at least one step, no step twice, thresholds within 0..=100,
    /// max attempts at least 1.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.name.trim().is_empty() {
            return Err(DomainError::InvalidFlow(
                "the flow has no name: give it a non-empty name".into(),
            ));
        }
        if self.steps.is_empty() {
            return Err(DomainError::InvalidFlow(format!(
                "flow {} has no steps: add at least one step",
                self.name
            )));
        }
        let mut seen = BTreeSet::new();
        for spec in &self.steps {
            if !seen.insert(spec.step_type) {
                return Err(DomainError::InvalidFlow(format!(
                    "flow {} lists step {} twice: keep one",
                    self.name, spec.step_type
                )));
            }
            if let Some(threshold) = spec.threshold {
                check_threshold(
                    &self.name,
                    &format!("step {} threshold", spec.step_type),
                    threshold,
                )?;
            }
            if spec.max_attempts == Some(0) {
                return Err(DomainError::InvalidFlow(format!(
                    "flow {} step {} has maxAttempts 0: use at least 1, or leave it out for unlimited",
                    self.name, spec.step_type
                )));
            }
        }
        check_threshold(
            &self.name,
            "faceMatchThreshold",
            self.settings.face_match_threshold,
        )
    }

    /// The settings of `step` in this flow, if the flow has it.
    pub fn step(&self, step: StepType) -> Option<&StepSpec> {
        self.steps.iter().find(|spec| spec.step_type == step)
    }

    /// True if the flow has `step`.
    pub fn has_step(&self, step: StepType) -> bool {
        self.step(step).is_some()
    }

    /// Face-match score needed for auto-approval: the step's threshold, else the flow's.
    pub fn face_match_threshold(&self) -> f64 {
        self.step(StepType::FaceMatch)
            .and_then(|spec| spec.threshold)
            .unwrap_or(self.settings.face_match_threshold)
    }

    /// `name vN`, for messages.
    pub fn label(&self) -> String {
        format!("{} v{}", self.name, self.version)
    }
}

fn check_threshold(flow: &str, what: &str, value: f64) -> Result<(), DomainError> {
    if (0.0..=100.0).contains(&value) {
        Ok(())
    } else {
        Err(DomainError::InvalidFlow(format!(
            "flow {flow} {what} is {value}: use a score between 0 and 100"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The flow as serde's `flatten` reads it: what `Flow`'s own reader must match.
    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Flattened {
        #[serde(default)]
        id: Uuid,
        name: String,
        #[serde(default)]
        version: u32,
        steps: Vec<StepSpec>,
        #[serde(flatten)]
        settings: FlowSettings,
    }

    fn both(value: &serde_json::Value) -> (Option<Flow>, Option<Flow>) {
        let ours = serde_json::from_value::<Flow>(value.clone()).ok();
        let flattened = serde_json::from_value::<Flattened>(value.clone())
            .ok()
            .map(|f| Flow {
                id: f.id,
                name: f.name,
                version: f.version,
                steps: f.steps,
                settings: f.settings,
            });
        (ours, flattened)
    }

    fn field_value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(json!(null)),
            Just(json!(true)),
            Just(json!(42.5)),
            Just(json!(7)),
            Just(json!("regular")),
            Just(json!("on-demand")),
            Just(json!(["FRA", "DEU"])),
            Just(json!([])),
            Just(json!([{"type": "liveness", "maxAttempts": 3}])),
            Just(json!({})),
        ]
    }

    proptest! {
        /// Whatever fields the object has, each reader gives the same flow or both refuse.
        #[test]
        fn a_flow_reads_as_serde_flatten_reads_it(
            fields in proptest::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()), Just("name".to_string()),
                    Just("version".to_string()), Just("steps".to_string()),
                    Just("autoApproval".to_string()), Just("faceMatchThreshold".to_string()),
                    Just("permittedCountries".to_string()), Just("excludedCountries".to_string()),
                    Just("kind".to_string()), Just("other".to_string()),
                ],
                field_value(),
                0..10,
            ),
        ) {
            let mut object: serde_json::Map<String, serde_json::Value> = fields.into_iter().collect();
            if object.get("name").is_some_and(|n| !n.is_string()) {
                object.insert("name".into(), json!("kyc"));
            }
            let value = serde_json::Value::Object(object);
            let (ours, flattened) = both(&value);
            prop_assert_eq!(ours, flattened, "{}", value);
        }
    }

    #[test]
    fn a_written_flow_reads_back_with_its_settings_and_defaults_for_missing_ones() {
        let mut written = flow(vec![StepSpec::new(StepType::Liveness).with_threshold(-0.0)]);
        written.settings.auto_approval = true;
        written.settings.excluded_countries = vec!["PRK".into()];
        let value = serde_json::to_value(&written).unwrap();
        assert_eq!(both(&value), (Some(written.clone()), Some(written)));
        let bare = json!({"name": "x", "steps": []});
        let (ours, flattened) = both(&bare);
        assert_eq!(ours, flattened);
        assert_eq!(ours.unwrap().settings, FlowSettings::default());
        assert_eq!(
            both(&json!({"name": "x", "steps": [], "autoApproval": null})),
            (None, None)
        );
    }

    fn flow(steps: Vec<StepSpec>) -> Flow {
        Flow {
            id: Uuid::nil(),
            name: "kyc-basic".into(),
            version: 1,
            steps,
            settings: FlowSettings::default(),
        }
    }

    #[test]
    fn the_architecture_example_parses_with_defaults() {
        let f: Flow = serde_json::from_value(json!({
            "name": "kyc-basic", "autoApproval": true,
            "steps": [{"type": "document_check", "maxAttempts": 3}, {"type": "liveness", "maxAttempts": 5},
                      {"type": "face_match", "threshold": 85, "sources": ["document", "liveness"]}, {"type": "aml"}]
        }))
        .unwrap();
        assert!(f.settings.auto_approval);
        assert_eq!(f.settings.face_match_threshold, 85.0);
        assert_eq!(f.settings.kind, FlowKind::Regular);
        assert_eq!(f.steps[2].threshold, Some(85.0));
        assert_eq!(f.face_match_threshold(), 85.0);
        f.validate().unwrap();
        let back = serde_json::to_value(&f).unwrap();
        assert_eq!(back["autoApproval"], json!(true));
        assert_eq!(back["kind"], json!("regular"));
        assert_eq!(back["steps"][0]["type"], json!("document_check"));
    }

    #[test]
    fn a_flow_needs_a_name_steps_and_sane_thresholds() {
        assert!(flow(vec![]).validate().is_err());
        let mut nameless = flow(vec![StepSpec::new(StepType::Aml)]);
        nameless.name = " ".into();
        assert!(nameless.validate().is_err());
        let twice = flow(vec![
            StepSpec::new(StepType::Aml),
            StepSpec::new(StepType::Aml),
        ]);
        assert!(
            matches!(twice.validate(), Err(DomainError::InvalidFlow(m)) if m.contains("twice"))
        );
        assert!(flow(vec![
            StepSpec::new(StepType::FaceMatch).with_threshold(101.0)
        ])
        .validate()
        .is_err());
        assert!(
            flow(vec![StepSpec::new(StepType::Liveness).with_max_attempts(0)])
                .validate()
                .is_err()
        );
        let mut loose = flow(vec![StepSpec::new(StepType::FaceMatch)]);
        loose.settings.face_match_threshold = -1.0;
        assert!(loose.validate().is_err());
    }

    #[test]
    fn step_names_round_trip() {
        for step in StepType::ALL {
            assert_eq!(step.as_str().parse::<StepType>().unwrap(), step);
            assert_eq!(serde_json::to_value(step).unwrap(), json!(step.as_str()));
        }
        assert!(StepType::Aml.is_background() && !StepType::Liveness.is_background());
        assert_eq!(
            serde_json::to_value(FlowKind::OnDemand).unwrap(),
            json!("on-demand")
        );
    }
}
