//! The one way dlsrv makes a file durable, for the archive and for its
//! own state alike:
//!
//! temp file `<name>.<pid>-<n><suffix>` in the target directory → write →
//! `fsync` → rename without overwrite (`renameat2(RENAME_NOREPLACE)`, or
//! link + unlink where the file system lacks it) → `fsync` of the directory.
//!
//! Why not an unnamed temp file (`O_TMPFILE` + `linkat`): on ext4 without
//! a journal the file's fsync then records a link count of 0, the later
//! `linkat` raises it in memory only, and the directory's fsync does not
//! write the file's inode: after a power loss the name would point at an
//! inode the kernel refuses to read. It would need a third fsync, and
//! measured no cheaper than the rename.
//!
//! Directories it has to create are made durable in their parents first,
//! once per directory and process. A failed `fsync` is final for that file:
//! it is removed, never retried. With group commit ([`crate::group`]) the
//! two `fsync`s are replaced by shared file-system flushes.
//!
//! Concurrent files of one directory share its `fsync` ([`DirSync`]): a
//! writer waits for an `fsync` of the directory that *started after its
//! rename*; whoever finds none running starts one, and everyone who renamed
//! meanwhile is covered by the next. Under load a day directory is synced
//! once per batch, not once per file; the promise is the same.
//!
//! Everything here blocks: call it from the blocking pool, never from the reactor.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use prometheus_client::metrics::counter::Counter;

use crate::group::SyncBarrier;

/// A directory tree whose files are all written the durable way.
#[derive(Debug)]
pub(crate) struct DurableDir {
    root: PathBuf,
    temp_suffix: String,
    /// Directories known to exist with their entry durable in their parent.
    durable_dirs: Mutex<HashSet<PathBuf>>,
    /// Set once the file system has refused `renameat2(RENAME_NOREPLACE)`.
    link_fallback: AtomicBool,
    temp_seq: AtomicU64,
    /// This process's id, in temp names (read once: `getpid` is a system call).
    pid: u32,
    /// Group commit, when configured: shared flushes instead of fsyncs.
    group: Option<SyncBarrier>,
    /// The shared directory fsyncs, by directory.
    dir_syncs: Mutex<HashMap<PathBuf, Arc<DirSync>>>,
    /// Whether a symbolic link to a directory may stand for a directory
    /// below the root (an operator's link of `senddata/` to another volume).
    follow_links: bool,
}

/// How a [`DurableDir`] is opened.
#[derive(Debug, Clone)]
pub(crate) struct Options<'a> {
    pub(crate) temp_suffix: &'a str,
    /// Group commit: shared file-system flushes instead of one fsync per
    /// file, counted by this counter.
    pub(crate) group: Option<Counter<u64, AtomicU64>>,
    pub(crate) follow_links: bool,
    /// What the tree is, for errors: "data_dir".
    pub(crate) what: &'a str,
}

/// A file being written: removes itself unless committed.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    pub(crate) fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
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

impl DurableDir {
    /// Opens (creating if needed) the tree at `root` and checks that a file
    /// can be created, synced and removed there. `what` names it in errors.
    pub(crate) fn open(root: &Path, options: Options<'_>) -> anyhow::Result<DurableDir> {
        let Options {
            temp_suffix,
            group,
            follow_links,
            what,
        } = options;
        fs::create_dir_all(root)
            .with_context(|| format!("cannot create {what} {}", root.display()))?;
        let root = fs::canonicalize(root)
            .with_context(|| format!("cannot resolve {what} {}", root.display()))?;
        let group = match group {
            Some(counter) => Some(
                SyncBarrier::start_counted(&root, counter)
                    .with_context(|| format!("cannot start group commit in {}", root.display()))?,
            ),
            None => None,
        };
        let dir = DurableDir {
            root,
            temp_suffix: temp_suffix.to_owned(),
            durable_dirs: Mutex::new(HashSet::new()),
            link_fallback: AtomicBool::new(false),
            temp_seq: AtomicU64::new(0),
            pid: std::process::id(),
            dir_syncs: Mutex::new(HashMap::new()),
            group,
            follow_links,
        };
        let (probe, file) = dir
            .create_temp(&dir.root, ".dlsrv-write-check")
            .with_context(|| format!("{what} {} is not writable", dir.root.display()))?;
        let synced = file.sync_all();
        fs::remove_file(&probe).with_context(|| format!("cannot remove {}", probe.display()))?;
        synced.with_context(|| format!("cannot fsync in {}", dir.root.display()))?;
        Ok(dir)
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn temp_suffix(&self) -> &str {
        &self.temp_suffix
    }

    /// File-system flushes so far, in group-commit mode.
    pub(crate) fn group_flushes(&self) -> Option<u64> {
        self.group.as_ref().map(SyncBarrier::flushes)
    }

    /// Starts a file: a temp file named after `base` in `rel_dir`, which is
    /// created durably if needed (and again if it vanished).
    pub(crate) fn begin(&self, rel_dir: &Path, base: &str) -> io::Result<TempFile> {
        let dir = self.root.join(rel_dir);
        self.ensure_durable_dir(&dir)?;
        let create = |dir: &Path| -> io::Result<TempFile> {
            let (path, file) = self.create_temp(dir, base)?;
            Ok(TempFile {
                path,
                file: Some(file),
            })
        };
        match create(&dir) {
            // An operator may delete old directories while we run.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget_dirs();
                self.ensure_durable_dir(&dir)?;
                create(&dir)
            }
            other => other,
        }
    }

    /// Makes a written temp file durable under the first free name that
    /// `candidates` offers (`(rel_dir, name)`; `None` ends the search).
    /// Returns the path and which candidate it got. On error nothing is left.
    pub(crate) fn commit(
        &self,
        mut temp: TempFile,
        mut candidates: impl FnMut(u32) -> Option<(PathBuf, String)>,
    ) -> io::Result<(PathBuf, u32)> {
        let file = temp
            .file
            .take()
            .ok_or_else(|| io::Error::other("temp file already closed"))?;
        match &self.group {
            // A failed fsync is final for this file: it is removed, never retried.
            None => file
                .sync_all()
                .map_err(|e| annotate(e, "fsync", &temp.path))?,
            Some(group) => {
                drop(file);
                group
                    .sync()
                    .map_err(|e| annotate(e, "group commit of", &temp.path))?;
            }
        }
        let mut attempt = 0;
        while let Some((rel_dir, name)) = candidates(attempt) {
            let dir = self.root.join(&rel_dir);
            self.ensure_durable_dir(&dir)?;
            let path = dir.join(name);
            match self.rename_noreplace(&temp.path, &path) {
                Ok(()) => {
                    temp.path = PathBuf::new(); // published: nothing left to remove
                    let synced = match &self.group {
                        None => self.dir_sync(&dir).sync(&dir),
                        Some(group) => group
                            .sync()
                            .map_err(|e| annotate(e, "group commit of", &path)),
                    };
                    if let Err(e) = synced {
                        // The name may not survive a crash: take it back so a
                        // 503 means "not stored" and the client's retry is the copy.
                        remove_if_file(&path);
                        return Err(e);
                    }
                    return Ok((path, attempt));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => attempt += 1,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "no free name for {} after {attempt} attempts",
                temp.path.display()
            ),
        ))
    }

    /// Creates `<root>/<rel_dir>/<name>` holding `body`, durably and without
    /// overwriting: fails with `AlreadyExists` when the name is taken.
    pub(crate) fn create_new(
        &self,
        rel_dir: &Path,
        name: &str,
        body: &[u8],
    ) -> io::Result<PathBuf> {
        let mut temp = self.begin(rel_dir, name)?;
        temp.write_all(body)?;
        let (path, _) = self.commit(temp, |attempt| {
            (attempt == 0).then(|| (rel_dir.to_path_buf(), name.to_owned()))
        })?;
        Ok(path)
    }

    /// Creates `<root>/<rel_dir>/<name>`, or replaces it atomically: readers
    /// see the old or the new content, never a mix. Durable like any other file.
    pub(crate) fn replace(&self, rel_dir: &Path, name: &str, body: &[u8]) -> io::Result<PathBuf> {
        let mut temp = self.begin(rel_dir, name)?;
        temp.write_all(body)?;
        let file = temp
            .file
            .take()
            .ok_or_else(|| io::Error::other("temp file already closed"))?;
        file.sync_all()
            .map_err(|e| annotate(e, "fsync", &temp.path))?;
        drop(file);
        let dir = self.root.join(rel_dir);
        let path = dir.join(name);
        fs::rename(&temp.path, &path).map_err(|e| annotate(e, "rename to", &path))?;
        temp.path = PathBuf::new();
        fsync_dir(&dir)?;
        Ok(path)
    }

    /// Moves a file within the tree without overwriting, durably (both
    /// directories synced). `NotFound` when `from` is gone (someone else
    /// moved it first), `AlreadyExists` when `to` is taken. A destination
    /// directory that vanished while we ran is created again: its absence
    /// never reads as "someone else moved it".
    pub(crate) fn move_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        let to_dir = to.parent().unwrap_or(&self.root);
        self.ensure_durable_dir(to_dir)?;
        match self.rename_noreplace(from, to) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(from).is_ok() => {
                self.forget_dirs();
                self.ensure_durable_dir(to_dir)?;
                self.rename_noreplace(from, to)?;
            }
            other => other?,
        }
        fsync_dir(to_dir)?;
        match from.parent() {
            Some(from_dir) if from_dir != to_dir => fsync_dir(from_dir),
            _ => Ok(()),
        }
    }

    /// Makes sure `rel_dir` exists, durably.
    pub(crate) fn ensure_dir(&self, rel_dir: &Path) -> io::Result<PathBuf> {
        let dir = self.root.join(rel_dir);
        self.ensure_durable_dir(&dir)?;
        Ok(dir)
    }

    /// The shared fsync of `dir`. Entries of old directories nobody waits
    /// on are dropped now and then, so the map stays small.
    fn dir_sync(&self, dir: &Path) -> Arc<DirSync> {
        let mut syncs = self.dir_syncs.lock().unwrap_or_else(|e| e.into_inner());
        if syncs.len() > 64 {
            syncs.retain(|_, sync| Arc::strong_count(sync) > 1);
        }
        syncs.entry(dir.to_path_buf()).or_default().clone()
    }

    /// `<dir>/<base>.<pid>-<seq><temp_suffix>`, created exclusively.
    fn create_temp(&self, dir: &Path, base: &str) -> io::Result<(PathBuf, File)> {
        loop {
            let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
            let name = crate::layout::temp_name(base, self.pid, seq, &self.temp_suffix);
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
        let relative = dir.strip_prefix(&self.root).map_err(|_| {
            io::Error::other(format!(
                "{} is outside {}",
                dir.display(),
                self.root.display()
            ))
        })?;
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
            // Unless allowed, never descend through a link: every directory is a real one.
            let meta = if self.follow_links {
                fs::metadata(&current)
            } else {
                fs::symlink_metadata(&current)
            }
            .map_err(|e| annotate(e, "inspect", &current))?;
            if !meta.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", current.display()),
                ));
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
            // The file is safely in place; the stale-temp scan removes this later.
            tracing::warn!(path = %from.display(), error = %e, "cannot remove linked temp file");
        }
        Ok(())
    }
}

/// One directory's fsyncs, shared by the writers that wait at the same time.
#[derive(Debug, Default)]
pub(crate) struct DirSync {
    state: Mutex<DirSyncState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct DirSyncState {
    /// Generation of the last fsync started, and of the last completed.
    started: u64,
    completed: u64,
    running: bool,
    /// The generation and error of the last failed fsync.
    failed: Option<(u64, String)>,
}

impl DirSync {
    /// Returns once an fsync of `dir` that started after this call has
    /// completed. An error of that fsync (or of a later one: conservative,
    /// the client retries) is this caller's error.
    pub(crate) fn sync(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // The next fsync to start is the first that covers what we did.
        let mine = state.started + 1;
        loop {
            if state.completed >= mine {
                return match &state.failed {
                    Some((generation, error)) if *generation >= mine => Err(io::Error::other(
                        format!("fsync directory {}: {error}", dir.display()),
                    )),
                    _ => Ok(()),
                };
            }
            if state.running {
                state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            state.running = true;
            state.started += 1;
            let generation = state.started;
            drop(state);
            let result = fsync_dir(dir);
            state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.running = false;
            state.completed = generation;
            if let Err(e) = result {
                state.failed = Some((generation, e.to_string()));
            }
            self.done.notify_all();
        }
    }
}

pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| annotate(e, "fsync directory", dir))
}

/// Removes `path` if it is a regular file; never a directory or a link's target.
pub(crate) fn remove_if_file(path: &Path) {
    if fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
        && let Err(e) = fs::remove_file(path)
    {
        tracing::error!(path = %path.display(), error = %e, "cannot remove a failed write");
    }
}

/// A file at a path of the operator's choosing (`--output`, a cursor),
/// outside the trees above, written whole or not at all: a temp file beside
/// it, then on [`AtomicFile::commit`] fsync → rename over the path → fsync of
/// the directory. Readers see the old content or the new, never a part. The
/// temp file is removed unless committed.
#[derive(Debug)]
pub(crate) struct AtomicFile {
    path: PathBuf,
    temp: PathBuf,
    file: Option<io::BufWriter<File>>,
}

impl AtomicFile {
    pub(crate) fn create(path: &Path) -> io::Result<AtomicFile> {
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no file name", path.display()),
            )
        })?;
        let temp = parent_dir(path).join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| annotate(e, "create", &temp))?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            temp,
            file: Some(io::BufWriter::new(file)),
        })
    }

    pub(crate) fn commit(mut self) -> io::Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("already committed"))?
            .into_inner()
            .map_err(|e| annotate(e.into_error(), "write", &self.temp))?;
        file.sync_all()
            .map_err(|e| annotate(e, "fsync", &self.temp))?;
        drop(file);
        fs::rename(&self.temp, &self.path).map_err(|e| annotate(e, "rename to", &self.path))?;
        self.temp = PathBuf::new();
        fsync_dir(parent_dir(&self.path))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf).map_err(|e| annotate(e, "write", &self.temp)),
            None => Err(io::Error::other("already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        self.file.take();
        if !self.temp.as_os_str().is_empty() {
            remove_if_file(&self.temp);
        }
    }
}

/// The directory `path` is in (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Keeps the error's kind and says which step on which path failed.
pub(crate) fn annotate(e: io::Error, step: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{step} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_file_appears_whole_on_commit_and_not_at_all_without() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.csv");
        fs::write(&path, b"old").expect("old");
        let mut f = AtomicFile::create(&path).expect("create");
        f.write_all(b"new, ").expect("write");
        f.write_all(b"whole").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"old", "not before commit");
        f.commit().expect("commit");
        assert_eq!(fs::read(&path).expect("read"), b"new, whole");
        let mut dropped = AtomicFile::create(&path).expect("create");
        dropped.write_all(b"partial").expect("write");
        drop(dropped);
        assert_eq!(fs::read(&path).expect("read"), b"new, whole");
        let names: Vec<_> = fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
    }

    fn open(dir: &Path) -> DurableDir {
        let options = Options {
            temp_suffix: ".tmp",
            group: None,
            follow_links: false,
            what: "test dir",
        };
        DurableDir::open(dir, options).expect("open")
    }

    #[test]
    fn create_new_never_overwrites_and_replace_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = open(dir.path());
        let path = d.create_new(Path::new("a/b"), "x", b"one").expect("create");
        assert_eq!(fs::read(&path).expect("read"), b"one");
        let err = d
            .create_new(Path::new("a/b"), "x", b"two")
            .expect_err("taken");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        d.replace(Path::new("a/b"), "x", b"three").expect("replace");
        assert_eq!(fs::read(&path).expect("read"), b"three");
        let names: Vec<_> = fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp left: {names:?}");
    }

    #[test]
    fn commit_takes_the_first_free_candidate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = open(dir.path());
        d.create_new(Path::new("d"), "n0", b"first").expect("first");
        let mut temp = d.begin(Path::new("d"), "n").expect("begin");
        temp.write_all(b"second").expect("write");
        let (path, attempt) = d
            .commit(temp, |i| {
                (i < 5).then(|| (PathBuf::from("d"), format!("n{i}")))
            })
            .expect("commit");
        assert_eq!(
            (path.file_name().and_then(|n| n.to_str()), attempt),
            (Some("n1"), 1)
        );
        assert_eq!(fs::read(path).expect("read"), b"second");
    }

    #[test]
    fn concurrent_writers_share_directory_fsyncs_and_each_waits_for_a_later_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sync = Arc::new(DirSync::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (sync, path) = (sync.clone(), dir.path().to_path_buf());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        sync.sync(&path).expect("sync");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let state = sync.state.lock().expect("state");
        assert!(state.completed <= 160, "{}", state.completed);
        assert!(
            state.completed >= 20,
            "each waited for its own: {}",
            state.completed
        );
        drop(state);
        let before = sync.state.lock().expect("state").completed;
        sync.sync(dir.path()).expect("sync");
        assert_eq!(
            sync.state.lock().expect("state").completed,
            before + 1,
            "no reuse of an earlier fsync"
        );
        let gone = dir.path().join("gone");
        assert!(
            DirSync::default().sync(&gone).is_err(),
            "an error reaches the waiter"
        );
    }

    #[test]
    fn an_uncommitted_temp_removes_itself_and_links_are_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = open(&dir.path().join("root"));
        let mut temp = d.begin(Path::new("x"), "n").expect("begin");
        temp.write_all(b"partial").expect("write");
        drop(temp);
        assert_eq!(fs::read_dir(d.root().join("x")).expect("list").count(), 0);
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, d.root().join("link")).expect("symlink");
        let err = d
            .create_new(Path::new("link/y"), "n", b"x")
            .expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::NotADirectory, "{err}");
        assert_eq!(fs::read_dir(&outside).expect("list").count(), 0);
    }
}
