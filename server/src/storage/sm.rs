//! Stream management (XEP-0198) storage: stanzas a client has not acknowledged
//! are "parked" in the offline store when its connection drops, so that they
//! survive a crash, and taken back out when the client resumes.
//!
//! Parking uses the `offline_messages` table on purpose: if the session is
//! never resumed (the window expires, the server is killed), the parked
//! messages simply are offline messages and reach the account at its next
//! login, exactly once.

use sqlx::Row;

use super::{now, Db, StorageError};

impl Db {
    /// Store serialised stanzas for `username` in one durable transaction and
    /// return their row ids, in order. Not bounded by `offline_max`: the
    /// caller bounds the count (`sm_max_unacked`), and these messages were
    /// already accepted from their senders, so refusing them would lose them.
    pub async fn sm_park(
        &self,
        username: &str,
        stanzas: &[String],
    ) -> Result<Vec<i64>, StorageError> {
        if stanzas.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let mut ids = Vec::with_capacity(stanzas.len());
        let at = now();
        for s in stanzas {
            let row = sqlx::query(
                "INSERT INTO offline_messages (username, stanza, stored_at) VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(username)
            .bind(s)
            .bind(at)
            .fetch_one(&mut *tx)
            .await?;
            ids.push(row.get(0));
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Forget parked stanzas (the session was resumed and holds them in memory).
    pub async fn sm_unpark(&self, username: &str, ids: &[i64]) -> Result<(), StorageError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for id in ids {
            sqlx::query("DELETE FROM offline_messages WHERE username = $1 AND id = $2")
                .bind(username)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
