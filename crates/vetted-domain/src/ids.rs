//! Identifiers: applicants, warnings and applications (tenants), each a UUID with its own type
//! so one can never be passed where another is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

const APPLICANT_STREAM_PREFIX: &str = "applicant-";

/// An applicant; its events live in the stream `applicant-<uuid>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApplicantId(pub Uuid);

impl ApplicantId {
    /// A fresh random id (UUID v4).
    pub fn new() -> Self {
        ApplicantId(Uuid::new_v4())
    }

    /// The event stream of this applicant: `applicant-<uuid>`.
    pub fn stream(&self) -> String {
        format!("{APPLICANT_STREAM_PREFIX}{}", self.0)
    }

    /// The applicant a stream name belongs to, or `None` if it is not an applicant stream.
    pub fn from_stream(stream: &str) -> Option<Self> {
        stream
            .strip_prefix(APPLICANT_STREAM_PREFIX)
            .and_then(|rest| Uuid::parse_str(rest).ok())
            .map(ApplicantId)
    }
}

impl Default for ApplicantId {
    fn default() -> Self {
        Self::new()
    }
}

/// A warning raised on an applicant (suspicious document, duplicate...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WarningId(pub Uuid);

impl WarningId {
    /// A fresh random id (UUID v4).
    pub fn new() -> Self {
        WarningId(Uuid::new_v4())
    }
}

impl Default for WarningId {
    fn default() -> Self {
        Self::new()
    }
}

/// The public key of an application (tenant); every applicant belongs to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppKey(pub Uuid);

impl AppKey {
    /// A fresh random app key (UUID v4).
    pub fn new() -> Self {
        AppKey(Uuid::new_v4())
    }
}

impl Default for AppKey {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! uuid_text {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $t {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($t)
            }
        }

        impl From<Uuid> for $t {
            fn from(id: Uuid) -> Self {
                $t(id)
            }
        }
    };
}

uuid_text!(ApplicantId);
uuid_text!(WarningId);
uuid_text!(AppKey);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applicant_stream_round_trips() {
        let id = ApplicantId::new();
        assert_eq!(ApplicantId::from_stream(&id.stream()), Some(id));
        assert!(id.stream().starts_with("applicant-"));
        assert_eq!(ApplicantId::from_stream("application-1234"), None);
        assert_eq!(ApplicantId::from_stream("applicant-not-a-uuid"), None);
    }

    #[test]
    fn ids_serialize_as_bare_uuids() {
        let id: AppKey = "7f3e2d1c-0000-4000-8000-000000000001".parse().unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"7f3e2d1c-0000-4000-8000-000000000001\""
        );
        assert_eq!(id.to_string(), "7f3e2d1c-0000-4000-8000-000000000001");
    }
}
