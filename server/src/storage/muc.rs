//! Group chat storage (XEP-0045): persistent rooms with their configuration
//! form and subject, and affiliations with registered nicks.

use sqlx::migrate::Migrator;
use sqlx::Row;

use super::{Db, StorageError};

/// Migrations of this area.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/muc");

/// A stored room.
#[derive(Debug, Clone)]
pub struct StoredRoom {
    pub name: String,
    /// The configuration as a submitted data form (XML).
    pub config: String,
    pub subject: String,
    pub subject_by: String,
    pub created: i64,
    pub creator: String,
}

/// A stored affiliation.
#[derive(Debug, Clone)]
pub struct StoredAffiliation {
    pub jid: String,
    pub affiliation: String,
    pub nick: Option<String>,
    pub reason: String,
}

impl Db {
    /// Every persistent room.
    pub async fn muc_rooms(&self) -> Result<Vec<StoredRoom>, StorageError> {
        let rows = sqlx::query(
            "SELECT name, config, subject, subject_by, created, creator FROM muc_rooms ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| StoredRoom {
                name: r.get(0),
                config: r.get(1),
                subject: r.get(2),
                subject_by: r.get(3),
                created: r.get(4),
                creator: r.get(5),
            })
            .collect())
    }

    /// The affiliations of a room.
    pub async fn muc_affiliations(
        &self,
        room: &str,
    ) -> Result<Vec<StoredAffiliation>, StorageError> {
        let rows = sqlx::query(
            "SELECT jid, affiliation, nick, reason FROM muc_affiliations WHERE room = $1 ORDER BY jid",
        )
        .bind(room)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| StoredAffiliation {
                jid: r.get(0),
                affiliation: r.get(1),
                nick: r.get(2),
                reason: r.get(3),
            })
            .collect())
    }

    /// Store a room (its configuration and subject) and replace its
    /// affiliations, in one transaction.
    pub async fn muc_save_room(
        &self,
        room: &StoredRoom,
        affiliations: &[StoredAffiliation],
    ) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO muc_rooms (name, config, subject, subject_by, created, creator) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET \
             config = $2, subject = $3, subject_by = $4",
        )
        .bind(&room.name)
        .bind(&room.config)
        .bind(&room.subject)
        .bind(&room.subject_by)
        .bind(room.created)
        .bind(&room.creator)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM muc_affiliations WHERE room = $1")
            .bind(&room.name)
            .execute(&mut *tx)
            .await?;
        for a in affiliations {
            sqlx::query(
                "INSERT INTO muc_affiliations (room, jid, affiliation, nick, reason) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&room.name)
            .bind(&a.jid)
            .bind(&a.affiliation)
            .bind(&a.nick)
            .bind(&a.reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Store a new subject.
    pub async fn muc_set_subject(
        &self,
        room: &str,
        subject: &str,
        by: &str,
    ) -> Result<(), StorageError> {
        sqlx::query("UPDATE muc_rooms SET subject = $2, subject_by = $3 WHERE name = $1")
            .bind(room)
            .bind(subject)
            .bind(by)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forget a room and its affiliations.
    pub async fn muc_delete_room(&self, room: &str) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM muc_rooms WHERE name = $1")
            .bind(room)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
