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
    /// The guest's address on the bridge.
    pub ip: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// The host checkout in its workspace, if one was prepared.
    pub workspace: Option<String>,
}

/// One VM in full: `GET /v1/vms/{vm}` and the lifecycle calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    /// Stable identifier.
    pub id: String,
    /// Unique DNS-label name.
    pub name: String,
    /// Recorded lifecycle state.
    pub state: VmState,
    /// The image it was created from.
    pub image: String,
    /// The kernel it boots.
    pub kernel: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Size of the work disk (/root) in bytes.
    pub disk_bytes: u64,
    /// Whether the guest has NAT beyond the bridge.
    pub nat: bool,
    /// The guest's address on the bridge.
    pub ip: String,
    /// The host tap.
    pub tap: String,
    /// The VMM's pid while running.
    pub pid: Option<u32>,
    /// `kvm` or `tcg` while running.
    pub accel: Option<String>,
    /// Why the last lifecycle step failed.
    pub last_error: Option<String>,
    /// The guest's serial console log.
    pub console_log: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Time of the last change (RFC 3339).
    pub updated_at: String,
    /// Its workspace, as recorded at the last prepare.
    pub workspace: Option<crate::Workspace>,
}

/// `POST /v1/vms`: create (and by default start) a VM, as an operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVmRequest {
    /// 1-63 of `a-z 0-9 -`, no leading or trailing `-`, not shaped like a
    /// VM id (16 hex digits); generated when absent.
    #[serde(default)]
    #[schema(
        value_type = Option<String>,
        pattern = r"^(?![0-9a-f]{16}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        min_length = 1,
        max_length = 63
    )]
    pub name: Option<crate::names::VmName>,
    /// Image name; default `debian-bookworm`, pulled when missing.
    #[serde(default)]
    #[schema(
        value_type = Option<String>,
        pattern = r"^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,62}$",
        min_length = 1,
        max_length = 63
    )]
    pub image: Option<crate::names::ArtifactName>,
    /// Kernel name; default: the image's.
    #[serde(default)]
    #[schema(
        value_type = Option<String>,
        pattern = r"^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,62}$",
        min_length = 1,
        max_length = 63
    )]
    pub kernel: Option<crate::names::ArtifactName>,
    /// Virtual CPUs, 1-64 and at most the host's CPUs; default 2.
    #[serde(default, deserialize_with = "crate::whole::opt_u32")]
    #[schema(minimum = 1, maximum = 64)]
    pub vcpus: Option<u32>,
    /// Memory in MiB, 128-1048576 and within the host's; default 1024.
    #[serde(default, deserialize_with = "crate::whole::opt_u32")]
    #[schema(minimum = 128, maximum = 1048576)]
    pub memory_mib: Option<u32>,
    /// Work disk size in bytes, 64 MiB to 16 TiB and within the host's
    /// free space (409 otherwise); default 8 GiB.
    #[serde(default, deserialize_with = "crate::whole::opt_u64")]
    #[schema(minimum = 67108864, maximum = 17592186044416_u64)]
    pub disk_bytes: Option<u64>,
    /// Masquerade the guest's traffic beyond the bridge.
    #[serde(default)]
    pub nat: bool,
    /// Leave the VM created but not started.
    #[serde(default)]
    pub no_start: bool,
    /// Give the VM a disk of its own for its workspace, mounted at the
    /// workspace path. A prepare before the first start writes the
    /// checkout into it on the host (no SSH, no guest work): what `vm run
    /// PATH` does.
    #[serde(default)]
    pub workspace_disk: bool,
    /// git `user.name` for the guest's `/root/.gitconfig`: at most 1024
    /// characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 1024, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub git_name: Option<String>,
    /// git `user.email` for the guest's `/root/.gitconfig`: at most 1024
    /// characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 1024, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub git_email: Option<String>,
}

/// `PATCH /v1/vms/{vm}`: resize a stopped VM. Absent fields stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetVmRequest {
    /// Virtual CPUs, 1-64.
    #[serde(default, deserialize_with = "crate::whole::opt_u32")]
    #[schema(minimum = 1, maximum = 64)]
    pub vcpus: Option<u32>,
    /// Memory in MiB, 128-1048576.
    #[serde(default, deserialize_with = "crate::whole::opt_u32")]
    #[schema(minimum = 128, maximum = 1048576)]
    pub memory_mib: Option<u32>,
    /// Work disk size in bytes, up to 16 TiB; it can only grow.
    #[serde(default, deserialize_with = "crate::whole::opt_u64")]
    #[schema(minimum = 67108864, maximum = 17592186044416_u64)]
    pub disk_bytes: Option<u64>,
}

/// Query parameters of `DELETE /v1/vms/{vm}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteVmQuery {
    /// Kill and delete a running VM.
    #[serde(default)]
    pub force: bool,
}

/// Query parameters of `GET /v1/vms/{vm}/console`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsoleQuery {
    /// Byte offset to read from, counted over everything the console has
    /// held; default 0. Only the last 4 to 8 MiB are kept: an older offset
    /// reads from the oldest byte kept, one past the end is refused (400).
    #[serde(default)]
    pub offset: u64,
}

/// A slice of a VM's serial console log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleChunk {
    /// The text (invalid UTF-8 replaced).
    pub data: String,
    /// Where the next read starts.
    pub next_offset: u64,
}

/// `GET /v1/vms/{vm}/ssh`: how to reach the guest's SSH server with
/// banger's key and known_hosts, trusting nothing on first use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SshTarget {
    /// The VM's name.
    pub name: String,
    /// Login user.
    pub user: String,
    /// The guest's address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// banger's private key.
    pub identity_file: String,
    /// banger's known_hosts, holding the VM's host key.
    pub known_hosts_file: String,
    /// The daemon's SSH control master for this VM, when one is up:
    /// sessions through it skip the key exchange (under TCG, 0.05 s
    /// instead of 0.85 s). A plain path (letters, digits, `/._-`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_path: Option<String>,
}

impl SshTarget {
    /// The `ssh` arguments that reach the guest with banger's key and
    /// known_hosts only, refusing any host key but the pinned one; the
    /// destination comes last, so options go before and a command after.
    pub fn ssh_args(&self) -> Vec<String> {
        let mut args = self.ssh_options();
        args.push(self.destination());
        args
    }

    /// `user@host`.
    pub fn destination(&self) -> String {
        format!("{}@{}", self.user, self.host)
    }

    /// [`SshTarget::ssh_args`] without the destination.
    pub fn ssh_options(&self) -> Vec<String> {
        let mut args = Vec::new();
        // A path ssh would read otherwise (`%` tokens, spaces) is not
        // used: the session then makes its own connection.
        if let Some(path) = self.control_path.as_ref().filter(|p| is_plain_path(p)) {
            args.extend([
                "-o".to_owned(),
                "ControlMaster=no".to_owned(),
                "-o".to_owned(),
                format!("ControlPath={path}"),
            ]);
        }
        args.extend([
            "-i".to_owned(),
            self.identity_file.clone(),
            "-o".to_owned(),
            format!("UserKnownHostsFile={}", self.known_hosts_file),
            "-o".to_owned(),
            "StrictHostKeyChecking=yes".to_owned(),
            "-o".to_owned(),
            "IdentitiesOnly=yes".to_owned(),
            "-o".to_owned(),
            "LogLevel=ERROR".to_owned(),
            "-p".to_owned(),
            self.port.to_string(),
        ]);
        args
    }
}

/// Whether `path` is absolute and made only of letters, digits and
/// `/._-`: what ssh reads as written in a `ControlPath`.
pub fn is_plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
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
    fn a_control_path_is_used_only_when_ssh_reads_it_as_written() {
        let mut target = SshTarget {
            name: "web".into(),
            user: "root".into(),
            host: "10.77.0.2".into(),
            port: 22,
            identity_file: "/k".into(),
            known_hosts_file: "/h".into(),
            control_path: None,
        };
        assert_eq!(target.ssh_args().last().unwrap(), "root@10.77.0.2");
        assert!(!target.ssh_args().iter().any(|a| a.contains("Control")));
        target.control_path = Some("/s/vms/0a1b/ssh.mux".into());
        assert_eq!(
            target.ssh_args()[..4],
            [
                "-o",
                "ControlMaster=no",
                "-o",
                "ControlPath=/s/vms/0a1b/ssh.mux"
            ]
        );
        for odd in ["/a b/m", "/a%h/m", "rel/m", "/a\"b"] {
            target.control_path = Some(odd.into());
            assert!(
                !target.ssh_args().iter().any(|a| a.contains("Control")),
                "{odd}"
            );
        }
    }

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
