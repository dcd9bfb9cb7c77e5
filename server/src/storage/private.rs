//! Private XML storage (XEP-0049): one serialised element per account and namespace.

use sqlx::migrate::Migrator;
use sqlx::Row;

use super::{Db, StorageError};

/// Migrations of this area.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/private");

impl Db {
    /// The stored element of `username` for `namespace`.
    pub async fn private_get(
        &self,
        username: &str,
        namespace: &str,
    ) -> Result<Option<String>, StorageError> {
        let row = sqlx::query("SELECT xml FROM private_xml WHERE username = $1 AND namespace = $2")
            .bind(username)
            .bind(namespace)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Replace the stored element of `username` for `namespace`.
    pub async fn private_set(
        &self,
        username: &str,
        namespace: &str,
        xml: &str,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO private_xml (username, namespace, xml) VALUES ($1, $2, $3)
             ON CONFLICT (username, namespace) DO UPDATE SET xml = $3",
        )
        .bind(username)
        .bind(namespace)
        .bind(xml)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// How many namespaces `username` has stored.
    pub async fn private_count(&self, username: &str) -> Result<usize, StorageError> {
        let n: i64 = sqlx::query("SELECT count(*) FROM private_xml WHERE username = $1")
            .bind(username)
            .fetch_one(self.pool())
            .await?
            .get(0);
        Ok(n as usize)
    }
}
