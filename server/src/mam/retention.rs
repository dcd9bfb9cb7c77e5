//! History retention: messages older than an account's retention (its own
//! setting, else the server's `archive.retention_days`; 0 keeps forever) are
//! deleted by a background pruner every `archive.prune_interval_secs`. Group
//! chat archives (kept under the room's bare JID) follow the server's
//! `archive.retention_days`.
//!
//! Bounded work: the pruner deletes in batches of [`BATCH`] rows, at most
//! [`MAX_BATCHES_PER_ROUND`] batches per account per round, and yields between
//! batches, so a first run over a huge archive never holds the database long;
//! what is left is taken on the next round. While the box's time is not
//! confirmed (`clock.rs`), the pruner deletes nothing.

use std::sync::Arc;

use crate::core::Core;
use crate::registry::BoxFuture;
use crate::storage::{Db, StorageError};

/// Rows deleted per statement.
pub const BATCH: usize = 1000;
/// Batches per account per round.
pub const MAX_BATCHES_PER_ROUND: usize = 100;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// One pruning round over every account; returns how many messages were deleted.
pub async fn prune_once(db: &Db, default_days: u32) -> Result<u64, StorageError> {
    let overrides: std::collections::HashMap<String, i64> = db
        .archive_retention_overrides()
        .await?
        .into_iter()
        .collect();
    let now = super::rules::now_micros();
    let mut total = 0;
    // With the server keeping history forever, only accounts with a retention
    // of their own have anything to prune: a box at rest reads no more.
    let owners = if default_days == 0 {
        overrides
            .iter()
            .filter(|(_, days)| **days > 0)
            .map(|(user, _)| user.clone())
            .collect()
    } else {
        let mut owners = db.account_list().await?;
        owners.extend(db.archive_room_owners().await?);
        owners
    };
    for user in owners {
        let days = overrides
            .get(&user)
            .copied()
            .unwrap_or(i64::from(default_days));
        if days <= 0 {
            continue;
        }
        let cutoff = now.saturating_sub(days.saturating_mul(MICROS_PER_DAY));
        for _ in 0..MAX_BATCHES_PER_ROUND {
            let n = db.archive_prune_user(&user, cutoff, BATCH).await?;
            total += n;
            if (n as usize) < BATCH {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    if total > 0 {
        db.archive_forget_old_marks().await?;
    }
    Ok(total)
}

/// The background pruner: a round at start-up, then one per interval, until shutdown.
pub fn pruner(core: Arc<Core>) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let mut shutdown = core.shutdown.clone();
        let db = core.db.clone();
        let default_days = core.config.archive.retention_days;
        let interval = core.config.archive.prune_interval;
        let clock = core.clock.clone();
        // Holding the core would keep shutdown waiting for this task.
        drop(core);
        loop {
            // A clock that is not confirmed may be far off: history waits.
            let pruned = if clock.confirmed() {
                prune_once(&db, default_days).await
            } else {
                Ok(0)
            };
            match pruned {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "pruned expired history"),
                Err(e) => tracing::warn!(error = %e, "pruning history failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::archive::NewArchived;

    /// A new database with the accounts' and the archive's tables, in its own directory.
    async fn open_db() -> (std::path::PathBuf, Db) {
        let dir = std::env::temp_dir().join(format!(
            "kith-retention-{}-{}",
            std::process::id(),
            crate::core::random_hex(6)
        ));
        let migrators = [
            &crate::storage::accounts::MIGRATOR,
            &crate::storage::archive::MIGRATOR,
        ];
        let db = Db::open(&dir, &migrators).await.expect("open");
        (dir, db)
    }

    #[tokio::test]
    async fn room_archives_follow_the_server_retention() {
        let (dir, db) = open_db().await;
        let now = crate::mam::rules::now_micros();
        let row = |stamp| NewArchived {
            username: "family@groups.example",
            with_bare: "family@groups.example",
            with_resource: "mum",
            stamp,
            stanza: "<message/>",
        };
        db.archive_store(&[row(now - 3 * MICROS_PER_DAY), row(now)])
            .await
            .expect("store");
        assert_eq!(prune_once(&db, 0).await.expect("prune"), 0, "0 keeps all");
        assert_eq!(prune_once(&db, 2).await.expect("prune"), 1);
        let left = db
            .archive_count(
                "family@groups.example",
                &crate::storage::archive::ArchiveFilter::default(),
                10,
            )
            .await
            .expect("count");
        assert_eq!(left, Some(1));
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn an_accounts_own_retention_applies_while_the_server_keeps_all() {
        let (dir, db) = open_db().await;
        let now = crate::mam::rules::now_micros();
        let row = |username, stamp| NewArchived {
            username,
            with_bare: "dad@example.org",
            with_resource: "",
            stamp,
            stanza: "<message/>",
        };
        let old = now - 3 * MICROS_PER_DAY;
        db.archive_store(&[row("mum", old), row("mum", now), row("kid", old)])
            .await
            .expect("store");
        db.archive_set_retention("mum", Some(2))
            .await
            .expect("retention");
        assert_eq!(prune_once(&db, 0).await.expect("prune"), 1);
        let count = |user| {
            let db = db.clone();
            async move {
                db.archive_count(user, &crate::storage::archive::ArchiveFilter::default(), 10)
                    .await
                    .expect("count")
            }
        };
        assert_eq!(count("mum").await, Some(1), "mum keeps 2 days");
        assert_eq!(count("kid").await, Some(1), "the server keeps all");
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
