//! `GET /v1/doctor`: what banger found about this host.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// How it stands.
    pub status: CheckStatus,
    /// Whether guests cannot run without it (`banger doctor` exits 1 when
    /// an essential check fails).
    pub essential: bool,
    /// What was found, and what to do when it is not fine.
    pub detail: String,
}

/// How a check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Fine.
    Pass,
    /// Works, with a caveat the detail names.
    Warn,
    /// Missing or broken.
    Fail,
}

impl CheckStatus {
    /// `PASS`, `WARN` or `FAIL`, as `banger doctor` prints it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        }
    }

    /// Pass or fail by `ok`.
    pub fn of(ok: bool) -> Self {
        if ok { Self::Pass } else { Self::Fail }
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DoctorReport {
    /// How guests will run: `kvm` or `tcg`.
    pub accel: String,
    /// Every finding, KVM first.
    pub checks: Vec<Check>,
}
