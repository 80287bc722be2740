//! The `vms` table.

use rusqlite::{ErrorCode, params};

use crate::{Store, StoreError};

/// One VM's durable record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRecord {
    /// Stable identifier.
    pub id: String,
    /// Unique name (already validated by the caller).
    pub name: String,
    /// Lifecycle state as stored: `created`, `running`, `stopped`, `error`.
    pub state: String,
    /// The image it was created from.
    pub image: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last change.
    pub updated_at: String,
}

impl Store {
    /// Every VM, oldest first.
    pub fn list_vms(&self) -> Result<Vec<VmRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, name, state, image, created_at, updated_at FROM vms ORDER BY created_at, name",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(VmRecord {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    state: r.get(2)?,
                    image: r.get(3)?,
                    created_at: r.get(4)?,
                    updated_at: r.get(5)?,
                })
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }

    /// Inserts a new VM; a taken id or name is [`StoreError::AlreadyExists`].
    pub fn insert_vm(&self, vm: &VmRecord) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO vms (id, name, state, image, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![vm.id, vm.name, vm.state, vm.image, vm.created_at, vm.updated_at],
        )
        .map(drop)
        .map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::ConstraintViolation) => StoreError::AlreadyExists {
                what: format!("vm {:?}", vm.name),
            },
            _ => self.sqlite(e),
        })
    }
}

impl Store {
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

    fn vm(id: &str, name: &str) -> VmRecord {
        VmRecord {
            id: id.into(),
            name: name.into(),
            state: "created".into(),
            image: "debian-bookworm".into(),
            created_at: "2026-11-24T08:00:00Z".into(),
            updated_at: "2026-11-24T08:00:00Z".into(),
        }
    }

    #[test]
    fn insert_then_list_and_duplicate_name_is_already_exists() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        assert!(store.list_vms().unwrap().is_empty());
        store.insert_vm(&vm("a1", "web")).unwrap();
        store.insert_vm(&vm("b2", "web-2")).unwrap();
        let err = store.insert_vm(&vm("c3", "web")).unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
        let names: Vec<_> = store
            .list_vms()
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["web", "web-2"]);
    }

    #[test]
    fn unknown_state_is_refused_by_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let mut bad = vm("a1", "web");
        bad.state = "exploded".into();
        assert!(store.insert_vm(&bad).is_err());
        assert!(store.list_vms().unwrap().is_empty());
    }
}
