//! banger's durable state in SQLite: numbered migrations applied in one
//! transaction at open, and typed queries over the tables.
//!
//! The store holds durable intent only (what a VM is, not which pid runs
//! it). It must never be opened for writing by a binary older than the
//! schema it finds: [`Store::open`] refuses before touching the file.

mod images;
mod migrate;
mod vms;
mod workspaces;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use images::ImageRecord;
pub use migrate::{MIGRATIONS, Migration, SCHEMA_VERSION};
pub use vms::VmRecord;

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors opening or querying the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file was written by a newer banger.
    #[error(
        "store {} has schema version {found}, newer than the {supported} this banger knows; upgrade banger (the file was not touched)",
        path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The version recorded in the file.
        found: u32,
        /// The newest version this binary knows.
        supported: u32,
    },
    /// A migration failed; the transaction was rolled back.
    #[error("store {}: migration {version} ({name}) failed", path.display())]
    Migration {
        /// The database file.
        path: PathBuf,
        /// The migration's number.
        version: u32,
        /// The migration's name.
        name: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// An insert hit a uniqueness constraint.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What collided, e.g. `vm name "web"`.
        what: String,
    },
    /// A row held a value this binary cannot read.
    #[error("store row {table}.{column} holds {value:?}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// The value found.
        value: String,
    },
    /// Any other SQLite failure.
    #[error("store {}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
}

/// The open store. Cheap queries only: callers on an async runtime run them
/// on a blocking thread.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if missing) the store at `path` and applies pending
    /// migrations. Refuses a store with a newer schema without writing to it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        if path.exists() {
            // Read-only first: even setting WAL mode writes to the file.
            let ro = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(sqlite)?;
            ro.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
            migrate::refuse_newer(&ro, path)?;
        }
        let conn = Connection::open(path).map_err(sqlite)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite)?;
        let mut conn = conn;
        migrate::apply(&mut conn, path, MIGRATIONS)?;
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    /// The file backing the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        migrate::user_version(&self.lock()).map_err(|source| self.sqlite(source))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable:
        // every write is a single statement or a transaction SQLite rolls back.
        banger_sys::wait::lock(&self.conn)
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}
