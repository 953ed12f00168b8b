//! Export feeds (`dlsrv export --follow NAME`) as the rest of dlsrv sees
//! them: each feed says how far it is in `<state_dir>/export-feeds/NAME.json`
//! (the catalog id of the last body it delivered, written after each
//! delivery), and the catalog says when the oldest body after that was
//! stored, so the service's `/metrics` and `dlsrv status` can tell a feed's
//! lag, also of a feed that has stopped.
//!
//! For a feed into PostgreSQL the position that counts is the one in the
//! target database (`ott_export_position`); this file mirrors it.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::durable::AtomicFile;
use crate::{catalog, layout};

/// How far a feed is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FeedState {
    pub(crate) name: String,
    /// The catalog id (`transmissions.id`) of the last body delivered.
    pub(crate) position: i64,
    /// The catalog it counts in (`catalog_meta.catalog_id`).
    pub(crate) catalog: String,
    /// When the feed last delivered or looked (RFC 3339).
    pub(crate) updated_utc: String,
    /// Where the feed delivers: `postgres` or `jsonl`.
    pub(crate) target: String,
}

/// Writes a feed's state, whole or not at all.
pub(crate) fn write(state_dir: &Path, state: &FeedState) -> std::io::Result<()> {
    let path = layout::export_feed_path(state_dir, &state.name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = AtomicFile::create(&path)?;
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    std::io::Write::write_all(&mut file, &json)?;
    file.commit()
}

/// Every feed's state, by name (unreadable files are left out).
pub(crate) fn read_all(state_dir: &Path) -> Vec<FeedState> {
    let Ok(entries) = std::fs::read_dir(state_dir.join(layout::EXPORT_FEEDS)) else {
        return Vec::new();
    };
    let mut feeds: Vec<FeedState> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect();
    feeds.sort_by(|a, b| a.name.cmp(&b.name));
    feeds
}

/// Seconds since the oldest body after `position` was stored (0 when there
/// is none: everything is delivered).
pub(crate) fn lag_secs(
    conn: &Connection,
    position: i64,
    now: DateTime<Utc>,
) -> rusqlite::Result<f64> {
    let oldest = catalog::oldest_after(conn, position)?;
    Ok(oldest
        .as_deref()
        .and_then(layout::parse_time)
        .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0))
}

/// Every feed's lag, by name, as its state file and the catalog tell it.
/// A position in another catalog (one rebuilt from scratch since) counts
/// from the start.
pub(crate) fn lags(
    conn: &Connection,
    state_dir: &Path,
    now: DateTime<Utc>,
) -> rusqlite::Result<Vec<(String, f64)>> {
    let feeds = read_all(state_dir);
    if feeds.is_empty() {
        return Ok(Vec::new());
    }
    let current = catalog::catalog_id(conn)?;
    feeds
        .into_iter()
        .map(|f| {
            let position = if f.catalog == current { f.position } else { 0 };
            Ok((f.name, lag_secs(conn, position, now)?))
        })
        .collect()
}
