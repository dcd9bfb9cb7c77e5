//! Roster items and roster versions (RFC 6121 §2, XEP-0237).

use sqlx::migrate::Migrator;
use sqlx::Row;

use super::{Db, StorageError};
use crate::roster::state::{Item, Subscription};

/// Migrations of this area.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/roster");

fn item_from_row(r: &sqlx::sqlite::SqliteRow) -> Item {
    let groups: String = r.get("groups");
    Item {
        contact: r.get("contact"),
        name: r.get("name"),
        subscription: Subscription::parse(r.get::<&str, _>("subscription")),
        ask: r.get::<i64, _>("ask") != 0,
        approved: r.get::<i64, _>("approved") != 0,
        pending_in: r.get::<Option<String>, _>("pending_in"),
        in_roster: r.get::<i64, _>("in_roster") != 0,
        groups: groups
            .split('\n')
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect(),
        version: r.get::<i64, _>("version") as u64,
    }
}

impl Db {
    /// Every item of `username`'s roster, including state-only entries.
    pub async fn roster_items(&self, username: &str) -> Result<Vec<Item>, StorageError> {
        let rows = sqlx::query("SELECT * FROM roster_items WHERE username = $1 ORDER BY contact")
            .bind(username)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.iter().map(item_from_row).collect())
    }

    /// One item.
    pub async fn roster_item(
        &self,
        username: &str,
        contact: &str,
    ) -> Result<Option<Item>, StorageError> {
        let row = sqlx::query("SELECT * FROM roster_items WHERE username = $1 AND contact = $2")
            .bind(username)
            .bind(contact)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(item_from_row))
    }

    /// Current roster version of a user (0 when never changed).
    pub async fn roster_version(&self, username: &str) -> Result<u64, StorageError> {
        let row = sqlx::query("SELECT version FROM roster_versions WHERE username = $1")
            .bind(username)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.get::<i64, _>(0) as u64).unwrap_or(0))
    }

    /// Store an item (insert or replace) and bump the roster version; returns the
    /// new version. Items neither in the roster nor carrying state are deleted.
    pub async fn roster_put(&self, username: &str, item: &Item) -> Result<u64, StorageError> {
        let mut tx = self.begin_write().await?;
        let version: i64 = sqlx::query(
            "INSERT INTO roster_versions (username, version) VALUES ($1, 1)
             ON CONFLICT (username) DO UPDATE SET version = version + 1 RETURNING version",
        )
        .bind(username)
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        if item.is_empty() {
            sqlx::query("DELETE FROM roster_items WHERE username = $1 AND contact = $2")
                .bind(username)
                .bind(&item.contact)
                .execute(&mut *tx)
                .await?;
        } else {
            // `pending_since`: the version at which a pending request began
            // waiting, kept while it waits (a repeated request is no younger).
            sqlx::query(
                "INSERT INTO roster_items (username, contact, name, subscription, ask, approved, pending_in,
                    in_roster, groups, version, pending_since)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                    CASE WHEN $7 IS NULL THEN NULL ELSE $10 END)
                 ON CONFLICT (username, contact) DO UPDATE SET name = $3, subscription = $4, ask = $5,
                    approved = $6, pending_in = $7, in_roster = $8, groups = $9, version = $10,
                    pending_since = CASE WHEN $7 IS NULL THEN NULL
                        ELSE COALESCE(roster_items.pending_since, $10) END",
            )
            .bind(username)
            .bind(&item.contact)
            .bind(&item.name)
            .bind(item.subscription.as_str())
            .bind(item.ask as i64)
            .bind(item.approved as i64)
            .bind(&item.pending_in)
            .bind(item.in_roster as i64)
            .bind(item.groups.join("\n"))
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(version as u64)
    }

    /// Contacts in `username`'s roster proper (not state-only entries).
    pub async fn roster_size(&self, username: &str) -> Result<usize, StorageError> {
        let n: i64 =
            sqlx::query("SELECT COUNT(*) FROM roster_items WHERE username = $1 AND in_roster != 0")
                .bind(username)
                .fetch_one(self.pool())
                .await?
                .get(0);
        Ok(n.max(0) as usize)
    }

    /// Contacts whose inbound subscription requests to `username` wait
    /// beyond the `keep` most recent ones, oldest first.
    pub async fn pending_beyond(
        &self,
        username: &str,
        keep: usize,
    ) -> Result<Vec<String>, StorageError> {
        let rows = sqlx::query(
            "SELECT contact FROM roster_items WHERE username = $1 AND pending_in IS NOT NULL
             ORDER BY pending_since DESC, contact DESC LIMIT -1 OFFSET $2",
        )
        .bind(username)
        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().rev().map(|r| r.get("contact")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(contact: &str) -> Item {
        Item {
            pending_in: Some(format!("<presence from='{contact}' type='subscribe'/>")),
            ..Item::new(contact)
        }
    }

    #[tokio::test]
    async fn pending_requests_are_ordered_by_when_they_began_waiting() {
        let dir = std::env::temp_dir().join(format!("kith-roster-{}", crate::core::random_hex(6)));
        let db = Db::open(&dir, &[&super::super::accounts::MIGRATOR, &MIGRATOR])
            .await
            .expect("open");
        for c in ["c@x", "a@x", "b@x"] {
            db.roster_put("alice", &pending(c)).await.expect("put");
        }
        // A repeated request, or another change to the item, keeps its age.
        let mut again = pending("c@x");
        again.name = Some("Cee".into());
        db.roster_put("alice", &again).await.expect("put");
        db.roster_put("bob", &pending("z@x")).await.expect("put");
        let mut friend = Item::new("f@x");
        friend.in_roster = true;
        db.roster_put("alice", &friend).await.expect("put");

        assert_eq!(
            db.pending_beyond("alice", 3).await.expect("q"),
            Vec::<String>::new()
        );
        assert_eq!(
            db.pending_beyond("alice", 1).await.expect("q"),
            ["c@x", "a@x"]
        );
        assert_eq!(
            db.pending_beyond("alice", 0).await.expect("q"),
            ["c@x", "a@x", "b@x"]
        );
        assert_eq!(db.roster_size("alice").await.expect("size"), 1);

        // Answered, then asked again: young again.
        let mut answered = pending("c@x");
        answered.pending_in = None;
        answered.in_roster = true;
        db.roster_put("alice", &answered).await.expect("put");
        let asked_again = Item {
            in_roster: true,
            ..pending("c@x")
        };
        db.roster_put("alice", &asked_again).await.expect("put");
        assert_eq!(
            db.pending_beyond("alice", 1).await.expect("q"),
            ["a@x", "b@x"]
        );
        assert_eq!(db.roster_size("alice").await.expect("size"), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
