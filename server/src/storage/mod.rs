//! Storage: the database handle and one file of queries per protocol area.
//!
//! The embedded default is SQLite in WAL mode with `synchronous=FULL`, so what the
//! server has acknowledged survives a crash or power cut. Protocol code only calls
//! the typed functions of the area modules below; a PostgreSQL backend replaces
//! this module's internals, not the callers. Each area owns its migrations
//! (`server/migrations/<area>/`), registered through the module registry.

pub mod accounts;
pub mod archive;
pub(crate) mod archive_writer;
pub mod blocking;
mod checkpoint;
pub mod fast;
pub mod muc;
pub mod muc_avatar;
pub mod offline;
pub mod private;
pub mod pubsub;
pub mod push;
pub mod roster;
pub mod sm;
pub mod uploads;
pub mod vcard;
pub mod web_sessions;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// A storage failure. Protocol code answers `internal-server-error` and logs it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the data directory {path}: {err}")]
    DataDir { path: String, err: std::io::Error },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
}

/// How long a statement waits for a lock another connection holds, on every
/// connection (the pool's and the archive writer's).
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The shared database handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: SqlitePool,
    /// How connections are opened (the archive writer opens its own).
    opts: SqliteConnectOptions,
    /// The archive's group-commit writer and preferences cache (`archive.rs`).
    archive: std::sync::Arc<archive::State>,
}

/// Every migrator the core owns, in order. Modules add theirs to the registry.
pub fn core_migrators() -> Vec<&'static Migrator> {
    vec![&accounts::MIGRATOR, &web_sessions::MIGRATOR]
}

impl Db {
    /// Open (creating if needed) `data_dir/kith.db` and run `migrators`.
    pub async fn open(
        data_dir: &Path,
        migrators: &[&'static Migrator],
    ) -> Result<Self, StorageError> {
        let data_dir_err = |err| StorageError::DataDir {
            path: data_dir.display().to_string(),
            err,
        };
        crate::files::private_dir(data_dir).map_err(data_dir_err)?;
        let path = data_dir.join("kith.db");
        // Created private before SQLite opens it: SQLite gives the -wal and
        // -shm files the database file's mode.
        crate::files::create_private(&path).map_err(data_dir_err)?;
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(StorageError::Db)?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(opts.clone())
            .await?;
        let db = Db {
            pool,
            opts,
            archive: Default::default(),
        };
        // Each area embeds its own migrations (`sqlx::migrate!`); they are merged
        // into one ordered set so that sqlx checks the whole history at once.
        let mut all: Vec<sqlx::migrate::Migration> =
            migrators.iter().flat_map(|m| m.iter().cloned()).collect();
        all.sort_by_key(|m| m.version);
        // The same migrator registered twice is harmless; two different
        // migrations with one version would silently lose one of them.
        if let Some(w) = all
            .windows(2)
            .find(|w| w[0].version == w[1].version && w[0].checksum != w[1].checksum)
        {
            return Err(StorageError::Conflict(format!(
                "two migrations share version {}: '{}' and '{}'",
                w[0].version, w[0].description, w[1].description
            )));
        }
        all.dedup_by_key(|m| m.version);
        let merged = Migrator {
            migrations: std::borrow::Cow::Owned(all),
            ignore_missing: false,
            locking: true,
            no_tx: false,
        };
        merged.run(&db.pool).await?;
        Ok(db)
    }

    /// A write transaction. `BEGIN IMMEDIATE` takes the write lock up front, so
    /// a read-then-write transaction never fails half-way with SQLITE_BUSY
    /// (a deferred transaction cannot wait for the lock once it has read).
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StorageError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// The underlying pool (for the area modules).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Flush the WAL into the main file and close every connection.
    pub async fn close(&self) {
        // Archived messages still waiting for the writer go to disk first.
        self.archive_settle().await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint at shutdown failed");
        }
        self.pool.close().await;
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
