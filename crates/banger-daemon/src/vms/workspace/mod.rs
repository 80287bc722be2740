//! A VM's workspace: a host checkout carried into the running guest as one
//! tar stream over one SSH session (`prepare`), and the guest's changes
//! since then handed back as a git patch (`export`).
//!
//! The daemon never reads the user's files: the CLI packs them with the
//! user's rights and the daemon pipes the stream, unparsed, into the
//! guest's `tar -x`. A per-VM workspace lock orders prepares and exports
//! of one VM; it is not the lifecycle lock, so a slow prepare holds up no
//! other VM and no `vm exec`, and a stop or kill is never blocked by it
//! (the session just ends with the VM).

pub mod guest;
mod held;
mod lay;
mod scripts;

use std::io::Read;
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;

use banger_api::names::VmName;
use banger_api::workspace::HeldObjects;
use banger_api::{PrepareWorkspaceQuery, Vm, Workspace};
use banger_store::VmRecord;
use banger_sys::wait::lock;

use super::{Vms, failed, not_running};
use crate::vms::VmError;
use guest::{GuestError, Session};

/// The exit code of [`scripts::PREPARE`] when what the host left out of
/// the stream as the guest held it is no longer there as it was.
const STALE: i32 = 5;
/// Most a prepare's own output (not the tree) may be.
const PREPARE_OUTPUT: usize = 64 * 1024;
/// How long a prepare may take, stream included; a guest past it is cut
/// off and the VM's workspace lock freed.
const PREPARE_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// How long an export may take.
const EXPORT_DEADLINE: Duration = Duration::from_secs(10 * 60);
/// Most a guest's listing of its objects and files may be (some 400,000
/// object names, or 150,000 files; packs of over about 150,000 objects
/// are named, not listed); past it, a prepare sends everything.
const HELD_OUTPUT: usize = 32 << 20;
/// How long the listing may take.
const HELD_DEADLINE: Duration = Duration::from_secs(60);

impl Vms {
    fn workspace_lock(&self, id: &str) -> Arc<Mutex<()>> {
        lock(&self.workspace_locks)
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone()
    }

    /// The VM `vm` if it runs and no lifecycle step (a start, stop or
    /// delete) is under way on it.
    fn ready_for_workspace(&self, vm: &VmRecord) -> Result<VmRecord, VmError> {
        self.unless_busy(vm, |vm| {
            if self.handles(&vm.id).is_none() {
                return Err(not_running(&vm));
            }
            Ok(vm)
        })
    }

    /// Runs `work` on `vm`'s row re-read under its lifecycle lock, taken
    /// only if free: a start, stop or delete under way is a 409, never a
    /// wait.
    fn unless_busy<T>(
        &self,
        vm: &VmRecord,
        work: impl FnOnce(VmRecord) -> Result<T, VmError>,
    ) -> Result<T, VmError> {
        let lifecycle = self.vm_lock(&vm.id);
        let _held = match lifecycle.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(VmError::Busy(vm.name.clone())),
        };
        work(self.reload(&vm.id)?)
    }

    /// Replaces the running VM `reference`'s workspace with the checkout
    /// `tar` carries, as `query` describes it, and records it.
    pub fn prepare_workspace(
        &self,
        reference: &str,
        query: &PrepareWorkspaceQuery,
        tar: &mut dyn Read,
    ) -> Result<Vm, VmError> {
        check_query(query)?;
        let vm = self.resolve_exact(reference)?;
        let ws_lock = self.workspace_lock(&vm.id);
        let _one = lock(&ws_lock);
        let vm = self.reload(&vm.id)?;
        if self.lays_in(&vm, query) {
            return self.lay_in(&vm, query, tar);
        }
        let vm = self.ready_for_workspace(&vm)?;
        let guest_path = self.settings.workspace_guest_path.clone();
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let (checkout, branch) = (opt(&query.checkout), opt(&query.branch));
        let (name, email) = (opt(&query.git_name), opt(&query.git_email));
        let session = Session {
            script: scripts::PREPARE,
            args: &[&guest_path, &checkout, &branch, &name, &email],
            max: PREPARE_OUTPUT,
            deadline: PREPARE_DEADLINE,
        };
        self.guest
            .run(&self.mux_target(&vm), &session, tar)
            .map_err(|e| match e {
                GuestError::Exit {
                    code: STALE,
                    stderr,
                } => VmError::Stale(format!("prepare the workspace of vm {}: {stderr}", vm.name)),
                e => guest_failed(&vm.name, "prepare the workspace", e),
            })?;
        self.record_workspace(vm, query, guest_path)
    }

    /// Records the workspace `query` describes, now at `guest_path`.
    fn record_workspace(
        &self,
        vm: VmRecord,
        query: &PrepareWorkspaceQuery,
        guest_path: String,
    ) -> Result<Vm, VmError> {
        let ws = Workspace {
            host_path: query.host_path.clone(),
            guest_path,
            commit: query.commit.clone(),
            branch: query.branch.clone().or_else(|| {
                // A `--from` checkout is detached; else the host's branch.
                query
                    .checkout
                    .is_none()
                    .then(|| query.host_branch.clone())?
            }),
            checkout: query.checkout.clone(),
            fingerprint: query.fingerprint.clone(),
            prepared_at: banger_artifacts::store::now_rfc3339(),
        };
        if !self.db.set_workspace(&vm.id, &ws)? {
            return Err(VmError::Deleted(vm.id));
        }
        self.view(vm)
    }

    /// The running VM `reference`'s changes since its last prepare, as a
    /// git patch (empty when nothing changed).
    pub fn export_workspace(&self, reference: &str) -> Result<Vec<u8>, VmError> {
        let vm = self.resolve(reference)?;
        let ws_lock = self.workspace_lock(&vm.id);
        let _one = lock(&ws_lock);
        let vm = self.ready_for_workspace(&vm)?;
        let ws = self
            .db
            .get_workspace(&vm.id)?
            .ok_or_else(|| VmError::NoWorkspace(vm.name.clone()))?;
        let session = Session {
            script: scripts::EXPORT,
            args: &[&ws.guest_path],
            max: banger_api::workspace::MAX_PATCH_BYTES,
            deadline: EXPORT_DEADLINE,
        };
        self.guest
            .run(&self.mux_target(&vm), &session, &mut std::io::empty())
            .map_err(|e| guest_failed(&vm.name, "export the workspace", e))
    }

    /// The git object files, and the work-tree files unchanged since the
    /// last prepare, that the running VM `reference`'s workspace holds,
    /// which a prepare need not send: none when it is not running, has no
    /// workspace, or its listing fails. See [`held::parse`] for what of
    /// the guest's listing is kept.
    pub fn held_objects(&self, reference: &str) -> Result<HeldObjects, VmError> {
        let vm = self.resolve(reference)?;
        let ws_lock = self.workspace_lock(&vm.id);
        let _one = lock(&ws_lock);
        if self.db.get_workspace(&vm.id)?.is_none() {
            return Ok(HeldObjects::default());
        }
        let Ok(vm) = self.ready_for_workspace(&vm) else {
            return Ok(HeldObjects::default());
        };
        // Where the next prepare links from: the configured path, which
        // may differ from the recorded one if the config changed.
        let session = Session {
            script: scripts::HELD,
            args: &[&self.settings.workspace_guest_path],
            max: HELD_OUTPUT,
            deadline: HELD_DEADLINE,
        };
        let out = match self
            .guest
            .run(&self.mux_target(&vm), &session, &mut std::io::empty())
        {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(vm = %vm.name, error = %e, "cannot list the workspace's objects; the prepare sends them all");
                return Ok(HeldObjects::default());
            }
        };
        Ok(held::parse(&String::from_utf8_lossy(&out)))
    }
}

fn guest_failed(name: &VmName, what: &str, e: GuestError) -> VmError {
    match e {
        GuestError::Input(_) => VmError::Invalid(format!("{what} of vm {name}: {e}")),
        GuestError::TooMuch(_) => VmError::Failed(format!(
            "{what} of vm {name}: {e} (the most the daemon hands back)"
        )),
        _ => failed(format!("{what} of vm {name}: {e}")),
    }
}

/// Refuses values the guest's git would misread or a table would show
/// garbled: every value here reaches the guest as a quoted argument, but a
/// commit must still be a commit and a branch a plain name.
pub fn check_query(q: &PrepareWorkspaceQuery) -> Result<(), VmError> {
    let bad = |what: &str, why: &str| Err(VmError::Invalid(format!("{what}: {why}")));
    let hex = |v: &str| matches!(v.len(), 40 | 64) && v.bytes().all(|b| b.is_ascii_hexdigit());
    for (what, v) in [("commit", &q.commit), ("checkout", &q.checkout)] {
        if let Some(v) = v
            && !hex(v)
        {
            return bad(what, "must be a full commit id (40 or 64 hex digits)");
        }
    }
    for (what, v) in [("branch", &q.branch), ("host_branch", &q.host_branch)] {
        if let Some(v) = v
            && (v.is_empty()
                || v.len() > 1024
                || v.starts_with('-')
                || v.chars().any(|c| c.is_control() || c.is_whitespace()))
        {
            return bad(
                what,
                "must be a branch name: no spaces or control characters, not starting with '-'",
            );
        }
    }
    let text = |v: &str| v.len() <= 4096 && !v.chars().any(char::is_control);
    if !q.host_path.starts_with('/') || !text(&q.host_path) {
        return bad(
            "host_path",
            "must be an absolute path without control characters",
        );
    }
    for (what, v) in [("git_name", &q.git_name), ("git_email", &q.git_email)] {
        if let Some(v) = v
            && (!text(v) || v.len() > 256)
        {
            return bad(
                what,
                "at most 256 characters, none of them control characters",
            );
        }
    }
    if q.fingerprint.len() != 64 || !q.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad("fingerprint", "must be 64 hex digits");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
