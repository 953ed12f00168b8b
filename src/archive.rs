//! The archive: one file per accepted body at
//! `<root>/<action>/YYYY/MM/DD/<stationid>_<YYYY-MM-DDTHH+MM+SS.ffffff>`,
//! written atomically and durably before the request is answered.
//!
//! The write is: temp file in the target directory → write → `fsync` →
//! rename without overwrite (`renameat2(RENAME_NOREPLACE)`, or link + unlink
//! where the file system lacks it) → `fsync` of the directory. Directories
//! the archive had to create are made durable in their parents first. When
//! two bodies would get the same name, the later one's time is moved forward
//! by a microsecond until the name is free, so names stay unique and
//! parseable and nothing is ever overwritten.
//!
//! Everything here blocks: call it from `spawn_blocking`, never from the reactor.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Context;
use chrono::{DateTime, Utc};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use crate::config::Durability;
use crate::group::SyncBarrier;

/// How many times a name is moved forward by a microsecond before giving up.
const MAX_NAME_ATTEMPTS: u32 = 10_000;

/// A body stored in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub path: PathBuf,
    /// The receipt time the name carries (moved forward on a collision).
    pub received: DateTime<Utc>,
}

/// The archive rooted at `data_dir`.
#[derive(Debug)]
pub struct Archive {
    root: PathBuf,
    temp_suffix: String,
    /// Directories known to exist with their entry durable in their parent.
    durable_dirs: Mutex<HashSet<PathBuf>>,
    /// Set once the file system has refused `renameat2(RENAME_NOREPLACE)`.
    link_fallback: AtomicBool,
    temp_seq: AtomicU64,
    /// Group commit, when configured: shared flushes instead of fsyncs.
    group: Option<SyncBarrier>,
}

/// A body being written: a temp file that removes itself unless committed.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file
                .write_all(data)
                .map_err(|e| annotate(e, "write", &self.path)),
            None => Err(io::Error::other("temp file already closed")),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.file.take();
        if !self.path.as_os_str().is_empty() {
            remove_if_file(&self.path);
        }
    }
}

/// `<stationid>_<YYYY-MM-DDTHH+MM+SS.ffffff>`: ISO 8601 with `:` as `+`.
pub fn file_name(station: &str, t: DateTime<Utc>) -> String {
    format!("{station}_{}", t.format("%Y-%m-%dT%H+%M+%S%.6f"))
}

/// `<action>/YYYY/MM/DD`, relative to the archive root.
pub fn day_path(action: &str, t: DateTime<Utc>) -> PathBuf {
    PathBuf::from(action).join(t.format("%Y/%m/%d").to_string())
}

impl Archive {
    /// Opens (creating if needed) the archive at `root`, each file made
    /// durable on its own, and checks that a file can be created, synced
    /// and removed there.
    pub fn open(root: &Path, temp_suffix: &str) -> anyhow::Result<Archive> {
        Self::open_with(root, temp_suffix, Durability::Fsync)
    }

    /// [`Archive::open`] with the durability mode of the configuration.
    pub fn open_with(
        root: &Path,
        temp_suffix: &str,
        durability: Durability,
    ) -> anyhow::Result<Archive> {
        fs::create_dir_all(root)
            .with_context(|| format!("cannot create data_dir {}", root.display()))?;
        let root = fs::canonicalize(root)
            .with_context(|| format!("cannot resolve data_dir {}", root.display()))?;
        let group = match durability {
            Durability::Fsync => None,
            Durability::Group => Some(
                SyncBarrier::start(&root)
                    .with_context(|| format!("cannot start group commit in {}", root.display()))?,
            ),
        };
        let archive = Archive {
            root,
            temp_suffix: temp_suffix.to_owned(),
            durable_dirs: Mutex::new(HashSet::new()),
            link_fallback: AtomicBool::new(false),
            temp_seq: AtomicU64::new(0),
            group,
        };
        let (probe, file) = archive
            .create_temp(&archive.root, ".dlsrv-write-check")
            .with_context(|| format!("data_dir {} is not writable", archive.root.display()))?;
        let synced = file.sync_all();
        fs::remove_file(&probe).with_context(|| format!("cannot remove {}", probe.display()))?;
        synced.with_context(|| format!("cannot fsync in {}", archive.root.display()))?;
        Ok(archive)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The suffix of files being written (`.tmp`).
    pub fn temp_suffix(&self) -> &str {
        &self.temp_suffix
    }

    /// File-system flushes so far, in group-commit mode.
    pub fn group_flushes(&self) -> Option<u64> {
        self.group.as_ref().map(SyncBarrier::flushes)
    }

    /// Stores `body` for `station` under `action`, durably, without ever
    /// overwriting. On error nothing of this body is left in the archive.
    pub fn store(
        &self,
        action: &str,
        station: &str,
        received: DateTime<Utc>,
        body: &[u8],
    ) -> io::Result<Stored> {
        let mut temp = self.begin(action, station, received)?;
        temp.write_all(body)?;
        self.commit(temp, action, station, received)
    }

    /// Starts a body too large to hold in memory: a temp file in the day
    /// directory of `started`, to be written and then [`Archive::commit`]ted.
    /// Dropped uncommitted, it removes itself.
    pub fn begin(
        &self,
        action: &str,
        station: &str,
        started: DateTime<Utc>,
    ) -> io::Result<TempFile> {
        let dir = self.root.join(day_path(action, started));
        let (path, file) = self.create_temp_in_day_dir(&dir, &file_name(station, started))?;
        Ok(TempFile {
            path,
            file: Some(file),
        })
    }

    /// Makes a written temp file durable under its final name (the name of
    /// `received`, moved forward on a collision). On error it is removed.
    pub fn commit(
        &self,
        mut temp: TempFile,
        action: &str,
        station: &str,
        received: DateTime<Utc>,
    ) -> io::Result<Stored> {
        let file = temp
            .file
            .take()
            .ok_or_else(|| io::Error::other("temp file already closed"))?;
        let Some(group) = &self.group else {
            // A failed fsync is final for this file: it is removed, never retried.
            file.sync_all()
                .map_err(|e| annotate(e, "fsync", &temp.path))?;
            drop(file);
            let stored = self.publish(&temp.path, action, station, received, true)?;
            temp.path = PathBuf::new(); // published: nothing left to remove
            return Ok(stored);
        };
        // Group commit: the data made durable by a shared flush, then the name.
        drop(file);
        group
            .sync()
            .map_err(|e| annotate(e, "group commit of", &temp.path))?;
        let stored = self.publish(&temp.path, action, station, received, false)?;
        temp.path = PathBuf::new();
        if let Err(e) = group.sync() {
            remove_if_file(&stored.path); // the name may not survive a crash: 503, not 200
            return Err(annotate(e, "group commit of", &stored.path));
        }
        Ok(stored)
    }

    /// Creates `<root>/<rel_dir>/<name>` with `body`, durably and without
    /// overwriting: fails with `AlreadyExists` when the name is taken.
    pub fn create_durable(&self, rel_dir: &Path, name: &str, body: &[u8]) -> io::Result<PathBuf> {
        let dir = self.root.join(rel_dir);
        let (temp, file) = self.create_temp_in_day_dir(&dir, name)?;
        let path = dir.join(name);
        let result = write_synced(file, body, &temp)
            .and_then(|()| self.rename_noreplace(&temp, &path))
            .and_then(|()| fsync_dir(&dir).inspect_err(|_| remove_if_file(&path)));
        if result.is_err() {
            remove_if_file(&temp);
        }
        result.map(|()| path)
    }

    /// Writes or replaces `<root>/<rel_dir>/<name>` atomically (readers see
    /// the old or the new content, never a mix); synced when `durable`.
    pub fn replace(
        &self,
        rel_dir: &Path,
        name: &str,
        body: &[u8],
        durable: bool,
    ) -> io::Result<PathBuf> {
        let dir = self.root.join(rel_dir);
        let (temp, mut file) = self.create_temp_in_day_dir(&dir, name)?;
        let path = dir.join(name);
        let result = if durable {
            write_synced(file, body, &temp)
        } else {
            file.write_all(body)
                .map_err(|e| annotate(e, "write", &temp))
        }
        .and_then(|()| fs::rename(&temp, &path).map_err(|e| annotate(e, "rename to", &path)))
        .and_then(|()| if durable { fsync_dir(&dir) } else { Ok(()) });
        if result.is_err() {
            remove_if_file(&temp);
        }
        result.map(|()| path)
    }

    /// Moves a file within the archive without overwriting, durably (both
    /// directories synced). `NotFound` when `from` is gone (someone else
    /// moved it first), `AlreadyExists` when `to` is taken.
    pub fn move_durable(&self, from: &Path, to: &Path) -> io::Result<()> {
        let to_dir = to.parent().unwrap_or(&self.root);
        self.ensure_durable_dir(to_dir)?;
        match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => {}
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                fs::hard_link(from, to).map_err(|e| annotate(e, "link to", to))?;
                fs::remove_file(from).map_err(|e| annotate(e, "remove", from))?;
            }
            Err(e) => return Err(annotate(e.into(), "move to", to)),
        }
        fsync_dir(to_dir)?;
        match from.parent() {
            Some(from_dir) if from_dir != to_dir => fsync_dir(from_dir),
            _ => Ok(()),
        }
    }

    /// Moves the synced temp file to its final name, and makes the name
    /// durable when `sync_dir` (group commit syncs it afterwards instead).
    fn publish(
        &self,
        temp: &Path,
        action: &str,
        station: &str,
        received: DateTime<Utc>,
        sync_dir: bool,
    ) -> io::Result<Stored> {
        let mut t = received;
        for _ in 0..MAX_NAME_ATTEMPTS {
            let dir = self.root.join(day_path(action, t));
            self.ensure_durable_dir(&dir)?;
            let path = dir.join(file_name(station, t));
            match self.rename_noreplace(temp, &path) {
                Ok(()) => {
                    let synced = if sync_dir { fsync_dir(&dir) } else { Ok(()) };
                    if let Err(e) = synced {
                        // The name may not survive a crash: take it back so a
                        // 503 means "not stored" and the logger's retry is the copy.
                        remove_if_file(&path);
                        return Err(e);
                    }
                    return Ok(Stored { path, received: t });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    t += chrono::Duration::microseconds(1);
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "no free name for {station} near {received} after {MAX_NAME_ATTEMPTS} attempts"
        )))
    }

    /// Creates the temp file, recreating the day directory if it vanished
    /// (an operator may delete old days while we run).
    fn create_temp_in_day_dir(&self, dir: &Path, base: &str) -> io::Result<(PathBuf, File)> {
        self.ensure_durable_dir(dir)?;
        match self.create_temp(dir, base) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget_dirs();
                self.ensure_durable_dir(dir)?;
                self.create_temp(dir, base)
            }
            other => other,
        }
    }

    /// `<dir>/<base>.<pid>-<seq><temp_suffix>`, created exclusively.
    fn create_temp(&self, dir: &Path, base: &str) -> io::Result<(PathBuf, File)> {
        loop {
            let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
            let name = format!("{base}.{}-{seq}{}", std::process::id(), self.temp_suffix);
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((path, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(annotate(e, "create", &path)),
            }
        }
    }

    /// Makes sure `dir` (below the root) exists and that its entry, and its
    /// parents' entries, are durable. Each directory costs one parent fsync
    /// per process, whoever created it.
    fn ensure_durable_dir(&self, dir: &Path) -> io::Result<()> {
        if self.is_durable(dir) {
            return Ok(());
        }
        let relative = dir
            .strip_prefix(&self.root)
            .map_err(|_| io::Error::other(format!("{} is outside the archive", dir.display())))?;
        let mut current = self.root.clone();
        for component in relative.components() {
            let parent = current.clone();
            current.push(component);
            if self.is_durable(&current) {
                continue;
            }
            match fs::create_dir(&current) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(annotate(e, "create directory", &current)),
            }
            fsync_dir(&parent)?;
            self.lock_dirs().insert(current.clone());
        }
        Ok(())
    }

    fn is_durable(&self, dir: &Path) -> bool {
        self.lock_dirs().contains(dir)
    }

    fn forget_dirs(&self) {
        self.lock_dirs().clear();
    }

    fn lock_dirs(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        // The set is only a cache: a panic elsewhere cannot leave it wrong.
        self.durable_dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        if !self.link_fallback.load(Ordering::Relaxed) {
            match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
                Ok(()) => return Ok(()),
                Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                    tracing::warn!(
                        dir = %self.root.display(),
                        "file system refuses renameat2(RENAME_NOREPLACE); using link + unlink"
                    );
                    self.link_fallback.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(annotate(e.into(), "rename to", to)),
            }
        }
        fs::hard_link(from, to).map_err(|e| annotate(e, "link to", to))?;
        if let Err(e) = fs::remove_file(from) {
            // The body is safely in place; the stale-temp scan removes this later.
            tracing::warn!(path = %from.display(), error = %e, "cannot remove linked temp file");
        }
        Ok(())
    }
}

fn write_synced(mut file: File, body: &[u8], path: &Path) -> io::Result<()> {
    file.write_all(body)
        .map_err(|e| annotate(e, "write", path))?;
    // A failed fsync is final for this file: it is removed, never retried.
    file.sync_all().map_err(|e| annotate(e, "fsync", path))
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| annotate(e, "fsync directory", dir))
}

/// Removes `path` if it is a regular file; never a directory or a link's target.
fn remove_if_file(path: &Path) {
    if fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
        && let Err(e) = fs::remove_file(path)
    {
        tracing::error!(path = %path.display(), error = %e, "cannot remove a failed write");
    }
}

/// Keeps the error's kind and says which step on which path failed.
fn annotate(e: io::Error, step: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{step} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t(us: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2020, 10, 22, 0, 1, 6)
            .single()
            .expect("valid")
            + chrono::Duration::microseconds(us)
    }

    #[test]
    fn names_match_the_old_deployment() {
        assert_eq!(
            file_name("0000452891", t(209_619)),
            "0000452891_2020-10-22T00+01+06.209619"
        );
        assert_eq!(file_name("x", t(0)), "x_2020-10-22T00+01+06.000000");
        assert_eq!(
            day_path("senddata", t(0)),
            PathBuf::from("senddata/2020/10/22")
        );
    }

    #[test]
    fn stores_bytes_exactly_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = Archive::open(dir.path(), ".tmp").expect("open");
        let body = b"<?xml?><x unit=\"\xb0C\"/>\x00\xff";
        let stored = archive
            .store("senddata", "0000452891", t(209_619), body)
            .expect("store");
        assert_eq!(
            stored.path,
            archive
                .root()
                .join("senddata/2020/10/22/0000452891_2020-10-22T00+01+06.209619")
        );
        assert_eq!(fs::read(&stored.path).expect("read"), body);
        let names: Vec<_> = fs::read_dir(stored.path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn same_name_moves_forward_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = Archive::open(dir.path(), ".tmp").expect("open");
        let a = archive.store("senddata", "s", t(5), b"first").expect("a");
        let b = archive.store("senddata", "s", t(5), b"second").expect("b");
        let c = archive.store("senddata", "s", t(5), b"third").expect("c");
        assert_eq!(a.received, t(5));
        assert_eq!(b.received, t(6));
        assert_eq!(c.received, t(7));
        assert_eq!(fs::read(&a.path).expect("a"), b"first");
        assert_eq!(fs::read(&b.path).expect("b"), b"second");
        assert_eq!(fs::read(&c.path).expect("c"), b"third");
    }

    #[test]
    fn collision_at_midnight_moves_into_the_next_day() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = Archive::open(dir.path(), ".tmp").expect("open");
        let last = Utc
            .with_ymd_and_hms(2020, 12, 31, 23, 59, 59)
            .single()
            .expect("valid")
            + chrono::Duration::microseconds(999_999);
        archive.store("senddata", "s", last, b"1").expect("first");
        let second = archive.store("senddata", "s", last, b"2").expect("second");
        assert!(
            second
                .path
                .ends_with("senddata/2021/01/01/s_2021-01-01T00+00+00.000000")
        );
        assert!(!second.path.parent().expect("p").join("x").exists());
    }

    #[test]
    fn a_vanished_day_directory_is_recreated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = Archive::open(dir.path(), ".tmp").expect("open");
        archive.store("senddata", "s", t(1), b"1").expect("first");
        fs::remove_dir_all(archive.root().join("senddata")).expect("operator deletes");
        let again = archive.store("senddata", "s", t(2), b"2").expect("second");
        assert_eq!(fs::read(again.path).expect("read"), b"2");
    }

    #[test]
    fn failure_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = Archive::open(dir.path(), ".tmp").expect("open");
        // A regular file where the action directory should be.
        fs::write(archive.root().join("senddata"), b"not a dir").expect("write");
        let err = archive
            .store("senddata", "s", t(1), b"body")
            .expect_err("must fail");
        assert!(err.to_string().contains("senddata"), "{err}");
        assert_eq!(
            fs::read(archive.root().join("senddata")).expect("kept"),
            b"not a dir"
        );
        assert_eq!(fs::read_dir(archive.root()).expect("list").count(), 1);
    }

    proptest! {
        #[test]
        fn names_parse_back_to_their_time(us in 0i64..4_000_000_000_000_000) {
            let time = DateTime::<Utc>::from_timestamp_micros(us).ok_or_else(|| TestCaseError::reject("range"))?;
            let name = file_name("st", time);
            let stamp = name.strip_prefix("st_").ok_or_else(|| TestCaseError::fail("prefix"))?;
            prop_assert_eq!(stamp.len(), 26);
            let parsed = chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%dT%H+%M+%S%.6f")
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed.and_utc(), time);
            prop_assert!(!name.contains('/') && !name.contains(':'));
        }
    }
}
