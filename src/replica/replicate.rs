//! `dlsrv replicate` (the unit `dlsrv-replica.service`): copies every
//! archived body whose catalog row is not yet replicated to the replica,
//! oldest first, and applies local retention at start and hourly.
//!
//! It is its own process beside the service: intake never waits for it,
//! and it can be stopped, killed or restarted at any time. Per body: read
//! the local file and check it against its catalog row (a damaged body is
//! never uploaded); `HEAD` its key with checksum mode; an object with the
//! same checksum is done, one with another is a conflict (reported, the
//! body stays local, the object is never "fixed"); no object: `PUT` with
//! the checksum and `If-None-Match: *` (a 412 means "look again"). Done
//! bodies get `replicated_utc` in the catalog, in one transaction per batch.
//! A kill between an upload and its row costs a `HEAD` at the next start,
//! never a second upload.
//!
//! The store down, slow, refusing or full: the batch stops, and the same
//! bodies are tried again after a growing pause (0.5 s to 30 s), with one
//! log line when the outage starts and one when it ends. The process's
//! counters go to `<state_dir>/replica.json` for the service's `/metrics`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Kind, Store, StoreError};
use crate::catalog::places::{self, Placed};
use crate::config::Config;
use crate::daemon::{Outage, handle_signals, pause, stopping};
use crate::durable::AtomicFile;
use crate::{catalog, layout, logging};

/// Bodies read from the catalog at a time (and recorded as replicated
/// together): with `replica_concurrency` of them in flight, a batch is a
/// few round trips, so progress shows in the catalog every few hundred ms.
const BATCH: usize = 64;
/// How long an idle replicator waits before it looks at the catalog again.
const POLL: Duration = Duration::from_millis(500);
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How often, at most, the state file is written.
const STATE_EVERY: Duration = Duration::from_secs(1);

/// What the replicator tells the service (`<state_dir>/replica.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ReplicaState {
    /// When the file was written (kept out of the comparison in `save`).
    pub(crate) updated_utc: String,
    /// Bodies uploaded (or found already there) by this process.
    pub(crate) replicated_bodies: u64,
    pub(crate) uploaded_bytes: u64,
    /// Failures by [`Kind`] name, by this process.
    pub(crate) errors: BTreeMap<String, u64>,
    /// When the current outage began (none: the store answers).
    pub(crate) outage_since_utc: Option<String>,
    /// Local files removed by retention, by this process.
    pub(crate) removed_bodies: u64,
}

/// The replicator's state, if one has run.
pub(crate) fn read_state(state_dir: &Path) -> Option<ReplicaState> {
    let bytes = std::fs::read(state_dir.join(layout::REPLICA_STATE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_state(state_dir: &Path, state: &ReplicaState) {
    let path = state_dir.join(layout::REPLICA_STATE);
    let written = AtomicFile::create(&path).and_then(|mut file| {
        let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        std::io::Write::write_all(&mut file, &json)?;
        file.commit()
    });
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the replicator's state");
    }
}

/// Holds `<state_dir>/replica.lock`: one replicator per archive.
fn lock(state_dir: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = state_dir.join(layout::REPLICA_LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!(
            "{}: another `dlsrv replicate` runs for this state_dir ({e})",
            path.display()
        )
    })
}

/// Spaces uploads out to `replica_max_bytes_per_sec` on average: each body
/// starts when the ones before it have had their share of the second.
struct Limiter {
    per_sec: u64,
    next: tokio::sync::Mutex<Instant>,
}

impl Limiter {
    fn new(per_sec: u64) -> Limiter {
        Limiter {
            per_sec,
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    async fn take(&self, bytes: usize) {
        if self.per_sec == 0 {
            return;
        }
        let start = {
            let mut next = self.next.lock().await;
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(bytes as f64 / self.per_sec as f64);
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }
}

/// `dlsrv replicate`: runs until SIGTERM.
pub(crate) fn run(config: &Config) -> anyhow::Result<()> {
    logging::init(&config.log_level)?;
    handle_signals()?;
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("cannot create state_dir {}", config.state_dir.display()))?;
    let _lock = lock(&config.state_dir)?;
    let store = Store::of(config)?;
    let retention = super::retention::Policy::of(config);
    if store.is_none() && retention.is_none() {
        tracing::info!("no [replica] and no retention configured: nothing to do");
        return Ok(());
    }
    let catalog_path = layout::catalog_path(&config.state_dir);
    let mut conn = catalog::open_writable(&catalog_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("dlsrv-replica")
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    tracing::info!(
        replica = store.as_ref().map(Store::url).as_deref().unwrap_or("none"),
        concurrency = config.replica_concurrency,
        max_bytes_per_sec = config.replica_max_bytes_per_sec,
        "dlsrv replicate started"
    );
    let mut worker = Worker {
        config,
        store,
        retention,
        runtime,
        state: ReplicaState::default(),
        outage: Outage::default(),
        limiter: Arc::new(Limiter::new(config.replica_max_bytes_per_sec)),
        last_state: Instant::now() - STATE_EVERY,
        saved: None,
    };
    let mut next_retention = Instant::now();
    while !stopping() {
        if Instant::now() >= next_retention {
            worker.retain(&conn);
            next_retention = Instant::now() + RETENTION_EVERY;
        }
        let wait = worker.replicate_some(&mut conn);
        worker.save(false);
        if let Some(wait) = wait {
            pause(wait.min(next_retention.saturating_duration_since(Instant::now())));
        }
    }
    worker.save(true);
    tracing::info!("dlsrv replicate stopped");
    Ok(())
}

struct Worker<'a> {
    config: &'a Config,
    store: Option<Store>,
    retention: Option<super::retention::Policy>,
    runtime: tokio::runtime::Runtime,
    state: ReplicaState,
    outage: Outage,
    limiter: Arc<Limiter>,
    last_state: Instant,
    /// The state as last written (without its time).
    saved: Option<ReplicaState>,
}

impl Worker<'_> {
    /// Writes the state file when what it says has changed (at most every
    /// [`STATE_EVERY`]; `now`: at once): an idle replicator writes nothing.
    fn save(&mut self, now: bool) {
        let changed = self.saved.as_ref() != Some(&self.state);
        if changed && (now || self.last_state.elapsed() >= STATE_EVERY) {
            let mut written = self.state.clone();
            written.updated_utc = layout::rfc3339(Utc::now());
            write_state(&self.config.state_dir, &written);
            self.saved = Some(self.state.clone());
            self.last_state = Instant::now();
        }
    }

    fn count(&mut self, kind: Kind) {
        *self.state.errors.entry(kind.name().to_owned()).or_default() += 1;
    }

    fn retain(&mut self, conn: &rusqlite::Connection) {
        let Some(policy) = &self.retention else {
            return;
        };
        let replica = self.store.as_ref().map(|s| (&self.runtime, s));
        match super::retention::apply(self.config, policy, conn, replica) {
            Ok(run) => self.state.removed_bodies += run.removed,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "retention failed; trying again in an hour")
            }
        }
    }

    /// Copies one batch; returns how long to wait before the next (`None`:
    /// go on at once).
    fn replicate_some(&mut self, conn: &mut rusqlite::Connection) -> Option<Duration> {
        let Some(store) = self.store.clone() else {
            return Some(RETENTION_EVERY);
        };
        let store = Arc::new(store);
        let batch = match places::unreplicated(conn, 0, BATCH) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the catalog; trying again");
                return Some(Duration::from_secs(5));
            }
        };
        if batch.is_empty() {
            return Some(POLL);
        }
        let data_dir = self.config.data_dir.clone();
        let results = self.runtime.block_on(copy_all(
            store,
            data_dir,
            batch,
            self.config.replica_concurrency,
            self.limiter.clone(),
        ));
        let (mut done, mut trouble) = (Vec::new(), None::<StoreError>);
        for (row, result) in results {
            match result {
                Ok(Some(bytes)) => {
                    self.state.uploaded_bytes += bytes;
                    done.push(row.id);
                }
                Ok(None) => done.push(row.id),
                Err(e) if e.transient() => {
                    self.count(e.kind);
                    trouble.get_or_insert(e);
                }
                Err(e) => {
                    self.count(e.kind);
                    tracing::error!(
                        path = row.path.as_str(),
                        station = row.station_id.as_str(),
                        kind = e.kind.name(),
                        error = %e,
                        "body NOT replicated: kept on the local disk and reported by `dlsrv verify --replica`"
                    );
                    if let Err(db) = places::mark_error(conn, row.id, &e.message) {
                        tracing::warn!(error = %db, "cannot record the body's replica error");
                    }
                }
            }
        }
        let now = layout::rfc3339(Utc::now());
        if let Err(e) = places::mark_replicated(conn, &done, &now) {
            // The objects are there: the next pass finds them with HEAD.
            tracing::warn!(error = %e, bodies = done.len(), "cannot record replicated bodies; trying again");
            return Some(Duration::from_secs(1));
        }
        self.state.replicated_bodies += done.len() as u64;
        match trouble {
            Some(e) => {
                let kind = e.kind;
                let wait = self.outage.failed(|| {
                    tracing::error!(kind = kind.name(), error = %e,
                        "replica unreachable or refusing: bodies wait on the local disk, intake is unaffected; retrying");
                });
                if self.state.outage_since_utc.is_none() {
                    self.state.outage_since_utc = Some(now);
                }
                Some(wait)
            }
            None => {
                self.outage.ended(|lasted, tries| {
                    tracing::warn!(
                        outage_secs = lasted.as_secs(),
                        tries,
                        "replica reachable again; catching up"
                    );
                });
                self.state.outage_since_utc = None;
                None
            }
        }
    }
}

/// Copies `batch` with `concurrency` bodies at once; stops starting new
/// ones after the store's first transient failure. Each result: `Ok(Some(
/// bytes))` uploaded, `Ok(None)` already there.
async fn copy_all(
    store: Arc<Store>,
    data_dir: PathBuf,
    batch: Vec<Placed>,
    concurrency: usize,
    limiter: Arc<Limiter>,
) -> Vec<(Placed, Result<Option<u64>, StoreError>)> {
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let trouble = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for row in batch {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        if trouble.load(Ordering::Relaxed) || stopping() {
            break;
        }
        let (store, data_dir, limiter, trouble) = (
            store.clone(),
            data_dir.clone(),
            limiter.clone(),
            trouble.clone(),
        );
        tasks.spawn(async move {
            let result = copy_one(&store, &data_dir, &row, &limiter).await;
            if result.as_ref().is_err_and(StoreError::transient) {
                trouble.store(true, Ordering::Relaxed);
            }
            drop(permit);
            (row, result)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(result) = joined {
            results.push(result);
        }
    }
    results
}

/// One body to the replica (see the module docs).
async fn copy_one(
    store: &Store,
    data_dir: &Path,
    row: &Placed,
    limiter: &Limiter,
) -> Result<Option<u64>, StoreError> {
    let body = read_checked(data_dir, row).await?;
    if let Some(head) = store.head(&row.path).await? {
        return already_there(store, row, &head, &body).await.map(|()| None);
    }
    limiter.take(body.len()).await;
    let size = body.len() as u64;
    if store.put_new(&row.path, body.clone()).await? {
        return Ok(Some(size));
    }
    // 412: someone was first; what is there now?
    match store.head(&row.path).await? {
        Some(head) => already_there(store, row, &head, &body).await.map(|()| None),
        None => Err(StoreError::new(
            Kind::Refused,
            format!(
                "PUT {}: refused as existing, yet not there",
                store.key(&row.path)
            ),
        )),
    }
}

/// The local body, as its catalog row says it is.
async fn read_checked(data_dir: &Path, row: &Placed) -> Result<Bytes, StoreError> {
    let (dir, rel) = (data_dir.to_path_buf(), row.path.clone());
    let read = tokio::task::spawn_blocking(move || layout::read_body(&dir, &rel))
        .await
        .map_err(|e| StoreError::new(Kind::Local, format!("cannot read the body: {e}")))?;
    let body = read.map_err(|e| {
        StoreError::new(
            Kind::Local,
            format!("the local body cannot be read ({e}), so it is not replicated"),
        )
    })?;
    let sha = hex::encode(Sha256::digest(&body));
    if sha != row.sha256 || body.len() as u64 != row.bytes {
        return Err(StoreError::new(
            Kind::Local,
            format!(
                "the local body differs from its catalog row ({} bytes, sha256 {sha}; the catalog: {} bytes, {}), so it is not replicated",
                body.len(),
                row.bytes,
                row.sha256
            ),
        ));
    }
    Ok(Bytes::from(body))
}

/// An object is at the body's key: the same bytes (done), or a conflict.
async fn already_there(
    store: &Store,
    row: &Placed,
    head: &super::Head,
    body: &[u8],
) -> Result<(), StoreError> {
    let same = match super::matches(head, body) {
        Some(same) => same,
        // No checksum kept with the object: compare the bytes.
        None => store
            .get(&row.path)
            .await
            .map(|got| got.is_some_and(|got| got.as_ref() == body))
            .or_else(|e| if e.transient() { Err(e) } else { Ok(false) })?,
    };
    if same {
        Ok(())
    } else {
        Err(StoreError::new(
            Kind::Conflict,
            format!(
                "{} holds other bytes ({} bytes, checksum {}) than the body ({} bytes, sha256 {}); left as it is",
                store.key(&row.path),
                head.size,
                head.checksum.as_deref().unwrap_or("none"),
                body.len(),
                row.sha256
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_limiter_spaces_bodies_to_the_cap_on_average() {
        let limiter = Limiter::new(1_000);
        let started = tokio::time::Instant::now();
        for _ in 0..5 {
            limiter.take(500).await;
        }
        // Five bodies of 500 bytes at 1,000 bytes/s: the fifth starts after 2 s.
        let waited = started.elapsed();
        assert!(
            (Duration::from_millis(1_990)..Duration::from_millis(2_100)).contains(&waited),
            "{waited:?}"
        );
        let free = Limiter::new(0);
        let started = tokio::time::Instant::now();
        free.take(1 << 30).await;
        assert!(
            started.elapsed() < Duration::from_millis(1),
            "no cap, no wait"
        );
    }
}
