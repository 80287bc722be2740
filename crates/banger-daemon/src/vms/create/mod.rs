//! Creating a VM: resolve (or pull) its image and kernel ([`inputs`]),
//! reserve its name and address under the short global lock, write its
//! disks, and start it. A create that fails before its disks are written
//! leaves nothing: the reservation's undo discards the VM.

mod inputs;
mod size;

pub(super) use size::Size;

use std::net::Ipv4Addr;
use std::sync::Arc;

use banger_api::names::{ArtifactName, VmName};
use banger_api::{CreateVmRequest, Operation, OperationKind, VmState};
use banger_artifacts::store::{Kind, now_rfc3339};
use banger_artifacts::{Progress, Stage};
use banger_store::VmRecord;
use banger_sys::wait::lock;

use banger_sys::io_at;

use super::dir::VmDir;
use super::disks::{self, GuestSettings};
use super::file_sync;
use super::undo::Undo;
use super::{Vms, failed, failed_by, remove_temp, ssh};
use crate::error::ApiError;
use crate::operations::OpHandle;
use crate::vms::VmError;

/// The image a VM gets when none is named.
pub const DEFAULT_IMAGE: &str = "debian-bookworm";

impl Vms {
    /// Validates `req` and starts the create operation.
    pub fn create(
        self: &Arc<Self>,
        op_id: &str,
        req: CreateVmRequest,
    ) -> Result<Operation, VmError> {
        // The names were checked as the body was read (VmName,
        // ArtifactName): only the defaults are made here.
        let name = match req.name {
            Some(name) => name,
            None => generated_name(),
        };
        let image = match req.image {
            Some(image) => image,
            None => ArtifactName::new(DEFAULT_IMAGE)?,
        };
        let size = Size::checked(req.vcpus, req.memory_mib, req.disk_bytes, None)?;
        // A workspace disk is sparse like the work disk, and as large.
        let disks = if req.workspace_disk { 2 } else { 1 };
        size.check_room(&self.room()?, size.disk_bytes * disks, 0)?;
        for (what, v) in [("git_name", &req.git_name), ("git_email", &req.git_email)] {
            if let Some(v) = v
                && (v.chars().count() > 1024 || v.chars().any(char::is_control))
            {
                return Err(VmError::Invalid(format!(
                    "{what}: at most 1024 characters, no control characters"
                )));
            }
        }
        if self.db.list_vms()?.iter().any(|v| v.name == name) {
            return Err(VmError::NameTaken(name));
        }
        // Checked again as the files are copied; refused here so a bad
        // entry costs nothing.
        file_sync::check(
            &self.settings.file_sync,
            self.settings.owner_home.as_deref(),
        )
        .map_err(VmError::Invalid)?;
        let handle = self.ops.begin(op_id, OperationKind::VmCreate, &name)?;
        let this = self.clone();
        let h = handle.clone();
        let op_id = op_id.to_owned();
        std::thread::spawn(move || {
            let _scope = banger_helper::op_id_scope(&op_id);
            let spec = Spec {
                name,
                image,
                kernel: req.kernel,
                size,
                nat: req.nat,
                start: !req.no_start,
                home: Home {
                    workspace_disk: req.workspace_disk,
                    git_name: req.git_name,
                    git_email: req.git_email,
                },
            };
            match this.create_work(&h, &spec) {
                Ok(message) => h.succeed(message),
                Err(e) => {
                    let e = ApiError::from(e);
                    h.fail(e.code, e.message);
                }
            }
        });
        Ok(handle.snapshot())
    }

    fn create_work(self: &Arc<Self>, op: &Arc<OpHandle>, spec: &Spec) -> Result<String, VmError> {
        let total = if spec.start { 5 } else { 3 };
        let stage = |index, name: &str| {
            op.stage(Stage {
                index,
                total,
                name: name.to_owned(),
            });
        };
        stage(1, &format!("finding image {}", spec.image));
        let (image, kernel) = self.resolve_artifacts(op, &spec.image, spec.kernel.as_ref())?;
        if op.cancel.is_cancelled() {
            return Err(failed("cancelled"));
        }
        self.check_vmm_can_boot(&kernel)?;
        if spec.start {
            self.check_network_ready()?;
        }
        self.check_image_can_boot(&image, spec.nat)?;
        stage(2, "reserving name and address");
        let record = self.reserve(spec, &image, &kernel)?;
        let vm_lock = self.vm_lock(&record.id);
        let _guard = lock(&vm_lock);
        // Declared after the guard, so it is dropped (and discards) first,
        // under the VM's lock.
        let mut undo = Undo::default();
        {
            let (this, record) = (self.clone(), record.clone());
            undo.push("discard the half-created vm", move || {
                this.discard(&record);
                Ok(())
            });
        }
        stage(3, "writing the VM's disks");
        for warning in self.prepare(&record, &spec.home)? {
            op.warn(warning);
        }
        // From here the VM exists: a failed start leaves it, in state error.
        undo.commit();
        if !spec.start {
            return Ok(format!("vm {} ({}) created", record.name, record.id));
        }
        if op.cancel.is_cancelled() {
            return Err(failed("cancelled; the vm was created but not started"));
        }
        let (ip, _) = self.start_locked(&record, op.started(), &|i, n: &str| stage(3 + i, n))?;
        Ok(format!(
            "vm {} ({}) is running at {ip}",
            record.name, record.id
        ))
    }

    /// Checks the name, allocates an address and inserts the row: the only
    /// step under the global reservation lock, and a fast one.
    pub(super) fn reserve(
        &self,
        spec: &Spec,
        image: &ArtifactName,
        kernel: &ArtifactName,
    ) -> Result<VmRecord, VmError> {
        let _guard = lock(&self.reserve);
        let all = self.db.list_vms()?;
        if all.iter().any(|v| v.name == spec.name) {
            return Err(VmError::NameTaken(spec.name.clone()));
        }
        let used: Vec<Ipv4Addr> = all.iter().map(|v| v.ip).collect();
        let ip = banger_net::allocate(&self.settings.subnet, &used)
            .ok_or(VmError::NoAddress(self.settings.subnet))?;
        let id = format!("{:016x}", rand::random::<u64>());
        let now = now_rfc3339();
        let record = VmRecord {
            tap: banger_net::tap_name(&id),
            id,
            name: spec.name.clone(),
            state: VmState::Created,
            image: image.clone(),
            kernel: kernel.clone(),
            vcpus: spec.size.vcpus,
            memory_mib: spec.size.memory_mib,
            disk_bytes: spec.size.disk_bytes,
            nat: spec.nat,
            ip,
            last_error: None,
            created_at: now.clone(),
            updated_at: now,
        };
        self.db.insert_vm(&record)?;
        Ok(record)
    }

    /// Writes the VM directory: host key, overlay, work disk, known_hosts.
    /// Returns what file_sync skipped.
    pub(super) fn prepare(&self, vm: &VmRecord, home: &Home) -> Result<Vec<String>, VmError> {
        let dir = self.dir(&vm.id);
        let marker = dir.creating();
        std::fs::create_dir_all(dir.path())
            .map_err(io_at("create", dir.path()))
            .and_then(|()| std::fs::write(&marker, b"").map_err(io_at("write", &marker)))
            .map_err(|e| failed_by(&e))?;
        let warnings = self.write_disks(vm, &dir, home)?;
        std::fs::remove_file(&marker)
            .map_err(io_at("remove", &marker))
            .map_err(|e| failed_by(&e))?;
        Ok(warnings)
    }

    fn write_disks(&self, vm: &VmRecord, dir: &VmDir, home: &Home) -> Result<Vec<String>, VmError> {
        self.art_store
            .pin_rootfs(&vm.image, &vm.id)
            .map_err(|e| failed_by(&e))?;
        let log = dir.create_log();
        self.ssh
            .ensure_identity(&self.runner)
            .map_err(|e| failed_by(&e))?;
        let key = dir.host_key();
        ssh::keygen(&self.runner, &key, &format!("root@{}", vm.name), &log)
            .map_err(|e| failed_by(&e))?;
        let private = std::fs::read(&key).map_err(|e| failed(format!("read host key: {e}")))?;
        let public =
            std::fs::read(ssh::pub_of(&key)).map_err(|e| failed(format!("read host key: {e}")))?;
        remove_temp(&key);
        remove_temp(&ssh::pub_of(&key));
        let ip = vm.ip;
        let disks = dir.disks();
        // A NAT guest reaches the host's resolvers; others reach nothing,
        // and keep the image's file rather than wait on timeouts.
        let nameservers = if vm.nat {
            banger_net::host_nameservers()
        } else {
            Vec::new()
        };
        let settings = GuestSettings {
            name: &vm.name,
            ip,
            host_key: (&private, &public),
            nameservers: &nameservers,
            workspace: home
                .workspace_disk
                .then_some(self.settings.workspace_guest_path.as_str()),
        };
        disks::make_overlay(&self.runner, &disks, &settings, &log).map_err(|e| failed_by(&e))?;
        let seed = self
            .art_store
            .dir(Kind::Image, &vm.image)
            .join(banger_artifacts::image::WORK_SEED);
        let authorized = self.ssh.public_key().map_err(|e| failed_by(&e))?;
        let gitconfig = disks::gitconfig(home.git_name.as_deref(), home.git_email.as_deref());
        let synced = file_sync::stage(
            &self.settings.file_sync,
            self.settings.owner_home.as_deref(),
            (dir.path(), "file_sync"),
            file_sync::MAX_BYTES.min(vm.disk_bytes / 4),
        );
        let staged = dir.path().join("file_sync");
        let result = synced.map_err(failed).and_then(|synced| {
            let files = disks::WorkFiles {
                authorized_key: &authorized,
                gitconfig: &gitconfig,
                synced: &synced.commands,
            };
            disks::make_work(&self.runner, &seed, &disks, vm.disk_bytes, files, &log)
                .map_err(|e| failed_by(&e))
                .map(|()| synced.warnings)
        });
        if let Err(e) = std::fs::remove_dir_all(&staged)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(vm = %vm.name, error = %e, "cannot remove {}", staged.display());
        }
        let warnings = result?;
        if home.workspace_disk {
            disks::make_repo(&self.runner, &disks, vm.disk_bytes, &log)
                .map_err(|e| failed_by(&e))?;
        }
        self.ssh
            .pin(&vm.id, &vm.name, ip, &String::from_utf8_lossy(&public))
            .map_err(|e| failed_by(&e))?;
        Ok(warnings)
    }

    /// Removes everything a VM has on the host but its running pieces.
    pub(super) fn discard(&self, vm: &VmRecord) {
        if let Err(e) = self.ssh.unpin(&vm.id) {
            tracing::warn!(vm = %vm.name, error = %crate::error::error_chain(&e), "cannot unpin the host key");
        }
        if let Err(e) = self.art_store.unpin_rootfs(&vm.id) {
            tracing::warn!(vm = %vm.name, error = %crate::error::error_chain(&e), "cannot remove the vm's root file system link");
        }
        let dir = self.dir(&vm.id);
        if let Err(e) = std::fs::remove_dir_all(dir.path())
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(vm = %vm.name, error = %e, "cannot remove {}", dir.path().display());
        }
        if let Err(e) = self.db.delete_vm(&vm.id) {
            tracing::warn!(vm = %vm.name, error = %e, "cannot delete the row");
        }
        lock(&self.locks).remove(&vm.id);
        lock(&self.mux_locks).remove(&vm.id);
        lock(&self.workspace_locks).remove(&vm.id);
    }
}

/// A create request, validated.
#[derive(Debug)]
pub(super) struct Spec {
    name: VmName,
    image: ArtifactName,
    kernel: Option<ArtifactName>,
    size: Size,
    nat: bool,
    start: bool,
    home: Home,
}

/// What a create puts under `/root` besides banger's key.
#[derive(Debug, Clone, Default)]
pub(super) struct Home {
    /// A workspace disk, mounted at the workspace path.
    pub(super) workspace_disk: bool,
    /// git identity for `/root/.gitconfig`.
    pub(super) git_name: Option<String>,
    pub(super) git_email: Option<String>,
}

fn generated_name() -> VmName {
    VmName::new(format!("vm-{:06x}", rand::random::<u32>() & 0xff_ffff))
        .expect("vm-<6 hex digits> is a vm name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_valid_vm_names() {
        for _ in 0..100 {
            banger_api::names::validate_vm_name(&generated_name()).unwrap();
            assert!(generated_name().starts_with("vm-"));
        }
    }
}
