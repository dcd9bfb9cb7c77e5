//! Accounts: usernames and their SCRAM credentials; server secrets.

use sqlx::migrate::Migrator;
use sqlx::Row;

use super::{now, Db, StorageError};
use crate::sasl::{ScramKeys, StoredCredentials};

/// Migrations of this area.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/accounts");

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Bind `$1` = username and `$2`..`$9` = the SCRAM keys, in column order.
fn bind_credentials<'q>(
    q: Query<'q>,
    username: &'q str,
    creds: &'q StoredCredentials,
) -> Query<'q> {
    let mut q = q.bind(username);
    for keys in [&creds.sha1, &creds.sha256] {
        q = q
            .bind(&keys.salt)
            .bind(keys.iterations as i64)
            .bind(&keys.stored_key)
            .bind(&keys.server_key);
    }
    q
}

impl Db {
    /// Create an account; fails with `Conflict` if it exists.
    pub async fn account_create(
        &self,
        username: &str,
        creds: &StoredCredentials,
    ) -> Result<(), StorageError> {
        let q = sqlx::query(
            "INSERT INTO accounts (username, sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key,
               sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (username) DO NOTHING",
        );
        let r = bind_credentials(q, username, creds)
            .bind(now())
            .execute(self.pool())
            .await?;
        if r.rows_affected() == 0 {
            return Err(StorageError::Conflict(format!(
                "account {username} already exists"
            )));
        }
        Ok(())
    }

    /// Replace an account's credentials. Every FAST token and every signed-in
    /// browser of the account is signed out, except the web session whose
    /// token hash is `keep` (the browser that changed the password).
    pub async fn account_set_credentials(
        &self,
        username: &str,
        creds: &StoredCredentials,
        keep: Option<&[u8]>,
    ) -> Result<(), StorageError> {
        let q = sqlx::query(
            "UPDATE accounts SET sha1_salt = $2, sha1_iterations = $3, sha1_stored_key = $4, sha1_server_key = $5,
               sha256_salt = $6, sha256_iterations = $7, sha256_stored_key = $8, sha256_server_key = $9
             WHERE username = $1",
        );
        let mut tx = self.begin_write().await?;
        let r = bind_credentials(q, username, creds)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StorageError::NotFound(format!("no account {username}")));
        }
        // A new password revokes every FAST token (XEP-0484) of the account.
        sqlx::query("DELETE FROM fast_tokens WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM web_sessions WHERE username = $1 AND token_hash IS NOT $2")
            .bind(username)
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// An account's role (`admin` or `member`), or `None` if there is no such account.
    pub async fn account_role(&self, username: &str) -> Result<Option<String>, StorageError> {
        let row = sqlx::query("SELECT role FROM accounts WHERE username = $1")
            .bind(username)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Set an account's role (`admin` or `member`).
    pub async fn account_set_role(&self, username: &str, role: &str) -> Result<(), StorageError> {
        let r = sqlx::query("UPDATE accounts SET role = $2 WHERE username = $1")
            .bind(username)
            .bind(role)
            .execute(self.pool())
            .await?;
        if r.rows_affected() == 0 {
            return Err(StorageError::NotFound(format!("no account {username}")));
        }
        Ok(())
    }

    /// Delete an account and everything stored for it.
    pub async fn account_delete(&self, username: &str) -> Result<(), StorageError> {
        // Archive rows still on their way to disk would outlive the delete.
        self.archive_settle_for(username).await;
        let mut tx = self.begin_write().await?;
        let r = sqlx::query("DELETE FROM accounts WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StorageError::NotFound(format!("no account {username}")));
        }
        for q in [
            "DELETE FROM roster_items WHERE username = $1",
            "DELETE FROM roster_versions WHERE username = $1",
            "DELETE FROM offline_messages WHERE username = $1",
            "DELETE FROM vcards WHERE username = $1",
            "DELETE FROM archive WHERE owner = (SELECT id FROM archive_jids WHERE jid = $1)",
            "DELETE FROM archive_prefs WHERE username = $1",
            "DELETE FROM archive_prefs_jids WHERE username = $1",
            "DELETE FROM blocklist WHERE username = $1",
            "DELETE FROM fast_tokens WHERE username = $1",
            "DELETE FROM push_registrations WHERE username = $1",
            "DELETE FROM web_sessions WHERE username = $1",
        ] {
            sqlx::query(q).bind(username).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.archive_forget(username);
        Ok(())
    }

    /// All usernames, sorted.
    pub async fn account_list(&self) -> Result<Vec<String>, StorageError> {
        let rows = sqlx::query("SELECT username FROM accounts ORDER BY username")
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// Whether an account exists.
    pub async fn account_exists(&self, username: &str) -> Result<bool, StorageError> {
        let row = sqlx::query("SELECT 1 FROM accounts WHERE username = $1")
            .bind(username)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// The stored credentials of an account.
    pub async fn account_credentials(
        &self,
        username: &str,
    ) -> Result<Option<StoredCredentials>, StorageError> {
        let row = sqlx::query(
            "SELECT sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key,
                    sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key
             FROM accounts WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| StoredCredentials {
            sha1: ScramKeys {
                salt: r.get(0),
                iterations: r.get::<i64, _>(1) as u32,
                stored_key: r.get(2),
                server_key: r.get(3),
            },
            sha256: ScramKeys {
                salt: r.get(4),
                iterations: r.get::<i64, _>(5) as u32,
                stored_key: r.get(6),
                server_key: r.get(7),
            },
        }))
    }

    /// A named server secret, created with `make` on first use.
    pub async fn server_secret(
        &self,
        name: &str,
        make: impl FnOnce() -> Vec<u8>,
    ) -> Result<Vec<u8>, StorageError> {
        if let Some(row) = sqlx::query("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?
        {
            return Ok(row.get(0));
        }
        let value = make();
        sqlx::query("INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&value)
            .execute(self.pool())
            .await?;
        let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(self.pool())
            .await?;
        Ok(row.get(0))
    }
}
