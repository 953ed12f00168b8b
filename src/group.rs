//! Group commit (`durability = "group"`): many files made durable by one
//! flush of the file system instead of one `fsync` each.
//!
//! A writer calls [`SyncBarrier::sync`] and waits until a `syncfs(2)` of the
//! archive's file system that *started after the call* has completed: that
//! flush covers everything the writer wrote before. One committer thread
//! runs the flushes back to back; every writer that arrives while a flush
//! runs is covered by the next one, so under load one flush serves a whole
//! batch. The archive uses it twice per file: after writing the temp file
//! (data durable) and after renaming it into place (name durable).
//!
//! A failed flush fails every writer waiting on it (they answer 503). The
//! check is conservative: a writer woken after a later flush failed also
//! fails, which is safe: the logger sends again.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use prometheus_client::metrics::counter::Counter;

#[derive(Debug, Default)]
struct State {
    /// The highest flush generation a writer waits for.
    requested: u64,
    /// The generation of the flush running or last started.
    started: u64,
    /// The generation of the last completed flush.
    completed: u64,
    /// The generation and error of the last failed flush.
    failed: Option<(u64, String)>,
    /// Total flushes, for the log and tests.
    flushes: u64,
    stop: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the committer (work requested, or stop).
    work: Condvar,
    /// Wakes writers (a flush completed).
    done: Condvar,
}

/// The committer thread and its handle; dropped, the thread stops.
#[derive(Debug)]
pub(crate) struct SyncBarrier {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl SyncBarrier {
    /// Starts the committer for the file system holding `dir`.
    #[cfg(test)]
    fn start(dir: &Path) -> io::Result<SyncBarrier> {
        Self::start_counted(dir, Counter::default())
    }

    /// Starts the committer; `counter` counts its flushes (for `/metrics`).
    pub(crate) fn start_counted(
        dir: &Path,
        counter: Counter<u64, AtomicU64>,
    ) -> io::Result<SyncBarrier> {
        let fs = File::open(dir)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let committer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("dlsrv-group-commit".into())
            .spawn(move || run(&committer, &fs, &counter))?;
        Ok(SyncBarrier {
            shared,
            thread: Some(thread),
        })
    }

    /// Returns once a flush that started after this call has completed.
    pub(crate) fn sync(&self) -> io::Result<()> {
        let mut state = lock(&self.shared.state);
        let mine = state.started + 1;
        state.requested = state.requested.max(mine);
        self.shared.work.notify_one();
        while state.completed < mine && !state.stop {
            state = self
                .shared
                .done
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        if state.completed < mine {
            return Err(io::Error::other("group commit stopped"));
        }
        match &state.failed {
            Some((generation, error)) if *generation >= mine => {
                Err(io::Error::other(format!("syncfs failed: {error}")))
            }
            _ => Ok(()),
        }
    }

    /// How many flushes ran so far.
    pub(crate) fn flushes(&self) -> u64 {
        lock(&self.shared.state).flushes
    }
}

impl Drop for SyncBarrier {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.work.notify_all();
        self.shared.done.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared, fs: &File, counter: &Counter<u64, AtomicU64>) {
    let mut state = lock(&shared.state);
    loop {
        while state.requested <= state.started && !state.stop {
            state = shared.work.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.stop {
            return;
        }
        state.started += 1;
        let generation = state.started;
        drop(state);
        let result = nix::unistd::syncfs(fs);
        state = lock(&shared.state);
        state.completed = generation;
        state.flushes += 1;
        counter.inc();
        if let Err(e) = result {
            tracing::error!(error = %e, "syncfs failed: the waiting writes answer 503");
            state.failed = Some((generation, e.to_string()));
        }
        shared.done.notify_all();
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writers_share_flushes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let barrier = Arc::new(SyncBarrier::start(dir.path()).expect("start"));
        let writers: Vec<_> = (0..32)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        barrier.sync().expect("sync");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        let flushes = barrier.flushes();
        assert!(
            flushes >= 10,
            "every writer waited for flushes of its own: {flushes}"
        );
        assert!(
            flushes < 320,
            "flushes were shared: {flushes} for 320 syncs"
        );
    }

    #[test]
    fn a_sync_waits_for_a_flush_that_started_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let barrier = SyncBarrier::start(dir.path()).expect("start");
        barrier.sync().expect("first");
        let before = barrier.flushes();
        barrier.sync().expect("second");
        assert!(barrier.flushes() > before, "no reuse of an earlier flush");
    }
}
