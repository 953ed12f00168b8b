//! Room left on the file systems of `data_dir` and `state_dir`
//! (`min_free_bytes`, `min_free_inodes`): below either, every request that
//! would write answers 503 before it writes, so the file system never fills
//! up under the service and the host (and NGINX, its logs, the journal)
//! keeps working. The logger keeps its data and retries.
//!
//! `statvfs` is asked at most once a second, on the blocking pool; the
//! change from enough room to too little (and back) is logged once.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::RequestError;

/// How long one answer of `statvfs` is trusted.
const FRESH: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct FreeSpace {
    dirs: Vec<(&'static str, PathBuf)>,
    min_bytes: u64,
    min_inodes: u64,
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl FreeSpace {
    pub(crate) fn new(dirs: Vec<(&'static str, PathBuf)>, min_bytes: u64, min_inodes: u64) -> Self {
        FreeSpace {
            dirs,
            min_bytes,
            min_inodes,
            last: Mutex::new(None),
        }
    }

    /// The last answer if it is fresh.
    pub(crate) fn cached(&self) -> Option<Result<(), RequestError>> {
        if self.min_bytes == 0 && self.min_inodes == 0 {
            return Some(Ok(()));
        }
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some((at, result)) if at.elapsed() < FRESH => Some(result.clone().map_err(low)),
            _ => None,
        }
    }

    /// Asks the file systems (blocks: call it on the blocking pool).
    pub(crate) fn refresh(&self) -> Result<(), RequestError> {
        if let Some(answer) = self.cached() {
            return answer;
        }
        let result = self.measure();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let was_low = matches!(&*last, Some((_, Err(_))));
        match (&result, was_low) {
            (Err(why), false) => {
                tracing::error!("{why}: answering 503 to every store until there is room again")
            }
            (Ok(()), true) => tracing::info!("room on the file systems again: storing"),
            _ => {}
        }
        *last = Some((Instant::now(), result.clone()));
        result.map_err(low)
    }

    /// Room on each file system now, for `/metrics` (blocks), and the limits.
    pub(crate) fn room(&self) -> (Vec<crate::metrics::RoomSeen>, u64, u64) {
        let room = self
            .dirs
            .iter()
            .filter_map(|(what, dir)| {
                let stat = nix::sys::statvfs::statvfs(dir.as_path()).ok()?;
                Some(crate::metrics::RoomSeen {
                    dir: what,
                    free_bytes: stat.blocks_available().saturating_mul(stat.fragment_size()),
                    free_inodes: (stat.files() > 0).then(|| stat.files_available()),
                })
            })
            .collect();
        (room, self.min_bytes, self.min_inodes)
    }

    fn measure(&self) -> Result<(), String> {
        for (what, dir) in &self.dirs {
            let stat = match nix::sys::statvfs::statvfs(dir.as_path()) {
                Ok(stat) => stat,
                // Cannot tell: let the write itself find out.
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "statvfs failed");
                    continue;
                }
            };
            let free_bytes = stat.blocks_available().saturating_mul(stat.fragment_size());
            let free_inodes = stat.files_available();
            if free_bytes < self.min_bytes {
                return Err(format!(
                    "{what} {} has {free_bytes} bytes free, less than min_free_bytes ({})",
                    dir.display(),
                    self.min_bytes
                ));
            }
            // File systems without inode limits (btrfs) report 0 files in all.
            if stat.files() > 0 && free_inodes < self.min_inodes {
                return Err(format!(
                    "{what} {} has {free_inodes} inodes free, less than min_free_inodes ({})",
                    dir.display(),
                    self.min_inodes
                ));
            }
        }
        Ok(())
    }
}

fn low(_why: String) -> RequestError {
    RequestError::Busy(crate::error::DISK_LOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_little_room_is_refused_and_remembered_for_a_second() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roomy = FreeSpace::new(vec![("data_dir", dir.path().to_path_buf())], 1, 1);
        assert!(roomy.refresh().is_ok());
        assert!(matches!(roomy.cached(), Some(Ok(()))));
        let full = FreeSpace::new(vec![("data_dir", dir.path().to_path_buf())], u64::MAX, 0);
        assert!(full.cached().is_none(), "not asked yet");
        assert!(matches!(full.refresh(), Err(RequestError::Busy(_))));
        assert!(matches!(full.cached(), Some(Err(RequestError::Busy(_)))));
        let off = FreeSpace::new(vec![("data_dir", dir.path().to_path_buf())], 0, 0);
        assert!(matches!(off.cached(), Some(Ok(()))), "0 and 0: never asks");
    }
}
