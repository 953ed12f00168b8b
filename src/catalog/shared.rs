//! The shared catalog: with `catalog_url = "postgresql://…"`, several hosts
//! keep one catalog in PostgreSQL and each reads a copy of it in its own
//! SQLite file.
//!
//! - **Writes never wait for PostgreSQL.** A host writes its rows into its
//!   SQLite catalog as before (the durable local spool); a thread per
//!   process pushes them to PostgreSQL in their order, a page at a time.
//!   PostgreSQL down or slow: intake goes on, rows wait, and go up when it
//!   is back — in order, and never twice (`UNIQUE (host, path)`; the local
//!   position moves only after the commit).
//! - **Every host sees every row.** The same thread pulls the other hosts'
//!   rows (with what their documents said, `summary`) into the local file,
//!   where the status views, the report, the page, `/metrics`, duplicate
//!   lookups and exports read them, as fast as before and also while
//!   PostgreSQL is away. A pulled row names its `host`; the host's own rows
//!   have none.
//! - **Ids in commit order.** PostgreSQL sequences are handed out before
//!   commit, so a reader of "ids above the highest seen" can skip a row
//!   that commits late. Pushes take their ids from one counter row, locked
//!   (`FOR UPDATE`) until they commit: a transaction's ids are all below
//!   those of any that commits after it, so pulling by id never skips.
//!
//! The schema is versioned in `dlsrv_schema`; [`migrate`] brings it up to
//! date at start, under a transaction-scoped advisory lock, so hosts that
//! start together apply each migration once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, params};

use super::{Row, summaries};
use crate::daemon::Outage;
use crate::layout;

/// The schema versions, in order: each one's statements.
const MIGRATIONS: &[&str] = &[
    // 1: the transmissions of every host, commit-ordered ids, meta.
    "CREATE TABLE transmissions (
         id             bigint PRIMARY KEY,
         host           text   NOT NULL,
         local_id       bigint NOT NULL,
         station_id     text   NOT NULL,
         action         text   NOT NULL,
         received_utc   text   NOT NULL,
         path           text   NOT NULL,
         bytes          bigint NOT NULL,
         sha256         text   NOT NULL,
         indexed_utc    text   NOT NULL,
         replicated_utc text,
         removed_utc    text,
         replica_error  text,
         summary        text,
         UNIQUE (host, path)
     );
     CREATE TABLE catalog_hosts (host text PRIMARY KEY, catalog_id text NOT NULL,
         pushed_local_id bigint NOT NULL);
     CREATE TABLE catalog_counter (one boolean PRIMARY KEY DEFAULT true CHECK (one), next_id bigint NOT NULL);
     INSERT INTO catalog_counter (next_id) VALUES (1);
     CREATE TABLE catalog_meta (key text PRIMARY KEY, value text NOT NULL);
     INSERT INTO catalog_meta (key, value) VALUES ('catalog_id', md5(random()::text || clock_timestamp()::text));",
    // 2: the command queue (see crate::queue).
    "CREATE TABLE commands (
         station_id  text   NOT NULL,
         id          text   NOT NULL,
         document    bytea  NOT NULL,
         root        text   NOT NULL,
         ack_ids     text[] NOT NULL,
         state       text   NOT NULL CHECK (state IN ('pending', 'sent', 'cancelled')),
         sends       integer NOT NULL DEFAULT 0,
         sent_utc    text[] NOT NULL DEFAULT '{}',
         queued_by   text   NOT NULL,
         PRIMARY KEY (station_id, id)
     );
     CREATE INDEX commands_waiting ON commands (station_id, state, id);
     CREATE TABLE command_acks (
         station_id text NOT NULL,
         id         text NOT NULL,
         ack_id     text NOT NULL,
         status     text NOT NULL,
         reason     text NOT NULL,
         at_utc     text NOT NULL,
         host       text NOT NULL,
         PRIMARY KEY (station_id, id, ack_id)
     );",
];

/// The schema version this build brings the database to.
pub(crate) const VERSION: i32 = MIGRATIONS.len() as i32;

/// A key for `pg_advisory_xact_lock`: "dlsr".
const MIGRATION_LOCK: i64 = 0x646c_7372;

/// Rows pushed or pulled per transaction.
const PAGE: usize = 2_000;
/// How long an idle sync waits before it looks again.
const POLL: Duration = Duration::from_millis(200);
/// How often the shared queue's pending counts are copied.
const COUNTS_EVERY: Duration = Duration::from_secs(2);

/// Connects (no TLS: use a local socket, a tunnel or a private network;
/// see docs/operations.md "Two hosts").
pub(crate) fn connect(url: &str) -> anyhow::Result<postgres::Client> {
    let mut config: postgres::Config = url
        .parse()
        .with_context(|| format!("catalog_url {}", crate::config::without_password(url)))?;
    config.connect_timeout(Duration::from_secs(5));
    config.application_name("dlsrv");
    config
        .connect(postgres::NoTls)
        .with_context(|| format!("cannot reach {}", crate::config::without_password(url)))
}

/// Brings the schema up to date (safe when several hosts start at once).
pub(crate) fn migrate(client: &mut postgres::Client) -> anyhow::Result<i32> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS dlsrv_schema (version integer NOT NULL)")?;
    let version: Option<i32> = tx
        .query_opt("SELECT version FROM dlsrv_schema", &[])?
        .map(|r| r.get(0));
    let version = version.unwrap_or(0);
    if version > VERSION {
        anyhow::bail!(
            "the shared catalog has schema version {version}, newer than this dlsrv's {VERSION}: \
             upgrade this host's dlsrv"
        );
    }
    for (i, statements) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(statements)
            .with_context(|| format!("cannot apply the shared catalog's migration {}", i + 1))?;
    }
    if version == 0 {
        tx.execute(
            "INSERT INTO dlsrv_schema (version) VALUES ($1)",
            &[&VERSION],
        )?;
    } else if version < VERSION {
        tx.execute("UPDATE dlsrv_schema SET version = $1", &[&VERSION])?;
    }
    tx.commit()?;
    Ok(VERSION)
}

/// Pushes up to [`PAGE`] of this host's rows after local id `after`, in
/// one statement, with this host's position in the same transaction;
/// returns the highest local id pushed (`after` when none was waiting)
/// and how many rows went.
pub(crate) fn push_page(
    local: &Connection,
    client: &mut postgres::Client,
    host: &str,
    after: i64,
) -> anyhow::Result<(i64, usize)> {
    let rows = own_rows(local, after, PAGE)?;
    let Some(last) = rows.last().map(|r| r.local_id) else {
        return Ok((after, 0));
    };
    let mut tx = client.transaction()?;
    let next: i64 = tx
        .query_one(
            "SELECT next_id FROM catalog_counter WHERE one FOR UPDATE",
            &[],
        )?
        .get(0);
    // Ids next, next + 1, …: a row already there (a push repeated after a
    // crash) leaves its id unused, a gap no reader minds.
    let n = rows.len() as i64;
    let col = |f: fn(&Travelling) -> Option<String>| -> Vec<Option<String>> {
        rows.iter().map(f).collect()
    };
    tx.execute(
        "INSERT INTO transmissions (id, host, local_id, station_id, action, received_utc, path,
             bytes, sha256, indexed_utc, replicated_utc, removed_utc, replica_error, summary)
         SELECT $1 + ord - 1, $2, local_id, station_id, action, received_utc, path, bytes,
             sha256, indexed_utc, replicated_utc, removed_utc, replica_error, summary
         FROM unnest($3::bigint[], $4::text[], $5::text[],
             $6::text[], $7::text[], $8::bigint[], $9::text[], $10::text[], $11::text[],
             $12::text[], $13::text[], $14::text[]) WITH ORDINALITY AS u(local_id, station_id,
             action, received_utc, path, bytes, sha256, indexed_utc, replicated_utc, removed_utc,
             replica_error, summary, ord)
         ORDER BY ord
         ON CONFLICT (host, path) DO NOTHING",
        &[
            &next,
            &host,
            &rows.iter().map(|r| r.local_id).collect::<Vec<_>>(),
            &rows
                .iter()
                .map(|r| r.station_id.as_str())
                .collect::<Vec<_>>(),
            &rows.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
            &rows
                .iter()
                .map(|r| r.received_utc.as_str())
                .collect::<Vec<_>>(),
            &rows.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
            &rows.iter().map(|r| r.bytes).collect::<Vec<_>>(),
            &rows.iter().map(|r| r.sha256.as_str()).collect::<Vec<_>>(),
            &rows
                .iter()
                .map(|r| r.indexed_utc.as_str())
                .collect::<Vec<_>>(),
            &col(|r| r.replicated_utc.clone()),
            &col(|r| r.removed_utc.clone()),
            &col(|r| r.replica_error.clone()),
            &col(|r| r.summary.clone()),
        ],
    )?;
    tx.execute(
        "UPDATE catalog_counter SET next_id = $1 WHERE one",
        &[&(next + n)],
    )?;
    tx.execute(
        "INSERT INTO catalog_hosts (host, catalog_id, pushed_local_id) VALUES ($1, $2, $3)
         ON CONFLICT (host) DO UPDATE SET catalog_id = excluded.catalog_id,
           pushed_local_id = excluded.pushed_local_id",
        &[&host, &super::catalog_id(local)?, &last],
    )?;
    tx.commit()?;
    Ok((last, rows.len()))
}

/// How far this host's rows are in the shared catalog: 0 when none are,
/// or when its local file is another one (rebuilt from scratch: its ids
/// start again, and every row is offered again; those there are skipped).
fn pushed_position(
    client: &mut postgres::Client,
    local: &Connection,
    host: &str,
) -> anyhow::Result<i64> {
    let catalog = super::catalog_id(local)?;
    Ok(client
        .query_opt(
            "SELECT pushed_local_id FROM catalog_hosts WHERE host = $1 AND catalog_id = $2",
            &[&host, &catalog],
        )?
        .map_or(0, |r| r.get(0)))
}

/// A row as it travels.
struct Travelling {
    local_id: i64,
    station_id: String,
    action: String,
    received_utc: String,
    path: String,
    bytes: i64,
    sha256: String,
    indexed_utc: String,
    replicated_utc: Option<String>,
    removed_utc: Option<String>,
    replica_error: Option<String>,
    summary: Option<String>,
}

fn own_rows(local: &Connection, after: i64, limit: usize) -> rusqlite::Result<Vec<Travelling>> {
    let mut stmt = local.prepare_cached(
        "SELECT id, station_id, action, received_utc, path, bytes, sha256, indexed_utc,
                replicated_utc, removed_utc, replica_error, summary
         FROM transmissions WHERE host IS NULL AND id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(
        params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| {
            Ok(Travelling {
                local_id: r.get(0)?,
                station_id: r.get(1)?,
                action: r.get(2)?,
                received_utc: r.get(3)?,
                path: r.get(4)?,
                bytes: r.get(5)?,
                sha256: r.get(6)?,
                indexed_utc: r.get(7)?,
                replicated_utc: r.get(8)?,
                removed_utc: r.get(9)?,
                replica_error: r.get(10)?,
                summary: r.get(11)?,
            })
        },
    )?;
    rows.collect()
}

/// Pulls the other hosts' rows among the next [`PAGE`] ids after shared id
/// `after` into the local catalog; returns the highest shared id seen and
/// how many ids the page had.
pub(crate) fn pull_page(
    local: &mut Connection,
    client: &mut postgres::Client,
    host: &str,
    after: i64,
) -> anyhow::Result<(i64, usize)> {
    // A page of every host's rows in id order (this host's own only by
    // id: they are here already), so the position passes them too.
    // Both queries in one snapshot: a row committed between them could
    // otherwise be passed over.
    let mut snapshot = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let page = snapshot.query(
        "SELECT id, host, station_id, action, received_utc, path, bytes, sha256, indexed_utc,
                replicated_utc, removed_utc, summary
         FROM transmissions WHERE id > $1 AND host <> $2
           AND id <= (SELECT coalesce(max(id), $1) FROM
                        (SELECT id FROM transmissions WHERE id > $1 ORDER BY id LIMIT $3) p)
         ORDER BY id",
        &[&after, &host, &(PAGE as i64)],
    )?;
    let seen = snapshot.query_one(
        "SELECT coalesce(max(id), $1), count(*) FROM
           (SELECT id FROM transmissions WHERE id > $1 ORDER BY id LIMIT $2) p",
        &[&after, &(PAGE as i64)],
    )?;
    let (last_seen, ids): (i64, i64) = (seen.get(0), seen.get(1));
    let ids = usize::try_from(ids).unwrap_or(0);
    snapshot.commit()?;
    let rows = page;
    if rows.is_empty() {
        // Only this host's rows (or none): nothing to write here.
        return Ok((last_seen.max(after), ids));
    }
    let last = last_seen;
    let now = layout::rfc3339(chrono::Utc::now());
    let tx = local.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO transmissions (station_id, action, received_utc, path, bytes, sha256,
                 indexed_utc, replicated_utc, removed_utc, host, summary)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (path) DO NOTHING",
        )?;
        for r in &rows {
            let (path, summary): (String, Option<String>) = (r.get(5), r.get(11));
            let other: String = r.get(1);
            let added = insert.execute(params![
                r.get::<_, String>(2),
                r.get::<_, String>(3),
                r.get::<_, String>(4),
                path,
                r.get::<_, i64>(6),
                r.get::<_, String>(7),
                now,
                r.get::<_, Option<String>>(9),
                r.get::<_, Option<String>>(10),
                other,
                summary,
            ])?;
            if added == 0 {
                tracing::warn!(
                    path,
                    host = other.as_str(),
                    "another host's body has a path this host's archive uses: kept apart"
                );
                continue;
            }
            let id = tx.last_insert_rowid();
            let row = Row {
                station_id: r.get(2),
                action: r.get(3),
                received: layout::parse_time(&r.get::<_, String>(4)).unwrap_or_default(),
                path,
                bytes: u64::try_from(r.get::<_, i64>(6)).unwrap_or(0),
                sha256: r.get(7),
                summary: summary
                    .as_deref()
                    .and_then(|s| serde_json::from_str(s).ok())
                    .map(Arc::new),
            };
            summaries::write(&tx, id, &row, false)?;
        }
        set_meta(&tx, PULLED, last)?;
    }
    tx.commit()?;
    Ok((last, ids))
}

const PULLED: &str = "shared_pulled_id";

fn get_meta(local: &Connection, key: &str) -> rusqlite::Result<i64> {
    let value: Option<String> = local
        .query_row(
            "SELECT value FROM catalog_meta WHERE key = ?1",
            params![key],
            |r| r.get(0),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn set_meta(local: &Connection, key: &str, value: i64) -> rusqlite::Result<()> {
    local.execute(
        "INSERT INTO catalog_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value.to_string()],
    )?;
    Ok(())
}

/// What the sync tells the rest of the process.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// PostgreSQL cannot be reached or refuses: rows wait locally.
    pub(crate) degraded: AtomicBool,
    /// This host's rows not yet in PostgreSQL (as last counted).
    pub(crate) unpushed: AtomicI64,
}

/// The sync of one process: a thread, stopped and joined on drop.
#[derive(Debug)]
pub(crate) struct Sync {
    pub(crate) health: Arc<Health>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sync {
    pub(crate) fn start(
        catalog_path: &std::path::Path,
        url: &str,
        host: &str,
    ) -> anyhow::Result<Sync> {
        let health = Arc::new(Health::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (path, url, host) = (catalog_path.to_path_buf(), url.to_owned(), host.to_owned());
        let (h, s) = (health.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("dlsrv-shared".into())
            .spawn(move || run(&path, &url, &host, &h, &s))
            .context("cannot start the shared catalog's sync")?;
        Ok(Sync {
            health,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Sync {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `<state_dir>/shared-sync.lock`, held by the one process of a host that
/// syncs (several instances share the local catalog).
fn sync_lock(catalog_path: &std::path::Path) -> Option<nix::fcntl::Flock<std::fs::File>> {
    let path = crate::durable::parent_dir(catalog_path).join("shared-sync.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).ok()
}

/// The sync thread: pushes this host's rows and pulls the others', until
/// `stop` is set.
fn run(catalog_path: &std::path::Path, url: &str, host: &str, health: &Health, stop: &AtomicBool) {
    let mut outage = Outage::default();
    let mut client: Option<postgres::Client> = None;
    let mut local: Option<Connection> = None;
    let mut lock = None;
    let mut pushed = 0;
    // In memory; written with pulled rows (a restart passes over this
    // host's own rows again, which costs a query).
    let mut pulled: Option<i64> = None;
    let mut last_counts = std::time::Instant::now() - COUNTS_EVERY;
    while !stop.load(Ordering::Relaxed) {
        if lock.is_none() {
            lock = sync_lock(catalog_path);
            if lock.is_none() {
                // Another instance of this host syncs; take over if it ends.
                sleep(stop, Duration::from_secs(1));
                continue;
            }
        }
        let result = (|| -> anyhow::Result<bool> {
            if local.is_none() {
                local = Some(super::open_writable(catalog_path)?);
            }
            let conn = local.as_mut().context("the local catalog")?;
            // Counted first: while PostgreSQL is away, this says what waits.
            health
                .unpushed
                .store(count_unpushed(conn, pushed)?, Ordering::Relaxed);
            if client.is_none() {
                let mut c = connect(url)?;
                migrate(&mut c)?;
                // Where this host's rows stand there: the position moves
                // with the rows, in one transaction.
                pushed = pushed_position(&mut c, conn, host)?;
                client = Some(c);
            }
            let pg = client.as_mut().context("the shared catalog")?;
            let (now_pushed, up) = push_page(conn, pg, host, pushed)?;
            pushed = now_pushed;
            if pulled.is_none() {
                pulled = Some(get_meta(conn, PULLED)?);
            }
            let before = pulled.unwrap_or(0);
            let (now_pulled, down) = pull_page(conn, pg, host, before)?;
            pulled = Some(now_pulled);
            if last_counts.elapsed() >= COUNTS_EVERY {
                copy_pending_commands(conn, pg)?;
                last_counts = std::time::Instant::now();
            }
            health
                .unpushed
                .store(count_unpushed(conn, pushed)?, Ordering::Relaxed);
            // Busy while pages are full; else rows gather for POLL and go
            // together (one transaction for many, not one each).
            Ok(up == PAGE || down == PAGE)
        })();
        match result {
            Ok(busy) => {
                health.degraded.store(false, Ordering::Relaxed);
                outage.ended(|lasted, tries| {
                    tracing::warn!(
                        outage_secs = lasted.as_secs(),
                        tries,
                        "shared catalog reachable again; the rows that waited go up now"
                    );
                });
                if !busy {
                    sleep(stop, POLL);
                }
            }
            Err(e) => {
                health.degraded.store(true, Ordering::Relaxed);
                client = None;
                let wait = outage.failed(|| {
                    tracing::error!(error = %format!("{e:#}"),
                        "shared catalog unreachable: bodies are still stored and answered 200, \
                         their rows wait in the local catalog; retrying");
                });
                sleep(stop, wait);
            }
        }
    }
}

/// The shared queue's pending documents per station, into the local file.
fn copy_pending_commands(
    local: &mut Connection,
    client: &mut postgres::Client,
) -> anyhow::Result<()> {
    let counts = pending_counts(client)?;
    let known: std::collections::HashMap<String, usize> = local
        .prepare_cached("SELECT station_id, n FROM shared_pending_commands")?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                usize::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if known == counts {
        // Unchanged: no write (each would wake every duplicate lookup).
        return Ok(());
    }
    let tx = local.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute("DELETE FROM shared_pending_commands", [])?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO shared_pending_commands (station_id, n) VALUES (?1, ?2)",
        )?;
        for (station, n) in counts {
            insert.execute(params![station, i64::try_from(n).unwrap_or(i64::MAX)])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn count_unpushed(local: &Connection, pushed: i64) -> anyhow::Result<i64> {
    Ok(local.query_row(
        "SELECT count(*) FROM transmissions WHERE host IS NULL AND id > ?1",
        params![pushed],
        |r| r.get(0),
    )?)
}

fn sleep(stop: &AtomicBool, d: Duration) {
    let until = std::time::Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// `dlsrv catalog migrate --to URL`: every row of this host's catalog into
/// the shared one (again from the start: rows already there are skipped);
/// returns how many were pushed.
pub(crate) fn migrate_to(
    catalog_path: &std::path::Path,
    url: &str,
    host: &str,
) -> anyhow::Result<u64> {
    let local = super::open_writable(catalog_path)?;
    warn_missing_summaries(&local)?;
    let mut client = connect(url)?;
    migrate(&mut client)?;
    // From the start: rows already there are skipped (UNIQUE (host, path)).
    let (mut after, mut n) = (0, 0);
    loop {
        let waiting = own_rows(&local, after, PAGE)?.len() as u64;
        if waiting == 0 {
            break;
        }
        after = push_page(&local, &mut client, host, after)?.0;
        n += waiting;
    }
    Ok(n)
}

/// Rows written before schema 5 have no `summary`: what the others need of
/// them for their views. Said, and left to `dlsrv reindex` (which writes it).
fn warn_missing_summaries(local: &Connection) -> anyhow::Result<()> {
    let missing: i64 = local.query_row(
        "SELECT count(*) FROM transmissions WHERE host IS NULL AND summary IS NULL
           AND action IN ('senddata', 'sendalarm')",
        [],
        |r| r.get(0),
    )?;
    if missing > 0 {
        tracing::warn!(
            rows = missing,
            "rows without a summary (written before this version): the other hosts will see \
             their bodies but not what they said; run `dlsrv reindex` first to carry it"
        );
    }
    Ok(())
}

/// Documents waiting for each station in the shared queue (`commands`,
/// see [`crate::pgqueue`]), for the status views.
fn pending_counts(
    client: &mut postgres::Client,
) -> anyhow::Result<std::collections::HashMap<String, usize>> {
    Ok(client
        .query(
            "SELECT station_id, count(*) FROM commands WHERE state = 'pending' GROUP BY station_id",
            &[],
        )?
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                usize::try_from(r.get::<_, i64>(1)).unwrap_or(0),
            )
        })
        .collect())
}
