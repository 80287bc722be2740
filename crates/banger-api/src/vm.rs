//! VM resources.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The lifecycle state a VM is recorded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Defined, disks prepared, never started.
    Created,
    /// The VMM process runs.
    Running,
    /// Stopped with its disks kept.
    Stopped,
    /// A lifecycle step failed; `vm show` has the error.
    Error,
}

impl VmState {
    /// The state as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Error => "error",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => Self::Created,
            "running" => Self::Running,
            "stopped" => Self::Stopped,
            "error" => Self::Error,
            _ => return None,
        })
    }
}

/// One row of `GET /v1/vms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmSummary {
    /// Stable identifier.
    pub id: String,
    /// Unique, user-chosen DNS-label name.
    pub name: String,
    /// Recorded lifecycle state.
    pub state: VmState,
    /// The image the VM was created from.
    pub image: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

/// Query parameters of `GET /v1/vms`. None are defined yet; unknown ones
/// are refused rather than ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListVmsQuery {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_state_round_trips_through_stored_form() {
        for state in [
            VmState::Created,
            VmState::Running,
            VmState::Stopped,
            VmState::Error,
        ] {
            assert_eq!(VmState::parse(state.as_str()), Some(state));
        }
        assert_eq!(VmState::parse("Running"), None);
    }
}
