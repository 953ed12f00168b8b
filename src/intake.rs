//! What happens to a received body before the 200: decode its
//! `Content-Encoding`, check the XML of the XML actions, skip an identical
//! recent body, store it durably, record acknowledgements.
//!
//! A malformed body is answered 400 but not thrown away: it is kept under
//! `<data_dir>/rejected/YYYY/MM/DD/<stationid>_<time>` with the reason beside
//! it in `<same name>.reason`, so nothing that arrived is lost and nothing
//! malformed reaches the archive that pipelines read.
//!
//! Everything here blocks: it runs on tokio's blocking pool.

use std::path::PathBuf;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::archive::Stored;
use crate::dedup;
use crate::encoding::{self, Encoding};
use crate::error::RequestError;
use crate::queue::{self, AckOutcome};
use crate::request::{Action, StationId};
use crate::state::AppState;
use crate::xml::{self, Ack, Summary};

pub const REJECTED: &str = "rejected";

/// A body that was accepted (answered 200).
#[derive(Debug)]
pub struct Accepted {
    /// Where the body is: just stored, or stored earlier (a duplicate).
    pub stored: Stored,
    pub duplicate: bool,
    /// The decoded body, as stored.
    pub body: Bytes,
    pub summary: Option<Summary>,
    pub acks: Vec<(Ack, AckOutcome)>,
}

/// A body that was refused, and where it was kept if it was.
#[derive(Debug)]
pub struct Refusal {
    pub error: RequestError,
    pub kept: Option<PathBuf>,
}

impl From<RequestError> for Refusal {
    fn from(error: RequestError) -> Self {
        Refusal { error, kept: None }
    }
}

pub fn accept(
    state: &AppState,
    action: Action,
    station: &StationId,
    encoding: Encoding,
    raw: Bytes,
    received: DateTime<Utc>,
) -> Result<Accepted, Refusal> {
    let config = &state.config;
    let limit = if action.is_upload() {
        config.max_upload_bytes
    } else {
        config.max_body_bytes
    };
    let body = match encoding::decode(encoding, raw.clone(), limit) {
        Ok(body) => body,
        Err(error @ RequestError::BadEncoding(_)) => {
            // Kept as it arrived: it could not be decoded.
            return Err(reject(
                state, action, station, encoding, &raw, error, received,
            ));
        }
        Err(error) => return Err(error.into()),
    };
    if body.is_empty() {
        return Err(RequestError::EmptyBody.into());
    }
    let summary = match action.expected_root() {
        None => None,
        Some(root) => match xml::check(&body, root) {
            Ok(summary) => Some(summary),
            Err(reason) => {
                let error = RequestError::Malformed(reason);
                return Err(reject(
                    state, action, station, encoding, &body, error, received,
                ));
            }
        },
    };

    let hash = dedup::hash(&body);
    let (stored, duplicate) = match state.duplicates.find(
        &state.archive,
        action.name(),
        station.as_str(),
        &hash,
        received,
    ) {
        Some(earlier) => (earlier, true),
        None => {
            let stored = state
                .archive
                .store(action.name(), station.as_str(), received, &body)
                .map_err(|source| RequestError::Store {
                    source,
                    retry_after_secs: config.retry_after_secs,
                })?;
            if let Err(e) = state.duplicates.record(
                &state.archive,
                action.name(),
                station.as_str(),
                &hash,
                &stored,
                received,
            ) {
                // The body is stored; without the marker a resend is stored twice.
                tracing::warn!(error = %e, "cannot write a duplicate marker");
            }
            (stored, false)
        }
    };

    let mut acks = Vec::new();
    if let (Action::Acknowledge, Some(summary), false) = (action, &summary, duplicate) {
        let outcomes =
            queue::record_acks(&state.archive, station.as_str(), &summary.acks, received).map_err(
                |source| RequestError::Store {
                    source,
                    retry_after_secs: config.retry_after_secs,
                },
            )?;
        acks = summary.acks.iter().cloned().zip(outcomes).collect();
    }
    Ok(Accepted {
        stored,
        duplicate,
        body,
        summary,
        acks,
    })
}

/// Keeps a refused body under `rejected/` with its reason beside it. The
/// answer stays a 400 even if keeping fails (that is logged): the logger
/// keeps its data on anything but a 200.
fn reject(
    state: &AppState,
    action: Action,
    station: &StationId,
    encoding: Encoding,
    body: &[u8],
    error: RequestError,
    received: DateTime<Utc>,
) -> Refusal {
    let hash = dedup::hash(body);
    // A logger resends a refused body on every cycle: keep it once.
    if let Some(earlier) =
        state
            .duplicates
            .find(&state.archive, REJECTED, station.as_str(), &hash, received)
    {
        return Refusal {
            error,
            kept: Some(earlier.path),
        };
    }
    let kept = state
        .archive
        .store(REJECTED, station.as_str(), received, body)
        .and_then(|stored| {
            let reason = format!(
                "action: {}\nstation: {station}\nreceived: {}\ncontent-encoding: {}\nreason: {error}\n",
                action.name(),
                crate::response::iso_time(received),
                encoding.name(),
            );
            let dir = stored.path.parent().unwrap_or(state.archive.root());
            let relative = dir.strip_prefix(state.archive.root()).unwrap_or(dir);
            let name = format!("{}.reason", stored.path.file_name().unwrap_or_default().to_string_lossy());
            state.archive.create_durable(relative, &name, reason.as_bytes())?;
            let _ = state.duplicates.record(&state.archive, REJECTED, station.as_str(), &hash, &stored, received);
            Ok(stored.path)
        });
    match kept {
        Ok(path) => Refusal {
            error,
            kept: Some(path),
        },
        Err(e) => {
            tracing::error!(station_id = station.as_str(), error = %e, "cannot keep a rejected body");
            Refusal { error, kept: None }
        }
    }
}
