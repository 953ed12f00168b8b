//! Refused bodies, kept in `state_dir`, never in the archive:
//! `rejected/YYYY/MM/DD/<stationid>_<time>` holds the body as it arrived
//! (or as decoded, when only its XML was wrong), and `<same name>.reason`
//! says why, with the action and `Content-Encoding`. The catalog's
//! `rejected` table lists them. A logger resends a refused body on every
//! cycle: an identical one of the same station is kept once per
//! `duplicate_window_days`.
//!
//! Keeping ([`crate::intake`], which refuses them) is best effort: the answer stays the refusal (a 4xx) whether or
//! not the copy could be written; a failure is logged.
//!
//! What is kept is bounded by `rejected_max_bytes`. Beyond it a refused
//! body is answered as ever but not kept (the outcome event has no `kept`,
//! `dlsrv_rejected_not_kept_total` counts it, a warning says so at most
//! once a minute): the earliest evidence stays, nothing is deleted behind
//! the operator's back. The size kept is measured from the directory
//! (so other instances' bodies and an operator's clean-up count) at most
//! once a minute, and counted in between.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::layout;

/// How many names a kept body tries (one microsecond apart).
pub(crate) const MAX_NAME_ATTEMPTS: u32 = 1_000;

/// How long a measured size of `rejected/` is trusted.
const REMEASURE: Duration = Duration::from_secs(60);

/// The bound on what `rejected/` holds.
#[derive(Debug)]
pub(crate) struct Quota {
    max_bytes: u64,
    state: Mutex<QuotaState>,
}

#[derive(Debug, Default)]
struct QuotaState {
    /// Bytes held, and when they were last measured.
    used: Option<(Instant, u64)>,
    warned: Option<Instant>,
}

impl Quota {
    pub(crate) fn new(max_bytes: u64) -> Quota {
        Quota {
            max_bytes,
            state: Mutex::new(QuotaState::default()),
        }
    }

    /// Room for `len` more bytes under `state_dir`? Counts them if so.
    pub(crate) fn admit(&self, state_dir: &Path, len: u64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let used = match state.used {
            Some((at, used)) if at.elapsed() < REMEASURE => used,
            _ => size_of(&state_dir.join(layout::REJECTED)),
        };
        if used.saturating_add(len) > self.max_bytes {
            state.used = Some((Instant::now(), used));
            if state.warned.is_none_or(|at| at.elapsed() >= REMEASURE) {
                state.warned = Some(Instant::now());
                tracing::warn!(
                    kept_bytes = used,
                    "rejected bodies hold {used} bytes, rejected_max_bytes is {}: refused bodies are not kept until some are removed",
                    self.max_bytes
                );
            }
            return false;
        }
        let measured_at = state.used.map_or_else(Instant::now, |(at, _)| at);
        state.used = Some((measured_at, used + len));
        true
    }
}

/// Bytes of the regular files below `dir`, links not followed.
fn size_of(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}
