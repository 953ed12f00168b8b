//! Refused bodies, kept in `state_dir`, never in the archive:
//! `rejected/YYYY/MM/DD/<stationid>_<time>` holds the body as it arrived
//! (or as decoded, when only its XML was wrong), and `<same name>.reason`
//! says why, with the action and `Content-Encoding`. The catalog's
//! `rejected` table lists them. A logger resends a refused body on every
//! cycle: an identical one of the same station is kept once per
//! `duplicate_window_days`.
//!
//! Keeping is best effort: the answer stays the refusal (a 4xx) whether or
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

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::actions::Action;
use crate::catalog::{RejectedRow, Row};
use crate::decode::Encoding;
use crate::error::RequestError;
use crate::layout;
use crate::request::StationId;
use crate::state::AppState;

/// How many names a kept body tries (one microsecond apart).
const MAX_NAME_ATTEMPTS: u32 = 1_000;

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
    fn admit(&self, state_dir: &Path, len: u64) -> bool {
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

/// Keeps `body`; returns where (relative to `state_dir`), or `None` when
/// it could not be kept (or `rejected_max_bytes` is reached).
pub(crate) fn keep(
    state: &AppState,
    action: Action,
    station: &StationId,
    encoding: Encoding,
    body: &[u8],
    error: &RequestError,
    received: DateTime<Utc>,
) -> Option<String> {
    let sha256 = hex::encode(Sha256::digest(body));
    let window = chrono::Duration::days(i64::from(state.config.duplicate_window_days.max(1)));
    match state
        .catalog
        .find_rejected(station.as_str(), &sha256, received - window)
    {
        Ok(earlier) => {
            if let Some(path) = earlier
                .into_iter()
                .find(|p| state.store.root().join(p).is_file())
            {
                return Some(path);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot look up earlier rejected bodies"),
    }
    let reason = error.to_string();
    if !state
        .rejected_quota
        .admit(state.store.root(), body.len() as u64)
    {
        state.metrics.rejected_not_kept();
        return None;
    }
    let kept = (|| {
        let mut temp = state.store.begin(
            &layout::rejected_day_dir(received),
            &layout::file_name(station.as_str(), received),
        )?;
        temp.write_all(body)?;
        let at = |attempt: u32| received + chrono::Duration::microseconds(i64::from(attempt));
        let (path, attempt) = state.store.commit(temp, |attempt| {
            (attempt < MAX_NAME_ATTEMPTS).then(|| {
                let t = at(attempt);
                (
                    layout::rejected_day_dir(t),
                    layout::file_name(station.as_str(), t),
                )
            })
        })?;
        let note = format!(
            "action: {}\nstation: {station}\nreceived: {}\ncontent-encoding: {}\nreason: {}\n",
            action.name(),
            layout::rfc3339(at(attempt)),
            encoding.name(),
            crate::actions::printable(&reason, 4096),
        );
        let dir = path.parent().unwrap_or(state.store.root());
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rel_dir = dir
            .strip_prefix(state.store.root())
            .unwrap_or(Path::new(""));
        state.store.create_new(
            rel_dir,
            &format!("{name}{}", layout::REASON_SUFFIX),
            note.as_bytes(),
        )?;
        Ok::<_, std::io::Error>((path, at(attempt)))
    })();
    match kept {
        Ok((path, at)) => {
            let relative = layout::relative(state.store.root(), &path);
            state.catalog.record_rejected(RejectedRow {
                body: Row {
                    station_id: station.as_str().to_owned(),
                    action: action.name().to_owned(),
                    received: at,
                    path: relative.clone(),
                    bytes: body.len() as u64,
                    sha256,
                    summary: None,
                },
                reason,
            });
            Some(relative)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot keep a rejected body");
            None
        }
    }
}
