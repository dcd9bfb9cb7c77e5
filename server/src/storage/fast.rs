//! FAST token storage (XEP-0484): per (account, user-agent id) a `current`
//! token and a `new` one not used yet, stored as SHA-256 hashes with the
//! mechanism they are bound to, their expiry and the highest replay counter seen.

use sqlx::migrate::Migrator;
use sqlx::Row;

use super::{Db, StorageError};

/// Migrations of this area.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/fast");

/// Which of a client's two token slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Issued, not yet used by the client.
    New,
    /// The token the client last logged in with.
    Current,
}

impl Slot {
    fn as_str(self) -> &'static str {
        match self {
            Slot::New => "new",
            Slot::Current => "current",
        }
    }
}

/// One stored token.
#[derive(Debug, Clone)]
pub struct StoredToken {
    pub slot: Slot,
    pub hash: Vec<u8>,
    pub mechanism: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// A token to store.
pub struct NewToken<'a> {
    pub username: &'a str,
    pub agent_id: &'a str,
    pub software: &'a str,
    pub device: &'a str,
    pub hash: &'a [u8],
    pub mechanism: &'a str,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// A client holding tokens, for the admin's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHolder {
    pub agent_id: String,
    pub software: String,
    pub device: String,
    /// When its newest token was issued (seconds since the epoch).
    pub issued_at: i64,
    /// When its last token expires.
    pub expires_at: i64,
    /// When it last logged in with a token.
    pub last_used: Option<i64>,
}

impl Db {
    /// The tokens of one client, the `new` one first.
    pub async fn fast_tokens(
        &self,
        username: &str,
        agent_id: &str,
    ) -> Result<Vec<StoredToken>, StorageError> {
        let rows = sqlx::query(
            "SELECT slot, token_hash, mechanism, issued_at, expires_at FROM fast_tokens
             WHERE username = $1 AND agent_id = $2 ORDER BY slot DESC",
        )
        .bind(username)
        .bind(agent_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| StoredToken {
                slot: if r.get::<String, _>(0) == "new" {
                    Slot::New
                } else {
                    Slot::Current
                },
                hash: r.get(1),
                mechanism: r.get(2),
                issued_at: r.get(3),
                expires_at: r.get(4),
            })
            .collect())
    }

    /// Store a freshly issued token in the client's `new` slot (replacing an
    /// unused one), then keep only the `max_clients` most recently issued
    /// clients of the account.
    pub async fn fast_issue(&self, t: &NewToken<'_>, max_clients: u32) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO fast_tokens (username, agent_id, slot, token_hash, mechanism, software, device, issued_at, expires_at)
             VALUES ($1, $2, 'new', $3, $4, $5, $6, $7, $8)
             ON CONFLICT (username, agent_id, slot) DO UPDATE SET token_hash = $3, mechanism = $4,
               software = $5, device = $6, issued_at = $7, expires_at = $8, last_count = 0, last_used = NULL",
        )
        .bind(t.username)
        .bind(t.agent_id)
        .bind(t.hash)
        .bind(t.mechanism)
        .bind(t.software)
        .bind(t.device)
        .bind(t.issued_at)
        .bind(t.expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM fast_tokens WHERE username = $1 AND agent_id IN (
               SELECT agent_id FROM fast_tokens WHERE username = $1
               GROUP BY agent_id ORDER BY MAX(issued_at) DESC, agent_id LIMIT -1 OFFSET $2)",
        )
        .bind(t.username)
        .bind(i64::from(max_clients))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record a login with the token in `slot`. With a replay counter, the
    /// login counts only if `count` is higher than every counter seen for this
    /// token (returns false otherwise, changing nothing). Using the `new` token
    /// makes it `current` and invalidates the older one (XEP-0484 §7.1).
    pub async fn fast_use(
        &self,
        username: &str,
        agent_id: &str,
        slot: Slot,
        count: Option<i64>,
        now: i64,
    ) -> Result<bool, StorageError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE fast_tokens SET last_used = $4, last_count = COALESCE($5, last_count)
             WHERE username = $1 AND agent_id = $2 AND slot = $3 AND ($5 IS NULL OR last_count < $5)",
        )
        .bind(username)
        .bind(agent_id)
        .bind(slot.as_str())
        .bind(now)
        .bind(count)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        if slot == Slot::New {
            sqlx::query(
                "DELETE FROM fast_tokens WHERE username = $1 AND agent_id = $2 AND slot = 'current'",
            )
            .bind(username)
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE fast_tokens SET slot = 'current' WHERE username = $1 AND agent_id = $2 AND slot = 'new'",
            )
            .bind(username)
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Forget one token (expired).
    pub async fn fast_forget(
        &self,
        username: &str,
        agent_id: &str,
        slot: Slot,
    ) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM fast_tokens WHERE username = $1 AND agent_id = $2 AND slot = $3")
            .bind(username)
            .bind(agent_id)
            .bind(slot.as_str())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Invalidate every token of one client; false if it held none.
    pub async fn fast_invalidate(
        &self,
        username: &str,
        agent_id: &str,
    ) -> Result<bool, StorageError> {
        let r = sqlx::query("DELETE FROM fast_tokens WHERE username = $1 AND agent_id = $2")
            .bind(username)
            .bind(agent_id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Revoke every token of an account; returns how many clients held one.
    pub async fn fast_revoke_all(&self, username: &str) -> Result<u64, StorageError> {
        let mut tx = self.begin_write().await?;
        let row =
            sqlx::query("SELECT COUNT(DISTINCT agent_id) FROM fast_tokens WHERE username = $1")
                .bind(username)
                .fetch_one(&mut *tx)
                .await?;
        let n: i64 = row.get(0);
        sqlx::query("DELETE FROM fast_tokens WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n as u64)
    }

    /// The clients of an account holding tokens, most recently issued first.
    pub async fn fast_holders(&self, username: &str) -> Result<Vec<TokenHolder>, StorageError> {
        let rows = sqlx::query(
            "SELECT agent_id, MAX(software), MAX(device), MAX(issued_at), MAX(expires_at), MAX(last_used)
             FROM fast_tokens WHERE username = $1 GROUP BY agent_id ORDER BY MAX(issued_at) DESC, agent_id",
        )
        .bind(username)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| TokenHolder {
                agent_id: r.get(0),
                software: r.get(1),
                device: r.get(2),
                issued_at: r.get(3),
                expires_at: r.get(4),
                last_used: r.get(5),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database in a fresh directory under the system's temporary directory.
    struct TempDb(std::path::PathBuf);

    impl TempDb {
        fn new() -> Self {
            let dir =
                std::env::temp_dir().join(format!("kith-fast-{}", crate::core::random_hex(8)));
            TempDb(dir)
        }
        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn db(dir: &std::path::Path) -> Db {
        Db::open(dir, &[&super::super::accounts::MIGRATOR, &MIGRATOR])
            .await
            .expect("db opens")
    }

    fn token<'a>(agent: &'a str, hash: &'a [u8], issued_at: i64) -> NewToken<'a> {
        NewToken {
            username: "alice",
            agent_id: agent,
            software: "Phone app",
            device: "Alice's phone",
            hash,
            mechanism: "HT-SHA-256-NONE",
            issued_at,
            expires_at: issued_at + 100,
        }
    }

    #[tokio::test]
    async fn rotation_keeps_two_slots_and_using_the_new_token_retires_the_old() {
        let dir = TempDb::new();
        let db = db(dir.path()).await;
        db.fast_issue(&token("phone", b"A", 1), 8)
            .await
            .expect("issue");
        assert!(db
            .fast_use("alice", "phone", Slot::New, None, 2)
            .await
            .expect("use"));
        db.fast_issue(&token("phone", b"B", 3), 8)
            .await
            .expect("issue");
        let t = db.fast_tokens("alice", "phone").await.expect("read");
        let slots: Vec<_> = t.iter().map(|t| (t.slot, t.hash.clone())).collect();
        assert_eq!(
            slots,
            vec![(Slot::New, b"B".to_vec()), (Slot::Current, b"A".to_vec())]
        );
        // The client used B: A is gone.
        assert!(db
            .fast_use("alice", "phone", Slot::New, None, 4)
            .await
            .expect("use"));
        let t = db.fast_tokens("alice", "phone").await.expect("read");
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].slot, t[0].hash.as_slice()),
            (Slot::Current, &b"B"[..])
        );
    }

    #[tokio::test]
    async fn counters_only_go_up() {
        let dir = TempDb::new();
        let db = db(dir.path()).await;
        db.fast_issue(&token("phone", b"A", 1), 8)
            .await
            .expect("issue");
        assert!(db
            .fast_use("alice", "phone", Slot::New, Some(1), 2)
            .await
            .expect("use"));
        assert!(!db
            .fast_use("alice", "phone", Slot::Current, Some(1), 3)
            .await
            .expect("use"));
        assert!(!db
            .fast_use("alice", "phone", Slot::Current, Some(0), 3)
            .await
            .expect("use"));
        assert!(db
            .fast_use("alice", "phone", Slot::Current, Some(5), 3)
            .await
            .expect("use"));
        assert!(db
            .fast_use("alice", "phone", Slot::Current, None, 4)
            .await
            .expect("use"));
        assert!(!db
            .fast_use("alice", "phone", Slot::Current, Some(5), 5)
            .await
            .expect("use"));
    }

    #[tokio::test]
    async fn clients_per_account_are_bounded_and_revocable() {
        let dir = TempDb::new();
        let db = db(dir.path()).await;
        for (i, agent) in ["a", "b", "c", "d"].into_iter().enumerate() {
            db.fast_issue(&token(agent, b"h", i as i64), 3)
                .await
                .expect("issue");
        }
        let holders = db.fast_holders("alice").await.expect("list");
        let ids: Vec<_> = holders.iter().map(|h| h.agent_id.as_str()).collect();
        assert_eq!(ids, vec!["d", "c", "b"], "the oldest client was evicted");
        assert_eq!(holders[0].device, "Alice's phone");
        assert_eq!(db.fast_revoke_all("alice").await.expect("revoke"), 3);
        assert!(db.fast_holders("alice").await.expect("list").is_empty());
    }
}
