//! What every request shares: the configuration, the archive and its
//! duplicate check.

use crate::archive::Archive;
use crate::config::Config;
use crate::dedup::Duplicates;
use crate::metrics::Metrics;

#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub archive: Archive,
    pub duplicates: Duplicates,
    pub metrics: Metrics,
}

impl AppState {
    /// Opens the archive (creating `data_dir`, checking it is writable),
    /// removes temp files a crashed instance left behind, logging each, and
    /// prunes duplicate markers older than the window.
    pub fn new(config: Config) -> anyhow::Result<AppState> {
        let archive = Archive::open_with(&config.data_dir, &config.temp_suffix, config.durability)?;
        match crate::cleanup::remove_stale_temps(&archive, config.stale_temp_age()) {
            Ok(removed) => {
                for path in &removed {
                    tracing::warn!(path = %path.display(), "removed a stale temp file");
                }
                tracing::info!(removed = removed.len(), "stale temp file scan done");
            }
            // Not fatal: the archive itself is usable, the leftovers are inert.
            Err(e) => tracing::error!(error = %e, "stale temp file scan failed"),
        }
        let duplicates = Duplicates::new(config.duplicate_window_days);
        match duplicates.prune(&archive, chrono::Utc::now()) {
            Ok(days) => tracing::info!(days, "pruned old duplicate markers"),
            Err(e) => tracing::warn!(error = %e, "cannot prune duplicate markers"),
        }
        if !config.downloads_dir.is_dir() {
            tracing::info!(
                downloads_dir = %config.downloads_dir.display(),
                "downloads_dir does not exist: getconfiguration/getfirmware answer 404"
            );
        }
        let metrics = Metrics::new(config.metrics_max_stations);
        Ok(AppState {
            config,
            archive,
            duplicates,
            metrics,
        })
    }
}
