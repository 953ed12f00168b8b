//! `--since-cursor NAME`: a nightly job gets every body exactly once.
//!
//! The cursor, `<state_dir>/export-cursors/NAME`, holds a position in the
//! catalog: the id of the last body the previous complete run took (ids
//! are handed out in commit order and never twice). A run takes the bodies
//! after it up to the highest id committed when the run starts, and the
//! cursor moves there only once the output is complete and durable. A body
//! answered 200 one second before a run has its row by then (rows are
//! committed within a quarter of a second) and is in that run; one whose
//! row comes later, however early it was received (the catch-up after a
//! crash), gets a higher id and is in the next.
//!
//! ```text
//! position=48213
//! catalog=3f0c…      the catalog the position counts in
//! time=2026-12-05T02:15:00.000000Z   when that run started
//! ```
//!
//! A cursor of an older dlsrv holds a receipt time only: its next run takes
//! the bodies received from that time on, then writes a position. So does a
//! cursor whose catalog was rebuilt from scratch since (its ids are new),
//! from the time its last run started.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::durable::AtomicFile;
use crate::layout;

/// Where a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// The first run: every body.
    Beginning,
    /// After this catalog id.
    After(i64),
    /// Bodies received from this time on (an old cursor, or another catalog).
    Since(DateTime<Utc>),
}

/// A cursor read at the start of a run.
pub(super) struct Cursor {
    path: PathBuf,
    pub(super) start: Start,
    /// Where this run stops: the highest id committed at its start.
    pub(super) upto: i64,
    catalog: String,
    started: DateTime<Utc>,
}

impl Cursor {
    /// Reads the cursor `name` (a name [`layout::valid_export_name`]
    /// accepts); `catalog` is the catalog's id, `upto` its highest id now.
    pub(super) fn read(
        config: &Config,
        name: &str,
        catalog: &str,
        upto: i64,
    ) -> anyhow::Result<Cursor> {
        let path = layout::export_cursor_path(&config.state_dir, name);
        let started = Utc::now();
        let start = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text, catalog).with_context(|| {
                format!(
                    "{} does not hold a cursor: {:?}",
                    path.display(),
                    text.trim()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Start::Beginning,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        // A position past the catalog's end (a catalog restored from an
        // older copy): nothing is new until it is passed.
        let upto = match start {
            Start::After(p) => upto.max(p),
            _ => upto,
        };
        Ok(Cursor {
            path,
            start,
            upto,
            catalog: catalog.to_owned(),
            started,
        })
    }

    /// The id after which this run reads (0: from the first).
    pub(super) fn after(&self) -> i64 {
        match self.start {
            Start::After(p) => p,
            Start::Beginning | Start::Since(_) => 0,
        }
    }

    /// Bodies received before this time are not this run's (an old cursor).
    pub(super) fn since(&self) -> Option<DateTime<Utc>> {
        match self.start {
            Start::Since(t) => Some(t),
            _ => None,
        }
    }

    /// Moves the cursor to where this run stopped, durably.
    pub(super) fn advance(self, config: &Config) -> anyhow::Result<()> {
        let dir = self.path.parent().unwrap_or(&config.state_dir);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut file = AtomicFile::create(&self.path)?;
        write!(
            file,
            "position={}\ncatalog={}\ntime={}\n",
            self.upto,
            self.catalog,
            layout::rfc3339(self.started)
        )?;
        file.commit()
            .with_context(|| format!("cannot move the cursor {}", self.path.display()))
    }
}

/// A cursor file's start: a position (in this catalog), or a time.
fn parse(text: &str, catalog: &str) -> Option<Start> {
    let text = text.trim();
    if !text.contains('=') {
        // dlsrv before positions: the receipt time the last run stopped at.
        return layout::parse_time(text).map(Start::Since);
    }
    let mut position = None;
    let mut cursor_catalog = None;
    let mut time = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("position", v)) => position = v.trim().parse::<i64>().ok(),
            Some(("catalog", v)) => cursor_catalog = Some(v.trim()),
            Some(("time", v)) => time = layout::parse_time(v.trim()),
            _ => {}
        }
    }
    if cursor_catalog == Some(catalog) {
        position.map(Start::After)
    } else {
        time.map(Start::Since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_old_times() {
        let t = "2026-12-01T00:00:00.000000Z";
        let at = layout::parse_time(t);
        assert_eq!(parse(t, "c1"), at.map(Start::Since));
        let new = format!("position=42\ncatalog=c1\ntime={t}\n");
        assert_eq!(parse(&new, "c1"), Some(Start::After(42)));
        // Another catalog: its ids mean nothing here; the time does.
        assert_eq!(parse(&new, "c2"), at.map(Start::Since));
        assert_eq!(parse("position=x\ncatalog=c1", "c1"), None);
        assert_eq!(parse("yesterday", "c1"), None);
    }
}
