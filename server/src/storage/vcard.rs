//! vcard-temp storage (XEP-0054).

use sqlx::migrate::Migrator;
use sqlx::Row;

use super::{Db, StorageError};

/// Migrations of this area.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/vcard");

impl Db {
    /// The stored vCard XML of a user.
    pub async fn vcard_get(&self, username: &str) -> Result<Option<String>, StorageError> {
        let row = sqlx::query("SELECT vcard FROM vcards WHERE username = $1")
            .bind(username)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Replace the vCard of a user.
    pub async fn vcard_set(&self, username: &str, vcard: &str) -> Result<(), StorageError> {
        sqlx::query("INSERT INTO vcards (username, vcard) VALUES ($1, $2) ON CONFLICT (username) DO UPDATE SET vcard = $2")
            .bind(username)
            .bind(vcard)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
