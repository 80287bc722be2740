//! Numbered migrations. A migration is never edited once released: a change
//! to the schema is a new file and a new entry at the end of [`MIGRATIONS`].

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// One schema step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number: 1, 2, 3, ... with no gaps.
    pub version: u32,
    /// A short name for messages and the history table.
    pub name: &'static str,
    /// The SQL, run as one batch inside the migration transaction.
    pub sql: &'static str,
}

/// Every migration this binary knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "images",
        sql: include_str!("migrations/0002_images.sql"),
    },
    Migration {
        version: 3,
        name: "vm_spec",
        sql: include_str!("migrations/0003_vm_spec.sql"),
    },
    Migration {
        version: 4,
        name: "oci_images",
        sql: include_str!("migrations/0004_oci_images.sql"),
    },
    Migration {
        version: 5,
        name: "workspaces",
        sql: include_str!("migrations/0005_workspaces.sql"),
    },
];

/// The schema version this binary writes.
#[allow(clippy::cast_possible_truncation, reason = "a handful of migrations")]
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub(crate) fn user_version(conn: &Connection) -> Result<u32, rusqlite::Error> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

pub(crate) fn refuse_newer(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let found = user_version(conn).map_err(|source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    })?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Applies every migration newer than the file's version, all in one
/// transaction: either the store ends at the newest version or it is left
/// exactly as it was.
pub(crate) fn apply(
    conn: &mut Connection,
    path: &Path,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    // IMMEDIATE: two daemons racing on one file (should the lock ever be
    // bypassed) serialise here instead of both migrating.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    let current = user_version(&tx).map_err(sqlite)?;
    let latest = migrations.last().map_or(0, |m| m.version);
    if current > latest {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found: current,
            supported: latest,
        });
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string();
    for m in migrations.iter().filter(|m| m.version > current) {
        let fail = |source| StoreError::Migration {
            path: path.to_owned(),
            version: m.version,
            name: m.name,
            source,
        };
        tx.execute_batch(m.sql).map_err(fail)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            (m.version, m.name, &now),
        )
        .map_err(fail)?;
        tx.pragma_update(None, "user_version", m.version)
            .map_err(fail)?;
    }
    tx.commit().map_err(sqlite)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[test]
    fn migrations_are_numbered_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
    }

    #[test]
    fn oci_images_migration_keeps_rows_and_admits_only_the_new_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut conn = Connection::open(&path).unwrap();
        apply(&mut conn, &path, &MIGRATIONS[..3]).unwrap();
        conn.execute(
            "INSERT INTO images (name, source, kernel, recipe_hash, size_bytes, created_at) \
             VALUES ('deb', 'build', 'generic-6.1', 'h', 1, 't')",
            (),
        )
        .unwrap();
        apply(&mut conn, &path, MIGRATIONS).unwrap();
        let kept: String = conn
            .query_row("SELECT kernel FROM images WHERE name = 'deb'", (), |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(kept, "generic-6.1");
        let insert = |source: &str| {
            conn.execute(
                "INSERT INTO images (name, source, kernel, size_bytes, created_at) \
                 VALUES (?1, ?1, 'k', 1, 't')",
                [source],
            )
        };
        insert("oci").unwrap();
        assert!(insert("other").is_err());
    }

    #[test]
    fn failed_migration_rolls_back_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut conn = Connection::open(&path).unwrap();
        let broken = [
            MIGRATIONS[0],
            Migration {
                version: 2,
                name: "broken",
                sql: "CREATE TABLE t (x); THIS IS NOT SQL;",
            },
        ];
        let err = apply(&mut conn, &path, &broken).unwrap_err();
        assert!(err.to_string().contains("migration 2 (broken)"), "{err}");
        assert_eq!(user_version(&conn).unwrap(), 0);
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type='table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0, "nothing of migration 1 may survive a failed 2");
        drop(conn);
        // A good binary then migrates the untouched file normally.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    }
}
