//! Blocklist storage (XEP-0191): the JIDs each account blocked.

use sqlx::migrate::Migrator;
use sqlx::Row;

use super::{Db, StorageError};

/// Migrations of this area.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/blocking");

impl Db {
    /// The JIDs `username` blocked, sorted.
    pub async fn blocklist(&self, username: &str) -> Result<Vec<String>, StorageError> {
        let rows = sqlx::query("SELECT jid FROM blocklist WHERE username = $1 ORDER BY jid")
            .bind(username)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Add JIDs to `username`'s blocklist, unless that would make it longer
    /// than `max`; returns whether they were added.
    pub async fn blocklist_add(
        &self,
        username: &str,
        jids: &[String],
        max: usize,
    ) -> Result<bool, StorageError> {
        let mut tx = self.begin_write().await?;
        for j in jids {
            sqlx::query("INSERT OR IGNORE INTO blocklist (username, jid) VALUES ($1, $2)")
                .bind(username)
                .bind(j)
                .execute(&mut *tx)
                .await?;
        }
        let count: i64 = sqlx::query("SELECT COUNT(*) FROM blocklist WHERE username = $1")
            .bind(username)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        if count as usize > max {
            return Ok(false); // dropping the transaction rolls it back
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Remove JIDs from `username`'s blocklist (all of them when `jids` is empty).
    pub async fn blocklist_remove(
        &self,
        username: &str,
        jids: &[String],
    ) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        if jids.is_empty() {
            sqlx::query("DELETE FROM blocklist WHERE username = $1")
                .bind(username)
                .execute(&mut *tx)
                .await?;
        }
        for j in jids {
            sqlx::query("DELETE FROM blocklist WHERE username = $1 AND jid = $2")
                .bind(username)
                .bind(j)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
