//! Push notification registrations (XEP-0357), bounded per account.

use sqlx::migrate::Migrator;
use sqlx::Row;

use super::{now, Db, StorageError};

/// Migrations of this area.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/push");

/// One app server to notify for an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRegistration {
    /// The app server's JID.
    pub jid: String,
    /// The node on the app server (identifies the device).
    pub node: String,
    /// The serialised publish-options form, sent back with every notification.
    pub options: Option<String>,
}

impl Db {
    /// Register (or refresh) an app server for `username`; keeps at most
    /// `max` registrations, dropping the oldest beyond that.
    pub async fn push_enable(
        &self,
        username: &str,
        reg: &PushRegistration,
        max: usize,
    ) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO push_registrations (username, jid, node, options, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username, jid, node) \
             DO UPDATE SET options = $4, created_at = $5",
        )
        .bind(username)
        .bind(&reg.jid)
        .bind(&reg.node)
        .bind(&reg.options)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM push_registrations WHERE username = $1 AND rowid NOT IN \
             (SELECT rowid FROM push_registrations WHERE username = $1 \
              ORDER BY created_at DESC, rowid DESC LIMIT $2)",
        )
        .bind(username)
        .bind(max.max(1) as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Remove the registrations of `username` at `jid` (one node, or all).
    /// Returns how many were removed.
    pub async fn push_disable(
        &self,
        username: &str,
        jid: &str,
        node: Option<&str>,
    ) -> Result<u64, StorageError> {
        let r =
            match node {
                Some(node) => sqlx::query(
                    "DELETE FROM push_registrations WHERE username = $1 AND jid = $2 AND node = $3",
                )
                .bind(username)
                .bind(jid)
                .bind(node)
                .execute(self.pool())
                .await?,
                None => {
                    sqlx::query("DELETE FROM push_registrations WHERE username = $1 AND jid = $2")
                        .bind(username)
                        .bind(jid)
                        .execute(self.pool())
                        .await?
                }
            };
        Ok(r.rows_affected())
    }

    /// The registrations of `username`, oldest first.
    pub async fn push_list(&self, username: &str) -> Result<Vec<PushRegistration>, StorageError> {
        let rows = sqlx::query(
            "SELECT jid, node, options FROM push_registrations WHERE username = $1 \
             ORDER BY created_at, rowid",
        )
        .bind(username)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| PushRegistration {
                jid: r.get(0),
                node: r.get(1),
                options: r.get(2),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(node: &str) -> PushRegistration {
        PushRegistration {
            jid: "push.localhost".into(),
            node: node.into(),
            options: None,
        }
    }

    #[tokio::test]
    async fn registrations_are_bounded_and_removable() {
        let dir = std::env::temp_dir().join(format!("kith-push-{}", crate::core::random_hex(6)));
        let db = Db::open(&dir, &[&super::super::accounts::MIGRATOR, &MIGRATOR])
            .await
            .expect("open");
        for n in ["a", "b", "c"] {
            db.push_enable("alice", &reg(n), 2).await.expect("enable");
        }
        let nodes: Vec<String> = db
            .push_list("alice")
            .await
            .expect("list")
            .into_iter()
            .map(|r| r.node)
            .collect();
        assert_eq!(nodes, ["b", "c"]);
        assert_eq!(
            db.push_disable("alice", "push.localhost", Some("b"))
                .await
                .expect("disable"),
            1
        );
        assert_eq!(
            db.push_disable("alice", "push.localhost", None)
                .await
                .expect("disable"),
            1
        );
        assert!(db.push_list("alice").await.expect("list").is_empty());
        db.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
