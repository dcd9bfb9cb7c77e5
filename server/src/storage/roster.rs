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
            sqlx::query(
                "INSERT INTO roster_items (username, contact, name, subscription, ask, approved, pending_in,
                    in_roster, groups, version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (username, contact) DO UPDATE SET name = $3, subscription = $4, ask = $5,
                    approved = $6, pending_in = $7, in_roster = $8, groups = $9, version = $10",
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
}
