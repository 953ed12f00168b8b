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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{NaiveDate, Utc};
use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};

use crate::catalog::{self, Row};
use crate::layout::{self, ArchiveReader, Entry, Selection};

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

/// The archive, read-only, and the catalog, to write.
fn open(
    data_dir: &Path,
    temp_suffix: &str,
    catalog_path: &Path,
) -> anyhow::Result<(ArchiveReader, Connection)> {
    let reader = ArchiveReader::open(data_dir, temp_suffix)
        .with_context(|| format!("cannot read the archive {}", data_dir.display()))?;
    Ok((reader, catalog::open_writable(catalog_path)?))
}

/// Adds the rows the catalog lacks for recent days (see the module docs).
pub(crate) fn catch_up(
    data_dir: &Path,
    temp_suffix: &str,
    catalog_path: &Path,
    actions: &[&str],
) -> anyhow::Result<Summary> {
    let (reader, conn) = open(data_dir, temp_suffix, catalog_path)?;
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
    let summary = run(&reader, conn, catalog_path, days, Mode::CatchUp, false)?;
    let conn = catalog::open_writable(catalog_path)?;
    catalog::summaries::fix_alarm_times(&conn).context("cannot convert the alarm times")?;
    Ok(summary)
}

/// `dlsrv reindex`: rebuilds the catalog at `catalog_path` from the archive alone.
pub(crate) fn reindex(
    data_dir: &Path,
    temp_suffix: &str,
    catalog_path: &Path,
    actions: &[&str],
) -> anyhow::Result<Summary> {
    let (reader, conn) = open(data_dir, temp_suffix, catalog_path)?;
    let started = layout::rfc3339(Utc::now());
    let days = reader.day_dirs(actions, &Selection::default())?;
    let progress = std::io::stderr().is_terminal();
    let mut summary = run(&reader, conn, catalog_path, days, Mode::Rebuild, progress)?;
    // Rows not touched by this run (written before it started) name files
    // that are gone; rows the service wrote meanwhile are newer and stay,
    // as do the rows of bodies retention took off the disk.
    let conn = catalog::open_writable(catalog_path)?;
    summary.removed = conn
        .execute(
            "DELETE FROM transmissions WHERE indexed_utc < ?1 AND removed_utc IS NULL AND host IS NULL",
            params![started],
        )
        .context("cannot remove the rows of vanished files")?;
    catalog::summaries::remove_orphans(&conn)
        .context("cannot remove the summaries of vanished files")?;
    catalog::summaries::fix_alarm_times(&conn).context("cannot convert the alarm times")?;
    Ok(summary)
}

/// What the hashing threads tell the writer.
enum Found {
    Rows(Vec<Row>, usize),
    /// A day directory is listed: how many bodies it had a row for, how
    /// many names were not bodies.
    Day {
        known: usize,
        foreign: usize,
    },
    Failed(anyhow::Error),
}

/// Bodies hashed per piece of work: a day directory is shared by all threads.
const CHUNK: usize = 256;

fn run(
    reader: &ArchiveReader,
    mut conn: Connection,
    catalog_path: &Path,
    days: Vec<(String, NaiveDate)>,
    mode: Mode,
    progress: bool,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let bar = crate::console::progress_bar(progress, days.len() as u64, "day directories, {msg}");
    let mut summary = Summary {
        days: days.len(),
        ..Summary::default()
    };
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<Vec<Entry>>(threads * 2);
    let work_rx = Mutex::new(work_rx);
    let (found_tx, found_rx) = std::sync::mpsc::sync_channel::<Found>(threads * 4);
    let stop = AtomicBool::new(false);
    let mut failure: Option<anyhow::Error> = None;
    std::thread::scope(|scope| {
        // One thread lists the day directories (and, catching up, leaves out
        // what has a row) and hands out pieces of them.
        let lister_found = found_tx.clone();
        let stop = &stop;
        scope.spawn(move || {
            let known_rows = match mode {
                Mode::CatchUp => match catalog::open_reader(catalog_path) {
                    Ok(conn) => Some(conn),
                    Err(e) => {
                        let _ = lister_found.send(Found::Failed(e.into()));
                        return;
                    }
                },
                Mode::Rebuild => None,
            };
            for (action, day) in &days {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                match list_day(reader, known_rows.as_ref(), action, *day) {
                    Ok((entries, known, foreign)) => {
                        for chunk in entries.chunks(CHUNK) {
                            if work_tx.send(chunk.to_vec()).is_err() {
                                return;
                            }
                        }
                        if lister_found.send(Found::Day { known, foreign }).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = lister_found.send(Found::Failed(e));
                        return;
                    }
                }
            }
        });
        // The others hash.
        for _ in 0..threads {
            let (work_rx, found_tx) = (&work_rx, found_tx.clone());
            scope.spawn(move || {
                loop {
                    let next = work_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(entries) = next else { break };
                    let (rows, unreadable) = hash_all(entries);
                    if found_tx.send(Found::Rows(rows, unreadable)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(found_tx);
        let mut batch: Vec<Row> = Vec::new();
        for found in found_rx {
            let result = match found {
                Found::Rows(rows, unreadable) => {
                    summary.indexed += rows.len();
                    summary.unreadable += unreadable;
                    batch.extend(rows);
                    if batch.len() >= 2_000 {
                        write(&mut conn, &mut batch, mode)
                    } else {
                        Ok(())
                    }
                }
                Found::Day { known, foreign } => {
                    summary.known += known;
                    summary.foreign += foreign;
                    bar.inc(1);
                    Ok(())
                }
                Found::Failed(e) => Err(e),
            };
            if let Err(e) = result {
                failure.get_or_insert(e);
                // The lister stops; the hashers see its channel closed.
                stop.store(true, Ordering::Relaxed);
            }
            bar.set_message(format!("{} bodies", summary.indexed));
        }
        if failure.is_none()
            && let Err(e) = write(&mut conn, &mut batch, mode)
        {
            failure = Some(e);
        }
    });
    bar.finish_and_clear();
    if let Some(e) = failure {
        return Err(e);
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The bodies of a day directory that need a row, with how many had one
/// and how many names were not bodies.
fn list_day(
    reader: &ArchiveReader,
    known_rows: Option<&Connection>,
    action: &str,
    day: NaiveDate,
) -> anyhow::Result<(Vec<Entry>, usize, usize)> {
    let listing = reader
        .day(action, day, &Selection::default())
        .with_context(|| format!("cannot list {action}/{day}"))?;
    for name in &listing.foreign {
        tracing::debug!(
            path = name.as_str(),
            "not a body (name does not parse): skipped"
        );
    }
    let existing: std::collections::HashSet<String> = match (known_rows, listing.entries.first()) {
        (Some(conn), Some(first)) => {
            let prefix = match first.relative.rfind('/') {
                Some(i) => first.relative[..=i].to_owned(),
                None => String::new(),
            };
            // Paths below the prefix sort between it and the prefix with its
            // last byte raised by one ('/' + 1 = '0').
            let mut upper = prefix.clone();
            upper.pop();
            upper.push('0');
            let mut stmt = conn
                .prepare_cached("SELECT path FROM transmissions WHERE path >= ?1 AND path < ?2")?;
            let paths = stmt.query_map(params![prefix, upper], |r| r.get(0))?;
            paths.collect::<rusqlite::Result<_>>()?
        }
        _ => Default::default(),
    };
    let before = listing.entries.len();
    let entries: Vec<Entry> = listing
        .entries
        .into_iter()
        .filter(|e| !existing.contains(&e.relative))
        .collect();
    let known = before - entries.len();
    Ok((entries, known, listing.foreign.len()))
}

/// Rows for `entries`, read and hashed; and how many could not be read.
fn hash_all(entries: Vec<Entry>) -> (Vec<Row>, usize) {
    let mut rows = Vec::with_capacity(entries.len());
    let mut unreadable = 0;
    for entry in entries {
        match std::fs::read(&entry.path) {
            Ok(body) => rows.push(row_of(
                entry.action,
                entry.station,
                entry.received,
                entry.relative,
                &body,
            )),
            // Removed meanwhile (an operator's clean-up): nothing to index.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = entry.relative.as_str(), error = %e, "cannot read an archived body");
                unreadable += 1;
            }
        }
    }
    (rows, unreadable)
}

/// The catalog row of an archived body.
pub(crate) fn row_of(
    action: String,
    station_id: String,
    received: chrono::DateTime<Utc>,
    path: String,
    body: &[u8],
) -> Row {
    Row {
        summary: summarise(&action, body),
        station_id,
        action,
        received,
        path,
        bytes: body.len() as u64,
        sha256: hex::encode(Sha256::digest(body)),
    }
}

/// The summary of a data message or an alarm, read as the service reads it
/// (a body that does not pass the check, such as one the old service
/// garbled, has none).
fn summarise(action: &str, body: &[u8]) -> Option<std::sync::Arc<crate::summary::Summary>> {
    let action = crate::request::Action::parse(action.as_bytes()).ok()?;
    if !matches!(
        action,
        crate::request::Action::SendData | crate::request::Action::SendAlarm
    ) {
        return None;
    }
    let crate::actions::Kind::Document { root, .. } = action.spec().kind else {
        return None;
    };
    let document = crate::xml::check(body, root, &crate::xml::Limits::default()).ok()?;
    Some(std::sync::Arc::new(document.summary))
}

fn write(conn: &mut Connection, batch: &mut Vec<Row>, mode: Mode) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let now = layout::rfc3339(Utc::now());
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    catalog::write_rows(&tx, batch.iter(), mode == Mode::Rebuild, &now)?;
    tx.commit().context("cannot commit catalog rows")?;
    batch.clear();
    Ok(())
}
