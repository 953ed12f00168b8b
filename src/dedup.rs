//! Duplicate transmissions: a logger that missed our 200 sends the same bytes
//! again. An identical body from the same station for the same action within
//! `duplicate_window_days` is answered 200 but not stored a second time.
//!
//! Each stored body leaves a marker, a small file named by the SHA-256 of the
//! body, at `<data_dir>/.duplicates/<YYYY-MM-DD>/<action>/<station>/<hash>`
//! (the UTC day the marker was written), holding the receipt time and the
//! archive path of the stored copy. Markers are plain files in the shared
//! data directory, so they hold across restarts and across instances. A
//! marker only counts while the file it names still exists. Whole day
//! directories older than the window are removed (pruned).
//!
//! Markers are written after the body is durable, and are not themselves
//! fsynced: a marker lost in a crash costs at most a second copy, never a
//! lost body. Two identical bodies in flight at the same moment may both be
//! stored, for the same reason.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};

use crate::archive::{Archive, Stored};
use crate::response::iso_time;

pub const DIR: &str = ".duplicates";

/// The duplicate check of one archive.
#[derive(Debug)]
pub struct Duplicates {
    window_days: u32,
    /// The last UTC day old markers were pruned on, by this process.
    pruned_on: Mutex<Option<NaiveDate>>,
}

/// SHA-256 of a body, as 64 hex digits.
pub fn hash(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

/// A digest as lower-case hex digits.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Duplicates {
    /// `window_days == 0` turns the check off.
    pub fn new(window_days: u32) -> Duplicates {
        Duplicates {
            window_days,
            pruned_on: Mutex::new(None),
        }
    }

    pub fn enabled(&self) -> bool {
        self.window_days > 0
    }

    /// The stored copy of an identical earlier body, if there is one within the window.
    pub fn find(
        &self,
        archive: &Archive,
        action: &str,
        station: &str,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Option<Stored> {
        if !self.enabled() {
            return None;
        }
        let oldest = now - chrono::Duration::days(i64::from(self.window_days));
        (0..=self.window_days).find_map(|days_ago| {
            let day = now - chrono::Duration::days(i64::from(days_ago));
            let marker = archive
                .root()
                .join(marker_dir(day, action, station))
                .join(hash);
            let text = fs::read_to_string(marker).ok()?;
            let (time, path) = text.trim_end().split_once('\n')?;
            let received = chrono::NaiveDateTime::parse_from_str(time, "%Y-%m-%dT%H:%M:%S%.6f")
                .ok()?
                .and_utc();
            let path = archive.root().join(path);
            (received >= oldest && path.is_file()).then_some(Stored { path, received })
        })
    }

    /// Records that `stored` holds the body with `hash`.
    pub fn record(
        &self,
        archive: &Archive,
        action: &str,
        station: &str,
        hash: &str,
        stored: &Stored,
        now: DateTime<Utc>,
    ) -> io::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        self.prune_once_a_day(archive, now);
        let relative = stored
            .path
            .strip_prefix(archive.root())
            .unwrap_or(&stored.path);
        let content = format!("{}\n{}\n", iso_time(stored.received), relative.display());
        archive.replace(
            &marker_dir(now, action, station),
            hash,
            content.as_bytes(),
            false,
        )?;
        Ok(())
    }

    /// Removes the day directories of markers older than the window.
    /// Returns how many were removed.
    pub fn prune(&self, archive: &Archive, now: DateTime<Utc>) -> io::Result<usize> {
        let base = archive.root().join(DIR);
        let oldest_kept = (now - chrono::Duration::days(i64::from(self.window_days))).date_naive();
        let entries = match fs::read_dir(&base) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Ok(day) = NaiveDate::parse_from_str(&name.to_string_lossy(), "%Y-%m-%d") else {
                continue; // not ours: leave it
            };
            // Only real directories (a symlink's target is never followed).
            if (!self.enabled() || day < oldest_kept) && entry.file_type()?.is_dir() {
                fs::remove_dir_all(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn prune_once_a_day(&self, archive: &Archive, now: DateTime<Utc>) {
        let today = now.date_naive();
        {
            let mut last = self.pruned_on.lock().unwrap_or_else(|e| e.into_inner());
            if *last == Some(today) {
                return;
            }
            *last = Some(today);
        }
        match self.prune(archive, now) {
            Ok(0) => {}
            Ok(n) => tracing::info!(days = n, "pruned duplicate markers older than the window"),
            Err(e) => tracing::warn!(error = %e, "cannot prune duplicate markers"),
        }
    }
}

fn marker_dir(day: DateTime<Utc>, action: &str, station: &str) -> PathBuf {
    Path::new(DIR)
        .join(day.format("%Y-%m-%d").to_string())
        .join(action)
        .join(station)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn day(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, 12, 0, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn finds_within_the_window_only_while_the_file_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = Archive::open(dir.path(), ".tmp").expect("open");
        let dups = Duplicates::new(7);
        let h = hash(b"body");
        assert!(dups.find(&archive, "senddata", "s", &h, day(1)).is_none());
        let stored = archive
            .store("senddata", "s", day(1), b"body")
            .expect("store");
        dups.record(&archive, "senddata", "s", &h, &stored, day(1))
            .expect("record");

        assert_eq!(
            dups.find(&archive, "senddata", "s", &h, day(5)),
            Some(stored.clone())
        );
        assert!(
            dups.find(&archive, "sendalarm", "s", &h, day(5)).is_none(),
            "per action"
        );
        assert!(
            dups.find(&archive, "senddata", "t", &h, day(5)).is_none(),
            "per station"
        );
        assert!(
            dups.find(&archive, "senddata", "s", &hash(b"other"), day(5))
                .is_none()
        );
        assert!(
            dups.find(&archive, "senddata", "s", &h, day(9)).is_none(),
            "window over"
        );

        fs::remove_file(&stored.path).expect("operator removes the file");
        assert!(dups.find(&archive, "senddata", "s", &h, day(2)).is_none());
        assert!(
            Duplicates::new(0)
                .find(&archive, "senddata", "s", &h, day(1))
                .is_none()
        );
    }

    #[test]
    fn prunes_whole_days_past_the_window_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = Archive::open(dir.path(), ".tmp").expect("open");
        let dups = Duplicates::new(7);
        for d in [1, 2] {
            let stored = archive
                .store("senddata", "s", day(d), &[d as u8])
                .expect("store");
            dups.record(
                &archive,
                "senddata",
                "s",
                &hash(&[d as u8]),
                &stored,
                day(d),
            )
            .expect("record");
        }
        fs::create_dir_all(archive.root().join(DIR).join("notes")).expect("foreign dir");
        // Another instance (or a restart) prunes explicitly.
        assert_eq!(
            Duplicates::new(7).prune(&archive, day(9)).expect("prune"),
            1,
            "day 1 is past 7 days"
        );
        assert!(!archive.root().join(DIR).join("2026-03-01").exists());
        // Recording on a new day prunes on its own, once that day.
        let stored = archive
            .store("senddata", "s", day(11), b"x")
            .expect("store");
        dups.record(&archive, "senddata", "s", &hash(b"x"), &stored, day(11))
            .expect("record");
        let left: Vec<_> = fs::read_dir(archive.root().join(DIR))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "day 11 and the foreign dir: {left:?}");
        assert!(left.contains(&"2026-03-11".to_owned()) && left.contains(&"notes".to_owned()));
        assert!(
            archive.root().join("senddata/2026/03/01").is_dir(),
            "the archive is never pruned"
        );
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
