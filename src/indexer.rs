//! Filling the catalog from the archive itself, read-only
//! ([`crate::layout::ArchiveReader`]):
//!
//! - [`catch_up`], at every start of the service: the bodies of the days
//!   from the day before the catalog's newest row onwards that have no row
//!   yet (a crash between a store and its row, another tool writing the
//!   archive, an upgrade from an installation without a catalog). Newest
//!   day first, so the duplicate window is covered first.
//! - [`reindex`], `dlsrv reindex`: every body of the archive gets a fresh
//!   row, and rows whose file is gone are removed.
//!
//! Files are hashed by one thread per core; one connection writes the rows
//! in batches.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{NaiveDate, Utc};
use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};

use crate::catalog::{self, Row};
use crate::layout::{self, ArchiveReader, Selection};

/// What one indexing run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) days: usize,
    /// Bodies hashed and written.
    pub(crate) indexed: usize,
    /// Bodies that already had a row (catch-up only).
    pub(crate) known: usize,
    /// Rows removed because their file is gone (reindex only).
    pub(crate) removed: usize,
    /// Files that are not bodies (unparseable names), left alone.
    pub(crate) foreign: usize,
    /// Bodies that could not be read.
    pub(crate) unreadable: usize,
    pub(crate) elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} day directories, {} bodies indexed, {} already known, {} rows of vanished files removed, \
             {} other files skipped, {} unreadable, in {:.1} s",
            self.days,
            self.indexed,
            self.known,
            self.removed,
            self.foreign,
            self.unreadable,
            self.elapsed.as_secs_f64()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Only bodies without a row.
    CatchUp,
    /// Every body, replacing its row.
    Rebuild,
}

/// Adds the rows the catalog lacks for recent days (see the module docs).
pub(crate) fn catch_up(
    data_dir: &Path,
    temp_suffix: &str,
    catalog_path: &Path,
    actions: &[&str],
) -> anyhow::Result<Summary> {
    let reader = ArchiveReader::open(data_dir, temp_suffix)
        .with_context(|| format!("cannot read the archive {}", data_dir.display()))?;
    let conn = catalog::open_writable(catalog_path)?;
    let mut days = Vec::new();
    for action in reader.actions(actions)? {
        let newest: Option<String> = conn.query_row(
            "SELECT max(received_utc) FROM transmissions WHERE action = ?1",
            params![action],
            |r| r.get(0),
        )?;
        let from = newest
            .as_deref()
            .and_then(layout::parse_time)
            .map(|t| t.date_naive() - chrono::Duration::days(1));
        for day in reader.days(&action)?.into_iter().rev() {
            if from.is_some_and(|from| day < from) {
                break;
            }
            days.push((action.clone(), day));
        }
    }
    // Newest first across actions too.
    days.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    run(&reader, conn, days, Mode::CatchUp, false)
}

/// `dlsrv reindex`: rebuilds the catalog at `catalog_path` from the archive alone.
pub(crate) fn reindex(
    data_dir: &Path,
    temp_suffix: &str,
    catalog_path: &Path,
    actions: &[&str],
) -> anyhow::Result<Summary> {
    let reader = ArchiveReader::open(data_dir, temp_suffix)
        .with_context(|| format!("cannot read the archive {}", data_dir.display()))?;
    let conn = catalog::open_writable(catalog_path)?;
    let started = layout::rfc3339(Utc::now());
    let days = reader.day_dirs(actions, &Selection::default())?;
    let progress = std::io::stderr().is_terminal();
    let mut summary = run(&reader, conn, days, Mode::Rebuild, progress)?;
    // Rows not touched by this run (written before it started) name files
    // that are gone; rows the service wrote meanwhile are newer and stay.
    let conn = catalog::open_writable(catalog_path)?;
    summary.removed = conn
        .execute(
            "DELETE FROM transmissions WHERE indexed_utc < ?1",
            params![started],
        )
        .context("cannot remove the rows of vanished files")?;
    Ok(summary)
}

/// The work shared by the hashing threads.
struct Work<'a> {
    reader: &'a ArchiveReader,
    days: Vec<(String, NaiveDate)>,
    next: AtomicUsize,
    mode: Mode,
    catalog_path: &'a Path,
}

/// What one day directory gave.
struct DayResult {
    rows: Vec<Row>,
    known: usize,
    foreign: usize,
    unreadable: usize,
}

fn run(
    reader: &ArchiveReader,
    mut conn: Connection,
    days: Vec<(String, NaiveDate)>,
    mode: Mode,
    progress: bool,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(days.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} day directories, {msg} ({eta} left)",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut summary = Summary {
        days: days.len(),
        ..Summary::default()
    };
    let work = Work {
        reader,
        days,
        next: AtomicUsize::new(0),
        mode,
        catalog_path: &conn
            .path()
            .map(std::path::PathBuf::from)
            .unwrap_or_default(),
    };
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let (tx, rx) = std::sync::mpsc::sync_channel::<anyhow::Result<DayResult>>(threads * 2);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let work = &work;
            scope.spawn(move || {
                let reader_conn = match mode {
                    Mode::CatchUp => catalog::open_reader(work.catalog_path).ok(),
                    Mode::Rebuild => None,
                };
                loop {
                    let i = work.next.fetch_add(1, Ordering::Relaxed);
                    let Some((action, day)) = work.days.get(i) else {
                        break;
                    };
                    let result = index_day(work, reader_conn.as_ref(), action, *day);
                    if tx.send(result).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut batch: Vec<Row> = Vec::new();
        for result in rx {
            match result {
                Ok(day) => {
                    summary.known += day.known;
                    summary.foreign += day.foreign;
                    summary.unreadable += day.unreadable;
                    summary.indexed += day.rows.len();
                    batch.extend(day.rows);
                    if batch.len() >= 2_000
                        && let Err(e) = write(&mut conn, &mut batch, mode)
                    {
                        record_failure(&failure, e);
                        // Stop the others: they see the channel closed.
                        work.next.store(usize::MAX / 2, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    record_failure(&failure, e);
                    work.next.store(usize::MAX / 2, Ordering::Relaxed);
                }
            }
            bar.inc(1);
            bar.set_message(format!("{} bodies", summary.indexed));
        }
        if let Err(e) = write(&mut conn, &mut batch, mode) {
            record_failure(&failure, e);
        }
    });
    bar.finish_and_clear();
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

fn record_failure(slot: &Mutex<Option<anyhow::Error>>, e: anyhow::Error) {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        *slot = Some(e);
    }
}

fn index_day(
    work: &Work<'_>,
    known: Option<&Connection>,
    action: &str,
    day: NaiveDate,
) -> anyhow::Result<DayResult> {
    let listing = work
        .reader
        .day(action, day, &Selection::default())
        .with_context(|| format!("cannot list {action}/{day}"))?;
    let mut result = DayResult {
        rows: Vec::new(),
        known: 0,
        foreign: listing.foreign.len(),
        unreadable: 0,
    };
    for name in &listing.foreign {
        tracing::debug!(
            path = name.as_str(),
            "not a body (name does not parse): skipped"
        );
    }
    let existing: std::collections::HashSet<String> =
        match (work.mode, known, listing.entries.first()) {
            (Mode::CatchUp, Some(conn), Some(first)) => {
                let prefix = match first.relative.rfind('/') {
                    Some(i) => first.relative[..=i].to_owned(),
                    None => String::new(),
                };
                let mut upper = prefix.clone();
                upper.pop();
                upper.push('0');
                let mut stmt = conn.prepare_cached(
                    "SELECT path FROM transmissions WHERE path >= ?1 AND path < ?2",
                )?;
                let paths = stmt.query_map(params![prefix, upper], |r| r.get(0))?;
                paths.collect::<rusqlite::Result<_>>()?
            }
            _ => Default::default(),
        };
    for entry in listing.entries {
        if existing.contains(&entry.relative) {
            result.known += 1;
            continue;
        }
        match std::fs::read(&entry.path) {
            Ok(body) => result.rows.push(Row {
                station_id: entry.station,
                action: entry.action,
                received: entry.received,
                path: entry.relative,
                bytes: body.len() as u64,
                sha256: hex::encode(Sha256::digest(&body)),
            }),
            // Removed meanwhile (an operator's clean-up): nothing to index.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = entry.relative.as_str(), error = %e, "cannot read an archived body");
                result.unreadable += 1;
            }
        }
    }
    Ok(result)
}

fn write(conn: &mut Connection, batch: &mut Vec<Row>, mode: Mode) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let now = layout::rfc3339(Utc::now());
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let sql = match mode {
            Mode::CatchUp => {
                "INSERT INTO transmissions (station_id, action, received_utc, path, bytes, sha256, indexed_utc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (path) DO NOTHING"
            }
            Mode::Rebuild => {
                "INSERT INTO transmissions (station_id, action, received_utc, path, bytes, sha256, indexed_utc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (path) DO UPDATE SET station_id = excluded.station_id, action = excluded.action,
                   received_utc = excluded.received_utc, bytes = excluded.bytes, sha256 = excluded.sha256,
                   indexed_utc = excluded.indexed_utc"
            }
        };
        let mut stmt = tx.prepare_cached(sql)?;
        for r in batch.iter() {
            stmt.execute(params![
                r.station_id,
                r.action,
                layout::rfc3339(r.received),
                r.path,
                i64::try_from(r.bytes).unwrap_or(i64::MAX),
                r.sha256,
                now
            ])?;
        }
    }
    tx.commit().context("cannot commit catalog rows")?;
    batch.clear();
    Ok(())
}
