//! What every request shares: the configuration, the archive (`data_dir`),
//! the service's own state (`state_dir`: the catalog, the command queue,
//! rejected bodies) and the metrics.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::actions::Action;
use crate::archive::{Archive, Stored};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::durable::{DurableDir, Options};
use crate::metrics::Metrics;
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
}

impl AppState {
    /// Opens the archive and `state_dir` (creating them, checking they are
    /// writable), moves what an older installation kept in `data_dir` into
    /// `state_dir`, opens the catalog, and removes temp files a crashed
    /// instance left behind, logging each. Filling the catalog from the
    /// archive ([`AppState::catch_up`]) is left to the caller, after start.
    pub fn new(config: Config) -> anyhow::Result<AppState> {
        let metrics = Metrics::new(
            config.metrics_max_stations,
            config.durability == crate::config::Durability::Group,
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
        match crate::cleanup::remove_stale_temps(&archive, &store, config.stale_temp_age()) {
            Ok(removed) => {
                for path in &removed {
                    tracing::warn!(path = %path.display(), "removed a stale temp file");
                }
                tracing::info!(removed = removed.len(), "stale temp file scan done");
            }
            // Not fatal: the archive itself is usable, the leftovers are inert.
            Err(e) => tracing::error!(error = %e, "stale temp file scan failed"),
        }
        if !config.downloads_dir.is_dir() {
            tracing::info!(
                downloads_dir = %config.downloads_dir.display(),
                "downloads_dir does not exist: getconfiguration/getfirmware answer 404"
            );
        }
        Ok(AppState {
            config,
            archive,
            store,
            catalog,
            metrics,
            xml_limits: xml::Limits::default(),
        })
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

    /// Runs [`AppState::catch_up`] on a thread of its own.
    pub fn catch_up_in_background(self: &Arc<Self>) {
        let state = self.clone();
        let spawned = std::thread::Builder::new()
            .name("dlsrv-catch-up".into())
            .spawn(move || {
                if let Err(e) = state.catch_up() {
                    tracing::error!(error = %format!("{e:#}"), "cannot catch up the catalog; run `dlsrv reindex`");
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the catalog catch-up");
        }
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
    /// still there. A catalog that cannot answer means "none": the worst
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
            Ok(found) => found.into_iter().find_map(|(relative, received)| {
                let path = self.archive.root().join(&relative);
                path.is_file().then_some(Stored {
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
