//! The `vms` table.

use std::net::Ipv4Addr;

use banger_api::VmState;
use banger_api::names::{ArtifactName, VmName};
use rusqlite::types::Type;
use rusqlite::{ErrorCode, Row, params};

use crate::{Store, StoreError};

/// One VM's durable record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRecord {
    /// Stable identifier (lowercase hex).
    pub id: String,
    /// Unique name.
    pub name: VmName,
    /// Lifecycle state.
    pub state: VmState,
    /// The image it was created from.
    pub image: ArtifactName,
    /// The kernel it boots.
    pub kernel: ArtifactName,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Size of the work disk (/root) in bytes.
    pub disk_bytes: u64,
    /// Whether the guest gets NAT beyond the bridge.
    pub nat: bool,
    /// The guest's address on the bridge.
    pub ip: Ipv4Addr,
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

/// Column `i` parsed by `parse`; a value that does not parse is a
/// conversion error naming the column, not a row silently skipped.
fn parsed<T, E>(
    r: &Row<'_>,
    i: usize,
    parse: impl FnOnce(String) -> Result<T, E>,
) -> rusqlite::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let text: String = r.get(i)?;
    parse(text).map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e)))
}

/// A stored state none of [`VmState`]'s.
#[derive(Debug, thiserror::Error)]
#[error("unknown vm state {0:?}")]
struct UnknownState(String);

fn record(r: &Row<'_>) -> rusqlite::Result<VmRecord> {
    Ok(VmRecord {
        id: r.get(0)?,
        name: parsed(r, 1, VmName::stored)?,
        state: parsed(r, 2, |s| VmState::parse(&s).ok_or(UnknownState(s)))?,
        image: parsed(r, 3, ArtifactName::new)?,
        kernel: parsed(r, 4, ArtifactName::new)?,
        vcpus: r.get(5)?,
        memory_mib: r.get(6)?,
        disk_bytes: r.get(7)?,
        nat: r.get(8)?,
        ip: parsed(r, 9, |s| s.parse::<Ipv4Addr>())?,
        tap: r.get(10)?,
        last_error: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
    })
}

impl Store {
    /// Every VM, oldest first. A row this banger cannot read (edited by
    /// hand, or corrupt) is left out and logged, so the other VMs stay
    /// usable (and adoptable); [`Store::get_vm`] reports it as an error.
    pub fn list_vms(&self) -> Result<Vec<VmRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM vms ORDER BY created_at, name"
            ))
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt.query_map([], record).map_err(|e| self.sqlite(e))?;
        let mut vms = Vec::new();
        for row in rows {
            match row {
                Ok(vm) => vms.push(vm),
                Err(rusqlite::Error::FromSqlConversionFailure(column, _, e)) => {
                    tracing::warn!(column, error = %e, "a vm row does not parse; leaving it out");
                }
                Err(e) => return Err(self.sqlite(e)),
            }
        }
        Ok(vms)
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
                vm.name.as_str(),
                vm.state.as_str(),
                vm.image.as_str(),
                vm.kernel.as_str(),
                vm.vcpus,
                vm.memory_mib,
                vm.disk_bytes,
                vm.nat,
                vm.ip.to_string(),
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
        state: VmState,
        last_error: Option<&str>,
        now: &str,
    ) -> Result<bool, StoreError> {
        self.lock()
            .execute(
                "UPDATE vms SET state = ?2, last_error = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, state.as_str(), last_error, now],
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
pub(crate) mod tests {
    use super::*;

    /// A created VM row, for the store's tests.
    pub(crate) fn vm(id: &str, name: &str, ip: &str) -> VmRecord {
        VmRecord {
            id: id.into(),
            name: VmName::new(name).unwrap(),
            state: VmState::Created,
            image: ArtifactName::new("debian-bookworm").unwrap(),
            kernel: ArtifactName::new("generic-6.1").unwrap(),
            vcpus: 2,
            memory_mib: 1024,
            disk_bytes: 8 << 30,
            nat: false,
            ip: ip.parse().unwrap(),
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
                .set_vm_state("a1", VmState::Error, Some("boom"), "t1")
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
        assert!(
            !store
                .set_vm_state("zz", VmState::Stopped, None, "t")
                .unwrap()
        );
        assert!(store.get_vm("zz").unwrap().is_none());
        assert!(store.delete_vm("a1").unwrap());
        assert!(!store.delete_vm("a1").unwrap());
    }

    #[test]
    fn unknown_state_or_absurd_size_is_refused_by_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let exploded = store.lock().execute(
            &format!(
                "INSERT INTO vms ({COLUMNS}) VALUES ('a1', 'web', 'exploded', 'i', 'k', 1, 128, 1, 0, '10.0.0.2', 'bgta1', NULL, 't', 't')"
            ),
            [],
        );
        assert!(exploded.is_err());
        let mut bad = vm("a1", "web", "10.0.0.2");
        bad.vcpus = 0;
        assert!(store.insert_vm(&bad).is_err());
        assert!(store.list_vms().unwrap().is_empty());
    }

    #[test]
    fn a_row_that_does_not_parse_is_an_error_naming_its_column() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        store.insert_vm(&vm("a1", "web", "10.0.0.2")).unwrap();
        store
            .lock()
            .execute("UPDATE vms SET ip = 'not-an-ip' WHERE id = 'a1'", [])
            .unwrap();
        store.insert_vm(&vm("b2", "db", "10.0.0.3")).unwrap();
        let names: Vec<_> = store
            .list_vms()
            .unwrap()
            .into_iter()
            .map(|v| v.id)
            .collect();
        assert_eq!(
            names,
            ["b2"],
            "the unreadable row is left out, the rest listed"
        );
        let err = store.get_vm("a1").unwrap_err();
        let mut chain = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            chain.push_str(&format!(": {s}"));
            source = s.source();
        }
        assert!(chain.contains("index: 9"), "{chain}");
    }
}
