//! `GET /v1/doctor`: what banger found about this host.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it is fine.
    pub ok: bool,
    /// What was found, and what to do when it is not fine.
    pub detail: String,
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
