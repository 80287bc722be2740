//! A VM's workspace: a host checkout carried into the guest.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Query parameters of `PUT /v1/vms/{vm}/workspace`, whose body is the tar
/// stream of the checkout (paths relative to its top, `.git` included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PrepareWorkspaceQuery {
    /// The checkout's top directory on the host (recorded, shown).
    pub host_path: String,
    /// HEAD's commit on the host (full hex); absent in a repository
    /// without commits.
    #[serde(default)]
    pub commit: Option<String>,
    /// The host's branch, when HEAD is on one (recorded, shown).
    #[serde(default)]
    pub host_branch: Option<String>,
    /// A commit (full hex) for the guest to check out instead of the work
    /// tree the body carries (`--from`).
    #[serde(default)]
    pub checkout: Option<String>,
    /// A branch to create and check out in the guest (`--branch`).
    #[serde(default)]
    pub branch: Option<String>,
    /// The host checkout's fingerprint when it was packed, so a later
    /// `vm exec` can tell that the host moved on.
    pub fingerprint: String,
    /// git `user.name` for the guest's `/root/.gitconfig`.
    #[serde(default)]
    pub git_name: Option<String>,
    /// git `user.email` for the guest's `/root/.gitconfig`.
    #[serde(default)]
    pub git_email: Option<String>,
}

/// What a VM's workspace holds, as recorded at its last prepare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    /// The checkout on the host.
    pub host_path: String,
    /// Where it is in the guest.
    pub guest_path: String,
    /// The host's HEAD when prepared.
    pub commit: Option<String>,
    /// The branch checked out in the guest (`--branch`), else the host's.
    pub branch: Option<String>,
    /// The commit checked out in the guest (`--from`), if not the work tree.
    pub checkout: Option<String>,
    /// The host checkout's fingerprint when prepared.
    pub fingerprint: String,
    /// When (RFC 3339).
    pub prepared_at: String,
}

/// The last entry of every workspace tar. A stream cut short between two
/// entries extracts without an error, so the guest takes the tree as whole
/// only when this arrived (and then removes it). Inside `.git`, where no
/// file of the user's work tree can be.
pub const END_MARKER: &str = ".git/banger-end";

/// Raw bytes as a body (a tar stream, a patch), for the API document.
#[derive(Debug, Clone, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(pub Vec<u8>);

/// The most a workspace export answers with: a bigger patch is refused
/// rather than held in the daemon's memory.
pub const MAX_PATCH_BYTES: usize = 64 << 20;

/// `GET /v1/vms/{vm}/workspace/objects`: git object files the VM's
/// workspace already holds, by name under `.git/objects`, and the files
/// of its work tree unchanged since the last prepare. A prepare leaves
/// them out of its stream, and the guest links its own copies instead:
/// only content-addressed names ([`is_object_name`]) are listed, and the
/// same name is the same bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeldObjects {
    /// Names relative to `.git/objects` (`ab/cdef...`,
    /// `pack/pack-<hash>.pack`).
    pub names: Vec<String>,
    /// Regular files of the work tree that the guest holds as its last
    /// prepare carried them, unchanged since (by git's own check). A
    /// prepare leaves out those the host would send with the same mode
    /// and blob, and the guest links its own copies.
    #[serde(default)]
    pub files: Vec<HeldFile>,
    /// The commit (`refs/banger/prepared`) `files` are as of; the guest
    /// takes the files left out only while its workspace is still at it.
    #[serde(default)]
    pub prepared: Option<String>,
}

/// A work-tree file a guest holds, as `git ls-tree` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeldFile {
    /// `100644` or `100755`.
    pub mode: String,
    /// The blob's id (full hex).
    pub blob: String,
    /// The path from the top, as git prints it with `core.quotePath`
    /// (a name with a control character, a quote or a byte above 0x7f
    /// quoted and escaped): printable ASCII, whatever the name's bytes.
    pub path: String,
}

/// The manifest a stream carries of the objects it left out, which the
/// guest checks it holds before taking the tree (inside `.git`, where no
/// file of the user's work tree can be).
pub const HELD_MANIFEST: &str = ".git/banger-held";

/// The manifest a stream carries of the work-tree files it left out, as
/// the guest holds them: paths from the top, each ended by a NUL.
pub const HELD_FILES_MANIFEST: &str = ".git/banger-held-files";

/// Most names a [`HeldObjects`] carries: past it the guest's listing is
/// not used, and the prepare sends everything.
pub const MAX_HELD: usize = 1_000_000;

/// Whether `name` (relative to `.git/objects`) names a file by its
/// content: a loose object (`xx/` and the rest of a SHA-1 or SHA-256
/// hex name) or a pack's file (`pack/pack-<hex>.pack|idx|rev`).
pub fn is_object_name(name: &str) -> bool {
    let hex = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if let Some(rest) = name.strip_prefix("pack/pack-") {
        return rest.split_once('.').is_some_and(|(h, ext)| {
            (h.len() == 40 || h.len() == 64) && hex(h) && ["pack", "idx", "rev"].contains(&ext)
        });
    }
    name.split_once('/').is_some_and(|(fan, rest)| {
        fan.len() == 2 && hex(fan) && (rest.len() == 38 || rest.len() == 62) && hex(rest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_content_addressed_names_are_object_names() {
        let sha1 = "0123456789abcdef0123456789abcdef01234567";
        for good in [
            format!("{}/{}", &sha1[..2], &sha1[2..]),
            format!("pack/pack-{sha1}.pack"),
            format!("pack/pack-{sha1}.idx"),
            format!("pack/pack-{}.rev", "a".repeat(64)),
            format!("ab/{}", "c".repeat(62)),
        ] {
            assert!(is_object_name(&good), "{good}");
        }
        for bad in [
            "info/commit-graph".to_owned(),
            "info/alternates".to_owned(),
            format!("pack/pack-{sha1}.keep"),
            format!("pack/pack-{sha1}.pack/../../x"),
            format!("{}/{}/x", &sha1[..2], &sha1[2..]),
            format!("../{}", &sha1[2..]),
            format!(
                "{}/{}",
                &sha1[..2],
                sha1.to_uppercase().get(2..).unwrap_or("")
            ),
            String::new(),
            "ab/".to_owned(),
        ] {
            assert!(!is_object_name(&bad), "{bad}");
        }
    }
}
