//! The `workspaces` table: what each VM's last workspace prepare carried.

use std::collections::HashMap;

use banger_api::Workspace;
use rusqlite::{OptionalExtension, Row, params};

use crate::{Store, StoreError};

const COLUMNS: &str =
    "host_path, guest_path, commit_id, branch, checkout, fingerprint, prepared_at";

fn record(r: &Row<'_>) -> rusqlite::Result<Workspace> {
    Ok(Workspace {
        host_path: r.get(0)?,
        guest_path: r.get(1)?,
        commit: r.get(2)?,
        branch: r.get(3)?,
        checkout: r.get(4)?,
        fingerprint: r.get(5)?,
        prepared_at: r.get(6)?,
    })
}

impl Store {
    /// Records `ws` as the VM `vm_id`'s workspace, replacing any earlier
    /// one; whether the VM exists.
    pub fn set_workspace(&self, vm_id: &str, ws: &Workspace) -> Result<bool, StoreError> {
        let result = self.lock().execute(
            &format!("INSERT OR REPLACE INTO workspaces (vm_id, {COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![
                vm_id,
                ws.host_path,
                ws.guest_path,
                ws.commit,
                ws.branch,
                ws.checkout,
                ws.fingerprint,
                ws.prepared_at
            ],
        );
        match result {
            Ok(n) => Ok(n > 0),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Ok(false)
            }
            Err(e) => Err(self.sqlite(e)),
        }
    }

    /// The VM `vm_id`'s workspace, if one was prepared.
    pub fn get_workspace(&self, vm_id: &str) -> Result<Option<Workspace>, StoreError> {
        self.lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM workspaces WHERE vm_id = ?1"),
                [vm_id],
                record,
            )
            .optional()
            .map_err(|e| self.sqlite(e))
    }

    /// Every VM's workspace host path, by VM id.
    pub fn workspace_paths(&self) -> Result<HashMap<String, String>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT vm_id, host_path FROM workspaces")
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(path: &str) -> Workspace {
        Workspace {
            host_path: path.into(),
            guest_path: "/root/repo".into(),
            commit: Some("a".repeat(40)),
            branch: Some("main".into()),
            checkout: None,
            fingerprint: "f".into(),
            prepared_at: "2026-11-30T12:00:00Z".into(),
        }
    }

    #[test]
    fn a_workspace_is_replaced_by_the_next_prepare_and_goes_with_its_vm() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        assert!(
            !store.set_workspace("a1", &ws("/h/x")).unwrap(),
            "no such vm"
        );
        store
            .insert_vm(&crate::vms::tests::vm("a1", "web", "10.0.0.2"))
            .unwrap();
        assert_eq!(store.get_workspace("a1").unwrap(), None);
        assert!(store.set_workspace("a1", &ws("/h/x")).unwrap());
        assert!(store.set_workspace("a1", &ws("/h/y")).unwrap());
        assert_eq!(store.get_workspace("a1").unwrap(), Some(ws("/h/y")));
        assert_eq!(store.workspace_paths().unwrap()["a1"], "/h/y");
        assert!(store.delete_vm("a1").unwrap());
        assert!(store.workspace_paths().unwrap().is_empty());
    }
}
