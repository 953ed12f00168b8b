//! What every request shares: the configuration and the archive.

use crate::archive::Archive;
use crate::config::Config;

#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub archive: Archive,
}

impl AppState {
    /// Opens the archive (creating `data_dir`, checking it is writable) and
    /// removes temp files a crashed instance left behind, logging each.
    pub fn new(config: Config) -> anyhow::Result<AppState> {
        let archive = Archive::open(&config.data_dir, &config.temp_suffix)?;
        match archive.remove_stale_temps(config.stale_temp_age()) {
            Ok(removed) => {
                for path in &removed {
                    tracing::warn!(path = %path.display(), "removed a stale temp file");
                }
                tracing::info!(removed = removed.len(), "stale temp file scan done");
            }
            // Not fatal: the archive itself is usable, the leftovers are inert.
            Err(e) => tracing::error!(error = %e, "stale temp file scan failed"),
        }
        Ok(AppState { config, archive })
    }
}
