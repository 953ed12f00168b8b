//! The one intake pipeline of every POST action:
//!
//! ```text
//! body (whole in memory, or streamed in pieces)
//!   → decoder (Content-Encoding, crate::decode)
//!   → sink (hashes and counts; memory for documents, a temp file for uploads)
//!   → per action (crate::actions): XML check of documents, or none
//!   → duplicate check (the catalog) → durable store (the archive) → catalog row
//!   → the action's after_store (acknowledgements)
//! ```
//!
//! A document that is malformed (or cannot be decoded) is answered 400 and
//! kept under `state_dir/rejected/` ([`crate::rejected`]), so nothing that
//! arrived is lost and nothing malformed reaches the archive.
//!
//! Every step here blocks: it runs on the blocking pool, a piece at a time
//! for streamed bodies, so no thread waits for the network.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::actions::{Delivered, Kind};
use crate::archive::Stored;
use crate::budget::Reservation;
use crate::catalog::{DuplicateRow, RejectedRow, Row};
use crate::decode::{Decoder, Encoding};
use crate::durable::TempFile;
use crate::error::RequestError;
use crate::layout;
use crate::request::Action;
use crate::request::StationId;
use crate::state::AppState;
use crate::summary::Summary;
use crate::xml;

/// A body that was accepted (answered 200).
#[derive(Debug)]
pub(crate) struct Accepted {
    /// Where the body is: just stored, or stored earlier (a duplicate).
    pub(crate) stored: Stored,
    pub(crate) duplicate: bool,
    /// The decoded size.
    pub(crate) bytes: u64,
}

/// A body that was refused, and where it was kept if it was.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) error: RequestError,
    /// Relative to `state_dir`.
    pub(crate) kept: Option<String>,
}

impl From<RequestError> for Refusal {
    fn from(error: RequestError) -> Self {
        Refusal { error, kept: None }
    }
}

/// One body on its way through the pipeline.
pub(crate) struct Intake {
    action: Action,
    station: StationId,
    encoding: Encoding,
    limit: u64,
    body: Body,
}

enum Body {
    /// Held whole and not encoded: nothing to decode or copy.
    Whole(Bytes, Reservation),
    /// Held whole and encoded: decoded into memory at the end, the decoded
    /// bytes covered by the same reservation.
    Encoded(Bytes, Reservation),
    /// Arriving in pieces, decoded into a temp file as it comes.
    Streaming(Box<Decoder<Sink>>),
}

impl Intake {
    /// A body read whole into memory (the XML actions), `held` covering it.
    pub(crate) fn whole(
        state: &AppState,
        action: Action,
        station: StationId,
        encoding: Encoding,
        raw: Bytes,
        held: Reservation,
    ) -> Intake {
        let limit = action.body_limit(&state.config);
        let body = match encoding {
            Encoding::Identity => Body::Whole(raw, held),
            _ => Body::Encoded(raw, held),
        };
        Intake {
            action,
            station,
            encoding,
            limit,
            body,
        }
    }

    /// A body that arrives in pieces (the uploads): its temp file is created
    /// now, in the day directory of `started`.
    pub(crate) fn streamed(
        state: &AppState,
        action: Action,
        station: StationId,
        encoding: Encoding,
        started: DateTime<Utc>,
    ) -> Result<Intake, RequestError> {
        let limit = action.body_limit(&state.config);
        let temp = state
            .archive
            .begin(action.name(), station.as_str(), started)
            .map_err(RequestError::store)?;
        Ok(Intake {
            action,
            station,
            encoding,
            limit,
            body: Body::Streaming(Box::new(Decoder::new(encoding, Sink::file(temp, limit)))),
        })
    }

    /// Takes the next piece of a streamed body.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(), RequestError> {
        match &mut self.body {
            Body::Whole(..) | Body::Encoded(..) => Err(RequestError::store(io::Error::other(
                "internal: a whole body fed in pieces",
            ))),
            Body::Streaming(decoder) => decoder
                .write_all(data)
                .map_err(|e| failure(e, self.encoding)),
        }
    }

    /// The body is complete (received at `received`): check, store, record.
    pub(crate) fn finish(
        self,
        state: &AppState,
        received: DateTime<Utc>,
    ) -> Result<Accepted, Refusal> {
        let Intake {
            action,
            station,
            encoding,
            limit,
            body,
        } = self;
        // Released when this returns: the memory it covers is gone by then.
        let _held: Option<Reservation>;
        let (content, sha256, bytes) = match body {
            Body::Whole(raw, held) => {
                _held = Some(held);
                if raw.len() as u64 > limit {
                    return Err(RequestError::BodyTooLarge { limit }.into());
                }
                let sha256 = hex::encode(Sha256::digest(&raw));
                let len = raw.len() as u64;
                (Content::Memory(raw), sha256, len)
            }
            Body::Encoded(raw, held) => {
                let mut decoder = Decoder::new(encoding, Sink::memory(limit, held));
                let sink = match decoder.write_all(&raw).and_then(|()| decoder.finish()) {
                    Ok(sink) => sink,
                    // Kept as it arrived: it could not be decoded.
                    Err(e) => {
                        return Err(match failure(e, encoding) {
                            error @ RequestError::BadEncoding(_) => {
                                reject(state, action, &station, encoding, &raw, error, received)
                            }
                            error => error.into(),
                        });
                    }
                };
                let (content, sha256, bytes, held) = sink.into_content();
                _held = held;
                (content, sha256, bytes)
            }
            Body::Streaming(decoder) => {
                _held = None;
                let (content, sha256, bytes, _) = decoder
                    .finish()
                    .map_err(|e| failure(e, encoding))?
                    .into_content();
                (content, sha256, bytes)
            }
        };
        if bytes == 0 {
            return Err(RequestError::EmptyBody.into());
        }
        let name = action.name();
        let store = |content: Content, summary: Option<Arc<Summary>>| {
            // A duplicate drops a streamed body's temp file: nothing is stored twice.
            store_once(
                state,
                action,
                &station,
                Facts {
                    sha256,
                    bytes,
                    received,
                    summary,
                },
                || match content {
                    Content::Memory(body) => {
                        state.archive.store(name, station.as_str(), received, &body)
                    }
                    Content::File(temp) => {
                        state.archive.commit(temp, name, station.as_str(), received)
                    }
                },
            )
        };
        let (stored, duplicate) = match (content, &action.spec().kind) {
            (Content::Memory(body), Kind::Document { root, after_store }) => {
                let mut document = match xml::check(&body, root, &state.xml_limits) {
                    Ok(document) => document,
                    Err(reason) => {
                        let error = RequestError::Malformed(reason);
                        return Err(reject(
                            state, action, &station, encoding, &body, error, received,
                        ));
                    }
                };
                // Even an empty one: the catalog then has the same rows for
                // this body as `dlsrv reindex` would write.
                let summary = Some(Arc::new(std::mem::take(&mut document.summary)));
                let (stored, duplicate) = store(Content::Memory(body.clone()), summary)?;
                after_store(&Delivered {
                    state,
                    station: &station,
                    document: &document,
                    body: &body,
                    received: stored.received,
                    duplicate,
                })
                .map_err(RequestError::store)?;
                (stored, duplicate)
            }
            (content, _) => store(content, None)?,
        };
        Ok(Accepted {
            stored,
            duplicate,
            bytes,
        })
    }
}

/// The decoded body, ready to store.
enum Content {
    Memory(Bytes),
    File(TempFile),
}

/// What the catalog row of a body says besides where it went.
struct Facts {
    sha256: String,
    bytes: u64,
    received: DateTime<Utc>,
    summary: Option<Arc<Summary>>,
}

/// Answers an identical recent body with its earlier copy; stores anything
/// else durably and queues its catalog row.
fn store_once(
    state: &AppState,
    action: Action,
    station: &StationId,
    facts: Facts,
    store: impl FnOnce() -> io::Result<Stored>,
) -> Result<(Stored, bool), Refusal> {
    let Facts {
        sha256,
        bytes,
        received,
        summary,
    } = facts;
    if let Some(earlier) = state.find_duplicate(action, station.as_str(), &sha256, received) {
        state.catalog.record_duplicate(DuplicateRow {
            station_id: station.as_str().to_owned(),
            action: action.name().to_owned(),
            received,
            original: earlier.relative.clone(),
        });
        return Ok((earlier, true));
    }
    let stored = store().map_err(RequestError::store)?;
    state.catalog.record(Row {
        station_id: station.as_str().to_owned(),
        action: action.name().to_owned(),
        received: stored.received,
        path: stored.relative.clone(),
        bytes,
        sha256,
        summary,
    });
    Ok((stored, false))
}

/// Keeps a refused body; the answer stays the refusal either way.
fn reject(
    state: &AppState,
    action: Action,
    station: &StationId,
    encoding: Encoding,
    body: &[u8],
    error: RequestError,
    received: DateTime<Utc>,
) -> Refusal {
    let kept = keep_rejected(state, action, station, encoding, body, &error, received);
    Refusal { error, kept }
}

/// Why a write into the decoder failed: the sink's own reason, else bad data.
fn failure(e: io::Error, encoding: Encoding) -> RequestError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<SinkFailure>())
    {
        Some(SinkFailure::TooLarge(limit)) => RequestError::BodyTooLarge { limit: *limit },
        Some(SinkFailure::Busy(why)) => RequestError::Busy(why),
        Some(SinkFailure::Disk(message)) => {
            RequestError::store(io::Error::new(e.kind(), message.clone()))
        }
        None => {
            RequestError::BadEncoding(format!("body is not valid {} data: {e}", encoding.name()))
        }
    }
}

/// Where decoded bytes go.
enum Target {
    /// In memory, every byte of capacity covered by the reservation.
    Memory(Vec<u8>, Reservation),
    File(TempFile),
}

/// Why the sink refused bytes; travels inside the `io::Error` through the
/// decoder, so it is never mistaken for bad encoded data.
#[derive(Debug)]
enum SinkFailure {
    TooLarge(u64),
    Busy(&'static str),
    Disk(String),
}

impl std::fmt::Display for SinkFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkFailure::TooLarge(limit) => write!(f, "body larger than {limit} bytes"),
            SinkFailure::Busy(why) => f.write_str(why),
            SinkFailure::Disk(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for SinkFailure {}

/// Counts, hashes and keeps the decoded body, within the limit.
struct Sink {
    target: Target,
    hasher: Sha256,
    written: u64,
    limit: u64,
}

impl Sink {
    fn memory(limit: u64, held: Reservation) -> Sink {
        Sink::new(Target::Memory(Vec::new(), held), limit)
    }

    fn file(temp: TempFile, limit: u64) -> Sink {
        Sink::new(Target::File(temp), limit)
    }

    fn new(target: Target, limit: u64) -> Sink {
        Sink {
            target,
            hasher: Sha256::new(),
            written: 0,
            limit,
        }
    }

    /// The content, its SHA-256, its size and the reservation covering it.
    fn into_content(self) -> (Content, String, u64, Option<Reservation>) {
        let (content, held) = match self.target {
            Target::Memory(buf, held) => (Content::Memory(Bytes::from(buf)), Some(held)),
            Target::File(temp) => (Content::File(temp), None),
        };
        (
            content,
            hex::encode(self.hasher.finalize()),
            self.written,
            held,
        )
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                SinkFailure::TooLarge(self.limit),
            ));
        }
        match &mut self.target {
            Target::Memory(v, held) => {
                let needed = v.len() + buf.len();
                if v.capacity() < needed {
                    // Doubling, within the limit; covered before it is allocated.
                    let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
                    let capacity = (v.capacity() * 2).clamp(needed, limit.max(needed));
                    if let Err(e) = held.try_cover(capacity as u64) {
                        let why = match e {
                            RequestError::Busy(why) => why,
                            _ => "no room in max_inflight_body_bytes",
                        };
                        return Err(io::Error::new(
                            io::ErrorKind::OutOfMemory,
                            SinkFailure::Busy(why),
                        ));
                    }
                    v.reserve_exact(capacity - v.len());
                }
                v.extend_from_slice(buf);
            }
            Target::File(temp) => temp
                .write_all(buf)
                .map_err(|e| io::Error::new(e.kind(), SinkFailure::Disk(e.to_string())))?,
        }
        self.hasher.update(buf);
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("action", &self.action)
            .field("station", &self.station)
            .field("encoding", &self.encoding)
            .finish_non_exhaustive()
    }
}

/// Keeps `body`; returns where (relative to `state_dir`), or `None` when
/// it could not be kept (or `rejected_max_bytes` is reached).
fn keep_rejected(
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
            (attempt < crate::rejected::MAX_NAME_ATTEMPTS).then(|| {
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
            crate::logging::printable(&reason, 4096),
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
