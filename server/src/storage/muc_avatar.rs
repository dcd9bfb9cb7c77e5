//! Room pictures (XEP-0486): the vCard an owner stored on a persistent
//! room and the hash of its photo. The table is in the group chat
//! migrations (`migrations/muc`), so it lives and dies with the room's row.

use sqlx::Row;

use super::{Db, StorageError};

impl Db {
    /// The stored vCard of a room, serialised.
    pub async fn muc_avatar_vcard(&self, room: &str) -> Result<Option<String>, StorageError> {
        let row = sqlx::query("SELECT vcard FROM muc_avatars WHERE room = $1")
            .bind(room)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The photo hash of a room's vCard.
    pub async fn muc_avatar_hash(&self, room: &str) -> Result<Option<String>, StorageError> {
        let row = sqlx::query("SELECT hash FROM muc_avatars WHERE room = $1")
            .bind(room)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Store (replace) a room's vCard and its photo hash.
    pub async fn muc_avatar_set(
        &self,
        room: &str,
        vcard: &str,
        hash: &str,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO muc_avatars (room, vcard, hash) VALUES ($1, $2, $3) \
             ON CONFLICT (room) DO UPDATE SET vcard = $2, hash = $3",
        )
        .bind(room)
        .bind(vcard)
        .bind(hash)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forget a room's vCard.
    pub async fn muc_avatar_delete(&self, room: &str) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM muc_avatars WHERE room = $1")
            .bind(room)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
