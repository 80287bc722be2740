//! Creating a VM: resolve (or pull) its image and kernel, reserve its
//! name and address under the short global lock, write its disks.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use banger_api::{CreateVmRequest, ErrorCode, Operation, OperationKind, OperationState, VmState};
use banger_artifacts::store::{Kind, now_rfc3339};
use banger_artifacts::{Progress, Stage};
use banger_store::VmRecord;

use super::disks::{self, DiskFiles, GuestSettings};
use super::{Vms, failed, lock, ssh};
use crate::error::ApiError;
use crate::operations::OpHandle;

/// A marker in a VM's directory while its disks are being written: a
/// daemon that starts and finds it knows the create never finished.
pub(super) const CREATING: &str = ".creating";

/// The image a VM gets when none is named.
pub const DEFAULT_IMAGE: &str = "debian-bookworm";
const DEFAULT_VCPUS: u32 = 2;
const DEFAULT_MEMORY_MIB: u32 = 1024;
const DEFAULT_DISK_BYTES: u64 = 8 << 30;
const MIN_DISK_BYTES: u64 = 64 << 20;
const MAX_DISK_BYTES: u64 = 16 << 40;

impl Vms {
    /// Validates `req` and starts the create operation.
    pub fn create(
        self: &Arc<Self>,
        op_id: &str,
        req: CreateVmRequest,
    ) -> Result<Operation, ApiError> {
        let name = match &req.name {
            Some(name) => {
                banger_api::names::validate_vm_name(name).map_err(ApiError::invalid)?;
                name.clone()
            }
            None => generated_name(),
        };
        let image = req
            .image
            .clone()
            .unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
        banger_api::names::validate_artifact_name("image", &image).map_err(ApiError::invalid)?;
        if let Some(kernel) = &req.kernel {
            banger_api::names::validate_artifact_name("kernel", kernel)
                .map_err(ApiError::invalid)?;
        }
        let size = Size::checked(req.vcpus, req.memory_mib, req.disk_bytes, None)?;
        size.check_room(&self.room()?, size.disk_bytes, 0)?;
        if self.db.list_vms()?.iter().any(|v| v.name == name) {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("a vm named {name:?} already exists"),
            ));
        }
        let handle = self.ops.begin(op_id, OperationKind::VmCreate, &name)?;
        let this = self.clone();
        let h = handle.clone();
        std::thread::spawn(move || {
            let spec = Spec {
                name,
                image,
                kernel: req.kernel,
                size,
                nat: req.nat,
                start: !req.no_start,
            };
            match this.create_work(&h, &spec) {
                Ok(message) => h.succeed(message),
                Err(e) => h.fail(e.code, e.message),
            }
        });
        Ok(handle.snapshot())
    }

    pub(super) fn create_work(&self, op: &Arc<OpHandle>, spec: &Spec) -> Result<String, ApiError> {
        let total = if spec.start { 5 } else { 3 };
        let stage = |index, name: &str| {
            op.stage(Stage {
                index,
                total,
                name: name.to_owned(),
            });
        };
        stage(1, &format!("finding image {}", spec.image));
        let (image, kernel) = self.resolve_artifacts(op, &spec.image, spec.kernel.as_deref())?;
        if op.cancel.is_cancelled() {
            return Err(failed("cancelled"));
        }
        self.check_vmm_can_boot(&kernel)?;
        self.check_image_can_boot(&image, spec.nat)?;
        stage(2, "reserving name and address");
        let record = self.reserve(spec, &image, &kernel)?;
        let vm_lock = self.vm_lock(&record.id);
        let _guard = lock(&vm_lock);
        stage(3, "writing the VM's disks");
        if let Err(e) = self.prepare(&record) {
            self.discard(&record);
            return Err(e);
        }
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

    /// Refuses an image pulled from a registry that lacks what a VM boots
    /// with, before anything is allocated for the VM.
    pub(super) fn check_image_can_boot(&self, image: &str, nat: bool) -> Result<(), ApiError> {
        let Some(origin) = self
            .art_store
            .manifest::<banger_artifacts::image::ImageManifest>(Kind::Image, image)
            .ok()
            .flatten()
            .and_then(|m| m.oci)
        else {
            return Ok(());
        };
        if let Some(why) = origin.cannot_boot() {
            return Err(failed(format!(
                "image {image} (pulled from {}) cannot boot as a VM: {why}",
                origin.reference
            )));
        }
        match origin.installs_at_first_boot() {
            Some(what) if !nat => Err(failed(format!(
                "image {image} (pulled from {}) needs --nat: {what}",
                origin.reference
            ))),
            _ => Ok(()),
        }
    }

    /// The image and kernel directories, pulling catalog entries that are
    /// missing (joining a pull already running).
    pub(super) fn resolve_artifacts(
        &self,
        op: &Arc<OpHandle>,
        image: &str,
        kernel: Option<&str>,
    ) -> Result<(String, String), ApiError> {
        if self.db.get_image(image)?.is_none() {
            let pull = self
                .artifacts
                .pull_image(crate::op_id::OpId::mint().as_str(), image)?;
            tracing::info!(op = %op.id(), pull = %pull.id, image, "the create waits on a pull");
            self.wait_for(op, pull)?;
        }
        let record = self
            .db
            .get_image(image)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no image {image:?}")))?;
        let kernel = kernel.map_or(record.kernel, str::to_owned);
        let bz = self
            .art_store
            .dir(Kind::Kernel, &kernel)
            .join(banger_artifacts::kernel::BZIMAGE);
        if !bz.is_file() {
            let pull = self
                .artifacts
                .pull_kernel(crate::op_id::OpId::mint().as_str(), &kernel)?;
            tracing::info!(op = %op.id(), pull = %pull.id, kernel, "the create waits on a pull");
            self.wait_for(op, pull)?;
        }
        Ok((image.to_owned(), kernel))
    }

    /// Waits for a pull, mirroring its stages into `op`.
    pub(super) fn wait_for(&self, op: &Arc<OpHandle>, pull: Operation) -> Result<(), ApiError> {
        let Some(handle) = self.ops.get(&pull.id) else {
            return Ok(());
        };
        loop {
            let snap = handle.snapshot();
            if let Some(s) = &snap.stage {
                op.stage(Stage {
                    index: 1,
                    total: 5,
                    name: format!(
                        "pulling {} ({}/{} {})",
                        snap.target, s.index, s.total, s.name
                    ),
                });
            }
            match snap.state {
                OperationState::Succeeded => return Ok(()),
                OperationState::Running => {}
                _ => {
                    let why = snap.error.map_or_else(String::new, |e| e.message);
                    return Err(failed(format!("pull {} failed: {why}", snap.target)));
                }
            }
            if op.cancel.is_cancelled() {
                return Err(failed("cancelled"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Checks the name, allocates an address and inserts the row: the only
    /// step under the global reservation lock, and a fast one.
    pub(super) fn reserve(
        &self,
        spec: &Spec,
        image: &str,
        kernel: &str,
    ) -> Result<VmRecord, ApiError> {
        let _guard = lock(&self.reserve);
        let all = self.db.list_vms()?;
        if all.iter().any(|v| v.name == spec.name) {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("a vm named {:?} already exists", spec.name),
            ));
        }
        let used: Vec<Ipv4Addr> = all.iter().filter_map(|v| v.ip.parse().ok()).collect();
        let ip = banger_net::allocate(&self.settings.subnet, &used).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Conflict,
                format!("no free address left in {}", self.settings.subnet),
            )
        })?;
        let id = format!("{:016x}", rand::random::<u64>());
        let now = now_rfc3339();
        let record = VmRecord {
            tap: banger_net::tap_name(&id),
            id,
            name: spec.name.clone(),
            state: VmState::Created.as_str().to_owned(),
            image: image.to_owned(),
            kernel: kernel.to_owned(),
            vcpus: spec.size.vcpus,
            memory_mib: spec.size.memory_mib,
            disk_bytes: spec.size.disk_bytes,
            nat: spec.nat,
            ip: ip.to_string(),
            last_error: None,
            created_at: now.clone(),
            updated_at: now,
        };
        self.db.insert_vm(&record)?;
        Ok(record)
    }

    /// Writes the VM directory: host key, overlay, work disk, known_hosts.
    pub(super) fn prepare(&self, vm: &VmRecord) -> Result<(), ApiError> {
        let dir = self.vm_dir(&vm.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| failed(format!("create {}: {e}", dir.display())))?;
        let marker = dir.join(CREATING);
        std::fs::write(&marker, b"")
            .map_err(|e| failed(format!("write {}: {e}", marker.display())))?;
        self.write_disks(vm, &dir)?;
        std::fs::remove_file(&marker)
            .map_err(|e| failed(format!("remove {}: {e}", marker.display())))
    }

    fn write_disks(&self, vm: &VmRecord, dir: &std::path::Path) -> Result<(), ApiError> {
        self.art_store
            .pin_rootfs(&vm.image, &vm.id)
            .map_err(|e| failed(crate::error::error_chain(&e)))?;
        let dir = dir.to_owned();
        let log = dir.join("create.log");
        self.ssh.ensure_identity(&self.runner).map_err(failed)?;
        let key = dir.join("host_key");
        ssh::keygen(&self.runner, &key, &format!("root@{}", vm.name), &log).map_err(failed)?;
        let private = std::fs::read(&key).map_err(|e| failed(format!("read host key: {e}")))?;
        let public =
            std::fs::read(ssh::pub_of(&key)).map_err(|e| failed(format!("read host key: {e}")))?;
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(ssh::pub_of(&key));
        let ip: Ipv4Addr = vm
            .ip
            .parse()
            .map_err(|_| ApiError::internal(format!("bad address {:?} in the store", vm.ip)))?;
        let disks = DiskFiles::in_dir(&dir);
        // A NAT guest reaches the host's resolvers; others reach nothing,
        // and keep the image's file rather than wait on timeouts.
        let nameservers = if vm.nat {
            disks::host_nameservers()
        } else {
            Vec::new()
        };
        let settings = GuestSettings {
            name: &vm.name,
            ip,
            host_key: (&private, &public),
            nameservers: &nameservers,
        };
        disks::make_overlay(&self.runner, &disks, &settings, &log).map_err(failed)?;
        let seed = self
            .art_store
            .dir(Kind::Image, &vm.image)
            .join(banger_artifacts::image::WORK_SEED);
        let authorized = self.ssh.public_key().map_err(failed)?;
        disks::make_work(
            &self.runner,
            &seed,
            &disks,
            vm.disk_bytes,
            &authorized,
            &log,
        )
        .map_err(failed)?;
        self.ssh
            .pin(&vm.id, &vm.name, ip, &String::from_utf8_lossy(&public))
            .map_err(failed)
    }

    /// Removes everything a VM has on the host but its running pieces.
    pub(super) fn discard(&self, vm: &VmRecord) {
        if let Err(e) = self.ssh.unpin(&vm.id) {
            tracing::warn!(vm = %vm.name, error = %e, "cannot unpin the host key");
        }
        if let Err(e) = self.art_store.unpin_rootfs(&vm.id) {
            tracing::warn!(vm = %vm.name, error = %crate::error::error_chain(&e), "cannot remove the vm's root file system link");
        }
        let dir = self.vm_dir(&vm.id);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(vm = %vm.name, error = %e, "cannot remove {}", dir.display());
        }
        if let Err(e) = self.db.delete_vm(&vm.id) {
            tracing::warn!(vm = %vm.name, error = %e, "cannot delete the row");
        }
        lock(&self.locks).remove(&vm.id);
    }
}

/// A VM's requested shape, checked.
#[derive(Debug, Clone, Copy)]
pub(super) struct Size {
    pub(super) vcpus: u32,
    pub(super) memory_mib: u32,
    pub(super) disk_bytes: u64,
}

impl Size {
    pub(super) fn checked(
        vcpus: Option<u32>,
        memory_mib: Option<u32>,
        disk_bytes: Option<u64>,
        current_disk: Option<u64>,
    ) -> Result<Self, ApiError> {
        let size = Self {
            vcpus: vcpus.unwrap_or(DEFAULT_VCPUS),
            memory_mib: memory_mib.unwrap_or(DEFAULT_MEMORY_MIB),
            disk_bytes: disk_bytes.unwrap_or(DEFAULT_DISK_BYTES),
        };
        if !(1..=64).contains(&size.vcpus) {
            return Err(ApiError::invalid(format!(
                "vcpus must be 1 to 64, got {}",
                size.vcpus
            )));
        }
        if !(128..=1_048_576).contains(&size.memory_mib) {
            return Err(ApiError::invalid(format!(
                "memory must be 128 MiB to 1 TiB, got {} MiB",
                size.memory_mib
            )));
        }
        if !(MIN_DISK_BYTES..=MAX_DISK_BYTES).contains(&size.disk_bytes) {
            return Err(ApiError::invalid(format!(
                "disk size must be 64 MiB to 16 TiB, got {} bytes",
                size.disk_bytes
            )));
        }
        if let Some(current) = current_disk
            && size.disk_bytes < current
        {
            return Err(ApiError::invalid(format!(
                "the work disk can only grow: it is {current} bytes, asked for {}",
                size.disk_bytes
            )));
        }
        Ok(size)
    }
}

impl Size {
    /// Refuses a shape this host has no room for: a work disk growing by
    /// `disk_growth` bytes beyond what its file system has free (disks
    /// are sparse, but a guest that fills one must not fill the host's),
    /// more vCPUs than the host has, more memory than the host has.
    /// `running_memory_mib` is what running VMs already hold; 0 when the
    /// VM is not about to start. vCPUs of different VMs share the host's
    /// CPUs by time, so only one VM's count is bounded; memory is not
    /// shared, so the sum is.
    pub(super) fn check_room(
        &self,
        room: &banger_sys::host::Room,
        disk_growth: u64,
        running_memory_mib: u64,
    ) -> Result<(), ApiError> {
        let full = |message: String| ApiError::new(ErrorCode::Conflict, message);
        if disk_growth > room.free_disk_bytes {
            return Err(full(format!(
                "the work disk needs {} more but the host has {} free for VMs",
                gib(disk_growth),
                gib(room.free_disk_bytes)
            )));
        }
        if self.vcpus > room.cpus {
            return Err(full(format!(
                "{} vCPUs asked for but the host has {} CPUs",
                self.vcpus, room.cpus
            )));
        }
        let wanted = running_memory_mib + u64::from(self.memory_mib);
        if wanted > room.memory_mib {
            return Err(full(if running_memory_mib == 0 {
                format!(
                    "{} MiB of memory asked for but the host has {} MiB",
                    self.memory_mib, room.memory_mib
                )
            } else {
                format!(
                    "{} MiB of memory asked for but running VMs already hold {running_memory_mib} of the host's {} MiB",
                    self.memory_mib, room.memory_mib
                )
            }));
        }
        Ok(())
    }
}

fn gib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss, reason = "a figure for people")]
    let g = bytes as f64 / f64::from(1u32 << 30);
    format!("{g:.1} GiB")
}

/// A create request, validated.
#[derive(Debug)]
pub(super) struct Spec {
    name: String,
    image: String,
    kernel: Option<String>,
    size: Size,
    nat: bool,
    start: bool,
}

fn generated_name() -> String {
    format!("vm-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_with_messages_naming_the_field() {
        assert!(Size::checked(None, None, None, None).is_ok());
        for (v, m, d, cur, needle) in [
            (Some(0), None, None, None, "vcpus"),
            (Some(65), None, None, None, "vcpus"),
            (None, Some(64), None, None, "memory"),
            (None, None, Some(1 << 20), None, "disk size"),
            (None, None, Some(1 << 30), Some(2 << 30), "only grow"),
        ] {
            let err = Size::checked(v, m, d, cur).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument);
            assert!(err.message.contains(needle), "{}", err.message);
        }
    }

    #[test]
    fn a_shape_the_host_has_no_room_for_is_refused_naming_what() {
        let room = banger_sys::host::Room {
            free_disk_bytes: 20 << 30,
            memory_mib: 4096,
            cpus: 2,
        };
        let size = |vcpus, memory_mib, disk_bytes| Size {
            vcpus,
            memory_mib,
            disk_bytes,
        };
        size(2, 1024, 8 << 30)
            .check_room(&room, 8 << 30, 0)
            .unwrap();
        size(2, 1024, 8 << 30)
            .check_room(&room, 8 << 30, 3072)
            .unwrap();
        for (s, growth, running, says) in [
            (
                size(2, 1024, 1 << 40),
                1 << 40,
                0,
                "1024.0 GiB more but the host has 20.0 GiB free",
            ),
            (
                size(4, 1024, 8 << 30),
                0,
                0,
                "4 vCPUs asked for but the host has 2",
            ),
            (
                size(1, 8192, 8 << 30),
                0,
                0,
                "8192 MiB of memory asked for but the host has 4096",
            ),
            (
                size(1, 2048, 8 << 30),
                0,
                3072,
                "running VMs already hold 3072 of the host's 4096 MiB",
            ),
        ] {
            let err = s.check_room(&room, growth, running).unwrap_err();
            assert_eq!(err.code, ErrorCode::Conflict);
            assert!(err.message.contains(says), "{}", err.message);
        }
    }

    #[test]
    fn generated_names_are_valid_vm_names() {
        for _ in 0..100 {
            banger_api::names::validate_vm_name(&generated_name()).unwrap();
        }
    }
}
