//! Local retention: bodies older than their station's days leave the local
//! disk. With a replica (`[replica] keep_local_days`) only those the
//! replica holds with the same checksum (looked at with `HEAD` just before)
//! go, and the catalog remembers them (`removed_utc`): exports, reindex
//! and the status views read them from the replica. Without one,
//! `retention_days` deletes them for good. `retention_by_station`
//! overrides the days per station (0: keep forever).
//!
//! The catalog row is marked first, then the file removed: a crash between
//! leaves a local file the catalog counts as remote, never the reverse.
//! Nothing in `state_dir` is touched but those rows: the station's summary,
//! its alarms and its command queue stay.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};

use super::Store;
use crate::catalog::places::{self, Placed};
use crate::config::Config;
use crate::layout;

/// Bodies looked at per page.
const PAGE: usize = 1_000;
/// `HEAD`s at once.
const CHECKS_AT_ONCE: usize = 16;

/// Days per station.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    default_days: Option<u32>,
    by_station: BTreeMap<String, u32>,
    /// Bodies must be in the replica before they leave.
    replica: bool,
}

impl Policy {
    /// The configuration's retention, if it has any.
    pub(crate) fn of(config: &Config) -> Option<Policy> {
        let replica = config.replica.is_some();
        let default_days = match &config.replica {
            Some(r) => r.keep_local_days,
            None => config.retention_days,
        };
        let policy = Policy {
            default_days,
            by_station: config.retention_by_station.clone(),
            replica,
        };
        (default_days.is_some() || policy.by_station.values().any(|&d| d > 0)).then_some(policy)
    }

    /// A station's days (`None`: forever).
    fn days(&self, station: &str) -> Option<u32> {
        match self.by_station.get(station) {
            Some(0) => None,
            Some(&d) => Some(d),
            None => self.default_days,
        }
    }

    /// Bodies received before this may be due (the shortest days of all).
    fn first_cutoff(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let shortest = self
            .by_station
            .values()
            .filter(|&&d| d > 0)
            .copied()
            .chain(self.default_days)
            .min()?;
        Some(now - Duration::days(i64::from(shortest)))
    }

    /// Whether `row` is due at `now`.
    fn due(&self, row: &Placed, now: DateTime<Utc>) -> bool {
        let (Some(days), Some(received)) = (
            self.days(&row.station_id),
            layout::parse_time(&row.received_utc),
        ) else {
            return false;
        };
        received < now - Duration::days(i64::from(days))
    }

    /// In words, for logs and `check-config`.
    pub(crate) fn describe(&self) -> String {
        let default = match self.default_days {
            Some(d) => format!("{d} days"),
            None => "forever".to_owned(),
        };
        let mut text = if self.replica {
            format!("local bodies kept {default}, then only in the replica")
        } else {
            format!("bodies kept {default}, then deleted")
        };
        if !self.by_station.is_empty() {
            let each: Vec<String> = self
                .by_station
                .iter()
                .map(|(s, d)| match d {
                    0 => format!("{s} forever"),
                    d => format!("{s} {d} days"),
                })
                .collect();
            text.push_str(&format!(" (stations: {})", each.join(", ")));
        }
        text
    }
}

/// What one run did (or would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) removed: u64,
    pub(crate) bytes: u64,
    /// Due, but not (yet) seen in the replica with the same checksum.
    pub(crate) unverified: u64,
}

/// What a run now would remove, from the catalog alone (read-only; with a
/// replica, the bodies it holds by the catalog, each checked at the run).
pub(crate) fn plan(config: &Config, conn: &rusqlite::Connection) -> anyhow::Result<Option<Run>> {
    let Some(policy) = Policy::of(config) else {
        return Ok(None);
    };
    let now = Utc::now();
    let mut run = Run::default();
    each_due(&policy, conn, now, |rows| {
        for row in rows {
            if policy.replica && !row.replicated {
                run.unverified += 1;
            } else {
                run.removed += 1;
                run.bytes += row.bytes;
            }
        }
        Ok(())
    })?;
    Ok(Some(run))
}

/// Calls `f` with each page of due bodies.
fn each_due(
    policy: &Policy,
    conn: &rusqlite::Connection,
    now: DateTime<Utc>,
    mut f: impl FnMut(Vec<Placed>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Some(cutoff) = policy.first_cutoff(now) else {
        return Ok(());
    };
    let cutoff = layout::rfc3339(cutoff);
    let mut after = 0;
    loop {
        let page =
            places::local_before(conn, &cutoff, after, PAGE).context("cannot read the catalog")?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.id;
        f(page.into_iter().filter(|r| policy.due(r, now)).collect())?;
    }
}

/// Applies retention once; logs what it did.
pub(crate) fn apply(
    config: &Config,
    policy: &Policy,
    conn: &rusqlite::Connection,
    replica: Option<(&tokio::runtime::Runtime, &Store)>,
) -> anyhow::Result<Run> {
    let now = Utc::now();
    let mut run = Run::default();
    let stamp = layout::rfc3339(now);
    each_due(policy, conn, now, |rows| {
        let keep: Vec<Placed> = match (policy.replica, replica) {
            (false, _) => rows,
            (true, None) => {
                run.unverified += rows.len() as u64;
                Vec::new()
            }
            (true, Some((runtime, store))) => {
                let (verified, unverified) =
                    runtime.block_on(verified(store, &config.data_dir, rows));
                run.unverified += unverified;
                verified
            }
        };
        let mut dirs = BTreeSet::new();
        for row in keep {
            places::mark_removed(conn, row.id, &stamp).context("cannot update the catalog")?;
            let path = config.data_dir.join(&row.path);
            match remove(&config.data_dir, &row.path) {
                Ok(()) => {
                    run.removed += 1;
                    run.bytes += row.bytes;
                    dirs.insert(crate::durable::parent_dir(&path).to_path_buf());
                }
                Err(e) => {
                    tracing::warn!(path = row.path.as_str(), error = %e, "cannot remove a body")
                }
            }
        }
        sync_dirs(dirs);
        Ok(())
    })?;
    if run.removed > 0 || run.unverified > 0 {
        tracing::info!(
            removed = run.removed,
            bytes = run.bytes,
            not_verified = run.unverified,
            policy = policy.describe(),
            "retention: removed {} bodies ({} bytes) from the local disk; {} due but not verified in the replica stay",
            run.removed,
            run.bytes,
            run.unverified
        );
    } else {
        tracing::info!(policy = policy.describe(), "retention: nothing due");
    }
    Ok(run)
}

/// Removes an archived body (a plain relative path, not a link's target).
fn remove(data_dir: &Path, rel: &str) -> std::io::Result<()> {
    let plain = Path::new(rel)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain || rel.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a path inside the archive",
        ));
    }
    match std::fs::remove_file(data_dir.join(rel)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn sync_dirs(dirs: BTreeSet<PathBuf>) {
    for dir in dirs {
        if let Err(e) = crate::durable::fsync_dir(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot sync a directory after removals");
        }
    }
}

/// The rows whose object the replica holds with their checksum, and how
/// many it does not.
async fn verified(store: &Store, data_dir: &Path, rows: Vec<Placed>) -> (Vec<Placed>, u64) {
    let mut ok = Vec::new();
    let mut unverified = 0;
    for chunk in rows.chunks(CHECKS_AT_ONCE) {
        let mut tasks = tokio::task::JoinSet::new();
        for row in chunk.iter().filter(|r| r.replicated).cloned() {
            let (store, data_dir) = (store.clone(), data_dir.to_path_buf());
            tasks.spawn(async move {
                let same = holds(&store, &data_dir, &row).await;
                (row, same)
            });
        }
        unverified += chunk.iter().filter(|r| !r.replicated).count() as u64;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((row, true)) => ok.push(row),
                _ => unverified += 1,
            }
        }
    }
    (ok, unverified)
}

/// Whether the replica holds `row`'s body with its checksum.
pub(crate) async fn holds(store: &Store, data_dir: &Path, row: &Placed) -> bool {
    let Ok(Some(head)) = store.head(&row.path).await else {
        return false;
    };
    if head.size != row.bytes {
        return false;
    }
    match (
        super::checksum_of_sha(&row.sha256, row.bytes),
        &head.checksum,
    ) {
        (Some(expected), Some(got)) => expected == *got,
        // A body in parts: its composite checksum comes from the bytes.
        (None, Some(got)) => layout::read_body(data_dir, &row.path)
            .is_ok_and(|body| super::checksum_of(&body) == *got),
        (_, None) => false,
    }
}
