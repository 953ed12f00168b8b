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

use std::path::Path;

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

/// Keeps `body`; returns where (relative to `state_dir`), or `None` when
/// it could not be kept.
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
