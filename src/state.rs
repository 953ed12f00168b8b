//! What every request shares: the configuration, the archive (`data_dir`),
//! the service's own state (`state_dir`: the catalog, the command queue,
//! rejected bodies) and the metrics.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::access::Policy;
use crate::archive::{Archive, Stored};
use crate::budget::Budget;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::durable::{DurableDir, Options};
use crate::error::RequestError;
use crate::metrics::Metrics;
use crate::rejected::Quota;
use crate::request::Action;
use crate::space::FreeSpace;
use crate::{indexer, layout, xml};

/// The state of one running service.
#[derive(Debug)]
pub struct AppState {
    pub(crate) config: Config,
    pub(crate) archive: Archive,
    /// `state_dir`, written the same durable way as the archive.
    pub(crate) store: DurableDir,
    pub(crate) catalog: Catalog,
    pub(crate) metrics: Metrics,
    pub(crate) xml_limits: xml::Limits,
    /// Memory of request bodies (`max_inflight_body_bytes`).
    pub(crate) budget: Budget,
    /// Room left on the file systems (`min_free_bytes`, `min_free_inodes`).
    pub(crate) space: FreeSpace,
    /// The station page's charts, kept a minute (`crate::chart`).
    pub(crate) charts: crate::chart::cache::Cache,
    /// What `rejected/` may hold (`rejected_max_bytes`).
    pub(crate) rejected_quota: Quota,
    /// Who may speak for which station; replaced on SIGHUP.
    access: RwLock<Arc<Policy>>,
    /// With a shared catalog (`catalog_url`): the sync to PostgreSQL.
    pub(crate) shared: Option<crate::catalog::shared::Sync>,
    /// With a shared catalog: the command queue there.
    pub(crate) shared_queue: Option<crate::pgqueue::SharedQueue>,
}

impl AppState {
    /// Opens the archive and `state_dir` (creating them, checking they are
    /// writable), moves what an older installation kept in `data_dir` into
    /// `state_dir`, opens the catalog and reads the logins file. What can
    /// take long on a big archive (removing stale temp files, filling the
    /// catalog: [`AppState::start_up_work`]) is left to the caller, after start.
    pub fn new(config: Config) -> anyhow::Result<AppState> {
        let metrics = Metrics::new(
            config.metrics_max_stations,
            config.durability == crate::config::Durability::Group,
            config.replica.is_some(),
            config.shared_catalog().is_some(),
        );
        let archive = Archive::open(
            &config.data_dir,
            &config.temp_suffix,
            config.durability,
            metrics.group_flushes(),
        )?;
        let store = DurableDir::open(
            &config.state_dir,
            Options {
                temp_suffix: &config.temp_suffix,
                group: None,
                // The service's own files: never through a link.
                follow_links: false,
                what: "state_dir",
            },
        )?;
        if archive.root().starts_with(store.root()) || store.root().starts_with(archive.root()) {
            anyhow::bail!(
                "state_dir {} and data_dir {} must not be the same directory or inside each other",
                store.root().display(),
                archive.root().display()
            );
        }
        crate::migrate::legacy_state(archive.root(), &store)
            .context("cannot move the old state out of data_dir")?;
        let catalog = Catalog::open(
            &layout::catalog_path(store.root()),
            metrics.catalog_errors(),
            config.duplicate_window_days,
        )?;
        let config_url = config.shared_catalog().map(str::to_owned);
        let shared = match config.shared_catalog() {
            Some(url) => Some(crate::catalog::shared::Sync::start(
                &layout::catalog_path(store.root()),
                url,
                &config.host_name,
            )?),
            None => None,
        };
        let access = Policy::load(config.station_access, config.logins_file.as_deref())?;
        if !config.downloads_dir.is_dir() {
            tracing::info!(
                downloads_dir = %config.downloads_dir.display(),
                "downloads_dir does not exist: getconfiguration/getfirmware answer 404"
            );
        }
        let space = FreeSpace::new(
            vec![
                ("data_dir", archive.root().to_path_buf()),
                ("state_dir", store.root().to_path_buf()),
            ],
            config.min_free_bytes,
            config.min_free_inodes,
        );
        Ok(AppState {
            budget: Budget::new(
                config.max_inflight_body_bytes,
                std::time::Duration::from_secs(config.inflight_wait_secs),
            ),
            rejected_quota: Quota::new(config.rejected_max_bytes),
            space,
            charts: crate::chart::cache::Cache::default(),
            config,
            archive,
            store,
            catalog,
            metrics,
            xml_limits: xml::Limits::default(),
            access: RwLock::new(Arc::new(access)),
            shared_queue: shared
                .as_ref()
                .and(config_url.as_deref())
                .map(crate::pgqueue::SharedQueue::new),
            shared,
        })
    }

    /// Whether the shared catalog cannot be reached (rows wait locally).
    pub(crate) fn catalog_degraded(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.health.degraded.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Removes the temp files a crashed instance left behind (older than
    /// `stale_temp_age_secs`, so none of a running instance), logging each.
    /// Returns how many.
    pub fn remove_stale_temps(&self) -> usize {
        let age = self.config.stale_temp_age();
        match crate::cleanup::remove_stale_temps(&self.archive, &self.store, age) {
            Ok(removed) => {
                for path in &removed {
                    tracing::warn!(path = %path.display(), "removed a stale temp file");
                }
                tracing::info!(removed = removed.len(), "stale temp file scan done");
                removed.len()
            }
            // Not fatal: the archive itself is usable, the leftovers are inert.
            Err(e) => {
                tracing::error!(error = %e, "stale temp file scan failed");
                0
            }
        }
    }

    /// Adds the catalog rows missing for recent days (a crash between a
    /// store and its row, an upgrade), then retires the old duplicate
    /// markers, which the catalog replaces. Blocks; run it after start.
    pub fn catch_up(&self) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let summary = indexer::catch_up(
            self.archive.root(),
            self.archive.temp_suffix(),
            self.catalog.path(),
            &Action::archived(),
        )?;
        tracing::info!(
            indexed = summary.indexed,
            days = summary.days,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "catalog caught up with the archive: {summary}"
        );
        crate::migrate::retire_markers(self.archive.root());
        Ok(())
    }

    /// The start-up work that reads the whole archive, on a thread of its
    /// own while requests are served: [`AppState::remove_stale_temps`],
    /// then [`AppState::catch_up`]; its end is told to systemd as `STATUS=`
    /// (`systemctl status dlsrv` shows it).
    pub fn start_up_work(self: &Arc<Self>) -> Option<std::thread::JoinHandle<()>> {
        let state = self.clone();
        let spawned = std::thread::Builder::new()
            .name("dlsrv-start-up".into())
            .spawn(move || {
                crate::systemd::notify_or_log("STATUS=start-up work: removing stale temp files, catching up the catalog");
                let removed = state.remove_stale_temps();
                let caught_up = match state.catch_up() {
                    Ok(()) => "catalog caught up",
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "cannot catch up the catalog; run `dlsrv reindex`");
                        "catalog NOT caught up (see the log)"
                    }
                };
                crate::systemd::notify_or_log(&format!(
                    "STATUS=serving; start-up work done: {removed} stale temp file(s) removed, {caught_up}"
                ));
            });
        match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the start-up work");
                None
            }
        }
    }

    /// Reads `logins_file` again (SIGHUP). A file that does not parse is
    /// refused with an error in the log, and the map in force stays.
    pub fn reload_access(&self) {
        match Policy::load(
            self.config.station_access,
            self.config.logins_file.as_deref(),
        ) {
            Ok(policy) => {
                let logins = match &policy {
                    Policy::Map(map) => map.len(),
                    _ => 0,
                };
                *self.access.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
                tracing::info!(logins, "reloaded the logins file");
            }
            Err(e) => tracing::error!(
                error = %format!("{e:#}"),
                "the logins file does not load; the logins read before stay in force"
            ),
        }
    }

    /// `login` is a logger's: in the logins map, or (`station_access =
    /// "login"`) the id of a known station. The operators' pages refuse it.
    pub(crate) fn is_logger_login(&self, login: &str) -> bool {
        match &*self.access() {
            Policy::Map(map) => map.contains_key(login),
            Policy::Login => self
                .catalog
                .with_reader(|conn| {
                    conn.query_row(
                        "SELECT 1 FROM stations WHERE station_id = ?1",
                        [login],
                        |_| Ok(()),
                    )
                    .map(|()| true)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(false),
                        e => Err(e),
                    })
                })
                .unwrap_or(true),
            Policy::Any => false,
        }
    }

    /// Reads the stations from the catalog into the per-station gauges.
    pub(crate) fn refresh_station_metrics(&self) {
        let lateness = crate::status::Lateness::of(&self.config);
        let state_dir = self.state_dir().to_path_buf();
        match self.catalog.with_reader(|conn| {
            crate::status::stations(conn, &state_dir, lateness, Utc::now(), &[])
        }) {
            Ok(stations) => {
                self.metrics.stations_seen(&stations);
                let names: Vec<(String, String)> = stations
                    .iter()
                    .map(|s| (s.station_id.clone(), s.name.clone().unwrap_or_default()))
                    .collect();
                match self.catalog.with_reader(|conn| {
                    conn.prepare_cached("SELECT station_id, count(*) FROM alarms GROUP BY 1")?
                        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?
                        .collect::<rusqlite::Result<Vec<(String, u64)>>>()
                }) {
                    Ok(alarms) => self.metrics.station_details_seen(&names, &alarms),
                    Err(e) => tracing::warn!(error = %e, "cannot count the alarms for /metrics"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the stations for /metrics"),
        }
        let (room, min_bytes, min_inodes) = self.space.room();
        self.metrics.room_seen(&room, min_bytes, min_inodes);
        match self
            .catalog
            .with_reader(|conn| crate::feeds::lags(conn, &state_dir, Utc::now()))
        {
            Ok(lags) => self.metrics.feeds_seen(&lags),
            Err(e) => tracing::warn!(error = %e, "cannot read the export feeds' lag for /metrics"),
        }
        if self.config.replica.is_some() {
            match self
                .catalog
                .with_reader(|conn| crate::replica::lag(conn, Utc::now()))
            {
                Ok(lag) => {
                    let state =
                        crate::replica::replicate::read_state(&state_dir).unwrap_or_default();
                    let errors = crate::replica::Kind::ALL
                        .iter()
                        .map(|k| {
                            (
                                k.name().to_owned(),
                                state.errors.get(k.name()).copied().unwrap_or(0),
                            )
                        })
                        .collect();
                    self.metrics.replica_seen(&crate::metrics::ReplicaSeen {
                        pending: lag.pending,
                        lag_secs: lag.seconds,
                        refused: lag.refused,
                        errors,
                        outage: state.outage_since_utc.is_some(),
                        removed: state.removed_bodies,
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the replica's lag for /metrics"),
            }
        }
        if let Some(shared) = &self.shared {
            use std::sync::atomic::Ordering::Relaxed;
            self.metrics.shared_seen(
                shared.health.degraded.load(Relaxed),
                shared.health.unpushed.load(Relaxed),
            );
        }
        if let Some(last) = crate::verify::read_last(&state_dir) {
            self.metrics.verify_seen(&crate::metrics::VerifySeen {
                finished: layout::parse_time(&last.finished_utc).map_or(0, |t| t.timestamp()),
                checked: last.checked,
                mismatches: last.mismatches,
            });
        }
    }

    /// The policy in force.
    pub(crate) fn access(&self) -> Arc<Policy> {
        self.access
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The archive's root, resolved.
    pub fn data_dir(&self) -> &Path {
        self.archive.root()
    }

    /// `state_dir`, resolved.
    pub fn state_dir(&self) -> &Path {
        self.store.root()
    }

    /// File-system flushes so far, in group-commit mode.
    pub fn group_flushes(&self) -> Option<u64> {
        self.archive.group_flushes()
    }

    /// Waits until every catalog row queued so far is written.
    pub fn flush_catalog(&self) {
        self.catalog.flush();
    }

    /// The stored copy of an identical body of `station` and `action`
    /// received within `duplicate_window_days` of `now`, if its file is
    /// still there (or another host of a shared catalog stored it). A catalog that cannot answer means "none": the worst
    /// case is a second copy, never a lost body.
    pub(crate) fn find_duplicate(
        &self,
        action: Action,
        station: &str,
        sha256: &str,
        now: DateTime<Utc>,
    ) -> Option<Stored> {
        let days = self.config.duplicate_window_days;
        if days == 0 {
            return None;
        }
        let since = now - chrono::Duration::days(i64::from(days));
        match self
            .catalog
            .find_duplicate(action.name(), station, sha256, since)
        {
            // Another host's copy (a shared catalog) is on its disk, not
            // here: its row is the promise that it was stored durably.
            Ok(found) => found.into_iter().find_map(|(relative, received, foreign)| {
                let path = self.archive.root().join(&relative);
                (foreign || path.is_file()).then_some(Stored {
                    path,
                    relative,
                    received,
                })
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up duplicates in the catalog");
                None
            }
        }
    }
}

/// A 503 before anything is written when the file systems are nearly full.
pub(crate) async fn room_to_write(state: &Arc<AppState>) -> Result<(), RequestError> {
    match state.space.cached() {
        Some(answer) => answer,
        None => blocking(state, |s| s.space.refresh()).await?,
    }
}

/// Runs blocking file-system work on tokio's bounded blocking pool, inside
/// the request's span. A task that panicked is a failure to store (503).
pub(crate) async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&AppState) -> T + Send + 'static,
) -> Result<T, RequestError> {
    let state = Arc::clone(state);
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| f(&state)))
        .await
        .map_err(|e| {
            RequestError::store(std::io::Error::other(format!("blocking task failed: {e}")))
        })
}

/// Pings the watchdog at half its interval while the service can still
/// do file-system work: each ping passes through the blocking pool every
/// store uses and looks at `data_dir` and `state_dir`. A hung disk (or a
/// pool stuck on one) stops the pings, and systemd restarts the service.
pub(crate) async fn watchdog(interval: Duration, state: Arc<AppState>) {
    watchdog_with(interval, state, || {
        crate::systemd::notify_or_log("WATCHDOG=1")
    })
    .await;
}

async fn watchdog_with(interval: Duration, state: Arc<AppState>, ping: impl Fn()) {
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tick.tick().await;
        let state = state.clone();
        let probe = tokio::task::spawn_blocking(move || {
            std::fs::metadata(state.data_dir()).and_then(|_| std::fs::metadata(state.state_dir()))
        });
        match tokio::time::timeout(interval / 2, probe).await {
            Ok(Ok(Ok(_))) => ping(),
            Ok(Ok(Err(e))) => {
                tracing::error!(error = %e, "watchdog: cannot stat data_dir or state_dir; not pinging")
            }
            Ok(Err(e)) => tracing::error!(error = %e, "watchdog: probe failed; not pinging"),
            Err(_) => tracing::error!(
                "watchdog: the file-system thread pool did not answer within {} ms; not pinging",
                (interval / 2).as_millis()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_watchdog_pings_only_while_the_file_system_pool_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = crate::config::Config {
            data_dir: dir.path().join("data"),
            state_dir: dir.path().join("state"),
            ..crate::config::Config::default()
        };
        let state = Arc::new(AppState::new(config).expect("state"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let pings = Arc::new(AtomicUsize::new(0));
        runtime.block_on(async {
            let counted = pings.clone();
            tokio::spawn(watchdog_with(
                Duration::from_millis(100),
                state,
                move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                },
            ));
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(pings.load(Ordering::SeqCst) >= 2, "pings while healthy");
            // A hung disk: the pool's only thread is stuck.
            let hung =
                tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(700)));
            tokio::time::sleep(Duration::from_millis(100)).await;
            let before = pings.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(
                pings.load(Ordering::SeqCst),
                before,
                "no ping while the pool is stuck"
            );
            hung.await.expect("join");
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(pings.load(Ordering::SeqCst) > before, "pings again");
        });
    }
}
