//! The archive's writer: a thread of its own with a SQLite connection of its
//! own, which commits the rows [`super::archive`] queued, one group (every
//! row waiting when the last commit ended) per transaction, and then moves
//! the durability watermark past the group.
//!
//! This connection is rusqlite's, where the rest of the storage layer uses
//! sqlx. sqlx runs each connection on a worker thread of its own and hands it
//! every statement with its arguments, copied to be owned (the stanza of
//! every row once more); the writer's thread then sleeps until the worker
//! answers. In a profile of the writer at 48k messages/s (window 10, two
//! cores) a quarter of its threads' CPU went to that — the copies, their
//! `free`s, the two thread switches per statement. Here SQLite runs on the
//! writer's thread itself and binds the rows' text where it lies: the
//! writer's CPU per message went from 11.5 to 9.5–10.5 µs
//! (docs/benchmarks.md). Reads, migrations and every other write stay on
//! sqlx.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::{mpsc, watch, Semaphore};

use super::checkpoint::Checkpoints;
use super::BUSY_TIMEOUT;

/// Most archiving requests committed in one transaction.
pub const MAX_GROUP: usize = 16384;

/// The writer connection's page cache (KiB): SQLite's default of 2 MiB
/// holds fewer pages than one commit touches with a few hundred accounts.
const CACHE_KIB: i64 = 8192;

/// One row to write, its id already allocated.
#[derive(Debug)]
pub(super) struct OwnedRow {
    pub id: i64,
    pub username: String,
    pub with_bare: String,
    pub with_resource: String,
    pub stamp: i64,
    pub stanza: String,
}

/// The rows of one [`super::Db::archive_enqueue`] call.
#[derive(Debug)]
pub(super) struct Job {
    pub rows: Vec<OwnedRow>,
    /// Permits of the queue's room this job holds, given back once committed.
    pub permits: u32,
}

/// What the writer reports to, besides the jobs it takes.
pub(super) struct Ends {
    /// Room in the queue, given back after each commit.
    pub room: Arc<Semaphore>,
    /// The durability watermark: the highest id committed (or given up).
    pub durable: watch::Sender<i64>,
    /// Counts commits, for the checkpointer.
    pub commits: watch::Sender<u64>,
    pub checkpoints: Arc<Checkpoints>,
}

/// The writer's connection to the database at `path` (created and migrated
/// already, in WAL mode): the pool's settings (`Db::open`: `synchronous =
/// FULL`, foreign keys, [`BUSY_TIMEOUT`]), a larger page cache, and no
/// checkpoints of its own (`checkpoint.rs` does them).
pub(super) fn open(path: &Path) -> Result<Connection, String> {
    let conn = configure(path).map_err(|e| e.to_string())?;
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!(
            "the archive needs WAL mode, the database is in {mode} mode"
        ));
    }
    Ok(conn)
}

fn configure(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

/// Start the writer on a thread named `kith-archive`. It ends when every
/// sender of `jobs` is gone and the last group is committed.
pub(super) fn spawn(
    conn: Connection,
    jobs: mpsc::UnboundedReceiver<Job>,
    ends: Ends,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("kith-archive".into())
        .spawn(move || run(conn, jobs, ends))
        .map(|_| ())
}

fn run(mut conn: Connection, mut rx: mpsc::UnboundedReceiver<Job>, ends: Ends) {
    let mut names = Names::default();
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let Some(last) = jobs.iter().flat_map(|j| j.rows.iter()).map(|r| r.id).max() else {
            continue;
        };
        let started = Instant::now();
        let rows: usize = jobs.iter().map(|j| j.rows.len()).sum();
        let result = write_group(&mut conn, &jobs, &mut names);
        tracing::debug!(
            rows,
            jobs = jobs.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "archive group committed"
        );
        if let Err(e) = result {
            // Numbers given to new JIDs in the failed transaction are gone.
            names.clear();
            tracing::error!(
                error = %e,
                lost = rows,
                last_id = last,
                "ARCHIVE WRITE FAILED: these messages were delivered but are not in the archive"
            );
        }
        ends.durable.send_replace(last);
        ends.room
            .add_permits(jobs.iter().map(|j| j.permits as usize).sum());
        // The log grew: the checkpointer copies it into the database file.
        ends.commits.send_modify(|n| *n = n.wrapping_add(1));
        ends.checkpoints.restart_if_long(&conn);
    }
}

/// Rows per `INSERT` statement, largest first: a group is written as a few
/// multi-row statements of these sizes (each one prepared statement, cached),
/// not one per row. The largest binds 6 144 values, well under SQLite's limit
/// of 32 766.
const CHUNKS: [usize; 6] = [1024, 256, 64, 16, 4, 1];

/// Values bound per row.
const COLUMNS: usize = 6;

/// The `INSERT` of `n` rows (`n` one of [`CHUNKS`]), built once.
fn insert_sql(n: usize) -> &'static str {
    static SQL: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        CHUNKS
            .iter()
            .map(|&n| {
                // `OR IGNORE`: SQLite then needs no statement journal for a
                // multi-row INSERT (with the default `ABORT` it copies every
                // page the statement touches first, in case a later row
                // fails). No row can fail here (ids are allocated once, no
                // value is NULL); should one ever be skipped, `write_group`
                // sees it in the count and reports it.
                let mut sql = String::from(
                    "INSERT OR IGNORE INTO archive (id, owner, with_jid, with_resource, stamp, stanza) VALUES ",
                );
                for i in 0..n {
                    sql.push_str(if i == 0 { "(?,?,?,?,?,?)" } else { ",(?,?,?,?,?,?)" });
                }
                sql
            })
            .collect()
    });
    let at = CHUNKS
        .iter()
        .position(|&c| c == n)
        .unwrap_or(CHUNKS.len() - 1);
    &SQL[at]
}

/// The numbers of JIDs in `archive_jids`, as the writer last saw them (only
/// the writer adds JIDs). Bounded: past [`NAMES_KEPT`] it starts over.
#[derive(Debug, Default)]
struct Names(HashMap<String, i64>);

/// JIDs whose numbers the writer keeps in memory.
const NAMES_KEPT: usize = 65_536;

impl Names {
    fn clear(&mut self) {
        self.0.clear();
    }

    /// The number of `jid`, added to `archive_jids` (in the caller's
    /// transaction) when it has none yet.
    fn number(&mut self, conn: &Connection, jid: &str) -> rusqlite::Result<i64> {
        if let Some(n) = self.0.get(jid) {
            return Ok(*n);
        }
        if self.0.len() >= NAMES_KEPT {
            self.0.clear();
        }
        conn.prepare_cached("INSERT OR IGNORE INTO archive_jids (jid) VALUES (?1)")?
            .execute([jid])?;
        let n: i64 = conn
            .prepare_cached("SELECT id FROM archive_jids WHERE jid = ?1")?
            .query_row([jid], |r| r.get(0))?;
        self.0.insert(jid.to_string(), n);
        Ok(n)
    }
}

/// One transaction: the JIDs' numbers, the group's mark, the rows.
fn write_group(conn: &mut Connection, jobs: &[Job], names: &mut Names) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut numbered = Vec::with_capacity(jobs.iter().map(|j| j.rows.len()).sum());
    // The group's mark: its first id and smallest stamp (what turns a time
    // into an id bound, see `archive.rs`).
    let mut mark: Option<(i64, i64)> = None;
    for r in jobs.iter().flat_map(|j| j.rows.iter()) {
        let owner = names.number(&tx, &r.username)?;
        let with = names.number(&tx, &r.with_bare)?;
        numbered.push((r, owner, with));
        mark = Some(mark.map_or((r.id, r.stamp), |(id, stamp)| {
            (id.min(r.id), stamp.min(r.stamp))
        }));
    }
    if let Some((first, earliest)) = mark {
        tx.prepare_cached("INSERT OR REPLACE INTO archive_marks (id, stamp) VALUES (?1, ?2)")?
            .execute((first, earliest))?;
    }
    let mut rest = &numbered[..];
    while !rest.is_empty() {
        let n = CHUNKS
            .iter()
            .copied()
            .find(|&c| c <= rest.len())
            .unwrap_or(1);
        let (chunk, tail) = rest.split_at(n);
        let mut stmt = tx.prepare_cached(insert_sql(n))?;
        for (i, (r, owner, with)) in chunk.iter().enumerate() {
            let at = i * COLUMNS;
            stmt.raw_bind_parameter(at + 1, r.id)?;
            stmt.raw_bind_parameter(at + 2, owner)?;
            stmt.raw_bind_parameter(at + 3, with)?;
            stmt.raw_bind_parameter(at + 4, r.with_resource.as_str())?;
            stmt.raw_bind_parameter(at + 5, r.stamp)?;
            stmt.raw_bind_parameter(at + 6, r.stanza.as_str())?;
        }
        let written = stmt.raw_execute()?;
        if written != n {
            tracing::error!(
                expected = n,
                written,
                first_id = chunk.first().map_or(0, |(r, _, _)| r.id),
                "ARCHIVE ROWS SKIPPED: an archive id was already taken"
            );
        }
        rest = tail;
    }
    tx.commit()
}
