//! Opening real store files: from nothing, again, and one from the future.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "integration tests: each file is a test crate of its own"
)]

use banger_store::{SCHEMA_VERSION, Store, StoreError};
use rusqlite::Connection;

#[test]
fn migration_from_empty_reaches_latest_schema_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    drop(store);

    let conn = Connection::open(&path).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let recorded: Vec<u32> = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(recorded, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
}

#[test]
fn reopening_keeps_rows_and_applies_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    store
        .insert_vm(&banger_testutil::stopped_vm("id1", "keep", "img"))
        .unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.list_vms().unwrap().len(), 1);
    let conn = Connection::open(&path).unwrap();
    let n: u32 = conn
        .query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, SCHEMA_VERSION);
}

#[test]
fn old_binary_refuses_newer_schema_without_touching_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        // A store written by a future banger: our schema plus one more step,
        // in rollback-journal mode so the file alone holds everything.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE from_the_future (x); PRAGMA user_version = 99;")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let entries_before = std::fs::read_dir(dir.path()).unwrap().count();

    let err = Store::open(&path).unwrap_err();
    match &err {
        StoreError::SchemaTooNew {
            found, supported, ..
        } => {
            assert_eq!(*found, 99);
            assert_eq!(*supported, SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("schema version 99"), "{msg}");
    assert!(msg.contains("upgrade banger"), "{msg}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "file bytes changed");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        entries_before,
        "no -wal or -shm file may appear"
    );
}
