//! What happens to a received body before the 200: decode its
//! `Content-Encoding`, check the XML of the XML actions, skip an identical
//! recent body, store it durably, record acknowledgements.
//!
//! A malformed body is answered 400 but not thrown away: it is kept under
//! `<data_dir>/rejected/YYYY/MM/DD/<stationid>_<time>` with the reason beside
//! it in `<same name>.reason`, so nothing that arrived is lost and nothing
//! malformed reaches the archive that pipelines read.
//!
//! Binary uploads (`sendconfiguration`, `sendfirmware`) are not held in
//! memory: [`accept_stream`] receives them piece by piece and writes them,
//! decoded and hashed on the way, straight into their temp file.
//!
//! Everything here blocks: it runs on tokio's blocking pool.

use std::cell::RefCell;
use std::io::{self, Write};
use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use flate2::write::{DeflateDecoder, GzDecoder, ZlibDecoder};
use sha2::{Digest, Sha256};

use crate::archive::{Stored, TempFile};
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
    /// The decoded size.
    pub bytes: usize,
    /// The decoded body, when it was held in memory (not for streamed uploads).
    pub body: Option<Bytes>,
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
            mark(state, action, station, &hash, &stored, received);
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
        bytes: body.len(),
        body: Some(body),
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

/// One piece of a streamed body, from the connection to [`accept_stream`].
#[derive(Debug)]
pub enum Piece {
    Data(Bytes),
    /// The body is complete; the receipt time.
    End(DateTime<Utc>),
}

/// Like [`accept`], for a binary upload arriving in pieces: decoded, hashed
/// and written to its temp file as it comes, so memory does not grow with
/// the body. A channel closed before `End` means the request was abandoned:
/// the temp file is removed.
pub fn accept_stream(
    state: &AppState,
    action: Action,
    station: &StationId,
    encoding: Encoding,
    pieces: &mut tokio::sync::mpsc::Receiver<Piece>,
    started: DateTime<Utc>,
) -> Result<Accepted, Refusal> {
    let config = &state.config;
    let store_error = |source| RequestError::Store {
        source,
        retry_after_secs: config.retry_after_secs,
    };
    let temp = state
        .archive
        .begin(action.name(), station.as_str(), started)
        .map_err(store_error)?;
    let failure = Rc::new(RefCell::new(None));
    let mut writer = Some(Hashing {
        temp,
        hasher: Sha256::new(),
        written: 0,
        limit: config.max_upload_bytes,
        failure: failure.clone(),
    });
    let mut sink: Option<Sink> = None;
    let mut head = Vec::new(); // the first bytes, until deflate's wrapping is known
    let fail = |e: io::Error| -> Refusal {
        match failure.borrow_mut().take() {
            Some(Failure::TooLarge) => RequestError::BodyTooLarge {
                limit: config.max_upload_bytes,
            },
            Some(Failure::Disk(source)) => store_error(source),
            None => RequestError::BadEncoding(format!(
                "body is not valid {} data: {e}",
                encoding.name()
            )),
        }
        .into()
    };
    let received = loop {
        match pieces.blocking_recv() {
            Some(Piece::Data(data)) => match &mut sink {
                Some(sink) => sink.write_all(&data).map_err(fail)?,
                None => {
                    head.extend_from_slice(&data);
                    if encoding != Encoding::Deflate || head.len() >= 2 {
                        let mut started_sink =
                            Sink::new(encoding, &head, writer.take().ok_or_else(lost)?);
                        started_sink
                            .write_all(&std::mem::take(&mut head))
                            .map_err(fail)?;
                        sink = Some(started_sink);
                    }
                }
            },
            Some(Piece::End(at)) => break at,
            None => {
                return Err(
                    RequestError::BodyRead("the request ended before its body".into()).into(),
                );
            }
        }
    };
    let sink = match sink {
        Some(sink) => sink,
        None => {
            let mut short = Sink::new(encoding, &head, writer.take().ok_or_else(lost)?);
            short.write_all(&head).map_err(fail)?;
            short
        }
    };
    let written = sink.finish().map_err(fail)?;
    if written.written == 0 {
        return Err(RequestError::EmptyBody.into());
    }
    let bytes = usize::try_from(written.written).unwrap_or(usize::MAX);
    let hash = dedup::hex(&written.hasher.finalize());
    if let Some(earlier) = state.duplicates.find(
        &state.archive,
        action.name(),
        station.as_str(),
        &hash,
        received,
    ) {
        return Ok(Accepted {
            stored: earlier,
            duplicate: true,
            bytes,
            body: None,
            summary: None,
            acks: Vec::new(),
        });
    }
    let stored = state
        .archive
        .commit(written.temp, action.name(), station.as_str(), received)
        .map_err(store_error)?;
    mark(state, action, station, &hash, &stored, received);
    Ok(Accepted {
        stored,
        duplicate: false,
        bytes,
        body: None,
        summary: None,
        acks: Vec::new(),
    })
}

/// Records the duplicate marker of a stored body. The body is durable
/// already: a marker that cannot be written costs a second copy of a
/// resend, so it is logged, not fatal.
fn mark(
    state: &AppState,
    action: Action,
    station: &StationId,
    hash: &str,
    stored: &Stored,
    received: DateTime<Utc>,
) {
    let result = state.duplicates.record(
        &state.archive,
        action.name(),
        station.as_str(),
        hash,
        stored,
        received,
    );
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot write a duplicate marker");
    }
}

fn lost() -> Refusal {
    RequestError::BodyRead("internal: upload writer lost".into()).into()
}

/// Why writing a streamed body stopped, recorded where the decoder cannot hide it.
enum Failure {
    TooLarge,
    Disk(io::Error),
}

/// Counts, hashes and writes the decoded body into its temp file.
struct Hashing {
    temp: TempFile,
    hasher: Sha256,
    written: u64,
    limit: u64,
    failure: Rc<RefCell<Option<Failure>>>,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            *self.failure.borrow_mut() = Some(Failure::TooLarge);
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "body over the limit",
            ));
        }
        if let Err(e) = self.temp.write_all(buf) {
            let kind = e.kind();
            let message = e.to_string();
            *self.failure.borrow_mut() = Some(Failure::Disk(e));
            return Err(io::Error::new(kind, message));
        }
        self.hasher.update(buf);
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The body's `Content-Encoding`, undone on the way to the file.
enum Sink {
    Plain(Hashing),
    Zlib(ZlibDecoder<Hashing>),
    Raw(DeflateDecoder<Hashing>),
    Gzip(GzDecoder<Hashing>),
}

impl Sink {
    fn new(encoding: Encoding, head: &[u8], writer: Hashing) -> Sink {
        match encoding {
            Encoding::Identity => Sink::Plain(writer),
            Encoding::Gzip => Sink::Gzip(GzDecoder::new(writer)),
            Encoding::Deflate if encoding::looks_like_zlib(head) => {
                Sink::Zlib(ZlibDecoder::new(writer))
            }
            Encoding::Deflate => Sink::Raw(DeflateDecoder::new(writer)),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.write_all(data),
            Sink::Zlib(w) => w.write_all(data),
            Sink::Raw(w) => w.write_all(data),
            Sink::Gzip(w) => w.write_all(data),
        }
    }

    fn finish(self) -> io::Result<Hashing> {
        match self {
            Sink::Plain(w) => Ok(w),
            Sink::Zlib(w) => w.finish(),
            Sink::Raw(w) => w.finish(),
            Sink::Gzip(w) => w.finish(),
        }
    }
}
