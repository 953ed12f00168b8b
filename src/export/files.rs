//! The bodies an export reads, in the order it reads them (by sending
//! station, then receipt), without holding the list in memory: the list is
//! a table in a temporary SQLite database under the export's own directory
//! in `state_dir`, keyed (`WITHOUT ROWID`) by station, receipt and path, so
//! SQLite keeps it sorted on disk as it is filled and reads it back in order
//! a page at a time.
//!
//! It is filled from a listing of the archive (every export), or from the
//! catalog by id (`--since-cursor`: the bodies the catalog committed since
//! the cursor's position).

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, params};

use crate::catalog::DataRow;
use crate::layout::{self, ArchiveReader, Selection};

/// The export's directory: `<state_dir>/export-tmp/<pid>`, removed when the
/// export ends; one left by a process that was killed is removed by the
/// next export. (Sort runs in it are unlinked from the start.)
#[derive(Debug)]
pub(super) struct Workdir {
    path: PathBuf,
}

impl Workdir {
    pub(super) fn create(state_dir: &Path) -> anyhow::Result<Workdir> {
        let root = layout::export_tmp_dir(state_dir);
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        remove_stale(&root);
        let path = root.join(std::process::id().to_string());
        // Ours from a process with this pid before: nothing of it counts.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Workdir { path })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes the directories of exports whose process is gone.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        // kill(pid, 0): the process exists (perhaps another user's).
        let alive = pid > 0
            && matches!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                Ok(()) | Err(nix::errno::Errno::EPERM)
            );
        if !alive && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// One body to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct File {
    pub(super) station: String,
    pub(super) received: DateTime<Utc>,
    /// Relative to `data_dir`.
    pub(super) path: String,
}

/// The list of bodies, sorted on disk.
pub(super) struct FileList {
    conn: Connection,
    pub(super) count: u64,
}

impl FileList {
    fn create(dir: &Path) -> anyhow::Result<FileList> {
        let path = dir.join("files.sqlite3");
        let conn =
            Connection::open(&path).with_context(|| format!("cannot create {}", path.display()))?;
        // A scratch table: no journal, no syncs, a small page cache (the
        // rest of the list stays in the file).
        conn.execute_batch(
            "PRAGMA journal_mode = OFF;
             PRAGMA synchronous = OFF;
             PRAGMA cache_size = -8192;
             PRAGMA temp_store = FILE;
             CREATE TABLE files (
                 station  TEXT    NOT NULL,
                 received INTEGER NOT NULL,
                 path     TEXT    NOT NULL,
                 PRIMARY KEY (station, received, path)
             ) WITHOUT ROWID;",
        )
        .context("cannot create the export's file list")?;
        Ok(FileList { conn, count: 0 })
    }

    fn add(&mut self, files: impl IntoIterator<Item = File>) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO files (station, received, path) VALUES (?1, ?2, ?3)",
            )?;
            for f in files {
                self.count +=
                    stmt.execute(params![f.station, f.received.timestamp_micros(), f.path])? as u64;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The bodies in order to `f`, read a page at a time; `f` returns false
    /// to stop.
    pub(super) fn each(
        &self,
        mut f: impl FnMut(File) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let mut stmt = self.conn.prepare(
            "SELECT station, received, path FROM files ORDER BY station, received, path",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let micros: i64 = row.get(1)?;
            let file = File {
                station: row.get(0)?,
                received: DateTime::from_timestamp_micros(micros).unwrap_or_default(),
                path: row.get(2)?,
            };
            if !f(file)? {
                break;
            }
        }
        Ok(())
    }
}

/// Which bodies by receipt, and of which stations.
#[derive(Debug, Clone, Default)]
pub(super) struct Wanted {
    pub(super) stations: Vec<String>,
    /// Received at or after.
    pub(super) since: Option<DateTime<Utc>>,
    /// The earliest UTC day a wanted value can have been received on.
    pub(super) from_day: Option<NaiveDate>,
}

impl Wanted {
    fn station(&self, s: &str) -> bool {
        self.stations.is_empty() || self.stations.iter().any(|w| w == s)
    }
}

/// The data messages in the archive, as listed day by day.
pub(super) fn from_archive(
    dir: &Path,
    reader: &ArchiveReader,
    wanted: &Wanted,
) -> anyhow::Result<FileList> {
    let mut list = FileList::create(dir)?;
    let from_day = [wanted.since.map(|t| t.date_naive()), wanted.from_day]
        .into_iter()
        .flatten()
        .max();
    let selection = Selection {
        actions: vec!["senddata".into()],
        from: from_day,
        to: None,
        stations: wanted.stations.clone(),
    };
    let days = reader
        .day_dirs(&["senddata"], &selection)
        .context("cannot list the archive's days")?;
    for (action, day) in days {
        let listing = reader
            .day(&action, day, &selection)
            .with_context(|| format!("cannot list {action}/{day}"))?;
        list.add(
            listing
                .entries
                .into_iter()
                .filter(|e| wanted.since.is_none_or(|t| e.received >= t))
                .map(|e| File {
                    station: e.station,
                    received: e.received,
                    path: e.relative,
                }),
        )?;
    }
    Ok(list)
}

impl FileList {
    /// Adds the data messages that retention took off the local disk and
    /// the replica holds (the catalog knows them; the archive no longer).
    pub(super) fn add_remote(
        &mut self,
        catalog: &Connection,
        wanted: &Wanted,
    ) -> anyhow::Result<()> {
        let mut batch = Vec::new();
        crate::catalog::places::each_remote_data(catalog, |station_id, received_utc, path| {
            let row = DataRow {
                id: 0,
                station_id,
                received_utc,
                path,
                indexed_utc: String::new(),
            };
            batch.extend(file_of(row, wanted));
            if batch.len() >= 10_000 {
                self.add(std::mem::take(&mut batch))?;
            }
            Ok(())
        })
        .context("cannot read the catalog's bodies kept in the replica")?;
        self.add(batch)
    }
}

/// The data messages the catalog committed after id `after` up to `upto`
/// (read a page at a time).
pub(super) fn from_catalog(
    dir: &Path,
    catalog: &Connection,
    after: i64,
    upto: i64,
    wanted: &Wanted,
) -> anyhow::Result<FileList> {
    let mut list = FileList::create(dir)?;
    let mut position = after;
    loop {
        let rows = crate::catalog::data_rows_after(catalog, position, upto, 10_000)
            .context("cannot read the catalog")?;
        let Some(last) = rows.last() else {
            break;
        };
        position = last.id;
        list.add(rows.into_iter().filter_map(|r| file_of(r, wanted)))?;
    }
    Ok(list)
}

/// A catalog row as a body to read, when it is wanted.
pub(super) fn file_of(row: DataRow, wanted: &Wanted) -> Option<File> {
    let received = layout::parse_time(&row.received_utc)?;
    let wanted = wanted.station(&row.station_id)
        && wanted.since.is_none_or(|t| received >= t)
        && wanted.from_day.is_none_or(|d| received.date_naive() >= d);
    wanted.then_some(File {
        station: row.station_id,
        received,
        path: row.path,
    })
}

/// Reads a body: from the archive (see [`layout::read_body`]), or, where
/// retention took it off the local disk, from the replica.
pub(crate) fn read_body(config: &crate::config::Config, rel: &str) -> Result<Vec<u8>, String> {
    match layout::read_body(&config.data_dir, rel) {
        Ok(body) => Ok(body),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && config.replica.is_some() => {
            let Some(replica) = super::replica(config) else {
                return Err(format!("cannot read it: {e}"));
            };
            match replica.run(replica.store.get(rel)) {
                Ok(Some(body)) => Ok(body.to_vec()),
                Ok(None) => Err(format!("cannot read it: {e}, nor is it in the replica")),
                Err(r) => Err(format!("cannot read it from the replica: {r}")),
            }
        }
        Err(e) => Err(format!("cannot read it: {e}")),
    }
}
