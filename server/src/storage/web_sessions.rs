//! Browsers signed in to the web pod: one row per browser, keyed by the
//! SHA-256 of the random token in its cookie (the token itself is never
//! stored), with a second random `handle` that names the row on pages.

use sqlx::migrate::Migrator;
use sqlx::Row;

use super::{Db, StorageError};

/// Migrations of this area.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/web");

/// One signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSessionRow {
    /// SHA-256 of the cookie's token.
    pub token_hash: Vec<u8>,
    /// The public name of the session (for "sign out" buttons).
    pub handle: String,
    pub username: String,
    /// "Remember this browser" was ticked.
    pub remember: bool,
    /// The browser's `User-Agent` (trimmed) when it signed in.
    pub user_agent: String,
    /// The address it signed in from.
    pub address: String,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    pub last_seen: i64,
    pub expires_at: i64,
}

const COLUMNS: &str =
    "token_hash, handle, username, remember, user_agent, address, created_at, last_seen, expires_at";

fn row(r: &sqlx::sqlite::SqliteRow) -> WebSessionRow {
    WebSessionRow {
        token_hash: r.get(0),
        handle: r.get(1),
        username: r.get(2),
        remember: r.get::<i64, _>(3) != 0,
        user_agent: r.get(4),
        address: r.get(5),
        created_at: r.get(6),
        last_seen: r.get(7),
        expires_at: r.get(8),
    }
}

impl Db {
    /// Store a new signed-in browser.
    pub async fn web_session_create(&self, s: &WebSessionRow) -> Result<(), StorageError> {
        sqlx::query(&format!(
            "INSERT INTO web_sessions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&s.token_hash)
        .bind(&s.handle)
        .bind(&s.username)
        .bind(i64::from(s.remember))
        .bind(&s.user_agent)
        .bind(&s.address)
        .bind(s.created_at)
        .bind(s.last_seen)
        .bind(s.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The session with this token hash, unless it has expired by `now`.
    pub async fn web_session_get(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<Option<WebSessionRow>, StorageError> {
        let r = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM web_sessions WHERE token_hash = $1 AND expires_at > $2"
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        Ok(r.as_ref().map(row))
    }

    /// Record that the session was used at `last_seen` and now ends at `expires_at`.
    pub async fn web_session_touch(
        &self,
        token_hash: &[u8],
        last_seen: i64,
        expires_at: i64,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "UPDATE web_sessions SET last_seen = $2, expires_at = $3 WHERE token_hash = $1",
        )
        .bind(token_hash)
        .bind(last_seen)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// An account's live sessions, most recently used first.
    pub async fn web_sessions_of(
        &self,
        username: &str,
        now: i64,
    ) -> Result<Vec<WebSessionRow>, StorageError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM web_sessions WHERE username = $1 AND expires_at > $2
             ORDER BY last_seen DESC, created_at DESC"
        ))
        .bind(username)
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(row).collect())
    }

    /// End one session by its token hash.
    pub async fn web_session_delete(&self, token_hash: &[u8]) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM web_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// End one of `username`'s sessions by its handle; whether there was one.
    pub async fn web_session_delete_handle(
        &self,
        username: &str,
        handle: &str,
    ) -> Result<bool, StorageError> {
        let r = sqlx::query("DELETE FROM web_sessions WHERE username = $1 AND handle = $2")
            .bind(username)
            .bind(handle)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// End every session of `username`; how many there were.
    pub async fn web_sessions_delete_all(&self, username: &str) -> Result<u64, StorageError> {
        let r = sqlx::query("DELETE FROM web_sessions WHERE username = $1")
            .bind(username)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected())
    }

    /// Forget sessions that expired before `now`; how many.
    pub async fn web_sessions_sweep(&self, now: i64) -> Result<u64, StorageError> {
        let r = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected())
    }
}
