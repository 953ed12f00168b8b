//! The station page's rendered charts, kept [`FRESH`] per station and
//! window: a page view within the minute does not read the archive again.
//! Apart from [`super`] so that the service's state can hold it without
//! depending on the archive's reader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a station's charts are served from memory.
pub(crate) const FRESH: Duration = Duration::from_secs(60);
/// Stations (and windows) whose charts are kept at once.
const CACHED: usize = 64;

/// A station id and a window in days.
type Key = (String, u32);

/// Rendered charts by station and window, each kept [`FRESH`].
#[derive(Debug, Default)]
pub(crate) struct Cache {
    kept: Mutex<HashMap<Key, (Instant, Arc<String>)>>,
}

impl Cache {
    /// The charts of `station` over the last `days`, from memory when fresh.
    pub(crate) fn get_or_render(
        &self,
        key: Key,
        render: impl FnOnce() -> rusqlite::Result<String>,
    ) -> rusqlite::Result<Arc<String>> {
        {
            let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, html)) = kept.get(&key)
                && at.elapsed() < FRESH
            {
                return Ok(Arc::clone(html));
            }
        }
        let html = Arc::new(render()?);
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|_, (at, _)| at.elapsed() < FRESH);
        if kept.len() >= CACHED
            && let Some(oldest) = kept
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
        {
            kept.remove(&oldest);
        }
        kept.insert(key, (Instant::now(), Arc::clone(&html)));
        Ok(html)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_serves_fresh_charts_without_rendering_again() {
        let cache = Cache::default();
        let key = ("S1".to_owned(), 7);
        let first = cache
            .get_or_render(key.clone(), || Ok("a".into()))
            .expect("render");
        let second = cache
            .get_or_render(key, || panic!("rendered again"))
            .expect("cached");
        assert_eq!(first, second);
    }
}
