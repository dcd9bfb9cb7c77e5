//! Offline message store (XEP-0160): bounded per user, delivered in order.

use sqlx::migrate::Migrator;
use sqlx::Row;

use super::{now, Db, StorageError};

/// Migrations of this area.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/offline");

impl Db {
    /// Store a serialised stanza for `username`, unless `max` are already stored.
    /// Returns whether it was stored. The write is durable when this returns.
    pub async fn offline_push(
        &self,
        username: &str,
        stanza: &str,
        max: usize,
    ) -> Result<bool, StorageError> {
        let mut tx = self.begin_write().await?;
        let count: i64 = sqlx::query("SELECT COUNT(*) FROM offline_messages WHERE username = $1")
            .bind(username)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        if count as usize >= max {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO offline_messages (username, stanza, stored_at) VALUES ($1, $2, $3)",
        )
        .bind(username)
        .bind(stanza)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The stored stanzas of `username`, oldest first, as (id, stanza, stored_at).
    pub async fn offline_peek(
        &self,
        username: &str,
    ) -> Result<Vec<(i64, String, i64)>, StorageError> {
        let rows = sqlx::query(
            "SELECT id, stanza, stored_at FROM offline_messages WHERE username = $1 ORDER BY id",
        )
        .bind(username)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Forget stored stanzas up to and including `last_id` once they were handed over.
    pub async fn offline_delete_upto(
        &self,
        username: &str,
        last_id: i64,
    ) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM offline_messages WHERE username = $1 AND id <= $2")
            .bind(username)
            .bind(last_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
