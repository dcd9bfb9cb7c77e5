//! HTTP File Upload storage (XEP-0363): which files exist, whose they are.

use sqlx::migrate::Migrator;
use sqlx::Row;

use super::{Db, StorageError};

/// Migrations of this area.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/uploads");

/// One stored file.
#[derive(Debug, Clone)]
pub struct UploadRow {
    pub id: String,
    pub owner: String,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    /// Unix seconds.
    pub created: i64,
}

/// What [`Db::upload_insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    Stored,
    Exists,
    OverQuota,
}

impl Db {
    /// Bytes stored by `owner`.
    pub async fn upload_usage(&self, owner: &str) -> Result<u64, StorageError> {
        let row = sqlx::query("SELECT COALESCE(SUM(size), 0) FROM uploads WHERE owner = $1")
            .bind(owner)
            .fetch_one(self.pool())
            .await?;
        let used: i64 = row.get(0);
        Ok(used.max(0) as u64)
    }

    /// Record a complete file if its owner stays within `quota` bytes and the
    /// id is free; in one write transaction, so parallel uploads cannot
    /// overrun the quota together.
    pub async fn upload_insert(&self, r: &UploadRow, quota: u64) -> Result<Insert, StorageError> {
        let mut tx = self.begin_write().await?;
        let used: i64 = sqlx::query("SELECT COALESCE(SUM(size), 0) FROM uploads WHERE owner = $1")
            .bind(&r.owner)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        if (used.max(0) as u64).saturating_add(r.size) > quota {
            return Ok(Insert::OverQuota);
        }
        let done = sqlx::query(
            "INSERT INTO uploads (id, owner, filename, content_type, size, created) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&r.id)
        .bind(&r.owner)
        .bind(&r.filename)
        .bind(&r.content_type)
        .bind(r.size as i64)
        .bind(r.created)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(if done.rows_affected() == 1 {
            Insert::Stored
        } else {
            Insert::Exists
        })
    }

    /// The file with this id.
    pub async fn upload_get(&self, id: &str) -> Result<Option<UploadRow>, StorageError> {
        let row = sqlx::query(
            "SELECT id, owner, filename, content_type, size, created FROM uploads WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| UploadRow {
            id: r.get(0),
            owner: r.get(1),
            filename: r.get(2),
            content_type: r.get(3),
            size: r.get::<i64, _>(4).max(0) as u64,
            created: r.get(5),
        }))
    }

    /// Ids of files created before `before` (Unix seconds), at most `limit`.
    pub async fn upload_expired(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<Vec<String>, StorageError> {
        let rows = sqlx::query("SELECT id FROM uploads WHERE created < $1 LIMIT $2")
            .bind(before)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Forget a file.
    pub async fn upload_delete(&self, id: &str) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
