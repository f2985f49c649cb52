//! The persistent record: blobs, their replicas on each server, the job
//! queue with its leases, what was learned about servers, and the
//! processes working the queue. Every SQL statement of the crate lives in
//! this module; callers see typed operations, never SQL.
//!
//! SQLite runs in WAL mode and every writing transaction starts with
//! `BEGIN IMMEDIATE`: a deferred transaction that later wants to write can
//! fail with `SQLITE_BUSY` under concurrency, even in WAL mode.

mod queue;
mod replicas;
mod servers;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

pub use queue::{ClaimedJob, JobOutcome, Recorded};
pub use replicas::{
    BlobProgress, BlobStatus, Enqueued, Holder, NewBlob, ReplicaState, ReplicaStatus, Retry,
    Strategy, Verification,
};
pub use servers::ServerTraits;

/// The migrations, embedded at build time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A failure of the database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or created.
    #[error("cannot open database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: sqlx::Error,
    },
    /// The file was migrated by a newer release; using it could corrupt it.
    #[error(
        "database {} was written by a newer version of blossom-replicator (it has migration {version}, unknown to this one)",
        path.display()
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The first unknown migration.
        version: i64,
    },
    /// Applying migrations failed; the database is left as it was.
    #[error("cannot migrate database {}: {source}", path.display())]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        source: sqlx::migrate::MigrateError,
    },
    /// A statement failed (disk full, read-only file, …).
    #[error("database {}: {source}", path.display())]
    Sql {
        /// The database file.
        path: Arc<Path>,
        /// What SQLite said.
        source: sqlx::Error,
    },
    /// A stored value is not what this version writes.
    #[error("database {}: invalid stored value: {detail}", path.display())]
    Corrupt {
        /// The database file.
        path: Arc<Path>,
        /// Which value.
        detail: String,
    },
}

/// The database: a small pool of SQLite connections in WAL mode.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    path: Arc<Path>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating when missing) the database at `path` and applies
    /// pending migrations.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or created, was written by a newer
    /// version, or a migration fails.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        let open_error = |source| Error::Open { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_error(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(open_error)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode loses at most the last transactions on a
            // power cut, never consistency; a killed process loses nothing.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_error)?;

        MIGRATOR.run(&pool).await.map_err(|source| match source {
            sqlx::migrate::MigrateError::VersionMissing(version) => {
                Error::TooNew { path: path.to_owned(), version }
            }
            source => Error::Migrate { path: path.to_owned(), source },
        })?;
        Ok(Self { pool, path: path.into() })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A writing transaction, taking the write lock up front.
    async fn write(&self) -> Result<Transaction<'static, Sqlite>, Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(|e| self.sql(e))
    }

    fn sql(&self, source: sqlx::Error) -> Error {
        Error::Sql { path: self.path.clone(), source }
    }

    fn corrupt(&self, detail: impl Into<String>) -> Error {
        Error::Corrupt { path: self.path.clone(), detail: detail.into() }
    }
}

/// Milliseconds since the Unix epoch, the unit of every stored time.
pub(crate) fn to_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The inverse of [`to_millis`].
pub(crate) fn from_millis(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A store in a fresh temporary directory (kept alive by the guard).
    pub(crate) async fn temp_store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("test.db")).await.unwrap();
        (store, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_twice_and_uses_wal() {
        let (store, dir) = test_support::temp_store().await;
        let mode: String =
            sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&store.pool).await.unwrap();
        assert_eq!(mode, "wal");
        store.close().await;
        Store::open(&dir.path().join("test.db")).await.unwrap();
    }

    #[tokio::test]
    async fn refuses_a_database_from_a_newer_version() {
        let (store, dir) = test_support::temp_store().await;
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (99990101000000, 'future', 1, x'00', 0)",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        store.close().await;

        let err = Store::open(&dir.path().join("test.db")).await.unwrap_err();
        assert!(matches!(err, Error::TooNew { version: 99990101000000, .. }), "{err}");
        assert!(err.to_string().contains("newer version"), "{err}");
    }
}
