//! Temp files a crashed or killed instance left behind, removed at start.
//!
//! Only where an instance writes: in the archive, its root, each action
//! directory and the newest day directories of each action; in `state_dir`,
//! its root, the command queue and the newest days of rejected bodies. The
//! whole archive may hold millions of files, so it is not walked. Only
//! files older than `stale_temp_age_secs` are removed: a younger one may
//! belong to another instance still writing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::archive::Archive;
use crate::durable::DurableDir;
use crate::layout;

/// How many of the newest day directories of each action are visited.
const STALE_SCAN_DAYS: usize = 3;

/// Removes temp files (`*<temp_suffix>`) older than `max_age` where a
/// crashed instance leaves them (see the module docs). Returns what it removed.
pub(crate) fn remove_stale_temps(
    archive: &Archive,
    store: &DurableDir,
    max_age: Duration,
) -> io::Result<Vec<PathBuf>> {
    let mut dirs = vec![archive.root().to_path_buf()];
    for top in sorted_subdirs(archive.root())? {
        dirs.extend(newest_day_dirs(&top, STALE_SCAN_DAYS)?);
        dirs.push(top);
    }
    dirs.push(store.root().to_path_buf());
    let queue = store.root().join(layout::COMMANDS);
    if queue.is_dir() {
        for station in sorted_subdirs(&queue)? {
            dirs.extend(sorted_subdirs(&station)?);
        }
    }
    let rejected = store.root().join(layout::REJECTED);
    if rejected.is_dir() {
        dirs.extend(newest_day_dirs(&rejected, STALE_SCAN_DAYS)?);
    }
    let suffix = archive.temp_suffix();
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for dir in dirs {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if !name.to_string_lossy().ends_with(suffix) {
                continue;
            }
            let meta = entry.metadata()?; // does not follow symlinks
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if meta.is_file() && age > max_age {
                fs::remove_file(entry.path())?;
                removed.push(entry.path());
            }
        }
    }
    Ok(removed)
}

fn sorted_subdirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// The `n` newest `YYYY/MM/DD` directories below `action_dir`.
fn newest_day_dirs(action_dir: &Path, n: usize) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for year in sorted_subdirs(action_dir)?.into_iter().rev() {
        for month in sorted_subdirs(&year)?.into_iter().rev() {
            for day in sorted_subdirs(&month)?.into_iter().rev() {
                found.push(day);
                if found.len() == n {
                    return Ok(found);
                }
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use std::fs::File;

    #[test]
    fn stale_temps_are_removed_young_ones_and_others_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = Archive::open(
            &dir.path().join("data"),
            ".tmp",
            crate::config::Durability::Fsync,
            Default::default(),
        )
        .expect("open");
        let options = crate::durable::Options {
            temp_suffix: ".tmp",
            group: None,
            follow_links: false,
            what: "state_dir",
        };
        let store = DurableDir::open(&dir.path().join("state"), options).expect("state");
        let stored = archive
            .store("senddata", "s", Utc::now(), b"data")
            .expect("store");
        let day = stored.path.parent().expect("day").to_path_buf();
        let old = day.join("s_x.1-1.tmp");
        let young = day.join("s_y.1-2.tmp");
        let old_not_temp = day.join("s_old_data");
        // Where else a killed instance writes: the queue and rejected bodies.
        let queue = store.root().join("commands/s/pending");
        let rejected = store.root().join("rejected/2026/01/01");
        fs::create_dir_all(&queue).expect("queue dir");
        fs::create_dir_all(&rejected).expect("rejected dir");
        let old_queued = queue.join("20260101T000000.000000.xml.1-3.tmp");
        let old_rejected = rejected.join("s_2026-01-01T00+00+00.000000.1-4.tmp");
        for p in [&old, &young, &old_not_temp, &old_queued, &old_rejected] {
            fs::write(p, b"partial").expect("write");
        }
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        for p in [&old, &old_not_temp, &old_queued, &old_rejected] {
            File::options()
                .write(true)
                .open(p)
                .and_then(|f| f.set_modified(two_hours_ago))
                .expect("age it");
        }
        let mut removed =
            remove_stale_temps(&archive, &store, Duration::from_secs(3600)).expect("scan");
        removed.sort();
        let mut expected = vec![old.clone(), old_queued.clone(), old_rejected.clone()];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(young.exists() && old_not_temp.exists() && stored.path.exists());
    }

    #[test]
    fn newest_days_are_found_across_months_and_years() {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in [
            "a/2019/12/30",
            "a/2019/12/31",
            "a/2020/01/01",
            "a/2018/05/05",
        ] {
            fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        let found = newest_day_dirs(&dir.path().join("a"), 2).expect("scan");
        assert_eq!(
            found,
            vec![
                dir.path().join("a/2020/01/01"),
                dir.path().join("a/2019/12/31")
            ]
        );
    }
}
