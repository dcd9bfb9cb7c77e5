//! Message archive storage (XEP-0313): archived messages, paging over them,
//! archiving preferences, retention and pruning.
//!
//! Owners (account names, room JIDs) and correspondents are stored once, in
//! `archive_jids`; the archive's rows carry their numbers. Every query walks
//! an index in id order — `(owner, id)`, or `(owner, with_jid, id)` with a
//! `with` filter — and stops after one page, so a page costs the same in an
//! archive of a hundred or a million messages. Ids are allocated in time
//! order, so there is no time index: a time bound becomes an id bound
//! through `archive_marks` (the first id and smallest stamp of each committed
//! group, a row per group), and only the rows of the group at the bound are
//! checked by their own stamp.
//!
//! Writes are group-committed and off the message path: [`Db::archive_enqueue`]
//! allocates the archive ids in memory (in order, continuing from the largest
//! id ever used) and hands the rows to one writer under the same short lock,
//! so commit order is id order; it returns the ids at once. The writer
//! (`archive_writer.rs`) runs on a thread of its own with its own SQLite
//! connection (a larger page cache, a longer write-ahead log) and commits
//! every row waiting when the previous commit ends (at most
//! [`MAX_GROUP`](super::archive_writer::MAX_GROUP) requests) in one
//! transaction of a few multi-row `INSERT`s, so many
//! senders share one `fsync`; then it advances the *durability watermark*:
//! every id at or below it is on disk. [`Db::archive_durable`] waits for an id
//! to be covered (stream management waits for it before acknowledging a
//! sender's stanzas), and a read of an account's archive first waits for the
//! rows already allocated *to that account*, so a query sees every message
//! delivered before it and never waits for other accounts' rows. At most
//! [`QUEUE`] (32 MiB of rows) wait for the writer; beyond that senders wait
//! for room. The
//! writer never copies its write-ahead log into the database file itself: a
//! checkpointer on another connection does (`checkpoint.rs`), so a commit
//! never waits for that copy. A
//! failed commit is logged as an error and the watermark still advances (its
//! rows are lost; the messages themselves were delivered). Preferences are
//! cached in memory (bounded by the number of accounts), written through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::ConnectOptions;
use sqlx::Row;
use tokio::sync::{mpsc, watch, OnceCell, Semaphore};

use super::archive_writer::{self, Ends, Job, OwnedRow};
use super::checkpoint::Checkpoints;
use super::{Db, StorageError};

/// SQL for the number of the JID bound to placeholder `$p` (NULL, matching
/// nothing, for a JID never archived). A macro so that every query using it
/// stays one `&'static str`, prepared once.
macro_rules! jid_number {
    ($p:literal) => {
        concat!("(SELECT id FROM archive_jids WHERE jid = ", $p, ")")
    };
}

/// One message of the owner `$1`'s archive by its id `$2`.
const ONE_MESSAGE: &str = concat!(
    "SELECT id, stamp, stanza FROM archive WHERE owner = ",
    jid_number!("$1"),
    " AND id = $2"
);

/// Migrations of this area.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/archive");

/// Room for rows allocated and not yet committed, in KiB of stanza (each row
/// counts at least 1 KiB): 32 MiB, about 32 000 chat messages' rows, before
/// senders wait for room. It has to hold what arrives while one group is
/// committed (at the top rate of a 2-core machine, ~64 000 rows/s and a
/// group of 16 000 rows in ~200 ms) *and* the group itself, whose room comes
/// back only with its commit: with 8 192 rows senders waited for every
/// commit at window 1, and groups stayed half as large.
pub const QUEUE: usize = 32 * 1024;

/// The room a row takes in [`QUEUE`]: its stanza in KiB, at least 1.
fn room_for(stanza: &str) -> usize {
    1 + stanza.len() / 1024
}

/// Shared by every clone of a [`Db`].
#[derive(Debug, Default)]
pub(crate) struct State {
    writer: OnceCell<Writer>,
    /// When the writer's log is checkpointed (tests shorten it).
    checkpoints: super::checkpoint::Policy,
    prefs: RwLock<HashMap<String, ArchivePrefs>>,
}

/// The handle on the writer task.
#[derive(Debug)]
struct Writer {
    /// The last id allocated and the channel to the writer, under one lock:
    /// rows reach the writer in id order.
    alloc: Mutex<Alloc>,
    /// Room for rows waiting for the writer ([`QUEUE`], in KiB).
    room: Arc<Semaphore>,
    /// The durability watermark: the highest id committed (or given up).
    durable: watch::Receiver<i64>,
    /// Shared with the checkpointer (`checkpoint.rs`).
    #[cfg_attr(not(test), allow(dead_code))]
    checkpoints: Arc<Checkpoints>,
}

#[derive(Debug)]
struct Alloc {
    last: i64,
    tx: mpsc::UnboundedSender<Job>,
    /// The last id allocated to each archive owner (accounts and rooms)
    /// still possibly waiting for the writer: what a read of that archive
    /// waits for. Entries already durable are dropped when it grows past
    /// [`OWNERS_KEPT`].
    owners: HashMap<String, i64>,
}

/// Archive owners remembered in [`Alloc::owners`] before the durable ones
/// are forgotten.
const OWNERS_KEPT: usize = 1024;

/// The largest archive id ever used (AUTOINCREMENT: also those of deleted rows).
async fn last_used_id(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
    let max: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM archive")
        .fetch_one(pool)
        .await?
        .get(0);
    let seq: i64 =
        sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'archive'")
            .fetch_one(pool)
            .await?
            .get(0);
    Ok(max.max(seq))
}

/// A message to archive for one account.
#[derive(Debug, Clone)]
pub struct NewArchived<'a> {
    pub username: &'a str,
    pub with_bare: &'a str,
    pub with_resource: &'a str,
    /// Microseconds since the Unix epoch.
    pub stamp: i64,
    pub stanza: &'a str,
}

/// An archived message.
#[derive(Debug, Clone)]
pub struct Archived {
    pub id: i64,
    pub stamp: i64,
    pub stanza: String,
}

/// Which of an account's messages a query covers.
#[derive(Debug, Clone, Default)]
pub struct ArchiveFilter {
    pub with_bare: Option<String>,
    /// Only with a full `with`: the other side's resource.
    pub with_resource: Option<String>,
    /// Ids strictly greater than this.
    pub after: Option<i64>,
    /// Ids strictly less than this.
    pub before: Option<i64>,
}

/// Archiving preferences of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePrefs {
    /// `always`, `never` or `roster`.
    pub default_mode: String,
    pub always: Vec<String>,
    pub never: Vec<String>,
}

impl Default for ArchivePrefs {
    fn default() -> Self {
        ArchivePrefs {
            default_mode: "always".into(),
            always: Vec::new(),
            never: Vec::new(),
        }
    }
}

fn row(r: &SqliteRow) -> Archived {
    Archived {
        id: r.get(0),
        stamp: r.get(1),
        stanza: r.get(2),
    }
}

/// The WHERE clause of a filter and its bind values, after the owner's JID.
fn where_clause(f: &ArchiveFilter) -> (String, Vec<SqlValue>) {
    let mut sql = String::from(concat!("owner = ", jid_number!("?")));
    let mut binds = Vec::new();
    if let Some(w) = &f.with_bare {
        sql.push_str(concat!(" AND with_jid = ", jid_number!("?")));
        binds.push(SqlValue::Text(w.clone()));
    }
    if let Some(r) = &f.with_resource {
        sql.push_str(" AND with_resource = ?");
        binds.push(SqlValue::Text(r.clone()));
    }
    if let Some(a) = f.after {
        sql.push_str(" AND id > ?");
        binds.push(SqlValue::Int(a));
    }
    if let Some(b) = f.before {
        sql.push_str(" AND id < ?");
        binds.push(SqlValue::Int(b));
    }
    (sql, binds)
}

enum SqlValue {
    Text(String),
    Int(i64),
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    username: &'q str,
    binds: Vec<SqlValue>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    q = q.bind(username);
    for b in binds {
        q = match b {
            SqlValue::Text(t) => q.bind(t),
            SqlValue::Int(i) => q.bind(i),
        };
    }
    q
}

impl Db {
    /// The writer, started on first use with ids continuing after the
    /// largest one ever used.
    async fn archive_writer(&self) -> Result<&Writer, StorageError> {
        self.archive
            .writer
            .get_or_try_init(|| async {
                let last = last_used_id(self.pool()).await?;
                // Its own connection, not one of the pool's: readers never
                // wait for a connection the writer holds, and its page cache
                // keeps the indexes' hot pages (one per account and index)
                // instead of reading them back from the OS on every commit.
                // It never checkpoints: the checkpointer does, on its own
                // connection and thread (`checkpoint.rs`).
                let path = self.opts.get_filename().to_path_buf();
                let writer_err = |e: String| StorageError::Conflict(format!("archive writer: {e}"));
                let conn = tokio::task::spawn_blocking(move || archive_writer::open(&path))
                    .await
                    .map_err(|e| writer_err(e.to_string()))?
                    .map_err(writer_err)?;
                let checkpointer = self.opts.clone().connect().await?;
                let (tx, rx) = mpsc::unbounded_channel();
                let room = Arc::new(Semaphore::new(QUEUE));
                let (durable, drx) = watch::channel(last);
                let (commits, commits_rx) = watch::channel(0);
                let checkpoints = Arc::new(Checkpoints::new(self.archive.checkpoints));
                let ends = Ends {
                    room: room.clone(),
                    durable,
                    commits,
                    checkpoints: checkpoints.clone(),
                };
                archive_writer::spawn(conn, rx, ends).map_err(|e| writer_err(e.to_string()))?;
                tokio::spawn(checkpoints.clone().run(checkpointer, commits_rx));
                Ok::<_, StorageError>(Writer {
                    alloc: Mutex::new(Alloc {
                        last,
                        tx,
                        owners: HashMap::new(),
                    }),
                    room,
                    durable: drx,
                    checkpoints,
                })
            })
            .await
    }

    /// Archive messages (one row each) without waiting for the commit:
    /// returns their archive ids (increasing, in the order given) as soon as
    /// the writer has them. Waits only when [`QUEUE`] (32 MiB of rows) already
    /// waits for the writer. [`Db::archive_durable`] tells when they are on disk.
    pub async fn archive_enqueue(
        &self,
        rows: &[NewArchived<'_>],
    ) -> Result<Vec<i64>, StorageError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let w = self.archive_writer().await?;
        let gone = || StorageError::Conflict("the archive writer stopped".into());
        let room: usize = rows.iter().map(|r| room_for(r.stanza)).sum();
        // A request larger than the whole queue waits for all of it.
        let permits = room.min(QUEUE) as u32;
        w.room
            .acquire_many(permits)
            .await
            .map_err(|_| gone())?
            .forget();
        let mut owned: Vec<OwnedRow> = rows
            .iter()
            .map(|r| OwnedRow {
                id: 0,
                username: r.username.to_string(),
                with_bare: r.with_bare.to_string(),
                with_resource: r.with_resource.to_string(),
                stamp: r.stamp,
                stanza: r.stanza.to_string(),
            })
            .collect();
        let durable = *w.durable.borrow();
        let mut alloc = w.alloc.lock().unwrap_or_else(|e| e.into_inner());
        if alloc.owners.len() >= OWNERS_KEPT {
            alloc.owners.retain(|_, id| *id > durable);
        }
        for r in &mut owned {
            alloc.last += 1;
            r.id = alloc.last;
            let id = r.id;
            match alloc.owners.get_mut(&r.username) {
                Some(last) => *last = id,
                None => {
                    alloc.owners.insert(r.username.clone(), id);
                }
            }
        }
        let ids = owned.iter().map(|r| r.id).collect();
        let sent = alloc.tx.send(Job {
            rows: owned,
            permits,
        });
        drop(alloc);
        sent.map_err(|_| gone())?;
        Ok(ids)
    }

    /// Wait until archive id `id` (and every id below it) is committed, or
    /// its commit failed and was logged. Returns at once for `id <= 0`.
    pub async fn archive_durable(&self, id: i64) {
        if id <= 0 {
            return;
        }
        let Some(w) = self.archive.writer.get() else {
            return; // nothing was ever archived since the start
        };
        let mut rx = w.durable.clone();
        // An error means the writer stopped: nothing more will be committed.
        let _ = rx.wait_for(|d| *d >= id).await;
    }

    /// The last archive id allocated (0 before the first).
    pub fn archive_last_allocated(&self) -> i64 {
        self.archive
            .writer
            .get()
            .map(|w| w.alloc.lock().unwrap_or_else(|e| e.into_inner()).last)
            .unwrap_or(0)
    }

    /// Wait until every row allocated so far is committed (shutdown).
    pub async fn archive_settle(&self) {
        self.archive_durable(self.archive_last_allocated()).await;
    }

    /// Wait until every row allocated so far to `owner`'s archive is
    /// committed: what a reader of that archive must see. Rows of other
    /// archives still waiting for the writer do not hold it up.
    pub async fn archive_settle_for(&self, owner: &str) {
        let last = self
            .archive
            .writer
            .get()
            .and_then(|w| {
                let alloc = w.alloc.lock().unwrap_or_else(|e| e.into_inner());
                alloc.owners.get(owner).copied()
            })
            .unwrap_or(0);
        self.archive_durable(last).await;
    }

    /// Archive messages and wait for their commit (bulk imports, tests).
    #[cfg(any(test, feature = "bench-support"))]
    pub async fn archive_store(&self, rows: &[NewArchived<'_>]) -> Result<Vec<i64>, StorageError> {
        let ids = self.archive_enqueue(rows).await?;
        if let Some(last) = ids.last() {
            self.archive_durable(*last).await;
        }
        Ok(ids)
    }

    /// One page of `username`'s archive under `filter`: the first `limit`
    /// messages in id order (`backward == false`) or the last `limit`
    /// (`backward == true`), returned oldest first, and whether more matched
    /// beyond the page in the direction of travel.
    pub async fn archive_page(
        &self,
        username: &str,
        filter: &ArchiveFilter,
        limit: usize,
        backward: bool,
    ) -> Result<(Vec<Archived>, bool), StorageError> {
        self.archive_settle_for(username).await;
        let (cond, binds) = where_clause(filter);
        let order = if backward { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT id, stamp, stanza FROM archive WHERE {cond} ORDER BY id {order} LIMIT {}",
            limit + 1
        );
        let rows = bind_all(sqlx::query(&sql), username, binds)
            .fetch_all(self.pool())
            .await?;
        let more = rows.len() > limit;
        let mut page: Vec<Archived> = rows.iter().take(limit).map(row).collect();
        if backward {
            page.reverse();
        }
        Ok((page, more))
    }

    /// How many messages of `username`'s archive match `filter`, if at most
    /// `limit` do (`None` when more match: counting a million index entries
    /// would cost a hundred times the page itself).
    pub async fn archive_count(
        &self,
        username: &str,
        filter: &ArchiveFilter,
        limit: usize,
    ) -> Result<Option<i64>, StorageError> {
        self.archive_settle_for(username).await;
        let (cond, binds) = where_clause(filter);
        let sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM archive WHERE {cond} LIMIT {})",
            limit + 1
        );
        let n: i64 = bind_all(sqlx::query(&sql), username, binds)
            .fetch_one(self.pool())
            .await?
            .get(0);
        Ok((n as usize <= limit).then_some(n))
    }

    /// The messages of `username` with these ids, oldest first (unknown ids are
    /// simply absent).
    pub async fn archive_by_ids(
        &self,
        username: &str,
        ids: &[i64],
    ) -> Result<Vec<Archived>, StorageError> {
        self.archive_settle_for(username).await;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let r = sqlx::query(ONE_MESSAGE)
                .bind(username)
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
            out.extend(r.as_ref().map(row));
        }
        out.sort_by_key(|a| a.id);
        Ok(out)
    }

    /// Whether `id` is in `username`'s archive.
    pub async fn archive_has(&self, username: &str, id: i64) -> Result<bool, StorageError> {
        self.archive_settle_for(username).await;
        Ok(sqlx::query(concat!(
            "SELECT 1 FROM archive WHERE owner = ",
            jid_number!("$1"),
            " AND id = $2"
        ))
        .bind(username)
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .is_some())
    }

    /// The first id stamped at or after `stamp` (`at_or_after`), or the last
    /// id stamped at or before it; `None` when there is none.
    ///
    /// Through the marks (module comment): rows of the groups before the last
    /// one whose smallest stamp is below `stamp` are all older, rows of the
    /// groups from the first one whose smallest stamp is above it all newer,
    /// so only the rows between are checked by their own stamp.
    pub async fn archive_id_at(
        &self,
        username: &str,
        stamp: i64,
        at_or_after: bool,
    ) -> Result<Option<i64>, StorageError> {
        self.archive_settle_for(username).await;
        let sql = if at_or_after {
            concat!(
                "SELECT id FROM archive WHERE owner = ",
                jid_number!("$1"),
                " AND id >= COALESCE((SELECT id FROM archive_marks WHERE stamp < $2 \
                                     ORDER BY stamp DESC LIMIT 1), 0) \
                 AND stamp >= $2 ORDER BY id ASC LIMIT 1"
            )
        } else {
            concat!(
                "SELECT id FROM archive WHERE owner = ",
                jid_number!("$1"),
                " AND id < COALESCE((SELECT id FROM archive_marks WHERE stamp > $2 \
                                    ORDER BY stamp ASC LIMIT 1), 9223372036854775807) \
                 AND stamp <= $2 ORDER BY id DESC LIMIT 1"
            )
        };
        Ok(sqlx::query(sql)
            .bind(username)
            .bind(stamp)
            .fetch_optional(self.pool())
            .await?
            .map(|r| r.get(0)))
    }

    /// The oldest and the newest message of `username`'s archive, as (id, stamp).
    pub async fn archive_bounds(
        &self,
        username: &str,
    ) -> Result<Option<((i64, i64), (i64, i64))>, StorageError> {
        self.archive_settle_for(username).await;
        let first = sqlx::query(concat!(
            "SELECT id, stamp FROM archive WHERE owner = ",
            jid_number!("$1"),
            " ORDER BY id ASC LIMIT 1"
        ))
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        let last = sqlx::query(concat!(
            "SELECT id, stamp FROM archive WHERE owner = ",
            jid_number!("$1"),
            " ORDER BY id DESC LIMIT 1"
        ))
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        Ok(match (first, last) {
            (Some(f), Some(l)) => Some(((f.get(0), f.get(1)), (l.get(0), l.get(1)))),
            _ => None,
        })
    }

    /// The archiving preferences of `username` (defaults when never set).
    pub async fn archive_prefs(&self, username: &str) -> Result<ArchivePrefs, StorageError> {
        let cached = self
            .archive
            .prefs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(username)
            .cloned();
        if let Some(p) = cached {
            return Ok(p);
        }
        let p = self.archive_prefs_load(username).await?;
        self.archive
            .prefs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(username.to_string())
            .or_insert(p.clone());
        Ok(p)
    }

    async fn archive_prefs_load(&self, username: &str) -> Result<ArchivePrefs, StorageError> {
        let mode: Option<String> =
            sqlx::query("SELECT default_mode FROM archive_prefs WHERE username = $1")
                .bind(username)
                .fetch_optional(self.pool())
                .await?
                .map(|r| r.get(0));
        let mut prefs = ArchivePrefs {
            default_mode: mode.unwrap_or_else(|| "always".into()),
            ..ArchivePrefs::default()
        };
        let rows = sqlx::query(
            "SELECT jid, always FROM archive_prefs_jids WHERE username = $1 ORDER BY jid",
        )
        .bind(username)
        .fetch_all(self.pool())
        .await?;
        for r in rows {
            let jid: String = r.get(0);
            let always: i64 = r.get(1);
            if always != 0 {
                prefs.always.push(jid);
            } else {
                prefs.never.push(jid);
            }
        }
        Ok(prefs)
    }

    /// Replace the archiving preferences of `username` (keeps its retention).
    pub async fn archive_set_prefs(
        &self,
        username: &str,
        prefs: &ArchivePrefs,
    ) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO archive_prefs (username, default_mode) VALUES ($1, $2) \
             ON CONFLICT (username) DO UPDATE SET default_mode = $2",
        )
        .bind(username)
        .bind(&prefs.default_mode)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM archive_prefs_jids WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        for (list, always) in [(&prefs.always, 1i64), (&prefs.never, 0i64)] {
            for jid in list {
                sqlx::query(
                    "INSERT OR REPLACE INTO archive_prefs_jids (username, jid, always) VALUES ($1, $2, $3)",
                )
                .bind(username)
                .bind(jid)
                .bind(always)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        self.archive
            .prefs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(username.to_string(), prefs.clone());
        Ok(())
    }

    /// Drop what is cached about `username` (its account was deleted).
    pub(crate) fn archive_forget(&self, username: &str) {
        self.archive
            .prefs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(username);
    }

    /// Set (`Some`) or clear (`None`: the server default) the retention of `username`, in days.
    pub async fn archive_set_retention(
        &self,
        username: &str,
        days: Option<u32>,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO archive_prefs (username, retention_days) VALUES ($1, $2) \
             ON CONFLICT (username) DO UPDATE SET retention_days = $2",
        )
        .bind(username)
        .bind(days.map(i64::from))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Accounts with a retention override, as (username, days).
    pub async fn archive_retention_overrides(&self) -> Result<Vec<(String, i64)>, StorageError> {
        let rows = sqlx::query(
            "SELECT username, retention_days FROM archive_prefs WHERE retention_days IS NOT NULL",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Delete at most `batch` messages of `username` stamped before `cutoff`
    /// (microseconds); returns how many were deleted.
    pub async fn archive_prune_user(
        &self,
        username: &str,
        cutoff: i64,
        batch: usize,
    ) -> Result<u64, StorageError> {
        self.archive_settle_for(username).await;
        // Rows from the first group whose smallest stamp is at or after the
        // cutoff on are all newer (module comment).
        let r = sqlx::query(concat!(
            "DELETE FROM archive WHERE id IN (SELECT id FROM archive WHERE owner = ",
            jid_number!("$1"),
            " AND id < COALESCE((SELECT id FROM archive_marks WHERE stamp >= $2 \
                                ORDER BY stamp ASC LIMIT 1), 9223372036854775807) \
             AND stamp < $2 ORDER BY id LIMIT $3)"
        ))
        .bind(username)
        .bind(cutoff)
        .bind(batch as i64)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected())
    }
}

/// Group chat archives (MUC MAM): a room's archive is kept under its bare
/// JID as `username`, which no local account name can be (it has an `@`).
impl Db {
    /// One archived message of `username`, if it is there.
    pub async fn archive_get(
        &self,
        username: &str,
        id: i64,
    ) -> Result<Option<Archived>, StorageError> {
        self.archive_settle_for(username).await;
        Ok(sqlx::query(ONE_MESSAGE)
            .bind(username)
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(row))
    }

    /// Replace the stored stanza of one archived message (a retraction
    /// leaves a tombstone in its place); false when it is not there.
    pub async fn archive_replace(
        &self,
        username: &str,
        id: i64,
        stanza: &str,
    ) -> Result<bool, StorageError> {
        self.archive_settle_for(username).await;
        let r = sqlx::query(concat!(
            "UPDATE archive SET stanza = $3 WHERE owner = ",
            jid_number!("$1"),
            " AND id = $2"
        ))
        .bind(username)
        .bind(id)
        .bind(stanza)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Delete the whole archive of `username` (a destroyed room), in
    /// batches of `batch` rows so the database is never held long; returns
    /// how many messages were deleted.
    pub async fn archive_delete_owner(
        &self,
        username: &str,
        batch: usize,
    ) -> Result<u64, StorageError> {
        self.archive_settle_for(username).await;
        let mut total = 0;
        loop {
            let r = sqlx::query(concat!(
                "DELETE FROM archive WHERE id IN (SELECT id FROM archive WHERE owner = ",
                jid_number!("$1"),
                " LIMIT $2)"
            ))
            .bind(username)
            .bind(batch as i64)
            .execute(self.pool())
            .await?;
            total += r.rows_affected();
            if (r.rows_affected() as usize) < batch {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Every archive owner that is not a local account (group chat rooms:
    /// their owner name holds an `@`). One index seek per JID that holds an
    /// `@` (rooms and correspondents), not a scan of the archive.
    pub async fn archive_room_owners(&self) -> Result<Vec<String>, StorageError> {
        let rows = sqlx::query(
            "SELECT jid FROM archive_jids j WHERE instr(jid, '@') > 0 \
             AND EXISTS (SELECT 1 FROM archive WHERE owner = j.id) ORDER BY jid",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// Forget the marks of groups whose rows are all gone (the pruner, after
    /// a round): they would only make the table longer.
    pub async fn archive_forget_old_marks(&self) -> Result<u64, StorageError> {
        let r = sqlx::query(
            "DELETE FROM archive_marks WHERE id < \
             (SELECT id FROM archive_marks WHERE id <= (SELECT COALESCE(MIN(id), 0) FROM archive) \
              ORDER BY id DESC LIMIT 1)",
        )
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (Db, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "kith-archive-test-{}-{}",
            std::process::id(),
            crate::core::random_hex(6)
        ));
        let db = Db::open(&dir, &[&MIGRATOR]).await.expect("open");
        (db, dir)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_is_checkpointed_and_stays_bounded_while_the_writer_writes() {
        let (mut db, dir) = db().await;
        std::sync::Arc::get_mut(&mut db.archive)
            .expect("not shared yet")
            .checkpoints = crate::storage::checkpoint::Policy {
            every: std::time::Duration::from_millis(5),
            restart_pages: 64,
        };
        // 200 groups of 100 rows over 100 accounts, 500-byte stanzas: 10 MB
        // of rows, and about 50 pages (200 KiB) through the log per group.
        // After each group the test waits until a passive checkpoint has
        // covered it (as the checkpointer keeps up in a real run), so what is
        // checked is the rule, not the machine's speed: the writer starts the
        // log over once it passed `restart_pages`.
        let stanza = "x".repeat(500);
        let users: Vec<String> = (0..100).map(|i| format!("user{i}")).collect();
        let mut largest_log = 0;
        for group in 1..=200 {
            let rows: Vec<NewArchived<'_>> = users
                .iter()
                .map(|u| NewArchived {
                    username: u,
                    with_bare: "peer@x",
                    with_resource: "r",
                    stamp: 1,
                    stanza: &stanza,
                })
                .collect();
            db.archive_store(&rows).await.expect("store");
            let checkpoints = &db.archive.writer.get().expect("started").checkpoints;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while checkpoints.covered() < group {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no checkpoint of commit {group} within 30 s"
                );
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            largest_log = largest_log.max(
                std::fs::metadata(dir.join("kith.db-wal"))
                    .map(|m| m.len())
                    .unwrap_or(0),
            );
        }
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM archive")
            .fetch_one(db.pool())
            .await
            .expect("count");
        assert_eq!(count, 20_000);
        let restarts = db
            .archive
            .writer
            .get()
            .expect("started")
            .checkpoints
            .restarts();
        assert!(restarts >= 10, "the log started over {restarts} times");
        // Without the checkpointer the writer (wal_autocheckpoint = 0) leaves
        // every page it ever wrote in the log: about 43 MB here. With it, the
        // log holds at most `restart_pages` (64) and the pages of the two
        // groups since the last restart check: well under 2 MB.
        assert!(
            largest_log < 2_000_000,
            "the log grew to {largest_log} bytes"
        );
        db.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn pages_walk_the_archive_without_gaps_or_duplicates() {
        let (db, dir) = db().await;
        let texts: Vec<String> = (0..23).map(|i| format!("m{i}")).collect();
        let rows: Vec<NewArchived<'_>> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| NewArchived {
                username: "bob",
                with_bare: if i % 2 == 0 { "alice@x" } else { "carol@x" },
                with_resource: "r",
                stamp: 1000 + i as i64,
                stanza: t,
            })
            .collect();
        let ids = db.archive_store(&rows).await.expect("store");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in time order");

        // Forward, 5 at a time.
        let mut seen = Vec::new();
        let mut f = ArchiveFilter::default();
        loop {
            let (page, more) = db.archive_page("bob", &f, 5, false).await.expect("page");
            seen.extend(page.iter().map(|a| a.stanza.clone()));
            if !more {
                break;
            }
            f.after = page.last().map(|a| a.id);
        }
        assert_eq!(seen, texts);
        // Backward, 5 at a time, each page oldest first.
        let mut back = Vec::new();
        let mut f = ArchiveFilter::default();
        loop {
            let (page, more) = db.archive_page("bob", &f, 5, true).await.expect("page");
            let mut p: Vec<String> = page.iter().map(|a| a.stanza.clone()).collect();
            p.append(&mut back);
            back = p;
            if !more {
                break;
            }
            f.before = page.first().map(|a| a.id);
        }
        assert_eq!(back, texts);
        // A `with` filter, a count and its bound, time bounds.
        let alice = ArchiveFilter {
            with_bare: Some("alice@x".into()),
            ..ArchiveFilter::default()
        };
        assert_eq!(
            db.archive_count("bob", &alice, 100).await.expect("count"),
            Some(12)
        );
        assert_eq!(
            db.archive_count("bob", &alice, 10).await.expect("count"),
            None
        );
        assert_eq!(
            db.archive_id_at("bob", 1005, true).await.expect("at"),
            Some(ids[5])
        );
        assert_eq!(db.archive_id_at("bob", 999, false).await.expect("at"), None);
        assert_eq!(
            db.archive_page("eve", &alice, 5, false)
                .await
                .expect("p")
                .0
                .len(),
            0
        );
        // Pruning is per account and bounded by the batch.
        assert_eq!(
            db.archive_prune_user("bob", 1010, 4).await.expect("prune"),
            4
        );
        assert_eq!(
            db.archive_prune_user("bob", 1010, 100)
                .await
                .expect("prune"),
            6
        );
        assert_eq!(
            db.archive_bounds("bob")
                .await
                .expect("bounds")
                .map(|b| b.0 .0),
            Some(ids[10])
        );
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn room_archives_are_edited_listed_and_deleted() {
        let (db, dir) = db().await;
        let row = |user, text| NewArchived {
            username: user,
            with_bare: "r@groups.x",
            with_resource: "mum",
            stamp: 1,
            stanza: text,
        };
        let ids = db
            .archive_store(&[
                row("r@groups.x", "a"),
                row("bob", "b"),
                row("r@groups.x", "c"),
                row("s@groups.x", "d"),
            ])
            .await
            .expect("store");
        assert_eq!(
            db.archive_room_owners().await.expect("owners"),
            ["r@groups.x", "s@groups.x"]
        );
        assert!(db
            .archive_replace("r@groups.x", ids[0], "tomb")
            .await
            .expect("replace"));
        assert!(!db
            .archive_replace("r@groups.x", ids[1], "x")
            .await
            .expect("not its own"));
        let got = db.archive_get("r@groups.x", ids[0]).await.expect("get");
        assert_eq!(got.map(|a| a.stanza).as_deref(), Some("tomb"));
        assert!(db.archive_get("bob", ids[0]).await.expect("get").is_none());
        assert_eq!(
            db.archive_delete_owner("r@groups.x", 1).await.expect("del"),
            2
        );
        assert_eq!(
            db.archive_room_owners().await.expect("owners"),
            ["s@groups.x"]
        );
        assert!(db.archive_get("bob", ids[1]).await.expect("get").is_some());
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_follow_enqueue_order_and_the_watermark_covers_them() {
        let (db, dir) = db().await;
        // Many senders at once, none waiting for a commit.
        let mut tasks = Vec::new();
        for t in 0..16 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..40 {
                    let text = format!("t{t}-m{i}");
                    let row = NewArchived {
                        username: "bob",
                        with_bare: "alice@x",
                        with_resource: "r",
                        stamp: i,
                        stanza: &text,
                    };
                    ids.extend(
                        db.archive_enqueue(&[row.clone(), row])
                            .await
                            .expect("enqueue"),
                    );
                }
                ids
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            let ids = t.await.expect("task");
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "a sender's ids increase"
            );
            all.extend(ids);
        }
        all.sort_unstable();
        assert_eq!(
            all,
            (1..=16 * 80).collect::<Vec<i64>>(),
            "no gap, no duplicate"
        );
        // Once an id is durable, it and every id below it are on disk.
        db.archive_durable(700).await;
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM archive WHERE id <= 700")
            .fetch_one(db.pool())
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 700);
        // Readers see every allocated row; each row holds its sender's text.
        let (page, _) = db
            .archive_page("bob", &ArchiveFilter::default(), 2000, false)
            .await
            .expect("page");
        assert_eq!(page.len(), 16 * 80);
        // More than the queue bound in one request still goes through.
        let text = "bulk".to_string();
        let bulk: Vec<NewArchived<'_>> = (0..QUEUE as i64 + 10)
            .map(|i| NewArchived {
                username: "carol",
                with_bare: "alice@x",
                with_resource: "",
                stamp: i,
                stanza: &text,
            })
            .collect();
        let ids = db.archive_store(&bulk).await.expect("bulk");
        assert_eq!(ids.len(), QUEUE + 10);
        let last = *ids.last().expect("ids");
        // Ids are never reused, even after every row was deleted and a restart.
        sqlx::query("DELETE FROM archive")
            .execute(db.pool())
            .await
            .expect("delete");
        db.close().await;
        let db = Db::open(&dir, &[&MIGRATOR]).await.expect("reopen");
        let again = db
            .archive_store(&[NewArchived {
                username: "bob",
                with_bare: "alice@x",
                with_resource: "",
                stamp: 1,
                stanza: "after",
            }])
            .await
            .expect("store");
        assert_eq!(again, vec![last + 1]);
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_waits_for_its_own_archive_only() {
        let (db, dir) = db().await;
        let row = |username, stanza| NewArchived {
            username,
            with_bare: "alice@x",
            with_resource: "",
            stamp: 1,
            stanza,
        };
        db.archive_store(&[row("carol", "c1")])
            .await
            .expect("store");
        // Another connection holds the write lock: the writer cannot commit.
        let lock = db.begin_write().await.expect("lock");
        db.archive_enqueue(&[row("bob", "b1")])
            .await
            .expect("enqueue");
        let carol = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            db.archive_page("carol", &ArchiveFilter::default(), 10, false),
        )
        .await
        .expect("carol's read does not wait for bob's row")
        .expect("page");
        assert_eq!(carol.0.len(), 1);
        let bob = db.clone();
        let bob = tokio::spawn(async move {
            bob.archive_page("bob", &ArchiveFilter::default(), 10, false)
                .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!bob.is_finished(), "bob's read waits for bob's row");
        drop(lock);
        let (page, _) = bob.await.expect("task").expect("page");
        assert_eq!(
            page.iter().map(|a| a.stanza.as_str()).collect::<Vec<_>>(),
            ["b1"]
        );
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// What the writer binds (rusqlite) is what the readers get back (sqlx),
    /// byte for byte: text in several scripts, quotes, a long stanza, an empty
    /// resource and a correspondent with a resource, in groups that use every
    /// statement size (1401 rows: 1024 + 256 + 64 + 16 × 3 + 4 × 2 + 1).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_the_writer_stores_reads_back_unchanged() {
        let (db, dir) = db().await;
        let texts: Vec<String> = (0..1401)
            .map(|i| match i % 4 {
                0 => format!("<message id='{i}'><body>Grüße, 你好, 🙂 «{i}»</body></message>"),
                1 => format!("<message id=\"{i}\"><body>it's &amp; \"quoted\"</body></message>"),
                2 => format!(
                    "<message id='{i}'><body>{}</body></message>",
                    "x".repeat(i * 7)
                ),
                _ => format!("<message id='{i}'/>"),
            })
            .collect();
        let rows: Vec<NewArchived<'_>> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| NewArchived {
                username: if i % 2 == 0 { "zoë" } else { "bob" },
                with_bare: "alice@x",
                with_resource: if i % 3 == 0 { "" } else { "phone ☎" },
                stamp: 1_000 + i as i64,
                stanza: t,
            })
            .collect();
        let ids = db.archive_store(&rows).await.expect("store");
        assert_eq!(ids.len(), rows.len());
        for (owner, parity) in [("zoë", 0), ("bob", 1)] {
            let mut got = Vec::new();
            let mut filter = ArchiveFilter::default();
            loop {
                let (page, more) = db
                    .archive_page(owner, &filter, 100, false)
                    .await
                    .expect("page");
                filter.after = page.last().map(|a| a.id);
                got.extend(page);
                if !more {
                    break;
                }
            }
            let want: Vec<(i64, i64, &str)> = rows
                .iter()
                .zip(&ids)
                .enumerate()
                .filter(|(i, _)| i % 2 == parity)
                .map(|(_, (r, id))| (*id, r.stamp, r.stanza))
                .collect();
            let got: Vec<(i64, i64, &str)> = got
                .iter()
                .map(|a| (a.id, a.stamp, a.stanza.as_str()))
                .collect();
            assert_eq!(got.len(), want.len(), "{owner}'s archive: rows");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, w, "{owner}'s archive");
            }
            let with_resource = ArchiveFilter {
                with_bare: Some("alice@x".into()),
                with_resource: Some("phone ☎".into()),
                ..ArchiveFilter::default()
            };
            let n = db
                .archive_count(owner, &with_resource, 10_000)
                .await
                .expect("count");
            let expected = (0..rows.len())
                .filter(|i| i % 2 == parity && i % 3 != 0)
                .count();
            assert_eq!(n, Some(expected as i64), "{owner}'s rows with the resource");
        }
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Time bounds through the marks: several committed groups, bounds
    /// inside a group, before the first row, after the last, and an owner
    /// whose rows are interleaved with another's.
    #[tokio::test]
    async fn time_bounds_and_pruning_find_the_rows_by_their_stamps() {
        let (db, dir) = db().await;
        let texts: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
        let mut ids = Vec::new();
        // Four groups of ten (each stored and committed before the next);
        // bob and carol alternate; stamps 1000, 1010, … in id order.
        for g in 0..4 {
            let rows: Vec<NewArchived<'_>> = (g * 10..g * 10 + 10)
                .map(|i| NewArchived {
                    username: if i % 2 == 0 { "bob" } else { "carol" },
                    with_bare: "alice@x",
                    with_resource: "",
                    stamp: 1000 + 10 * i as i64,
                    stanza: &texts[i],
                })
                .collect();
            ids.extend(db.archive_store(&rows).await.expect("store"));
        }
        let marks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM archive_marks")
            .fetch_one(db.pool())
            .await
            .expect("marks");
        assert_eq!(marks, 4, "one mark per committed group");
        // bob's rows are the even ones: stamps 1000, 1020, …, 1380.
        let at = |t, after| {
            let db = db.clone();
            async move { db.archive_id_at("bob", t, after).await.expect("at") }
        };
        assert_eq!(at(0, true).await, Some(ids[0]), "before everything");
        assert_eq!(at(1000, true).await, Some(ids[0]), "exactly the first");
        assert_eq!(at(1001, true).await, Some(ids[2]));
        assert_eq!(at(1095, true).await, Some(ids[10]), "across a group's end");
        assert_eq!(at(1150, true).await, Some(ids[16]), "inside a group");
        assert_eq!(at(1381, true).await, None, "after everything");
        assert_eq!(at(999, false).await, None, "before everything");
        assert_eq!(at(1000, false).await, Some(ids[0]));
        assert_eq!(at(1150, false).await, Some(ids[14]), "inside a group");
        assert_eq!(
            at(1205, false).await,
            Some(ids[20]),
            "across a group's start"
        );
        assert_eq!(at(9999, false).await, Some(ids[38]), "after everything");
        assert_eq!(
            db.archive_id_at("nobody", 1000, true).await.expect("at"),
            None,
            "an owner never archived"
        );
        // Pruning bob's rows before 1150 (inside the second group): 1000..1140
        // are 8 rows; carol's are untouched; a batch of 5 stops at 5.
        assert_eq!(
            db.archive_prune_user("bob", 1150, 5).await.expect("prune"),
            5
        );
        assert_eq!(
            db.archive_prune_user("bob", 1150, 5).await.expect("prune"),
            3
        );
        assert_eq!(
            db.archive_prune_user("bob", 1150, 5).await.expect("prune"),
            0
        );
        assert_eq!(at(0, true).await, Some(ids[16]));
        assert_eq!(
            db.archive_id_at("carol", 0, true).await.expect("at"),
            Some(ids[1])
        );
        // The first group still holds carol's rows: its mark stays.
        assert_eq!(db.archive_forget_old_marks().await.expect("forget"), 0);
        db.archive_prune_user("carol", 1100, 100)
            .await
            .expect("prune");
        assert_eq!(db.archive_forget_old_marks().await.expect("forget"), 1);
        assert_eq!(at(1150, true).await, Some(ids[16]), "after forgetting");
        assert_eq!(at(1150, false).await, None, "bob's older rows are gone");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The migration to numbered JIDs keeps every row, its id and the
    /// sequence of deleted ids, and gives the old rows their marks.
    #[tokio::test]
    async fn the_migration_to_numbered_jids_keeps_rows_ids_and_the_sequence() {
        use sqlx::Executor;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .in_memory(true)
            .connect()
            .await
            .expect("connect");
        conn.execute(include_str!(
            "../../migrations/archive/20261123041100_archive.sql"
        ))
        .await
        .expect("old schema");
        for i in 1..=600_i64 {
            sqlx::query(
                "INSERT INTO archive (username, with_bare, with_resource, stamp, stanza) \
                 VALUES ($1, $2, 'r', $3, $4)",
            )
            .bind(if i % 3 == 0 { "room@muc.x" } else { "bob" })
            .bind(if i % 2 == 0 { "alice@x" } else { "carol@x" })
            .bind(1000 + i)
            .bind(format!("m{i}"))
            .execute(&mut conn)
            .await
            .expect("row");
        }
        conn.execute("DELETE FROM archive WHERE id > 590")
            .await
            .expect("delete");
        conn.execute(include_str!(
            "../../migrations/archive/20261207150000_archive_owner_ids.sql"
        ))
        .await
        .expect("migration");
        let (count, max): (i64, i64) = sqlx::query_as("SELECT COUNT(*), MAX(id) FROM archive")
            .fetch_one(&mut conn)
            .await
            .expect("count");
        assert_eq!((count, max), (590, 590));
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'archive'")
            .fetch_one(&mut conn)
            .await
            .expect("sequence");
        assert_eq!(seq, 600, "ids of deleted rows are not reused");
        let (owner, with, stamp, stanza): (String, String, i64, String) = sqlx::query_as(
            "SELECT o.jid, w.jid, a.stamp, a.stanza FROM archive a \
             JOIN archive_jids o ON o.id = a.owner JOIN archive_jids w ON w.id = a.with_jid \
             WHERE a.id = 300",
        )
        .fetch_one(&mut conn)
        .await
        .expect("row 300");
        assert_eq!(
            (owner.as_str(), with.as_str(), stamp, stanza.as_str()),
            ("room@muc.x", "alice@x", 1300, "m300")
        );
        let marks: Vec<(i64, i64)> =
            sqlx::query_as("SELECT id, stamp FROM archive_marks ORDER BY id")
                .fetch_all(&mut conn)
                .await
                .expect("marks");
        assert_eq!(marks, vec![(1, 1001), (256, 1256), (512, 1512)]);
    }
}
