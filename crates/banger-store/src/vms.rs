//! The `vms` table.

use rusqlite::{ErrorCode, Row, params};

use crate::{Store, StoreError};

/// One VM's durable record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRecord {
    /// Stable identifier (lowercase hex).
    pub id: String,
    /// Unique name (already validated by the caller).
    pub name: String,
    /// Lifecycle state as stored: `created`, `running`, `stopped`, `error`.
    pub state: String,
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
    /// Whether the guest gets NAT beyond the bridge.
    pub nat: bool,
    /// The guest's address on the bridge.
    pub ip: String,
    /// The host tap (kept here so a crash cannot leak it).
    pub tap: String,
    /// Why the last lifecycle step failed, if it did.
    pub last_error: Option<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last change.
    pub updated_at: String,
}

const COLUMNS: &str = "id, name, state, image, kernel, vcpus, memory_mib, disk_bytes, nat, ip, tap, last_error, created_at, updated_at";

fn record(r: &Row<'_>) -> rusqlite::Result<VmRecord> {
    Ok(VmRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        state: r.get(2)?,
        image: r.get(3)?,
        kernel: r.get(4)?,
        vcpus: r.get(5)?,
        memory_mib: r.get(6)?,
        disk_bytes: r.get(7)?,
        nat: r.get(8)?,
        ip: r.get(9)?,
        tap: r.get(10)?,
        last_error: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
    })
}

impl Store {
    /// Every VM, oldest first.
    pub fn list_vms(&self) -> Result<Vec<VmRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM vms ORDER BY created_at, name"
            ))
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt.query_map([], record).map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }

    /// One VM by id.
    pub fn get_vm(&self, id: &str) -> Result<Option<VmRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM vms WHERE id = ?1"))
            .map_err(|e| self.sqlite(e))?;
        let mut rows = stmt.query_map([id], record).map_err(|e| self.sqlite(e))?;
        rows.next().transpose().map_err(|e| self.sqlite(e))
    }

    /// Inserts a new VM; a taken id, name, address or tap is
    /// [`StoreError::AlreadyExists`].
    pub fn insert_vm(&self, vm: &VmRecord) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.execute(
            &format!(
                "INSERT INTO vms ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ),
            params![
                vm.id,
                vm.name,
                vm.state,
                vm.image,
                vm.kernel,
                vm.vcpus,
                vm.memory_mib,
                vm.disk_bytes,
                vm.nat,
                vm.ip,
                vm.tap,
                vm.last_error,
                vm.created_at,
                vm.updated_at
            ],
        )
        .map(drop)
        .map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::ConstraintViolation) if e.to_string().contains("UNIQUE") => {
                StoreError::AlreadyExists {
                    what: format!("vm {:?}", vm.name),
                }
            }
            _ => self.sqlite(e),
        })
    }

    /// Records a VM's state and last error; whether the VM exists.
    pub fn set_vm_state(
        &self,
        id: &str,
        state: &str,
        last_error: Option<&str>,
        now: &str,
    ) -> Result<bool, StoreError> {
        self.lock()
            .execute(
                "UPDATE vms SET state = ?2, last_error = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, state, last_error, now],
            )
            .map(|n| n > 0)
            .map_err(|e| self.sqlite(e))
    }

    /// Changes a VM's size; whether the VM exists.
    pub fn set_vm_size(
        &self,
        id: &str,
        vcpus: u32,
        memory_mib: u32,
        disk_bytes: u64,
        now: &str,
    ) -> Result<bool, StoreError> {
        self.lock()
            .execute(
                "UPDATE vms SET vcpus = ?2, memory_mib = ?3, disk_bytes = ?4, updated_at = ?5 WHERE id = ?1",
                params![id, vcpus, memory_mib, disk_bytes, now],
            )
            .map(|n| n > 0)
            .map_err(|e| self.sqlite(e))
    }

    /// Removes a VM row; whether one existed.
    pub fn delete_vm(&self, id: &str) -> Result<bool, StoreError> {
        self.lock()
            .execute("DELETE FROM vms WHERE id = ?1", [id])
            .map(|n| n > 0)
            .map_err(|e| self.sqlite(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(id: &str, name: &str, ip: &str) -> VmRecord {
        VmRecord {
            id: id.into(),
            name: name.into(),
            state: "created".into(),
            image: "debian-bookworm".into(),
            kernel: "generic-6.1".into(),
            vcpus: 2,
            memory_mib: 1024,
            disk_bytes: 8 << 30,
            nat: false,
            ip: ip.into(),
            tap: format!("bgt{id}"),
            last_error: None,
            created_at: "2026-11-24T08:00:00Z".into(),
            updated_at: "2026-11-24T08:00:00Z".into(),
        }
    }

    #[test]
    fn insert_then_list_and_duplicate_name_or_address_is_already_exists() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        assert!(store.list_vms().unwrap().is_empty());
        store.insert_vm(&vm("a1", "web", "10.0.0.2")).unwrap();
        store.insert_vm(&vm("b2", "web-2", "10.0.0.3")).unwrap();
        let err = store.insert_vm(&vm("c3", "web", "10.0.0.4")).unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
        let err = store.insert_vm(&vm("d4", "db", "10.0.0.3")).unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
        let all = store.list_vms().unwrap();
        let names: Vec<_> = all.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["web", "web-2"]);
        assert_eq!(all[0], vm("a1", "web", "10.0.0.2"));
    }

    #[test]
    fn state_and_size_updates_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        store.insert_vm(&vm("a1", "web", "10.0.0.2")).unwrap();
        assert!(
            store
                .set_vm_state("a1", "error", Some("boom"), "t1")
                .unwrap()
        );
        assert!(store.set_vm_size("a1", 4, 2048, 1 << 34, "t2").unwrap());
        let got = store.get_vm("a1").unwrap().unwrap();
        assert_eq!(
            (
                got.state.as_str(),
                got.last_error.as_deref(),
                got.vcpus,
                got.memory_mib,
                got.disk_bytes
            ),
            ("error", Some("boom"), 4, 2048, 1 << 34)
        );
        assert!(!store.set_vm_state("zz", "stopped", None, "t").unwrap());
        assert!(store.get_vm("zz").unwrap().is_none());
        assert!(store.delete_vm("a1").unwrap());
        assert!(!store.delete_vm("a1").unwrap());
    }

    #[test]
    fn unknown_state_or_absurd_size_is_refused_by_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let mut bad = vm("a1", "web", "10.0.0.2");
        bad.state = "exploded".into();
        assert!(store.insert_vm(&bad).is_err());
        let mut bad = vm("a1", "web", "10.0.0.2");
        bad.vcpus = 0;
        assert!(store.insert_vm(&bad).is_err());
        assert!(store.list_vms().unwrap().is_empty());
    }
}
