//! SQLite: opening the database, migrations, the single writer and the
//! read queries. One file, `storegate.db`, in WAL mode so that readers
//! (API, status, sync) never block the writer.

pub mod central_config;
pub mod journal;
pub mod latency;
pub mod quota;
pub mod schema;
pub mod trim;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::config::Durability;

pub use writer::{Appended, Projector, WriteTx, Writer, WriterThread};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot write the database {path}: {source} (check the owner and permissions of the file and its directory)"
    )]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "there is no database at {path} yet: it is made when `storegate run` first starts with this data_dir (start the service, or check data_dir in the config)"
    )]
    NoDatabase { path: PathBuf },
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the database {path} has schema version {found}, newer than this storegate understands ({supported}); it was left untouched: run the newer storegate, or point data_dir elsewhere"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("database error while {context}: {source}")]
    Sqlite {
        context: &'static str,
        source: rusqlite::Error,
    },
    #[error("journal row {seq} cannot be read back: {source}")]
    Corrupt { seq: i64, source: serde_json::Error },
    #[error("the commit failed, nothing of this group was stored: {0}")]
    Commit(String),
    #[error("{0}")]
    Rejected(String),
    #[error("the journal writer has stopped")]
    WriterStopped,
    #[error(
        "the disk quota is exhausted by events that are never dropped; input is refused until central takes the backlog"
    )]
    QuotaFull,
}

impl StoreError {
    /// Whether trying the same work again later may succeed: the storage
    /// is full, failing or busy, or the writer is gone. Every other error
    /// is about the input itself (a value out of bounds, a constraint, a
    /// type SQLite cannot store), and input that fails that way is
    /// quarantined or refused, never retried (DESIGN invariant 9).
    pub fn is_retryable(&self) -> bool {
        use rusqlite::ErrorCode as C;
        match self {
            StoreError::Sqlite { source, .. } | StoreError::Open { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    C::DiskFull
                        | C::SystemIoFailure
                        | C::DatabaseBusy
                        | C::DatabaseLocked
                        | C::CannotOpen
                        | C::ReadOnly
                        | C::OutOfMemory
                        | C::FileLockingProtocolFailed
                )
            ),
            StoreError::CreateDir { .. }
            | StoreError::NoDatabase { .. }
            | StoreError::NotWritable { .. }
            | StoreError::Commit(_)
            | StoreError::WriterStopped
            | StoreError::QuotaFull => true,
            StoreError::NewerSchema { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Rejected(_) => false,
        }
    }

    /// Whether the disk (or the configured size limit) is full: the caller
    /// keeps its input and tries later, the device stays unacknowledged.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Sqlite { source, .. } | StoreError::Open { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DiskFull)
            ),
            StoreError::Commit(m) => m.contains("full"),
            StoreError::QuotaFull => true,
            _ => false,
        }
    }
}

/// Adds a context to rusqlite errors: `.ctx("reading the journal")?`.
pub trait SqlContext<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite { context, source })
    }
}

/// Open (creating if needed) the database for writing and bring its schema
/// up to date. Only the writer and offline tools (rebuild, import) use this.
pub fn open_write(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // Ask the OS first: SQLite would otherwise open read-only silently and
    // fail much later with a vaguer message.
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| StoreError::NotWritable {
            path: path.to_path_buf(),
            source,
        })?;
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    // Refuse a newer schema before touching anything (WAL mode writes the
    // header, migrations write tables).
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    if found > schema::latest_version() {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: schema::latest_version(),
        });
    }
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {synchronous};
         PRAGMA foreign_keys = ON;"
    ))
    .map_err(|source| not_writable_or(path, source))?;
    conn.busy_timeout(Duration::from_secs(5))
        .ctx("setting the busy timeout")?;
    migrate(&conn, found).map_err(|e| match e {
        StoreError::Sqlite { source, .. } => not_writable_or(path, source),
        e => e,
    })?;
    Ok(conn)
}

fn not_writable_or(path: &Path, source: rusqlite::Error) -> StoreError {
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ReadOnly) | Some(rusqlite::ErrorCode::CannotOpen) => {
            StoreError::NotWritable {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, source),
            }
        }
        _ => StoreError::Open {
            path: path.to_path_buf(),
            source,
        },
    }
}

fn migrate(conn: &Connection, from: i64) -> Result<(), StoreError> {
    for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(from as usize) {
        let version = i as i64 + 1;
        let tx = conn.unchecked_transaction().ctx("starting a migration")?;
        tx.execute_batch(sql).ctx("applying a migration")?;
        tx.execute_batch(&format!("PRAGMA user_version = {version}"))
            .ctx("recording the schema version")?;
        tx.commit().ctx("committing a migration")?;
        tracing::info!(version, "database schema migrated");
    }
    Ok(())
}

/// Open the database read-only, for queries beside a running writer
/// (`storegate status`, the API, the pusher).
pub fn open_read(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::NoDatabase {
            path: path.to_path_buf(),
        });
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(5))
        .ctx("setting the busy timeout")?;
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .ctx("reading the schema version")?;
    if found > schema::latest_version() {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: schema::latest_version(),
        });
    }
    Ok(conn)
}

/// Bytes on disk: the database file plus its WAL.
pub fn size_on_disk(path: &Path) -> u64 {
    let mut total = 0;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        total += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_database_is_migrated_to_latest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/storegate.db");
        let conn = open_write(&path, Durability::Full).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, schema::latest_version());
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);
        // Opening again is a no-op.
        open_write(&path, Durability::Normal).unwrap();
    }

    #[test]
    fn stock_moves_keep_their_rows_when_keyed_by_seq_and_sku() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storegate.db");
        {
            // A database as release 7 left it, with moves not yet in a baseline.
            let conn = Connection::open(&path).unwrap();
            for sql in &schema::MIGRATIONS[..7] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch("PRAGMA user_version = 7").unwrap();
            conn.execute_batch(
                "INSERT INTO stock_moves (seq, sku, delta) VALUES (3, 'A', -2), (9, 'B', 24)",
            )
            .unwrap();
        }
        let conn = open_write(&path, Durability::Full).unwrap();
        // One event may now move several SKUs (order_handed_over).
        conn.execute(
            "INSERT INTO stock_moves (seq, sku, delta) VALUES (9, 'A', -1)",
            [],
        )
        .unwrap();
        let moves: Vec<(i64, String, i64)> = conn
            .prepare("SELECT seq, sku, delta FROM stock_moves ORDER BY seq, sku")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            moves,
            [
                (3, "A".to_string(), -2),
                (9, "A".to_string(), -1),
                (9, "B".to_string(), 24)
            ]
        );
    }

    #[test]
    fn older_database_is_upgraded_keeping_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storegate.db");
        {
            // A database as the first release left it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
            conn.execute_batch("PRAGMA user_version = 1").unwrap();
            conn.execute(
                "INSERT INTO journal (ts_ms, device, kind, data) VALUES (1, 'pos-1', 'reading', '{}')",
                [],
            )
            .unwrap();
        }
        let conn = open_write(&path, Durability::Full).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, schema::latest_version());
        let n: i64 = conn
            .query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn newer_database_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storegate.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 999;")
                .unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let err = open_write(&path, Durability::Full).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("schema version 999"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(!dir.path().join("storegate.db-wal").exists());
        assert!(matches!(
            open_read(&path),
            Err(StoreError::NewerSchema { .. })
        ));
    }

    #[test]
    fn unusable_data_dir_names_path_and_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"").unwrap();
        let path = blocker.join("storegate.db");
        let msg = open_write(&path, Durability::Full).unwrap_err().to_string();
        assert!(msg.contains(&blocker.display().to_string()), "{msg}");
        assert!(msg.contains("os error"), "{msg}");
    }

    #[test]
    fn read_only_database_file_names_path_and_os_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storegate.db");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        let writable = std::fs::OpenOptions::new().write(true).open(&path).is_ok();
        let result = open_write(&path, Durability::Full);
        if writable {
            // root ignores file modes: then opening must simply work.
            assert!(result.is_ok(), "{:?}", result.err());
        } else {
            let msg = result.unwrap_err().to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("Permission denied"), "{msg}");
        }
    }
}
