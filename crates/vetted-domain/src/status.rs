//! The applicant status as seen by clients, webhooks and the dashboard.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an applicant stands; see `rules::derived_status` for how it is computed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApplicantStatus {
    /// Created, verification not started.
    #[default]
    Init,
    /// The applicant has started; user-side steps are outstanding.
    Incomplete,
    /// User side done; background checks (face match, AML, IP) are running.
    InProgress,
    /// Held: at least one warning is unresolved.
    OnHold,
    /// Every check is done; a reviewer's decision is awaited.
    Completed,
    /// Approved by a reviewer or by auto-approval.
    Approved,
    /// Declined by a reviewer.
    Declined,
}

impl ApplicantStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [ApplicantStatus; 7] = [
        ApplicantStatus::Init,
        ApplicantStatus::Incomplete,
        ApplicantStatus::InProgress,
        ApplicantStatus::OnHold,
        ApplicantStatus::Completed,
        ApplicantStatus::Approved,
        ApplicantStatus::Declined,
    ];

    /// The wire name, e.g. `IN_PROGRESS`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ApplicantStatus::Init => "INIT",
            ApplicantStatus::Incomplete => "INCOMPLETE",
            ApplicantStatus::InProgress => "IN_PROGRESS",
            ApplicantStatus::OnHold => "ON_HOLD",
            ApplicantStatus::Completed => "COMPLETED",
            ApplicantStatus::Approved => "APPROVED",
            ApplicantStatus::Declined => "DECLINED",
        }
    }

    /// True once a decision (approve or decline) has been taken.
    pub fn is_decided(&self) -> bool {
        matches!(self, ApplicantStatus::Approved | ApplicantStatus::Declined)
    }
}

impl fmt::Display for ApplicantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of the seven status names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown applicant status {0:?}: use one of INIT, INCOMPLETE, IN_PROGRESS, ON_HOLD, COMPLETED, APPROVED, DECLINED")]
pub struct UnknownStatus(pub String);

impl FromStr for ApplicantStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApplicantStatus::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_match_the_wire() {
        for status in ApplicantStatus::ALL {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
            assert_eq!(status.as_str().parse::<ApplicantStatus>().unwrap(), status);
        }
        assert!("PENDING".parse::<ApplicantStatus>().is_err());
    }
}
