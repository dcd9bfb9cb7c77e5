//! When the archive's write-ahead log is copied into the database file.
//!
//! In WAL mode a commit appends the pages it changed to `kith.db-wal`; a
//! *checkpoint* later copies them into `kith.db` and syncs it. SQLite's
//! default runs that checkpoint inside the commit that crosses a size
//! threshold, on the committing connection: the archive writer would stop
//! taking new rows for as long as the copy and its `fsync` take (every message
//! waiting behind it sees that in its delivery time), and the copy would run
//! on the writer's thread while the other core idles.
//!
//! So the archive writer's connection never checkpoints on its own
//! (`wal_autocheckpoint = 0`). [`run`] does, on its own connection (its own
//! SQLite thread), after the writer's commits: a `PASSIVE` checkpoint at most
//! every [`Policy::every`], which copies what is committed without blocking
//! the writer or any reader. Under a steady load the log never becomes empty
//! while the writer keeps appending, so SQLite cannot start it over from the
//! beginning; once the checkpointer saw more than [`Policy::restart_pages`]
//! pages in it, the writer itself runs a `RESTART` checkpoint between two
//! groups ([`Checkpoints::restart_if_long`]): it copies only the few pages
//! the last passive checkpoint left, and the next commit starts the log over.
//! (A `RESTART` from the checkpointer's side would wait for the writer in
//! SQLite's busy loop and lose the race to the next group, again and again.)
//! Durability is unchanged: a commit is durable once its log pages are synced
//! (`synchronous = FULL`), before and after this copy.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnection;
use tokio::sync::watch;

/// How often and how far the log is checkpointed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// At most one passive checkpoint per this interval: pages the writer
    /// changes again and again (index pages of busy accounts) are copied
    /// once per interval, not once per commit.
    pub every: Duration,
    /// Log pages beyond which the writer makes the log start over (4 KiB
    /// each; 8192 pages are 32 MiB). At most what the writer appends in one
    /// [`Policy::every`] more (a few MiB at full load) is ever in the log.
    pub restart_pages: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            every: Duration::from_millis(250),
            restart_pages: 8192,
        }
    }
}

/// What the writer and the checkpointer share.
#[derive(Debug, Default)]
pub(crate) struct Checkpoints {
    pub policy: Policy,
    /// Pages in the log at the last passive checkpoint.
    log: AtomicI64,
    /// Times the writer made the log start over.
    restarts: AtomicI64,
    /// The writer's commit count the last passive checkpoint covered.
    covered: AtomicI64,
}

impl Checkpoints {
    pub fn new(policy: Policy) -> Self {
        Checkpoints {
            policy,
            log: AtomicI64::new(0),
            restarts: AtomicI64::new(0),
            covered: AtomicI64::new(0),
        }
    }

    /// The writer's commit count the last passive checkpoint covered.
    #[cfg(test)]
    pub fn covered(&self) -> i64 {
        self.covered.load(Ordering::Relaxed)
    }

    /// Times the writer made the log start over.
    #[cfg(test)]
    pub fn restarts(&self) -> i64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Called by the writer between groups: when the log has grown past
    /// [`Policy::restart_pages`], copy the rest of it and let it start over.
    pub fn restart_if_long(&self, conn: &rusqlite::Connection) {
        let log = self.log.load(Ordering::Relaxed);
        if log <= self.policy.restart_pages {
            return;
        }
        let started = Instant::now();
        match conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
            Ok(()) => {
                self.log.store(0, Ordering::Relaxed);
                let restarts = self.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(
                    log,
                    restarts,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "archive log restarted"
                );
            }
            // Readers still on the old log: the next group tries again.
            Err(e) => tracing::warn!(error = %e, log, "archive log restart failed"),
        }
    }

    /// The checkpointer: a passive checkpoint after the writer's commits
    /// (`commits` changes after each), at most one per [`Policy::every`],
    /// until the writer is gone, then once more.
    pub async fn run(
        self: std::sync::Arc<Self>,
        mut conn: SqliteConnection,
        mut commits: watch::Receiver<u64>,
    ) {
        loop {
            let writer_gone = commits.changed().await.is_err();
            let commit = *commits.borrow_and_update();
            let started = Instant::now();
            match passive(&mut conn).await {
                Ok(log) => {
                    self.log.store(log, Ordering::Relaxed);
                    self.covered
                        .store(i64::try_from(commit).unwrap_or(i64::MAX), Ordering::Relaxed);
                    tracing::trace!(
                        log,
                        ms = started.elapsed().as_secs_f64() * 1e3,
                        "archive log checkpointed"
                    );
                }
                // The next round tries again; meanwhile the log only grows.
                Err(e) => tracing::warn!(error = %e, "archive log checkpoint failed"),
            }
            if writer_gone {
                break;
            }
            // Commits made meanwhile are one change of `commits`: the next
            // round covers them.
            tokio::time::sleep(self.policy.every.saturating_sub(started.elapsed())).await;
        }
    }
}

/// A passive checkpoint; the pages in the log afterwards (SQLite's `log`
/// column: pages appended since the log last started over).
async fn passive(conn: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
    let (_busy, log, _copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(conn)
        .await?;
    Ok(log)
}
