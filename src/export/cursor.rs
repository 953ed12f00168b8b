//! `--since-cursor NAME`: a nightly job gets every body exactly once.
//!
//! The cursor, `<state_dir>/export-cursors/NAME`, holds a receipt time: a
//! run exports the bodies received from the previous run's time up to a
//! time of its own, and the cursor moves there only once the output is
//! complete and durable. That time is the run's start less
//! `upload_deadline_secs` and a minute: a body is named by its receipt
//! time, the moment its request began, and lands in the archive at most
//! that long after it; one received later than the boundary waits for the
//! next run, so none falls between two runs and none is exported twice.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::durable::AtomicFile;
use crate::layout;

/// A cursor read at the start of a run.
pub(super) struct Cursor {
    path: PathBuf,
    /// Where the last complete run stopped (none: the first run, from the start).
    pub(super) since: Option<DateTime<Utc>>,
    /// Where this run stops.
    pub(super) until: DateTime<Utc>,
}

impl Cursor {
    pub(super) fn read(config: &Config, name: &str) -> anyhow::Result<Cursor> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.');
        if !valid {
            anyhow::bail!(
                "--since-cursor {name:?}: a name of letters, digits, '-', '_' and '.' (at most 64)"
            );
        }
        let path = layout::export_cursor_path(&config.state_dir, name);
        let since = match std::fs::read_to_string(&path) {
            Ok(text) => Some(layout::parse_time(text.trim()).with_context(|| {
                format!("{} does not hold a time: {:?}", path.display(), text.trim())
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let margin = i64::try_from(config.upload_deadline_secs)
            .unwrap_or(i64::MAX / 2)
            .saturating_add(60);
        let until = Utc::now() - chrono::Duration::seconds(margin);
        // Two runs within the margin: the second has nothing new yet.
        let until = since.map_or(until, |s| until.max(s));
        Ok(Cursor { path, since, until })
    }

    /// Moves the cursor to where this run stopped, durably.
    pub(super) fn advance(self, config: &Config) -> anyhow::Result<()> {
        let dir = self.path.parent().unwrap_or(&config.state_dir);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut file = AtomicFile::create(&self.path)?;
        writeln!(file, "{}", layout::rfc3339(self.until))?;
        file.commit()
            .with_context(|| format!("cannot move the cursor {}", self.path.display()))
    }
}
