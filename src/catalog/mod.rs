//! The catalog: an SQLite database at `<state_dir>/catalog.sqlite3` (WAL
//! mode) with one row per archived body, so that duplicates, status views
//! and exports never need to list the archive. Its schema is documented in
//! docs/catalog.md.
//!
//! The archive stays the source of truth. A row is written after its body
//! is durable, and a row that could not be written never turns a 200 into a
//! loss: [`crate::indexer`] adds what is missing at the next start, and
//! `dlsrv reindex` rebuilds the whole catalog from the archive alone.
//!
//! Rows are written by one thread per process, which commits whatever has
//! queued up during the last few milliseconds in one transaction
//! (`synchronous = NORMAL`: a commit is a write to the WAL file, no
//! fsync). Requests do not wait for it: a row still queued is already
//! visible to [`Catalog::find_duplicate`] of this process, and a busy
//! service costs the catalog one commit per batch, not one per body.
//! Several instances on one host share the file; SQLite's locking
//! serialises their writers, and each sees the others' rows once committed.
//!
//! Duplicate lookups ask the database only when they may find something:
//! each process keeps the 64-bit prefixes of the SHA-256 of every body
//! recorded within `duplicate_window_days` in memory (about 10 bytes per
//! body: 7 days of 1,000 loggers sending every 15 minutes take 7 MB), adds
//! its own rows as it queues them and the other instances' rows whenever
//! the WAL file has changed (one `stat` per lookup). Most bodies are not
//! duplicates and never reach SQLite; a prefix that matches is checked
//! against the full row.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use prometheus_client::metrics::counter::Counter;
use rusqlite::{Connection, OpenFlags, params};

use crate::layout;
use crate::summary::Summary;

pub(crate) mod places;
pub(crate) mod shared;
pub(crate) mod summaries;

/// The schema version this build writes (`PRAGMA user_version`): 2 added
/// the summaries (`station_info`, `channels`, `alarms`, `stations`) and
/// `duplicates`; 3 made `transmissions.id` AUTOINCREMENT (an id is never
/// handed out twice, so it is a position an export can follow) and added
/// `catalog_meta` (the catalog's own id, which a position counts in).
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
-- No index on sha256: duplicates are looked up by station and time (rarely:
-- only when the in-memory prefixes match), and random keys would cost a
-- page of WAL per stored row.
-- AUTOINCREMENT: SQLite hands ids out in commit order (one writer at a
-- time) and never again, even after the newest row is deleted: an id is a
-- position in the catalog's history that exports follow.
CREATE TABLE IF NOT EXISTS transmissions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    station_id   TEXT    NOT NULL,
    action       TEXT    NOT NULL,
    received_utc TEXT    NOT NULL,
    path         TEXT    NOT NULL UNIQUE,
    bytes        INTEGER NOT NULL,
    sha256       TEXT    NOT NULL,
    indexed_utc  TEXT    NOT NULL,
    replicated_utc TEXT,
    removed_utc  TEXT,
    replica_error TEXT,
    host         TEXT,
    summary      TEXT
);
CREATE INDEX IF NOT EXISTS transmissions_by_station ON transmissions (station_id, received_utc);
-- The replicator's work: small, as the rows waiting are few.
CREATE INDEX IF NOT EXISTS transmissions_unreplicated ON transmissions (id)
    WHERE replicated_utc IS NULL AND removed_utc IS NULL AND replica_error IS NULL;
CREATE TABLE IF NOT EXISTS rejected (
    id           INTEGER PRIMARY KEY,
    station_id   TEXT    NOT NULL,
    action       TEXT    NOT NULL,
    received_utc TEXT    NOT NULL,
    path         TEXT    NOT NULL UNIQUE,
    bytes        INTEGER NOT NULL,
    sha256       TEXT    NOT NULL,
    reason       TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS rejected_by_sha256 ON rejected (sha256);
CREATE TABLE IF NOT EXISTS catalog_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- With a shared catalog: its queue's pending documents per station, as
-- the sync last copied them (the status views read them here).
CREATE TABLE IF NOT EXISTS shared_pending_commands (
    station_id TEXT PRIMARY KEY,
    n          INTEGER NOT NULL
);
";

/// Rows that failed to commit are kept for another try, up to this many.
const MAX_QUEUED_ROWS: usize = 100_000;
/// How long SQLite waits for another instance's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often, at most, a process reads the rows other instances committed.
/// A logger resends minutes after a lost answer; a busy process's own
/// commits change the WAL every few milliseconds.
const REFRESH_EVERY: Duration = Duration::from_millis(50);
/// How long a busy writer lets rows gather before it commits them together.
/// Each commit writes every page it touched to the WAL once; the indexes by
/// path and by station take rows at one place per station, so a longer
/// batch writes fewer pages per row (measured at 4,000 bodies/s: 0.02
/// instead of 0.03 ms of CPU per row at 50 ms). What it costs: another
/// instance's duplicate check and `dlsrv status` see a row up to this much
/// later, and a crash leaves this much more for the catch-up at start.
const BATCH_DELAY: Duration = Duration::from_millis(250);
/// Bytes of the database file mapped into memory (address space, not RAM).
const MMAP_SIZE: i64 = 1 << 30;

/// One archived body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) station_id: String,
    pub(crate) action: String,
    pub(crate) received: DateTime<Utc>,
    /// Relative to `data_dir`.
    pub(crate) path: String,
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
    /// What the document says (data messages and alarms), for the summaries.
    pub(crate) summary: Option<Arc<Summary>>,
}

/// An identical body answered with its earlier copy (`original`, relative
/// to `data_dir`), not stored again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DuplicateRow {
    pub(crate) station_id: String,
    pub(crate) action: String,
    pub(crate) received: DateTime<Utc>,
    pub(crate) original: String,
}

/// One refused body kept in `state_dir`: its row (`path` relative to
/// `state_dir`) and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RejectedRow {
    pub(crate) body: Row,
    pub(crate) reason: String,
}

/// A queued row, visible to lookups until it is committed.
#[derive(Debug, Clone)]
enum Pending {
    Row(Row),
    Rejected(RejectedRow),
    Duplicate(DuplicateRow),
}

/// The queue between requests and the writer thread.
#[derive(Debug, Default)]
struct Queue {
    /// Rows not yet committed, with their sequence numbers, oldest first.
    rows: Vec<(u64, Pending)>,
    next_seq: u64,
    /// The writer waits for rows (and must be woken).
    writer_idle: bool,
    /// Someone waits in [`Catalog::flush`]: do not linger.
    flush_wanted: bool,
    /// Rows up to this sequence number have been tried.
    done_seq: u64,
    stop: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer (rows, a flush, stop).
    work: Condvar,
    /// Wakes flushers (a batch was tried).
    done: Condvar,
    /// Rows that failed to commit (each try), for `/metrics`.
    errors: Counter<u64, AtomicU64>,
}

/// The catalog of one process: a writer thread and a pool of readers.
#[derive(Debug)]
pub(crate) struct Catalog {
    path: PathBuf,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    recent: Mutex<Recent>,
}

/// The SHA-256 prefixes of the bodies recorded within the window, by UTC day.
#[derive(Debug, Default)]
struct Recent {
    window_days: i64,
    days: BTreeMap<NaiveDate, HashSet<u64>>,
    /// The highest row id read from the database.
    last_id: i64,
    /// Length and modification time of the WAL file at the last read.
    wal_seen: Option<(u64, std::time::SystemTime)>,
    /// When the rows were last read from the database.
    refreshed: Option<std::time::Instant>,
}

impl Recent {
    fn insert(&mut self, sha256: &str, received: DateTime<Utc>) {
        let (Some(key), day) = (prefix(sha256), received.date_naive()) else {
            return;
        };
        self.days.entry(day).or_default().insert(key);
        // Whole days past the window (and a margin of one) go.
        let oldest = Utc::now().date_naive() - chrono::Duration::days(self.window_days + 1);
        while self
            .days
            .first_key_value()
            .is_some_and(|(d, _)| *d < oldest)
        {
            self.days.pop_first();
        }
    }

    fn contains(&self, sha256: &str) -> bool {
        prefix(sha256).is_some_and(|key| self.days.values().any(|set| set.contains(&key)))
    }
}

/// The first 64 bits of a hex SHA-256.
fn prefix(sha256: &str) -> Option<u64> {
    u64::from_str_radix(sha256.get(..16)?, 16).ok()
}

impl Catalog {
    /// Opens (creating or upgrading) the catalog at `path` and starts its
    /// writer; `errors` counts rows that failed to commit. Duplicates are
    /// looked for within `window_days`.
    pub(crate) fn open(
        path: &Path,
        errors: Counter<u64, AtomicU64>,
        window_days: u32,
    ) -> anyhow::Result<Catalog> {
        let conn = open_writable(path)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            errors,
        });
        let thread_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("dlsrv-catalog".into())
            .spawn(move || write_loop(conn, &thread_shared))
            .context("cannot start the catalog writer")?;
        let catalog = Catalog {
            path: path.to_path_buf(),
            shared,
            writer: Mutex::new(Some(writer)),
            readers: Mutex::new(Vec::new()),
            recent: Mutex::new(Recent {
                window_days: i64::from(window_days),
                ..Recent::default()
            }),
        };
        if window_days > 0 {
            let since = Utc::now() - chrono::Duration::days(i64::from(window_days) + 1);
            catalog
                .refresh(&mut lock(&catalog.recent), Some(since))
                .with_context(|| format!("cannot read the recent rows of {}", path.display()))?;
        }
        Ok(catalog)
    }

    /// Reads the rows committed since the last read (or received since
    /// `since`, on the first) into `recent`.
    fn refresh(&self, recent: &mut Recent, since: Option<DateTime<Utc>>) -> rusqlite::Result<()> {
        let wal = self.wal_stat();
        let rows = self.with_reader(|conn| {
            let mut out = Vec::new();
            match since {
                Some(since) => {
                    let mut stmt = conn.prepare_cached(
                        "SELECT id, sha256, received_utc FROM transmissions WHERE received_utc >= ?1",
                    )?;
                    for row in stmt.query_map(params![layout::rfc3339(since)], id_sha_received)? {
                        out.push(row?);
                    }
                    let max: Option<i64> = conn.query_row("SELECT max(id) FROM transmissions", [], |r| r.get(0))?;
                    out.push((max.unwrap_or(0), String::new(), String::new()));
                }
                None => {
                    let mut stmt =
                        conn.prepare_cached("SELECT id, sha256, received_utc FROM transmissions WHERE id > ?1")?;
                    for row in stmt.query_map(params![recent.last_id], id_sha_received)? {
                        out.push(row?);
                    }
                }
            }
            Ok(out)
        })?;
        for (id, sha256, received) in rows {
            recent.last_id = recent.last_id.max(id);
            if let Some(t) = layout::parse_time(&received) {
                recent.insert(&sha256, t);
            }
        }
        recent.wal_seen = wal;
        if since.is_none() {
            recent.refreshed = Some(std::time::Instant::now());
        }
        Ok(())
    }

    fn wal_stat(&self) -> Option<(u64, std::time::SystemTime)> {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let meta = std::fs::metadata(wal).ok()?;
        Some((meta.len(), meta.modified().ok()?))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Queues the row of a body just made durable.
    pub(crate) fn record(&self, row: Row) {
        lock(&self.recent).insert(&row.sha256, row.received);
        self.queue(Pending::Row(row));
    }

    /// Queues the row of a rejected body just kept.
    pub(crate) fn record_rejected(&self, row: RejectedRow) {
        self.queue(Pending::Rejected(row));
    }

    /// Queues the note of a duplicate answered from its earlier copy.
    pub(crate) fn record_duplicate(&self, row: DuplicateRow) {
        self.queue(Pending::Duplicate(row));
    }

    fn queue(&self, row: Pending) {
        let mut queue = lock(&self.shared.queue);
        if queue.stop {
            tracing::error!(
                "the catalog writer has stopped; the next start adds the row from the archive"
            );
            return;
        }
        queue.next_seq += 1;
        let seq = queue.next_seq;
        queue.rows.push((seq, row));
        if queue.writer_idle {
            queue.writer_idle = false;
            self.shared.work.notify_one();
        }
    }

    /// Waits until every row queued so far has been committed (or tried).
    pub(crate) fn flush(&self) {
        let mut queue = lock(&self.shared.queue);
        let target = queue.next_seq;
        while queue.done_seq < target && !queue.stop {
            queue.flush_wanted = true;
            self.shared.work.notify_one();
            queue = self
                .shared
                .done
                .wait(queue)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Rows queued but not yet committed.
    pub(crate) fn pending(&self) -> usize {
        lock(&self.shared.queue).rows.len()
    }

    /// Archived copies of an identical body (same station, action and
    /// SHA-256) received at or after `since`, newest first: relative paths
    /// and receipt times. The caller checks the file is still there.
    pub(crate) fn find_duplicate(
        &self,
        action: &str,
        station: &str,
        sha256: &str,
        since: DateTime<Utc>,
    ) -> rusqlite::Result<Vec<(String, DateTime<Utc>, bool)>> {
        {
            let mut recent = lock(&self.recent);
            // Other instances' rows: read when the WAL changed, at most every
            // REFRESH_EVERY (this process's own are in `recent` already).
            // The WAL is looked at only then: a `stat` per body is a system call.
            let due = recent
                .refreshed
                .is_none_or(|at| at.elapsed() >= REFRESH_EVERY);
            if due {
                if self.wal_stat() != recent.wal_seen {
                    self.refresh(&mut recent, None)?;
                } else {
                    recent.refreshed = Some(std::time::Instant::now());
                }
            }
            if !recent.contains(sha256) {
                return Ok(Vec::new());
            }
        }
        let mut found: Vec<(String, DateTime<Utc>, bool)> = lock(&self.shared.queue)
            .rows
            .iter()
            .filter_map(|(_, p)| match p {
                Pending::Row(r)
                    if r.sha256 == sha256
                        && r.station_id == station
                        && r.action == action
                        && r.received >= since =>
                {
                    Some((r.path.clone(), r.received, false))
                }
                _ => None,
            })
            .collect();
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT path, received_utc, host IS NOT NULL FROM transmissions
                 WHERE sha256 = ?1 AND station_id = ?2 AND action = ?3 AND received_utc >= ?4
                 ORDER BY received_utc DESC LIMIT 8",
            )?;
            let rows = stmt.query_map(
                params![sha256, station, action, layout::rfc3339(since)],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, bool>(2)?,
                    ))
                },
            )?;
            for row in rows {
                let (path, received, foreign) = row?;
                if let Some(t) = layout::parse_time(&received) {
                    found.push((path, t, foreign));
                }
            }
            Ok(())
        })?;
        found.sort_by_key(|f| std::cmp::Reverse(f.1));
        found.dedup();
        Ok(found)
    }

    /// The kept copy of an identical rejected body of `station` (relative
    /// to `state_dir`), if there is one since `since`.
    pub(crate) fn find_rejected(
        &self,
        station: &str,
        sha256: &str,
        since: DateTime<Utc>,
    ) -> rusqlite::Result<Vec<String>> {
        let mut found: Vec<String> = lock(&self.shared.queue)
            .rows
            .iter()
            .filter_map(|(_, p)| match p {
                Pending::Rejected(RejectedRow { body: r, .. })
                    if r.sha256 == sha256 && r.station_id == station && r.received >= since =>
                {
                    Some(r.path.clone())
                }
                _ => None,
            })
            .collect();
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT path FROM rejected WHERE sha256 = ?1 AND station_id = ?2 AND received_utc >= ?3
                 ORDER BY received_utc DESC LIMIT 8",
            )?;
            let rows = stmt.query_map(params![sha256, station, layout::rfc3339(since)], |r| r.get(0))?;
            for row in rows {
                found.push(row?);
            }
            Ok(())
        })?;
        Ok(found)
    }

    pub(crate) fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let conn = match lock(&self.readers).pop() {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let result = f(&conn);
        lock(&self.readers).push(conn);
        result
    }
}

impl Drop for Catalog {
    fn drop(&mut self) {
        // The writer commits what is queued, then stops.
        lock(&self.shared.queue).stop = true;
        self.shared.work.notify_one();
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
    }
}

fn id_sha_received(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic elsewhere cannot leave it inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens the database for writing: creates it, sets WAL mode and brings
/// the schema up to date.
pub(crate) fn open_writable(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path)
        .with_context(|| format!("cannot open the catalog {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .with_context(|| format!("cannot set WAL mode on {}", path.display()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        anyhow::bail!(
            "the catalog {} refuses WAL mode (journal_mode = {mode})",
            path.display()
        );
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "mmap_size", MMAP_SIZE)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        anyhow::bail!(
            "the catalog {} has schema version {version}, newer than this dlsrv's {SCHEMA_VERSION}: \
             run the newer dlsrv, or move the file away and run `dlsrv reindex`",
            path.display()
        );
    }
    if version < SCHEMA_VERSION {
        let tx = conn.unchecked_transaction()?;
        let plain_ids: bool = tx.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'transmissions'
               AND sql NOT LIKE '%AUTOINCREMENT%'",
            [],
            |r| r.get(0),
        )?;
        if plain_ids {
            // Schema 2's table rebuilt as SCHEMA says, every id kept (the
            // index goes with the old table; SCHEMA makes it again below).
            tx.execute_batch("ALTER TABLE transmissions RENAME TO transmissions_v2;")
                .and_then(|()| tx.execute_batch(SCHEMA))
                .and_then(|()| {
                    tx.execute_batch(
                        "INSERT INTO transmissions
                           (id, station_id, action, received_utc, path, bytes, sha256, indexed_utc)
                         SELECT id, station_id, action, received_utc, path, bytes, sha256, indexed_utc
                           FROM transmissions_v2 ORDER BY id;
                         DROP TABLE transmissions_v2;",
                    )
                })
                .with_context(|| {
                    format!("cannot upgrade the transmissions of {}", path.display())
                })?;
        }
        // Columns later schemas added, each by the ALTERs of its version
        // (a table made by an older SCHEMA lacks them, empty for old rows).
        for (column, alter) in [
            // 4: every body is local and not yet known in a replica.
            (
                "replicated_utc",
                "ALTER TABLE transmissions ADD COLUMN replicated_utc TEXT;
                 ALTER TABLE transmissions ADD COLUMN removed_utc TEXT;
                 ALTER TABLE transmissions ADD COLUMN replica_error TEXT;",
            ),
            // 5: every row is this host's; no summary kept for older rows.
            (
                "summary",
                "ALTER TABLE transmissions ADD COLUMN host TEXT;
                 ALTER TABLE transmissions ADD COLUMN summary TEXT;",
            ),
        ] {
            let lacking: bool = tx.query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'transmissions'
                   AND instr(sql, ?1) = 0",
                params![column],
                |r| r.get(0),
            )?;
            if lacking {
                tx.execute_batch(alter).with_context(|| {
                    format!("cannot upgrade the transmissions of {}", path.display())
                })?;
            }
        }
        tx.execute_batch(SCHEMA)
            .and_then(|()| tx.execute_batch(summaries::SCHEMA))
            .with_context(|| format!("cannot create the catalog's tables in {}", path.display()))?;
        if version == 1 {
            // Schema 1 had no summaries: the stations at least, from their rows.
            tx.execute(summaries::STATIONS_FROM_TRANSMISSIONS, [])?;
            tracing::warn!(
                catalog = %path.display(),
                "catalog upgraded to schema {SCHEMA_VERSION}: stations, battery, GSM and channels are known for \
                 bodies stored from now on; run `dlsrv reindex` to read them from the earlier ones too"
            );
        }
        // The catalog's own id: a position (an export's, a feed's) counts
        // in one catalog; one rebuilt from scratch has another.
        tx.execute(
            "INSERT INTO catalog_meta (key, value) VALUES ('catalog_id', ?1)
             ON CONFLICT (key) DO NOTHING",
            params![new_catalog_id()],
        )?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
    }
    Ok(conn)
}

/// 128 random bits, as hex.
fn new_catalog_id() -> String {
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if random.is_err() {
        // Unique enough without: the time and the process.
        let seed = format!("{:?} {}", std::time::SystemTime::now(), std::process::id());
        let digest = <sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes());
        bytes.copy_from_slice(&digest[..16]);
    }
    hex::encode(bytes)
}

/// The catalog's own id (see [`open_writable`]); empty for a catalog of
/// an older dlsrv that was never opened for writing by this one.
pub(crate) fn catalog_id(conn: &Connection) -> rusqlite::Result<String> {
    let id = conn.query_row(
        "SELECT value FROM catalog_meta WHERE key = 'catalog_id'",
        [],
        |r| r.get(0),
    );
    match id {
        Ok(id) => Ok(id),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(String::new()),
        Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => {
            Ok(String::new())
        }
        Err(e) => Err(e),
    }
}

/// A data message's row as an export reads it, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataRow {
    pub(crate) id: i64,
    pub(crate) station_id: String,
    pub(crate) received_utc: String,
    pub(crate) path: String,
    pub(crate) indexed_utc: String,
}

/// The highest id handed out so far (0 for none).
pub(crate) fn max_id(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT coalesce(max(id), 0) FROM transmissions", [], |r| {
        r.get(0)
    })
}

/// Up to `limit` data messages (`senddata`) after id `after` and up to
/// `upto`, in id order (the order they were committed in).
pub(crate) fn data_rows_after(
    conn: &Connection,
    after: i64,
    upto: i64,
    limit: usize,
) -> rusqlite::Result<Vec<DataRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, station_id, received_utc, path, indexed_utc FROM transmissions
         WHERE id > ?1 AND id <= ?2 AND action = 'senddata' ORDER BY id LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        params![after, upto, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| {
            Ok(DataRow {
                id: r.get(0)?,
                station_id: r.get(1)?,
                received_utc: r.get(2)?,
                path: r.get(3)?,
                indexed_utc: r.get(4)?,
            })
        },
    )?;
    rows.collect()
}

/// When the oldest data message after id `after` was written to the
/// catalog (a moment after its 200): how far behind a reader at `after` is.
pub(crate) fn oldest_after(conn: &Connection, after: i64) -> rusqlite::Result<Option<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT indexed_utc FROM transmissions WHERE id > ?1 AND action = 'senddata'
         ORDER BY id LIMIT 1",
    )?;
    let mut rows = stmt.query(params![after])?;
    match rows.next()? {
        Some(r) => Ok(Some(r.get(0)?)),
        None => Ok(None),
    }
}

/// A connection that only reads.
pub(crate) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", true)?;
    conn.pragma_update(None, "mmap_size", MMAP_SIZE)?;
    Ok(conn)
}

fn write_loop(mut conn: Connection, shared: &Shared) {
    let mut failing = false;
    // A quiet writer commits at once; a busy one lets rows gather for up
    // to BATCH_DELAY after its last commit.
    let mut last_commit = std::time::Instant::now() - BATCH_DELAY;
    loop {
        let mut queue = lock(&shared.queue);
        // Rows left after a commit are new ones, or failed ones to try again.
        while queue.rows.is_empty() && !queue.stop && !queue.flush_wanted {
            queue.writer_idle = true;
            queue = shared.work.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
        queue.writer_idle = false;
        let linger = !queue.stop && !queue.flush_wanted;
        drop(queue);
        // Let rows gather: one commit for all of them. After a failure, wait longer.
        if linger {
            let pause = if failing {
                Duration::from_secs(1)
            } else {
                BATCH_DELAY
            };
            if let Some(left) = pause.checked_sub(last_commit.elapsed()) {
                std::thread::sleep(left);
            }
        }
        let mut queue = lock(&shared.queue);
        queue.flush_wanted = false;
        let stopping = queue.stop;
        let batch: Vec<(u64, Pending)> = queue.rows.clone();
        let upto = queue.next_seq;
        drop(queue);
        let result = if batch.is_empty() {
            Ok(())
        } else {
            commit(&mut conn, &batch)
        };
        last_commit = std::time::Instant::now();
        let mut queue = lock(&shared.queue);
        match result {
            Ok(()) => {
                failing = false;
                queue.rows.retain(|(seq, _)| *seq > upto);
            }
            Err(e) => {
                failing = true;
                let n = batch.len();
                shared.errors.inc_by(n as u64);
                if stopping {
                    tracing::error!(rows = n, error = %e, "cannot write catalog rows at shutdown; the next start adds them from the archive");
                    queue.rows.retain(|(seq, _)| *seq > upto);
                } else if n > MAX_QUEUED_ROWS {
                    tracing::error!(rows = n, error = %e, "catalog rows dropped after repeated failures; run `dlsrv reindex`");
                    queue.rows.retain(|(seq, _)| *seq > upto);
                } else {
                    tracing::warn!(rows = n, error = %e, "cannot write catalog rows; trying again");
                }
            }
        }
        queue.done_seq = upto;
        shared.done.notify_all();
        if stopping {
            // Rows queued after the stop (none: queue() refuses them) aside,
            // everything was committed or given up above.
            return;
        }
    }
}

/// Adds a row; a path that has one already keeps it.
pub(crate) const INSERT_ROW: &str = "INSERT INTO transmissions
    (station_id, action, received_utc, path, bytes, sha256, indexed_utc, summary)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (path) DO NOTHING";

/// Adds a row or replaces the row of its path (`dlsrv reindex`): the file
/// is on the local disk, whatever retention did before.
pub(crate) const UPSERT_ROW: &str = "INSERT INTO transmissions
    (station_id, action, received_utc, path, bytes, sha256, indexed_utc, summary)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
    ON CONFLICT (path) DO UPDATE SET station_id = excluded.station_id, action = excluded.action,
      received_utc = excluded.received_utc, bytes = excluded.bytes, sha256 = excluded.sha256,
      indexed_utc = excluded.indexed_utc, removed_utc = NULL, summary = excluded.summary,
      host = NULL";

/// Runs [`INSERT_ROW`] or [`UPSERT_ROW`] for `row`, with `last` (when it
/// is written, or a rejected body's reason) in the last column. Returns
/// whether a row was written (a path already known is left alone by
/// [`INSERT_ROW`]).
pub(crate) fn insert(
    stmt: &mut rusqlite::CachedStatement<'_>,
    row: &Row,
    last: &str,
) -> rusqlite::Result<bool> {
    let summary = row
        .summary
        .as_deref()
        .and_then(|s| serde_json::to_string(s).ok());
    let changed = stmt.execute(params![
        row.station_id,
        row.action,
        layout::rfc3339(row.received),
        row.path,
        i64::try_from(row.bytes).unwrap_or(i64::MAX),
        row.sha256,
        last,
        summary
    ])?;
    Ok(changed > 0)
}

/// Writes `rows` (and their summaries) in `tx`: only new paths
/// (`replace` false), or replacing what a path had (`dlsrv reindex`).
pub(crate) fn write_rows<'a>(
    tx: &rusqlite::Transaction<'_>,
    rows: impl IntoIterator<Item = &'a Row>,
    replace: bool,
    now: &str,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(if replace { UPSERT_ROW } else { INSERT_ROW })?;
    for row in rows {
        if insert(&mut stmt, row, now)? {
            // An upsert that updated sets no last_insert_rowid.
            let id = if replace {
                tx.prepare_cached("SELECT id FROM transmissions WHERE path = ?1")?
                    .query_row(params![row.path], |r| r.get(0))?
            } else {
                tx.last_insert_rowid()
            };
            summaries::write(tx, id, row, replace)?;
        }
    }
    Ok(())
}

fn commit(conn: &mut Connection, rows: &[(u64, Pending)]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = layout::rfc3339(Utc::now());
    {
        let mut rejected_stmt = tx.prepare_cached(
            // The two tables' columns match but for the last two (a refused
            // body has no summary: ?8 is NULL and not kept).
            "INSERT INTO rejected (station_id, action, received_utc, path, bytes, sha256, reason)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE ?8 IS NULL ON CONFLICT (path) DO NOTHING",
        )?;
        for (_, row) in rows {
            match row {
                Pending::Row(r) => write_rows(&tx, [r], false, &now)?,
                Pending::Rejected(RejectedRow { body, reason }) => {
                    insert(&mut rejected_stmt, body, reason)?;
                }
                Pending::Duplicate(d) => summaries::write_duplicate(
                    &tx,
                    &d.station_id,
                    &d.action,
                    d.received,
                    &d.original,
                )?,
            }
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_schema_2_catalog_gets_ids_never_handed_out_twice_keeping_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.sqlite3");
        {
            // Schema 2's transmissions: a plain INTEGER PRIMARY KEY.
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE transmissions (id INTEGER PRIMARY KEY, station_id TEXT NOT NULL,
                   action TEXT NOT NULL, received_utc TEXT NOT NULL, path TEXT NOT NULL UNIQUE,
                   bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, indexed_utc TEXT NOT NULL);
                 CREATE INDEX transmissions_by_station ON transmissions (station_id, received_utc);
                 INSERT INTO transmissions VALUES
                   (7, 'S1', 'senddata', '2026-01-01T00:00:00.000000Z', 'a', 1, 'x', 'now'),
                   (9, 'S1', 'senddata', '2026-01-01T00:01:00.000000Z', 'b', 1, 'x', 'now');
                 PRAGMA user_version = 2;",
            )
            .expect("schema 2");
        }
        let conn = open_writable(&path).expect("upgrade");
        let ids: Vec<i64> = conn
            .prepare("SELECT id FROM transmissions ORDER BY id")
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .expect("ids");
        assert_eq!(ids, [7, 9], "ids kept");
        let indexed: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'transmissions_by_station'
                   AND tbl_name = 'transmissions'",
                [],
                |r| r.get(0),
            )
            .expect("index");
        assert_eq!(indexed, 1, "the index on the new table");
        assert_eq!(catalog_id(&conn).expect("id").len(), 32);
        // The newest row removed (a vanished file): its id is not handed out again.
        conn.execute("DELETE FROM transmissions WHERE id = 9", [])
            .expect("delete");
        conn.execute(
            "INSERT INTO transmissions (station_id, action, received_utc, path, bytes, sha256, indexed_utc)
             VALUES ('S1', 'senddata', 't', 'c', 1, 'x', 'now')",
            [],
        )
        .expect("insert");
        assert_eq!(max_id(&conn).expect("max"), 10);
        // And a second open changes nothing.
        drop(conn);
        let again = open_writable(&path).expect("reopen");
        assert_eq!(max_id(&again).expect("max"), 10);
    }

    const AA: &str = "aa00000000000000000000000000000000000000000000000000000000000001";
    const BB: &str = "bb00000000000000000000000000000000000000000000000000000000000002";

    /// A minute ago, to the second: within any duplicate window.
    fn base() -> DateTime<Utc> {
        let now = Utc::now() - chrono::Duration::minutes(1);
        Utc.timestamp_opt(now.timestamp(), 0)
            .single()
            .expect("time")
    }

    fn row(path: &str, sha: &str, t: i64) -> Row {
        Row {
            station_id: "s".into(),
            action: "senddata".into(),
            received: base() + chrono::Duration::seconds(t),
            path: path.into(),
            bytes: 3,
            sha256: sha.into(),
            summary: None,
        }
    }

    #[test]
    fn rows_are_visible_before_and_after_commit_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.sqlite3");
        let catalog = Catalog::open(&path, Counter::default(), 7).expect("open");
        let since = base();
        catalog.record(row("senddata/a", AA, 10));
        let found = catalog
            .find_duplicate("senddata", "s", AA, since)
            .expect("find");
        assert_eq!(found.len(), 1, "visible while queued: {found:?}");
        catalog.flush();
        assert_eq!(catalog.pending(), 0);
        catalog.record(row("senddata/a", AA, 10)); // the same path again: ignored
        catalog.record(row("senddata/b", BB, 20));
        catalog.flush();
        assert!(
            catalog
                .find_duplicate("sendalarm", "s", AA, since)
                .expect("find")
                .is_empty()
        );
        let later = since + chrono::Duration::seconds(15);
        assert!(
            catalog
                .find_duplicate("senddata", "s", AA, later)
                .expect("find")
                .is_empty()
        );
        drop(catalog);

        let again = Catalog::open(&path, Counter::default(), 7).expect("reopen");
        assert_eq!(
            again
                .find_duplicate("senddata", "s", BB, since)
                .expect("find")
                .len(),
            1,
            "survived"
        );
        let conn = open_reader(&path).expect("reader");
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM transmissions", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 2, "one row per path");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.sqlite3");
        let conn = Connection::open(&path).expect("open");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("set");
        drop(conn);
        let err = Catalog::open(&path, Counter::default(), 7).expect_err("refused");
        assert!(format!("{err:#}").contains("newer"), "{err:#}");
    }
}
