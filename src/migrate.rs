//! Upgrading an installation from before `state_dir`, at start: what dlsrv
//! used to keep inside the archive moves out of it, so that `data_dir`
//! holds nothing but archived bodies.
//!
//! - `data_dir/commands/` (the command queue) and `data_dir/rejected/`
//!   (refused bodies and their reasons) are moved, file by file, to the
//!   same place under `state_dir`: a rename on one file system, else a
//!   durable copy and then the removal of the original. A name already
//!   taken under `state_dir` keeps both: identical files are merged, a
//!   different one stays where it was and is named in a warning. Empty
//!   directories left behind are removed. Nothing is ever dropped.
//! - `data_dir/.duplicates/` (one marker file per stored body) is replaced
//!   by the catalog, which the start-up catch-up fills from the archive
//!   itself; once that has succeeded, the markers are removed
//!   ([`retire_markers`]). Every marker named a file of the archive, so
//!   the catalog knows everything they knew.
//!
//! Symbolic links are never followed; one found is left in place and named.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::durable::{self, DurableDir};
use crate::layout;

/// Moves `commands/` and `rejected/` from the archive to `state_dir`.
pub(crate) fn legacy_state(data_dir: &Path, store: &DurableDir) -> io::Result<()> {
    for name in [layout::COMMANDS, layout::REJECTED] {
        let old = data_dir.join(name);
        match fs::symlink_metadata(&old) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                tracing::warn!(path = %old.display(), "not a directory: left in place, move it by hand");
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        let mut moved = Moved::default();
        move_tree(&old, Path::new(name), store, &mut moved)?;
        remove_empty_dirs(&old);
        tracing::warn!(
            from = %old.display(),
            to = %store.root().join(name).display(),
            files = moved.files,
            kept_in_place = moved.kept.len(),
            "moved the old {name}/ out of data_dir into state_dir"
        );
        for path in &moved.kept {
            tracing::warn!(path = %path.display(), "left in data_dir: state_dir has a different file of that name");
        }
    }
    Ok(())
}

/// Removes the old duplicate markers once the catalog holds their information.
pub(crate) fn retire_markers(data_dir: &Path) {
    let markers = data_dir.join(layout::LEGACY_DUPLICATES);
    match fs::symlink_metadata(&markers) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            tracing::warn!(path = %markers.display(), "not a directory: left in place");
            return;
        }
        Err(_) => return,
    }
    let files = count_files(&markers);
    match fs::remove_dir_all(&markers) {
        Ok(()) => tracing::warn!(
            path = %markers.display(),
            files,
            "removed the old duplicate markers: the catalog has replaced them"
        ),
        Err(e) => {
            tracing::error!(path = %markers.display(), error = %e, "cannot remove the old duplicate markers")
        }
    }
}

#[derive(Debug, Default)]
struct Moved {
    files: usize,
    kept: Vec<PathBuf>,
}

fn move_tree(from: &Path, rel: &Path, store: &DurableDir, moved: &mut Moved) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(from)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let kind = entry.file_type()?;
        let name = entry.file_name();
        let path = entry.path();
        let rel_path = rel.join(&name);
        if kind.is_dir() {
            move_tree(&path, &rel_path, store, moved)?;
        } else if kind.is_file() {
            let dir = store.ensure_dir(rel)?;
            let to = dir.join(&name);
            if move_file(&path, &to, store)? {
                moved.files += 1;
            } else {
                moved.kept.push(path);
            }
        } else {
            tracing::warn!(path = %path.display(), "not a regular file (a link?): left in place");
            moved.kept.push(path);
        }
    }
    Ok(())
}

/// Moves one file without overwriting; false when `to` holds something else.
fn move_file(from: &Path, to: &Path, store: &DurableDir) -> io::Result<bool> {
    match store.move_noreplace(from, to) {
        Ok(()) => return Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return if fs::read(from)? == fs::read(to)? {
                fs::remove_file(from)?;
                Ok(true)
            } else {
                Ok(false)
            };
        }
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {}
        Err(e) => return Err(e),
    }
    // Another file system: a durable copy, then the original goes.
    let dir = to.parent().unwrap_or(store.root());
    let content = fs::read(from)?;
    let temp = dir.join(layout::temp_name(
        &to.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id(),
        0,
        store.temp_suffix(),
    ));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)?;
    let copied = file
        .write_all(&content)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::hard_link(&temp, to));
    let _ = fs::remove_file(&temp);
    match copied {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    }
    durable::fsync_dir(dir)?;
    fs::remove_file(from)?;
    Ok(true)
}

/// Removes the directories below and at `dir` that are empty (deepest first).
fn remove_empty_dirs(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&entry.path());
            }
        }
    }
    // Fails (and is left) when not empty.
    let _ = fs::remove_dir(dir);
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::Options;

    #[test]
    fn the_old_queue_and_rejected_bodies_move_and_nothing_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let state = dir.path().join("state");
        for (path, content) in [
            ("commands/s1/pending/20260101T000000.000000.xml", "a"),
            ("commands/s1/sent/20251231T000000.000000.xml", "b"),
            ("commands/s1/sent/20251231T000000.000000.sent", "c"),
            ("rejected/2026/01/01/s1_2026-01-01T00+00+00.000000", "bad"),
            (
                "rejected/2026/01/01/s1_2026-01-01T00+00+00.000000.reason",
                "why",
            ),
            (".duplicates/2026-01-01/senddata/s1/abc", "marker"),
            ("senddata/2026/01/01/s1_2026-01-01T00+00+00.000000", "<x/>"),
        ] {
            let p = data.join(path);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(p, content).expect("write");
        }
        let options = Options {
            temp_suffix: ".tmp",
            group: None,
            follow_links: false,
            what: "state_dir",
        };
        let store = DurableDir::open(&state, options).expect("open");
        // A different file already under state_dir stays; the old one too.
        fs::create_dir_all(state.join("commands/s1/sent")).expect("mkdir");
        fs::write(
            state.join("commands/s1/sent/20251231T000000.000000.sent"),
            "other",
        )
        .expect("write");

        legacy_state(&data, &store).expect("migrate");
        assert_eq!(
            fs::read_to_string(state.join("commands/s1/pending/20260101T000000.000000.xml"))
                .expect("moved"),
            "a"
        );
        assert_eq!(
            fs::read_to_string(
                state.join("rejected/2026/01/01/s1_2026-01-01T00+00+00.000000.reason")
            )
            .expect("moved"),
            "why"
        );
        assert!(!data.join("rejected").exists(), "emptied and removed");
        assert_eq!(
            fs::read_to_string(data.join("commands/s1/sent/20251231T000000.000000.sent"))
                .expect("kept"),
            "c",
            "a clash is kept, never dropped"
        );
        assert!(
            data.join("senddata/2026/01/01").is_dir(),
            "the archive is not touched"
        );
        retire_markers(&data);
        assert!(!data.join(".duplicates").exists());
        // Idempotent.
        legacy_state(&data, &store).expect("again");
    }
}
